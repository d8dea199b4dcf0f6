"""YAML → nn.Module: hand-written cfgs of each module, parameter counts computed by hand."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from nas.build import build_model, scale_depth, scale_width
from nas.cfg import load_cfg, parse_cfg
from nas.errors import ConfigError

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def conv_params(c1: int, c2: int, k: int, g: int = 1) -> int:
    """Conv2d without bias + BatchNorm2d (weight and bias)."""
    return c1 // g * c2 * k * k + 2 * c2


def detect_params(channels, nc=80, na=3, implicit=False) -> int:
    no = na * (nc + 5)
    total = sum(c * no + no for c in channels)
    if implicit:
        total += sum(channels) + no * len(channels)
    return total


def cfg_from(rows_backbone, rows_head, nc=80, gd=1.0, gw=1.0, anchors=ANCHORS):
    return parse_cfg({"nc": nc, "depth_multiple": gd, "width_multiple": gw, "anchors": anchors,
                      "backbone": rows_backbone, "head": rows_head}, source="test.yaml")


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# A small three-level detector using most module kinds; strides 8/16/32.
SMALL_BACKBONE = [
    [-1, 1, "Conv", [16, 3, 2]],                 # 0  /2   16
    [-1, 1, "Conv", [32, 3, 2]],                 # 1  /4   32
    [-1, 1, "MP", []],                           # 2  /8   32
    [-1, 1, "Conv", [32, 1, 1]],                 # 3  /8   32
    [-3, 1, "Conv", [32, 3, 2]],                 # 4  /8   32
    [[-1, -2], 1, "Concat", [1]],                # 5  /8   64
    [-1, 1, "Conv", [64, 3, 2, None, 1, "nn.LeakyReLU(0.1)"]],  # 6 /16 64
    [-1, 1, "Conv", [128, 3, 2]],                # 7  /32  128
]
SMALL_HEAD = [
    [-1, 1, "SPPCSPC", [64]],                    # 8  /32  64
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],  # 9 /16  64
    [[-1, 6], 1, "Concat", [1]],                 # 10 /16  128
    [-1, 1, "RepConv", [64, 3, 1]],              # 11 /16  64
    [5, 1, "SP", [5]],                           # 12 /8   64
    [[5, 12], 1, "Shortcut", [0]],               # 13 /8   64
    [[13, 11, 8], 1, "IDetect", ["nc", "anchors"]],  # 14
]


def small_expected_params() -> int:
    total = conv_params(3, 16, 3) + conv_params(16, 32, 3) + conv_params(32, 32, 1) + conv_params(32, 32, 3)
    total += conv_params(64, 64, 3) + conv_params(64, 128, 3)
    c_ = 64  # SPPCSPC hidden int(2*c2*0.5)
    total += (conv_params(128, c_, 1) * 2 + conv_params(c_, c_, 3) + conv_params(c_, c_, 1)
              + conv_params(4 * c_, c_, 1) + conv_params(c_, c_, 3) + conv_params(2 * c_, 64, 1))
    total += 128 * 64 * 9 + 2 * 64 + 128 * 64 + 2 * 64  # RepConv 128→64: 3x3+BN, 1x1+BN, no identity
    total += detect_params([64, 64, 64], implicit=True)
    return total


def test_small_cfg_builds_with_hand_counted_params_and_runs_forward_backward():
    model = build_model(cfg_from(SMALL_BACKBONE, SMALL_HEAD))
    assert params(model) == small_expected_params()
    assert [i.out_channels for i in model.info[:14]] == [16, 32, 32, 32, 32, 64, 64, 128, 64, 64, 128, 64, 64, 64]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    model.train()
    outs = model(torch.rand(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 8, 8, 85), (2, 3, 4, 4, 85), (2, 3, 2, 2, 85)]
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        decoded, _ = model(torch.rand(1, 3, 64, 64))
    assert decoded.shape == (1, 3 * (64 + 16 + 4), 85)


def test_leaky_relu_expression_builds_the_activation_without_eval():
    model = build_model(cfg_from(SMALL_BACKBONE, SMALL_HEAD))
    act = model.layers[6].act
    assert isinstance(act, torch.nn.LeakyReLU) and act.negative_slope == pytest.approx(0.1)
    assert isinstance(model.layers[0].act, torch.nn.SiLU)


def test_width_multiple_rounds_up_to_multiples_of_8_but_never_the_detect_width():
    assert scale_width(30, 0.5) == 16 and scale_width(64, 0.25) == 16 and scale_width(255, 1.0) == 256
    cfg = cfg_from([[-1, 1, "Conv", [30, 3, 2]], [-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [64, 3, 2]]],
                   [[-1, 1, "nn.Conv2d", [255, 1, 1]], [-2, 1, "Conv", [255, 1, 1]],
                    [[2, 2, 2], 1, "Detect", ["nc", "anchors"]]], gw=0.5)
    model = build_model(cfg)
    assert [i.out_channels for i in model.info[:5]] == [16, 32, 32, 255, 255]  # c2 == na*(nc+5) is kept


def test_depth_multiple_follows_python_round():
    assert [scale_depth(n, gd) for n, gd in [(1, 0.33), (3, 0.33), (3, 0.5), (9, 0.33), (4, 1.5)]] == [1, 1, 2, 3, 6]
    cfg = cfg_from([[-1, 1, "Conv", [16, 3, 2]], [-1, 3, "Conv", [16, 3, 1]], [-1, 1, "Conv", [16, 3, 2]],
                    [-1, 1, "Conv", [16, 3, 2]]], [[[2, 3, 3], 1, "Detect", [80, 1]]], gd=0.67)
    model = build_model(cfg)
    assert isinstance(model.layers[1], torch.nn.Sequential) and len(model.layers[1]) == 2
    assert model.head.na == 1


def test_reorg_downc_and_iauxdetect():
    backbone = [[-1, 1, "ReOrg", []],                     # 0 /2 12
                [-1, 1, "Conv", [16, 3, 1]],              # 1 /2 16
                [-1, 1, "DownC", [32]],                   # 2 /4 32
                [-1, 1, "DownC", [32]],                   # 3 /8 32
                [-1, 1, "DownC", [64]],                   # 4 /16 64
                [-1, 1, "DownC", [64]]]                   # 5 /32 64
    head = [[[3, 4, 5, 3, 4, 5], 1, "IAuxDetect", ["nc", "anchors"]]]
    model = build_model(cfg_from(backbone, head, nc=2))
    assert [i.out_channels for i in model.info[:6]] == [12, 16, 32, 32, 64, 64]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    # DownC(c1, c2, n=1, k=2): cv1 1x1 c1→c1, cv2 3x3 s2 c1→c2/2, cv3 1x1 c1→c2/2
    downc = lambda c1, c2: conv_params(c1, c1, 1) + conv_params(c1, c2 // 2, 3) + conv_params(c1, c2 // 2, 1)
    expected = conv_params(12, 16, 3) + downc(16, 32) + downc(32, 32) + downc(32, 64) + downc(64, 64)
    no = 3 * 7
    expected += 2 * sum(c * no + no for c in [32, 64, 64]) + sum([32, 64, 64]) + 3 * no
    assert params(model) == expected
    model.train()
    outs = model(torch.rand(1, 3, 64, 64))
    assert len(outs) == 6


def test_cfg_file_with_symbols_loads(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(textwrap.dedent("""\
        nc: 3
        depth_multiple: 1.0
        width_multiple: 1.0
        anchors: 2
        backbone:
          [[-1, 1, Conv, [8, 3, 2, None, 1, nn.ReLU()]],
           [-1, 1, nn.MaxPool2d, [2, 2]],
           [-1, 1, nn.AvgPool2d, [2]],
           [-1, 1, SPPF, [16, 5]],
           [-1, 1, SPP, [16, [3, 5]]],
           [-1, 1, nn.Conv2d, [16, 3, 2, 1]],
           [-1, 1, nn.BatchNorm2d, []],
          ]
        head:
          [[[4, 6], 1, Detect, [nc, anchors]]]
        """))
    model = build_model(load_cfg(path))
    assert model.stride.tolist() == [8.0, 16.0]
    assert model.head.na == 2 and model.head.no == 8
    # SPPF(8→16, k5): c_=4, cv1 8→4, cv2 16→16; SPP(16→16,[3,5]): c_=8, cv1 16→8, cv2 24→16
    expected = (conv_params(3, 8, 3) + conv_params(8, 4, 1) + conv_params(16, 16, 1) + conv_params(16, 8, 1)
                + conv_params(24, 16, 1) + (16 * 16 * 9 + 16) + 2 * 16 + (16 * 16 + 16) * 2)
    assert params(model) == expected


# ----------------------------------------------------------------------------- bad input
def bad(rows_head, backbone=None, match=""):
    backbone = backbone or [[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "Conv", [16, 3, 2]]]
    with pytest.raises(ConfigError, match=match) as info:
        build_model(cfg_from(backbone, rows_head))
    message = str(info.value)
    assert "\n" not in message and message.startswith("test.yaml")
    return message


@pytest.mark.parametrize("head, expected", [
    ([[-1, 1, "Conv2", [16]]], "layer 2: unknown module 'Conv2' \\(known: Conv, RepConv"),
    ([[-1, 1, "__import__('os').system('touch /tmp/pwned')", []]], "layer 2: unknown module"),
    ([[-1, 1, "Conv", ["__import__('os').system('touch /tmp/pwned')"]]], "layer 2: argument 'c2': expected an integer"),
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, "__import__('os')"]]], "layer 2: argument 'act'"),
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, "nn.Module.__subclasses__()"]]], "layer 2: argument 'act'"),
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, "nn.Softmax(1)"]]], "unknown activation nn.Softmax"),
    ([[-1, 1, "Conv", [0, 3, 1]]], "layer 2: argument 'c2': must be ≥ 1"),
    ([[-1, 1, "Conv", [-8, 3, 1]]], "argument 'c2'"),
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, True, 7]]], "Conv takes at most 6"),
    ([[-1, 1, "Conv", []]], "Conv needs at least 1"),
    ([[-1, 1, "Conv", [16, 3.5]]], "argument 'k': expected an integer"),
    ([[5, 1, "Conv", [16]]], "layer 2: 'from' 5 points forward"),
    ([[-9, 1, "Conv", [16]]], "layer 2: 'from' -9 is out of range"),
    ([[[-1, 0], 1, "Concat", [1]]], "layer 2: Concat of mismatched spatial sizes"),
    ([[-1, 1, "Conv", [8, 1, 1]], [[-1, -2], 1, "Shortcut", [0]]], "layer 3: Shortcut adds inputs of unequal channels"),
    ([[-1, 1, "nn.Upsample", [None, 2, "__import__('os')"]]], "argument 'mode': expected one of"),
    ([[-1, 1, "Conv", [16]], [-1, 1, "Conv", [16]]], "last layer must be a detect head"),
    ([[[0, 1], 1, "Detect", ["nc", "anchors"]], [-1, 1, "Conv", [16]]], "Detect must be the last layer"),
    ([[[0, 1], 1, "Detect", ["nc", "anchors"]]], "2 inputs but 3 anchor levels"),
    ([[-1, "2", "Conv", [16]]], "number must be a positive integer"),
    ([[-1, 1, "Conv"]], "a row must be \\[from, number, module, args\\], got \\[-1, 1, 'Conv'\\]"),
    # routes: Concat/Shortcut/Detect take lists, everything else one input
    ([[-1, 1, "Concat", [1]]], "layer 2: Concat takes a list of inputs"),
    ([[[-1], 1, "Conv", [16]]], "layer 2: Conv takes one input; write 'from' as an integer"),
    ([[[-1, -2, 0], 1, "Shortcut", [0]]], "layer 2: Shortcut adds exactly two inputs, 'from' lists 3"),
    ([[-1, 1, "Detect", ["nc", "anchors"]]], "layer 2: Detect takes a list of inputs"),
    # Concat's channel rule holds for the channel dimension only
    ([[[-1, -2], 1, "Concat", [0]]], "layer 2: argument 'dimension': expected one of 1, got 0"),
    # windows whose output side is not exactly input/stride (would fail only in the forward pass)
    ([[-1, 1, "Conv", [16, 2, 1]]], "layer 2: kernel 2 with stride 1 and padding 1 does not divide the "
                                     "feature-map size by exactly 1 \\(needs an odd kernel\\)"),
    ([[-1, 1, "Conv", [16, 3, 1, 100]]], "kernel 3 with stride 1 and padding 100 .* \\(needs padding 1\\)"),
    ([[-1, 1, "nn.Conv2d", [16, 3, 1, 1, 2]]], "kernel 3 \\(dilation 2\\) .* \\(needs padding 2\\)"),
    ([[-1, 1, "nn.Conv2d", [16, 3]]], "kernel 3 with stride 1 and padding 0"),
    ([[-1, 1, "SP", [4]]], "layer 2: kernel 4 with stride 1"),
    ([[-1, 1, "SPP", [16, [5, 8]]]], "layer 2: kernel 8 with stride 1"),
    ([[-1, 1, "nn.AvgPool2d", [3, 1, 5]]], "kernel 3 with stride 1 and padding 5"),
    ([[-1, 1, "nn.MaxPool2d", [2, 0]]], "argument 'stride': must be ≥ 1, got 0"),
    ([[-1, 1, "nn.Upsample", [None, 1.5, "nearest"]]], "argument 'scale_factor': must be a whole number"),
    # 255 = na·(nc+5) is exempt from width rounding, and DownC cannot split it into two halves
    ([[-1, 1, "DownC", [255]]], "layer 2: DownC splits its output into two halves; c2 must be even"),
    # a crafted activation string costs linear time (a backtracking regex took minutes on this)
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, "nn.A(" + " " * 5000 + "x"]]], "layer 2: argument 'act'"),
    # blocks whose hidden width rounds to nothing
    ([[-1, 1, "SPPCSPC", [16, False, 1, 0.001]]], "layer 2: SPPCSPC hidden width int\\(2·c2·e\\) = "
                                                   "int\\(2·16·0.001\\) is 0"),
    # arguments YOLOv7 would ignore or evaluate are checked, never passed through
    ([[-1, 1, "nn.BatchNorm2d", ["__import__('os')"]]], "layer 2: argument 'num_features': expected an integer"),
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, "nn.ReLU(0.5)"]]], "inplace must be True or False, got '0.5'"),
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, "nn.LeakyReLU(1e999)"]]], "negative_slope must be a finite number"),
    ([[-1, 1, "Conv", [16, 3, 1, None, 1, "nn.LeakyReLU(0.1, True, 3)"]]], "takes at most 2 argument"),
    ([[[0, 1], 1, "Detect", [5, "anchors"]]], "layer 2: Detect has nc 5 but the cfg's nc is 80"),
    ([[[0, 1], 1, "Detect", ["nc", [["a", "b"], [1, 2]]]]], "argument 'anchors': anchors level 0 must be"),
    # sizes: refused before any weight is allocated (4 TB here would fail differently)
    ([[-1, 1, "Conv", [2 ** 20, 1024, 1, 511]]], "layer 2: kernel 1024"),
    ([[-1, 1, "Conv", [2 ** 20, 1023]]], "layer 2: Conv would have [0-9,]+ parameters, taking the model "
                                          "past the 1,000,000,000 supported"),
    ([[-1, 10 ** 6, "Conv", [16, 3, 1]]], "layer 2: the model would have more than 4,096 modules "
                                          "\\(this row repeats 1,000,000×\\)"),
    # repeated rows: a module applied `number` times in sequence
    ([[[-1, -2], 3, "Concat", [1]]], "layer 2: Concat reads several layers and cannot be repeated"),
    ([[-1, 2, "nn.Upsample", [None, 2, "nearest"]], [[-1, 0], 1, "Concat", [1]]],
     "layer 3: Concat of mismatched spatial sizes \\(layer 2: /1, layer 0: /2\\)"),
    ([[-1, 1, "Conv", ["x" * 10 ** 5]]], "argument 'c2': expected an integer, got 'xxxxx.{1,60}$"),
])
def test_bad_rows_give_one_line_with_file_and_layer(head, expected):
    bad(head, match=expected)


def test_injection_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    for head in ([[-1, 1, payload, []]], [[-1, 1, "Conv", [payload]]], [[-1, 1, "Conv", [16, 3, 1, None, 1, payload]]]):
        with pytest.raises(ConfigError):
            build_model(cfg_from([[-1, 1, "Conv", [16, 3, 2]]], head))
    assert not marker.exists()


@pytest.mark.parametrize("text, expected", [
    ("nc: 80\nbackbone: [[-1, 1, Conv, [16]]\n", "malformed YAML at line"),
    ("- 1\n- 2\n", "expected a YAML mapping"),
    ("nc: 80\nanchors: 3\nbackbone: []\nhead: []\n", "'backbone' must be a non-empty list"),
    ("nc: 80\nanchors: 3\nhead: []\n", "missing top-level key\\(s\\): backbone"),
    ("nc: 0\nanchors: 3\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n", "nc must be a positive integer"),
    ("nc: 2\nanchors: [[1, 2, 3]]\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n", "anchors level 0"),
    ("nc: 2\nwidth_multiple: -1\nanchors: 3\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n", "width_multiple must be"),
    ("nc: 2\nanchors: 3\nbackbone: [[0, 1, Conv, [8]]]\nhead: []\n", "layer 0: layer 0 must take the input"),
    ("nc: 2\nanchors: 3\nbackbone: !!python/object/apply:os.system ['true']\nhead: []\n", "malformed YAML"),
    ("nc: 2\nanchors: 3\nwidth_mutliple: 0.5\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n",
     "unknown top-level key\\(s\\): width_mutliple \\(known: nc, anchors, backbone, head, depth_multiple"),
    ("nc: 2\nanchors: 3\nch: 1\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n", "ch \\(input channels\\) must be 3"),
    ("nc: 2\nanchors: 3\nwidth_multiple: .inf\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n",
     "width_multiple must be a positive finite number, got inf"),
    ("nc: 2\nanchors: [[1, .inf]]\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n", "anchors level 0"),
    ("nc: 2\nanchors: 3\nbackbone: [" + "[-1, 1, Conv, [8]], " * 5000 + "]\nhead: []\n",
     "the cfg has 5,000 layers; at most 4,096 are supported"),
    ("nc: 2\x01\n", "control character U\\+0001 at offset 5"),
    ("nc: 2\x00\n", "not a text file \\(it contains NUL bytes\\)"),
    ("", "expected a YAML mapping"),
])
def test_bad_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        build_model(path)
    assert str(info.value).startswith(str(path))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read model file"):
        load_cfg(tmp_path / "nope.yaml")


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.mkdir(), "cannot read model file: a directory"),
    (lambda p: p.write_bytes(bytes(range(1, 256))), "not a UTF-8 text file \\(byte 0x80 at offset 127\\)"),
    (lambda p: p.write_bytes(b"#" * (4 * 1024 * 1024 + 1)), "model file is 4,194,305 bytes; at most 4,194,304"),
])
def test_files_that_are_not_model_yaml(tmp_path, make, expected):
    path = tmp_path / "m.yaml"
    make(path)
    with pytest.raises(ConfigError, match=expected) as info:
        load_cfg(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_device_is_refused_without_reading_it():
    with pytest.raises(ConfigError, match="/dev/zero: cannot read model file: not a regular file"):
        load_cfg("/dev/zero")


def test_repeated_rows_compound_their_stride_and_reorg_channels():
    model = build_model(cfg_from([[-1, 1, "Conv", [16, 3, 2]], [-1, 2, "MP", []], [-1, 1, "Conv", [16, 3, 2]],
                                  [-1, 2, "ReOrg", []], [-1, 3, "Conv", [256, 3, 1]]],
                                 [[[1, 2, 4], 1, "Detect", ["nc", "anchors"]]]))
    assert [(i.stride, i.out_channels) for i in model.info[:5]] == [(2, 16), (8, 16), (16, 16), (64, 256),
                                                                    (64, 256)]
    assert model.stride.tolist() == [8.0, 16.0, 64.0] and model.input_multiple == 64
    model.train()
    outs = model(torch.rand(1, 3, 128, 128))
    assert [tuple(o.shape[2:4]) for o in outs] == [(16, 16), (8, 8), (2, 2)]


def test_input_multiple_is_the_lcm_of_all_strides():
    model = build_model(cfg_from([[-1, 1, "Conv", [16, 3, 2]], [-1, 1, "MP", [3]], [-1, 1, "Conv", [16, 3, 2]]],
                                 [[[1, 2], 1, "Detect", ["nc", [[1, 2], [3, 4]]]]]))
    assert [i.stride for i in model.info[:3]] == [2, 6, 12]
    assert model.input_multiple == 12 and model.stride.tolist() == [6.0, 12.0]
    model.train()
    assert [tuple(o.shape[2:4]) for o in model(torch.rand(1, 3, 36, 36))] == [(6, 6), (3, 3)]


def test_python_tags_in_a_cfg_are_refused_unexecuted(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"nc: 2\nanchors: 3\nbackbone: !!python/object/apply:os.system ['touch {marker}']\n"
                    "head: []\n")
    with pytest.raises(ConfigError, match="could not determine a constructor for the tag"):
        load_cfg(path)
    assert not marker.exists()
