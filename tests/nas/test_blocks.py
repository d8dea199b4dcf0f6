"""Shapes, channel counts and hand-computed parameter counts of nas.blocks; head decoding."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nas.blocks import (MP, SP, SPP, SPPCSPC, SPPF, Concat, Conv, Detect, DetectBase, DownC,
                        IAuxDetect, IDetect, ImplicitA, ImplicitM, ReOrg, RepConv, Shortcut)
from nas.errors import ConfigError, NasError

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]  # 2 levels, 3 anchors each


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_bn(c1: int, c2: int, k: int, g: int = 1) -> int:
    """Hand formula: bias-free conv weights plus BN weight and bias."""
    return c1 // g * c2 * k * k + 2 * c2


# ---------------------------------------------------------------- Conv
def test_conv_shape_params_and_bn_settings():
    m = Conv(3, 16, 3)
    assert n_params(m) == 3 * 16 * 9 + 2 * 16
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 16, 8, 8)
    assert m.conv.padding == (1, 1) and m.conv.bias is None
    assert m.bn.eps == pytest.approx(1e-3) and m.bn.momentum == pytest.approx(0.03)
    assert isinstance(m.act, nn.SiLU)


def test_conv_stride_groups_padding():
    m = Conv(8, 16, 3, 2, g=4)
    assert n_params(m) == conv_bn(8, 16, 3, g=4)
    assert m(torch.randn(1, 8, 8, 8)).shape == (1, 16, 4, 4)
    assert Conv(4, 4, 3, 1, p=0)(torch.randn(1, 4, 8, 8)).shape == (1, 4, 6, 6)


def test_conv_activation_argument():
    leaky = nn.LeakyReLU(0.1)
    assert Conv(4, 4, act=leaky).act is leaky
    assert isinstance(Conv(4, 4, act=False).act, nn.Identity)
    assert isinstance(Conv(4, 4, act=None).act, nn.Identity)


# ---------------------------------------------------------------- RepConv
def test_repconv_with_identity_branch():
    m = RepConv(8, 8)
    assert isinstance(m.rbr_identity, nn.BatchNorm2d)
    assert n_params(m) == conv_bn(8, 8, 3) + conv_bn(8, 8, 1) + 2 * 8
    assert m(torch.randn(1, 8, 6, 6)).shape == (1, 8, 6, 6)


@pytest.mark.parametrize("c1,c2,s", [(8, 16, 1), (8, 8, 2)])
def test_repconv_without_identity_branch(c1, c2, s):
    m = RepConv(c1, c2, 3, s)
    assert m.rbr_identity is None
    assert n_params(m) == conv_bn(c1, c2, 3) + conv_bn(c1, c2, 1)
    assert m(torch.randn(1, c1, 8, 8)).shape == (1, c2, 8 // s, 8 // s)


def test_repconv_grouped_and_deploy_form():
    assert n_params(RepConv(8, 8, g=4)) == conv_bn(8, 8, 3, 4) + conv_bn(8, 8, 1, 4) + 16
    d = RepConv(8, 16, deploy=True)
    assert n_params(d) == 8 * 16 * 9 + 16 and d.rbr_dense is None
    assert d(torch.randn(1, 8, 5, 5)).shape == (1, 16, 5, 5)


@pytest.mark.parametrize("k,p", [(1, None), (3, 0)])
def test_repconv_rejects_other_geometry(k, p):
    with pytest.raises(ConfigError, match="RepConv"):
        RepConv(4, 4, k, 1, p)


# ---------------------------------------------------------------- pooling / SPP family
def test_spp_and_sppf_counts_and_equivalence():
    spp, sppf = SPP(16, 8), SPPF(16, 8)
    hidden = 16 // 2
    expected = conv_bn(16, hidden, 1) + conv_bn(4 * hidden, 8, 1)
    assert n_params(spp) == n_params(sppf) == expected
    sppf.load_state_dict(spp.state_dict())  # same conv names; 5→5→5 pooling == 5, 9, 13
    x = torch.randn(1, 16, 16, 16)
    spp.eval()
    sppf.eval()
    torch.testing.assert_close(sppf(x), spp(x))


@pytest.mark.parametrize("c1,c2,e", [(16, 8, 0.5), (8, 12, 1.0)])
def test_sppcspc_hidden_width_and_params(c1, c2, e):
    m = SPPCSPC(c1, c2, 1, False, 1, e)
    h = int(2 * c2 * e)
    assert m.cv1.conv.out_channels == h
    expected = (2 * conv_bn(c1, h, 1) + 2 * conv_bn(h, h, 3) + conv_bn(h, h, 1)
                + conv_bn(4 * h, h, 1) + conv_bn(2 * h, c2, 1))
    assert n_params(m) == expected
    assert m(torch.randn(1, c1, 8, 8)).shape == (1, c2, 8, 8)


def test_sppcspc_small_case_by_number():
    assert n_params(SPPCSPC(16, 8)) == 1968  # 144+144+592+80+272+592+144


def test_downc_shape_and_params():
    m = DownC(8, 16, 1, 2)
    assert n_params(m) == conv_bn(8, 8, 1) + conv_bn(8, 8, 3) + conv_bn(8, 8, 1)
    assert m(torch.randn(1, 8, 8, 8)).shape == (1, 16, 4, 4)


def test_mp_sp_shapes():
    x = torch.randn(1, 4, 8, 8)
    assert MP()(x).shape == (1, 4, 4, 4)
    assert SP()(x).shape == (1, 4, 8, 8)
    assert SP(5, 2)(x).shape == (1, 4, 4, 4)
    assert n_params(MP()) == n_params(SP()) == 0


def test_concat_shortcut_reorg():
    a, b = torch.randn(1, 3, 4, 4), torch.randn(1, 5, 4, 4)
    assert Concat()([a, b]).shape == (1, 8, 4, 4)
    torch.testing.assert_close(Shortcut()([a, a * 2]), a * 3)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = ReOrg()(x)
    assert y.shape == (1, 4, 2, 2)
    assert y[0, 0].tolist() == [[0, 2], [8, 10]]    # even rows, even cols
    assert y[0, 1].tolist() == [[4, 6], [12, 14]]   # odd rows, even cols
    assert y[0, 2].tolist() == [[1, 3], [9, 11]]    # even rows, odd cols
    assert y[0, 3].tolist() == [[5, 7], [13, 15]]


# ---------------------------------------------------------------- implicit + heads
def test_implicit_modules():
    a, m = ImplicitA(4), ImplicitM(4)
    assert a.implicit.shape == m.implicit.shape == (1, 4, 1, 1)
    assert abs(a.implicit.mean().item()) < 0.1 and abs(m.implicit.mean().item() - 1) < 0.1
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(a(x), x + a.implicit)
    torch.testing.assert_close(m(x), x * m.implicit)


def _head_inputs(bs: int = 2, aux: bool = False) -> list[torch.Tensor]:
    xs = [torch.randn(bs, 8, 8, 8), torch.randn(bs, 16, 4, 4)]
    return xs + [torch.randn(bs, 8, 8, 8), torch.randn(bs, 16, 4, 4)] if aux else xs


def test_head_param_counts():
    no, na = 2 + 5, 3
    out = (8 + 1) * no * na + (16 + 1) * no * na
    implicit = 8 + 16 + 2 * no * na
    assert n_params(Detect(2, ANCHORS, (8, 16))) == out
    assert n_params(IDetect(2, ANCHORS, (8, 16))) == out + implicit
    assert n_params(IAuxDetect(2, ANCHORS, (8, 16, 8, 16))) == 2 * out + implicit
    assert isinstance(IDetect(2, ANCHORS, (8, 16)), DetectBase)


def test_head_state_dict_keys_follow_yolov7():
    keys = set(IDetect(2, ANCHORS, (8, 16)).state_dict())
    assert {"anchors", "anchor_grid", "m.0.weight", "m.0.bias", "ia.1.implicit",
            "im.0.implicit"} <= keys
    assert "stride" not in keys  # YOLOv7 keeps stride out of its checkpoints


@pytest.mark.parametrize("cls,aux", [(Detect, False), (IDetect, False), (IAuxDetect, True)])
def test_head_training_output_and_backward(cls, aux):
    head = cls(2, ANCHORS, (8, 16, 8, 16) if aux else (8, 16)).train()
    xs = [x.requires_grad_() for x in _head_inputs(aux=aux)]
    out = head(xs)
    shapes = [(2, 3, 8, 8, 7), (2, 3, 4, 4, 7)]
    assert [tuple(t.shape) for t in out] == (shapes * 2 if aux else shapes)
    sum(t.square().mean() for t in out).backward()
    assert all(p.grad is not None for p in head.parameters())
    assert all(x.grad is not None for x in xs)


def test_set_stride_converts_anchors_to_grid_units():
    head = Detect(2, ANCHORS, (8, 16))
    head.set_stride([8, 16])
    assert head.stride.tolist() == [8, 16]
    torch.testing.assert_close(head.anchors[0, 1], torch.tensor([16 / 8, 30 / 8]))
    torch.testing.assert_close(head.anchors[1, 2], torch.tensor([59 / 16, 119 / 16]))
    assert head.anchor_grid[1, 0, 2, 0, 0].tolist() == [59, 119]  # stays in pixels
    head.set_stride([8, 16])  # idempotent
    torch.testing.assert_close(head.anchors[1, 2], torch.tensor([59 / 16, 119 / 16]))


def test_set_stride_reverses_anchor_levels_against_strides():
    head = Detect(2, ANCHORS[::-1], (8, 16))
    head.set_stride([8, 16])
    assert head.anchor_grid[0, 0, 0, 0, 0].tolist() == [10, 13]


@pytest.mark.parametrize("bad", [[8], [8, 0], [8, 16, 32]])
def test_set_stride_rejects_bad_strides(bad):
    with pytest.raises(ConfigError):
        Detect(2, ANCHORS, (8, 16)).set_stride(bad)


def test_head_rejects_bad_construction():
    with pytest.raises(ConfigError):
        Detect(2, ANCHORS, (8,))
    with pytest.raises(ConfigError):
        Detect(2, [[10, 13, 16]], (8,))
    with pytest.raises(ConfigError):
        IAuxDetect(2, ANCHORS, (8, 16))


def test_eval_without_stride_is_an_error():
    with pytest.raises(NasError, match="set_stride"):
        Detect(2, ANCHORS, (8, 16)).eval()(_head_inputs())


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_eval_decodes_boxes_in_pixels():
    head = Detect(2, ANCHORS, (8, 16)).eval()
    head.set_stride([8, 16])
    with torch.no_grad():
        for conv in head.m:
            conv.weight.zero_()
            bias = conv.bias.view(3, 7)
            bias[:, 0:2] = _logit(0.75)   # xy offset 0.75*2-0.5 = 1.0 cell
            bias[:, 2:4] = _logit(0.25)   # wh factor (0.25*2)^2 = 0.25
            bias[:, 4:] = 0.0             # scores 0.5
    decoded, levels = head(_head_inputs())
    assert decoded.shape == (2, 3 * 64 + 3 * 16, 7)
    assert [tuple(t.shape) for t in levels] == [(2, 3, 8, 8, 7), (2, 3, 4, 4, 7)]
    # level 0, anchor 1, cell (y=2, x=5): centre (5 + 1) * 8, (2 + 1) * 8; size anchor / 4
    torch.testing.assert_close(decoded[0, 1 * 64 + 2 * 8 + 5],
                               torch.tensor([48.0, 24.0, 16 / 4, 30 / 4, 0.5, 0.5, 0.5]))
    # level 1, anchor 2, cell (y=3, x=0)
    torch.testing.assert_close(decoded[1, 3 * 64 + 2 * 16 + 3 * 4 + 0],
                               torch.tensor([16.0, 64.0, 59 / 4, 119 / 4, 0.5, 0.5, 0.5]))


def test_eval_levels_match_training_output():
    head = IDetect(2, ANCHORS, (8, 16))
    head.set_stride([8, 16])
    xs = _head_inputs()
    train_out = head.train()(xs)
    _, levels = head.eval()(xs)
    for a, b in zip(train_out, levels):
        torch.testing.assert_close(a, b)


def test_iauxdetect_eval_returns_main_levels_only():
    head = IAuxDetect(2, ANCHORS, (8, 16, 8, 16)).eval()
    head.set_stride([8, 16])
    decoded, levels = head(_head_inputs(aux=True))
    assert decoded.shape == (2, 240, 7) and len(levels) == 2


def test_initialize_biases_prior():
    head = IAuxDetect(3, ANCHORS, (8, 16, 8, 16))
    with pytest.raises(NasError):
        head.initialize_biases()
    head.set_stride([8, 16])
    before = [c.bias.detach().clone().view(3, 8) for c in (*head.m, *head.m2)]
    head.initialize_biases()
    after = [c.bias.detach().view(3, 8) for c in (*head.m, *head.m2)]
    for i, (b0, b1) in enumerate(zip(before, after)):
        s = [8, 16][i % 2]
        torch.testing.assert_close(b1[:, 4] - b0[:, 4], torch.full((3,), math.log(8 / (640 / s) ** 2)))
        torch.testing.assert_close(b1[:, 5:] - b0[:, 5:], torch.full((3, 3), math.log(0.6 / 2.01)))
        torch.testing.assert_close(b1[:, :4], b0[:, :4])


def test_small_stack_backward():
    net = nn.Sequential(Conv(3, 8, 3, 2), RepConv(8, 8), SPPCSPC(8, 8), DownC(8, 16), ReOrg())
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 64, 2, 2)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
