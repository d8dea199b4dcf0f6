"""expand(genome) → flat yolov7 cfg, checked against hand-counted facts of the upstream cfgs.

The oracles here are independent of nas/expand.py: row counts, route indices and output widths
read off the upstream yolov7-tiny / yolov7 / yolov7x training cfgs by hand, a tiny channel
propagator, and a parameter counter written from the module definitions (Conv = conv + BN,
RepConv's three branches, SPPCSPC's seven convs, IDetect's implicit layers) that must reproduce
the reference counts 6,228,762 / 37,622,682 / 71,347,394.
"""
from __future__ import annotations

import random

import pytest
import yaml

from nas.expand import ALLOWED_MODULES, dump_yaml, elan_concat, expand
from nas.genome import (
    BottomUp, Downsample, Elan, Genome, Head, Outputs, Spp, Stage, StemConv, TopDown,
)
from nas.presets import PRESETS

CONV_LIKE = {"Conv", "RepConv", "SPPCSPC", "SPPF", "SPP"}

# name: (layers incl. detect, index of the SPP row, detect sources, output widths, params)
FACTS = {
    "yolov7-tiny": (78, 29, [74, 75, 76], [128, 256, 512], 6_228_762),
    "yolov7": (106, 51, [102, 103, 104], [256, 512, 1024], 37_622_682),
    "yolov7x": (122, 59, [118, 119, 120], [320, 640, 1280], 71_347_394),
}

# name: {row: absolute from} for ELAN concats, MPC concats and long routes
ROUTES = {
    "yolov7-tiny": {6: [5, 4, 3, 2], 13: [12, 11, 10, 9], 34: [33, 32, 31, 30], 36: [35, 29],
                    40: 21, 50: 14, 59: [58, 47], 67: [66, 37], 74: 57, 75: 65, 76: 73},
    "yolov7": {10: [9, 7, 5, 4], 16: [15, 13], 14: 11, 54: 37, 62: [61, 60, 59, 58, 57, 56],
               66: 24, 80: [79, 77, 63], 93: [92, 90, 51], 102: 75, 103: 88, 104: 101},
    "yolov7x": {12: [11, 9, 7, 5, 4], 18: [17, 15], 62: 43, 72: [71, 69, 67, 65, 64], 76: 28,
                92: [91, 89, 73], 107: [106, 104, 59], 118: 87, 119: 102, 120: 117},
}


def rows_of(cfg: dict) -> list[list]:
    return cfg["backbone"] + cfg["head"]


def absolute(rows: list[list]) -> list[list[int]]:
    """Each row's sources as absolute indices (−1 at row 0 means the image)."""
    out = []
    for i, (frm, *_rest) in enumerate(rows):
        refs = frm if isinstance(frm, list) else [frm]
        out.append([r if r >= 0 or i == 0 else i + r for r in refs])
    return out


def channels(rows: list[list], c_in: int = 3) -> list[int]:
    """Output channels per row: conv-like → args[0], Concat → sum, others pass through."""
    out: list[int] = []
    for i, (row, srcs) in enumerate(zip(rows, absolute(rows))):
        c1 = [c_in if s < 0 else out[s] for s in srcs]
        module, args = row[2], row[3]
        if module in CONV_LIKE:
            out.append(args[0])
        elif module == "Concat":
            out.append(sum(c1))
        elif module in ("Detect", "IDetect"):
            out.append(0)
        else:
            out.append(c1[0])
    return out


def _conv_bn(c1: int, c2: int, k: int) -> int:
    return c1 * c2 * k * k + 2 * c2


