"""nas.fuse: eval-mode equivalence per block, hand-computed fused parameter counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nas.blocks import SPPCSPC, Conv, DownC, IAuxDetect, IDetect, RepConv
from nas.fuse import fuse, identity_kernel

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@torch.no_grad()
def randomize(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics/affine values and implicit terms; returns model in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
        elif type(m).__name__ in ("ImplicitA", "ImplicitM"):
            m.implicit.add_(torch.randn_like(m.implicit) * 0.3)
    return model.eval()


def assert_equivalent(model: nn.Module, *inputs) -> nn.Module:
    randomize(model)
    with torch.no_grad():
        expected = model(*inputs)
        fused = fuse(model)
        got = fused(*inputs)
    for a, b in zip(_flat(expected), _flat(got)):
        assert (a - b).abs().max().item() <= 1e-4
    return fused


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flat(item)]


# ---------------------------------------------------------------- Conv
@pytest.mark.parametrize("c1,c2,k,s,g,act", [(3, 16, 3, 1, 1, True), (8, 16, 3, 2, 4, nn.LeakyReLU(0.1)),
                                            (8, 4, 1, 1, 1, False)])
def test_conv_fuse(c1, c2, k, s, g, act):
    fused = assert_equivalent(Conv(c1, c2, k, s, None, g, act), torch.randn(2, c1, 8, 8))
    assert isinstance(fused.bn, nn.Identity) and fused.conv.bias is not None
    assert n_params(fused) == c1 // g * c2 * k * k + c2  # BN gone, bias added


# ---------------------------------------------------------------- RepConv
@pytest.mark.parametrize("c1,c2,s,g", [(8, 8, 1, 1), (8, 16, 1, 1), (8, 8, 2, 1), (8, 8, 1, 4),
                                       (8, 16, 1, 2), (6, 6, 1, 6)])
def test_repconv_fuse(c1, c2, s, g):
    m = RepConv(c1, c2, 3, s, None, g)
    assert (m.rbr_identity is not None) == (c1 == c2 and s == 1)
    fused = assert_equivalent(m, torch.randn(2, c1, 9, 9))
    assert fused.rbr_dense is None and fused.rbr_1x1 is None and fused.rbr_identity is None
    assert fused.rbr_reparam.kernel_size == (3, 3) and fused.deploy
    assert n_params(fused) == c1 // g * c2 * 9 + c2  # one 3×3 with bias


def test_fused_repconv_loads_into_deploy_form():
    m = randomize(RepConv(8, 8, g=2))
    deploy = RepConv(8, 8, g=2, deploy=True).eval()
    deploy.load_state_dict(fuse(m).state_dict())
    x = torch.randn(1, 8, 7, 7)
    with torch.no_grad():
        assert (deploy(x) - m(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_identity_kernel_copies_input(groups):
    x = torch.randn(1, 8, 5, 5)
    y = nn.functional.conv2d(x, identity_kernel(8, groups, x), padding=1, groups=groups)
    torch.testing.assert_close(y, x)


# ---------------------------------------------------------------- composites
def test_sppcspc_fuse():
    fused = assert_equivalent(SPPCSPC(16, 8), torch.randn(1, 16, 8, 8))
    assert n_params(fused) == 1968 - (6 * 8 + 8)  # each of the 7 Convs drops c_out params


def test_stack_fuse():
    net = nn.Sequential(Conv(3, 8, 3, 2), RepConv(8, 8), DownC(8, 16), RepConv(16, 16, g=4))
    before = n_params(net)
    fused = assert_equivalent(net, torch.randn(2, 3, 16, 16))
    bn_drop = 8 + 8 + 8 + 8  # Convs: stem, DownC cv1/cv2/cv3 (each c_out)

    def rep_drop(c: int, g: int) -> int:  # 1×1 conv+BN, dense BN, identity BN go; a bias comes
        return (c // g * c + 2 * c) + 2 * c + 2 * c - c

    assert n_params(fused) == before - bn_drop - rep_drop(8, 1) - rep_drop(16, 4)


# ---------------------------------------------------------------- heads
def _head(cls):
    ch = (8, 16, 8, 16) if cls is IAuxDetect else (8, 16)
    head = cls(2, ANCHORS, ch)
    head.set_stride([8, 16])
    xs = [torch.randn(2, c, 8 // (1 + i % 2), 8 // (1 + i % 2)) for i, c in enumerate(ch)]
    return head, xs


@pytest.mark.parametrize("cls", [IDetect, IAuxDetect])
def test_implicit_head_fuse_keeps_implicit_params(cls):
    head, xs = _head(cls)
    before = n_params(head)
    fused = assert_equivalent(head, xs)
    assert n_params(fused) == before  # implicit params stay attached, as in YOLOv7
    assert fused.implicit_folded and len(fused.ia) == len(fused.im) == 2
    with torch.no_grad():  # ...but are no longer applied
        ref = fused(xs)[0]
        for mod in (*fused.ia, *fused.im):
            mod.implicit.mul_(3.0)
        torch.testing.assert_close(fused(xs)[0], ref)


# ---------------------------------------------------------------- fuse() contract
def test_fuse_not_inplace_leaves_original_untouched():
    net = randomize(nn.Sequential(Conv(3, 8, 3), RepConv(8, 8)))
    head, _ = _head(IDetect)
    randomize(head)
    for model in (net, head):
        snapshot = {k: v.clone() for k, v in model.state_dict().items()}
        fused = fuse(model)
        assert fused is not model
        state = model.state_dict()
        assert state.keys() == snapshot.keys()
        assert all(torch.equal(state[k], snapshot[k]) for k in snapshot)
    assert isinstance(net[0].bn, nn.BatchNorm2d) and net[1].rbr_dense is not None
    assert net[1].rbr_reparam is None and not head.implicit_folded


def test_fuse_inplace_and_idempotent():
    net = randomize(nn.Sequential(Conv(3, 8, 3), RepConv(8, 8)))
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        expected = net(x)
        assert fuse(net, inplace=True) is net
        once = n_params(net)
        fuse(net, inplace=True)
        assert n_params(net) == once
        assert (net(x) - expected).abs().max().item() <= 1e-4


def test_fused_model_still_trains():
    fused = fuse(randomize(nn.Sequential(Conv(3, 8, 3), RepConv(8, 8)))).train()
    fused(torch.randn(2, 3, 6, 6)).mean().backward()
    assert all(p.grad is not None for p in fused.parameters())