def params(cfg: dict) -> int:
    """Trainable parameters of the model YOLOv7 would build (training form)."""
    rows = rows_of(cfg)
    ch = channels(rows)
    na, no = len(cfg["anchors"][0]) // 2, cfg["nc"] + 5
    total = 0
    for i, ((_f, _n, module, args), srcs) in enumerate(zip(rows, absolute(rows))):
        c1 = 3 if srcs[0] < 0 else ch[srcs[0]]
        c2 = ch[i]
        if module == "Conv":
            total += _conv_bn(c1, c2, args[1])
        elif module == "RepConv":
            identity = 2 * c1 if c1 == c2 and args[2] == 1 else 0
            total += _conv_bn(c1, c2, 3) + _conv_bn(c1, c2, 1) + identity
        elif module == "SPPCSPC":
            h = c2
            total += (2 * _conv_bn(c1, h, 1) + _conv_bn(h, h, 3) + _conv_bn(h, h, 1)
                      + _conv_bn(4 * h, h, 1) + _conv_bn(h, h, 3) + _conv_bn(2 * h, c2, 1))
        elif module in ("SPP", "SPPF"):
            total += _conv_bn(c1, c1 // 2, 1) + _conv_bn(4 * (c1 // 2), c2, 1)
        elif module in ("Detect", "IDetect"):
            for s in srcs:
                total += ch[s] * na * no + na * no
                if module == "IDetect":
                    total += ch[s] + na * no  # ImplicitA, ImplicitM
    return total


def check_routes(cfg: dict) -> None:
    rows = rows_of(cfg)
    for i, srcs in enumerate(absolute(rows)):
        for s in srcs:
            assert (s == -1 and i == 0) or 0 <= s < i, f"row {i} refers to {s}"
        assert (len(srcs) > 1) == (rows[i][2] in ("Concat", "Detect", "IDetect")), i
        assert rows[i][1] == 1


def check_allowed_modules(cfg: dict) -> None:
    assert {row[2] for row in rows_of(cfg)} <= ALLOWED_MODULES


def check_round_trip(cfg: dict) -> str:
    text = dump_yaml(cfg, header="y7nas test")
    assert yaml.safe_load(text) == cfg
    return text


# -- presets --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FACTS))
def test_preset_structure(name):
    n_layers, spp_index, detect_from, out_widths, _params = FACTS[name]
    cfg = expand(PRESETS[name])
    rows = rows_of(cfg)
    assert len(rows) == n_layers
    assert len(cfg["backbone"]) == spp_index
    assert cfg["head"][0][2] in ("SPPCSPC", "Conv")  # tiny opens its SPP with a written-out conv
    assert cfg["nc"] == 80 and cfg["depth_multiple"] == 1.0 and cfg["width_multiple"] == 1.0
    assert rows[-1][0] == detect_from and rows[-1][2] == "IDetect"
    assert rows[-1][3] == ["nc", "anchors"]
    src = absolute(rows)
    for row, expected in ROUTES[name].items():
        assert src[row] == (expected if isinstance(expected, list) else [expected]), row
    ch = channels(rows)
    assert [ch[i] for i in detect_from] == out_widths
    check_routes(cfg)
    check_allowed_modules(cfg)


@pytest.mark.parametrize("name", sorted(FACTS))
def test_preset_parameter_count_matches_reference(name):
    assert params(expand(PRESETS[name])) == FACTS[name][4]


def test_hand_counted_widths_of_yolov7():
    ch = channels(rows_of(expand(PRESETS["yolov7"])))
    assert ch[10] == 4 * 64          # ELAN concat: 2 entries + 2 chain outputs
    assert ch[16] == 256             # MPC-B: 128 + 128
    assert ch[50] == 1024 and ch[51] == 512
    assert ch[62] == 2 * 256 + 4 * 128  # ELAN-H concat: 2 entries + 4 chain outputs
    assert ch[80] == 128 + 128 + 256    # MPC-N with the P4 lateral


def test_hand_counted_widths_of_tiny():
    rows = rows_of(expand(PRESETS["yolov7-tiny"]))
    ch = channels(rows)
    assert ch[28] == 512 and ch[34] == 4 * 256 and ch[36] == 512 and ch[37] == 256
    assert [rows[i][3][0] for i in (31, 32, 33)] == [5, 9, 13] and rows[31][2] == "SP"
    assert rows[0][3] == [32, 3, 2, None, 1, "nn.LeakyReLU(0.1)"]
    assert rows[39] == [-1, 1, "nn.Upsample", [None, 2, "nearest"]]
    assert ch[59] == 128 + 128 and ch[67] == 256 + 256


def test_silu_rows_are_short():
    rows = rows_of(expand(PRESETS["yolov7"]))
    assert rows[0] == [-1, 1, "Conv", [32, 3, 1]]
    assert rows[51] == [-1, 1, "SPPCSPC", [512]]
    assert rows[102] == [75, 1, "RepConv", [256, 3, 1]]
    assert expand(PRESETS["yolov7x"])["head"][-2][2] == "Conv"


@pytest.mark.parametrize("name", sorted(FACTS))
def test_dump_yaml_round_trip_and_style(name):
    cfg = expand(PRESETS[name])
    text = check_round_trip(cfg)
    assert text.startswith("# y7nas test\nnc: 80\n")
    assert "  - [-1, 1, nn.Upsample, [null, 2, 'nearest']]  # " in text
    assert f"IDetect, [nc, anchors]]  # {FACTS[name][0] - 1}\n" in text
    if name == "yolov7-tiny":
        assert "  - [-1, 1, Conv, [32, 3, 2, null, 1, nn.LeakyReLU(0.1)]]  # 0\n" in text


def test_dump_yaml_odd_values_round_trip():
    cfg = {"nc": 3, "depth_multiple": 0.33, "width_multiple": 1e-05, "anchors": 3,
           "backbone": [[-1, 1, "Conv", [16, 3, 2, None, 1, "nn.ReLU()"]]],
           "head": [[-1, 1, "nn.Upsample", [None, 2, "it's"]], [[0, 1], 1, "Detect", ["nc", 3]]],
           "ch": 3}
    check_round_trip(cfg)


def test_elan_concat_patterns():
    assert elan_concat(4, "every2") == [-1, -3, -5, -6]
    assert elan_concat(6, "every2") == [-1, -3, -5, -7, -8]
    assert elan_concat(2, "all") == [-1, -2, -3, -4]
    assert elan_concat(1, "all") == [-1, -2, -3]
    assert elan_concat(2, "every2") == [-1, -3, -4]


# -- genomes beyond the presets ---------------------------------------------------------------

def _v7(**changes) -> Genome:
    return PRESETS["yolov7"].replace(**changes)


def test_spp3_relu_is_written_in_primitives():
    g = _v7(activation="relu", spp=Spp("spp3", 384))
    cfg = expand(g)
    head = cfg["head"]
    assert head[0] == [-1, 1, "Conv", [384, 1, 1, None, 1, "nn.ReLU()"]]
    assert [r[2:] for r in head[1:4]] == [["nn.AvgPool2d", [3, 1, 1]], ["nn.AvgPool2d", [5, 1, 2]],
                                          ["nn.AvgPool2d", [7, 1, 3]]]
    assert all(r[0] == -1 for r in head[1:4])        # chained pools
    spp = len(cfg["backbone"])
    assert absolute(rows_of(cfg))[spp + 4] == [spp, spp + 1, spp + 2, spp + 3]
    ch = channels(rows_of(cfg))
    assert ch[spp + 4] == 4 * 384 and ch[spp + 5] == 384
    assert all(r[3][-1] == "nn.ReLU()" for r in rows_of(cfg) if r[2] in ("Conv", "RepConv"))
    check_routes(cfg)
    check_allowed_modules(cfg)
    check_round_trip(cfg)


@pytest.mark.parametrize("kind, module", [("sppf", "SPPF"), ("spp", "SPP")])
def test_single_module_spp_kinds(kind, module):
    cfg = expand(_v7(spp=Spp(kind, 512), detect="detect"))
    assert cfg["head"][0] == [-1, 1, module, [512]]
    assert cfg["head"][-1][2] == "Detect"
    assert len(rows_of(cfg)) == 106
    check_routes(cfg)


def test_conv_and_mp_downsamples_and_conv_head():
    v7 = PRESETS["yolov7"]
    stages = (v7.stages[0],
              Stage(Downsample("conv", 256), v7.stages[1].elan),
              Stage(Downsample("mp"), v7.stages[2].elan),
              v7.stages[3])
    head = Head(v7.head.top_down,
                (BottomUp(Downsample("conv", 192), v7.head.bottom_up[0].elan),
                 v7.head.bottom_up[1]))
    cfg = expand(v7.replace(stages=stages, head=head))
    rows = rows_of(cfg)
    assert rows[12] == [-1, 1, "Conv", [256, 3, 2]]        # plain strided conv at P3
    assert rows[21] == [-1, 1, "MP", []]                   # maxpool only at P4
    ch = channels(rows)
    assert [ch[i] for i in rows[-1][0]] == [256, 512, 1024]
    check_routes(cfg)
    check_allowed_modules(cfg)
    check_round_trip(cfg)


def test_stem_stride_on_first_stage():
    tiny = PRESETS["yolov7-tiny"]
    first = Stage(Downsample("mpc", 32), tiny.stages[0].elan)
    g = tiny.replace(stem=(StemConv(32, 2),), stages=(first, *tiny.stages[1:]))
    cfg = expand(g)
    assert rows_of(cfg)[1][2] == "MP" and rows_of(cfg)[5] == [[-1, -3], 1, "Concat", [1]]
    check_routes(cfg)


def _random_elan(rng: random.Random) -> Elan:
    pattern = rng.choice(["every2", "all"])
    depth = rng.choice([2, 4, 6]) if pattern == "every2" else rng.randint(1, 5)
    return Elan(depth, pattern, rng.choice([16, 32, 48]), rng.choice([16, 24, 32]),
                rng.choice([32, 64, 96]))


def _random_genome(rng: random.Random) -> Genome:
    activation = rng.choice(["silu", "leakyrelu", "relu"])
    spp_kinds = ["spp3", "sp"] + (["sppcspc", "sppf", "spp"] if activation == "silu" else [])

    def down(kinds):
        kind = rng.choice(kinds)
        return Downsample(kind, None if kind == "mp" else rng.choice([16, 32, 64]))

    return Genome(
        activation=activation,
        stem=(StemConv(rng.choice([8, 16]), 2), StemConv(rng.choice([16, 32]), 2)),
        stages=(Stage(Downsample("none"), _random_elan(rng)),
                *(Stage(down(["conv", "mpc", "mp"]), _random_elan(rng)) for _ in range(3))),
        spp=Spp(rng.choice(spp_kinds), rng.choice([64, 128])),
        head=Head(tuple(TopDown(rng.choice([32, 64]), _random_elan(rng)) for _ in range(2)),
                  tuple(BottomUp(down(["conv", "mpc"]), _random_elan(rng)) for _ in range(2))),
        outputs=Outputs(rng.choice(["conv", "repconv"]), (32, 64, 128)),
        detect=rng.choice(["detect", "idetect"]),
        nc=rng.randint(1, 100),
        anchors=((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12)),
    )


def test_random_genomes_expand_to_valid_cfgs():
    rng = random.Random(7)
    for i in range(60):
        g = _random_genome(rng)
        cfg = expand(g)
        rows = rows_of(cfg)
        check_routes(cfg)
        check_allowed_modules(cfg)
        if i % 6 == 0:  # pure-Python safe_load is slow; a sample of the YAML round trips
            check_round_trip(cfg)
        ch = channels(rows)
        assert [ch[i] for i in rows[-1][0]] == list(g.outputs.widths)
        spp = len(cfg["backbone"])
        assert ch[spp - 1] == g.stages[3].elan.out
        assert ch[len(rows) - 5] == g.head.bottom_up[1].elan.out
        assert params(cfg) > 0
