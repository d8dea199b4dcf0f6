"""Zero-cost proxies: hand-computed cases, numpy oracles, invariance of the scored model."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import NasError
from nas.zero_cost import (ZERO_COST_PROXIES, compute_proxies, grad_norm, naswot, naswot_kernel,
                           synflow, zen)

torch.set_num_threads(1)

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119]]

# A small two-level detector (strides 8/16) with SiLU, LeakyReLU, RepConv, SPPCSPC and IDetect.
BACKBONE = [
    [-1, 1, "Conv", [16, 3, 2]],                                  # 0  /2
    [-1, 1, "Conv", [32, 3, 2]],                                  # 1  /4
    [-1, 1, "Conv", [32, 3, 2, None, 1, "nn.LeakyReLU(0.1)"]],    # 2  /8
    [-1, 1, "Conv", [64, 3, 2]],                                  # 3  /16
]
HEAD = [
    [-1, 1, "SPPCSPC", [64]],                                     # 4  /16
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],                 # 5  /8
    [[-1, 2], 1, "Concat", [1]],                                  # 6  /8
    [-1, 1, "RepConv", [32, 3, 1]],                               # 7  /8
    [[7, 4], 1, "IDetect", [4, "anchors"]],                       # 8
]


def small_model(width: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    cfg = parse_cfg({"nc": 4, "depth_multiple": 1.0, "width_multiple": width, "anchors": ANCHORS,
                     "backbone": BACKBONE, "head": HEAD}, source="zero_cost_test.yaml")
    return build_model(cfg)


def images(batch: int = 4, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grad": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "dtype": [p.dtype for p in model.parameters()],
    }


def assert_same(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), k
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["dtype"] == after["dtype"]
    for g0, g1 in zip(before["grad"], after["grad"]):
        assert (g0 is None) == (g1 is None)
        if g0 is not None:
            assert torch.equal(g0, g1)


# ---------------------------------------------------------------------------- invariance


@pytest.mark.parametrize("name", sorted(ZERO_COST_PROXIES))
def test_proxy_leaves_model_parameters_buffers_modes_and_flags_unchanged(name):
    model = small_model()
    model.train()
    model.head.eval()                     # mixed modes must survive
    model.layers[0].bn.eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)       # a frozen layer
    params[3].grad = torch.full_like(params[3], 0.5)  # a stale gradient
    before = snapshot(model)
    rng = torch.get_rng_state()
    value = ZERO_COST_PROXIES[name](model, images())
    assert math.isfinite(value)
    assert_same(before, snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())  # zen draws from its own generator
    scores = compute_proxies(model, images(), names=(name,), seed=0)
    assert_same(before, snapshot(model))
    assert torch.equal(rng, torch.get_rng_state())  # compute_proxies forks the RNG
    assert scores[name] == value


def test_compute_proxies_is_deterministic_for_a_seed_and_zen_depends_on_it():
    model, x = small_model(), images()
    a = compute_proxies(model, x, names=("naswot", "synflow", "zen", "grad_norm"), seed=7)
    b = compute_proxies(model, x, names=("naswot", "synflow", "zen", "grad_norm"), seed=7)
    assert a == b and set(a) == {"naswot", "synflow", "zen", "grad_norm"}
    c = compute_proxies(model, x, names=("zen",), seed=8)
    assert c["zen"] != a["zen"]
    assert zen(model, x, seed=7) == a["zen"]


# ---------------------------------------------------------------------------- NASWOT


def test_naswot_kernel_matches_direct_hamming_computation():
    codes = torch.rand(5, 300, generator=torch.Generator().manual_seed(0)) > 0.4
    c = codes.numpy().astype(int)
    hamming = (c[:, None, :] != c[None, :, :]).sum(-1)
    np.testing.assert_array_equal(naswot_kernel(codes).numpy(), c.shape[1] - hamming)


def test_naswot_hand_computed_codes_of_one_relu_layer():
    net = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
    x = torch.tensor([[1.0, 2.0], [-1.0, 1.0], [2.0, -1.0]])
    # pre-activations (1, 2, -1), (-1, 1, -2), (2, -1, 3) → codes 110, 010, 101;
    # Hamming distances d12=1, d13=2, d23=3; K = 3 − d
    k = np.array([[3, 2, 1], [2, 3, 0], [1, 0, 3]], dtype=float)
    assert np.linalg.det(k) == pytest.approx(12.0)
    assert naswot(net, x) == pytest.approx(math.log(12.0), abs=1e-12)
    assert naswot(net, x, normalize=True) == pytest.approx(math.log(12.0) - 3 * math.log(3), abs=1e-12)


def test_naswot_sums_codes_over_activation_modules_against_numpy_oracle():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 8), nn.LeakyReLU(0.1), nn.Linear(8, 2))
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    w = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy()) for m in net[::2]]
    xn = x.double().numpy()
    z1 = xn @ w[0][0].T + w[0][1]
    h1 = z1 / (1 + np.exp(-z1))
    z2 = h1 @ w[1][0].T + w[1][1]
    codes = np.concatenate([z1 > 0, z2 > 0], axis=1).astype(int)
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    _, expected = np.linalg.slogdet(codes.shape[1] - hamming)
    assert naswot(net, x) == pytest.approx(expected, abs=1e-9)


def test_naswot_identical_images_give_singular_kernel():
    model = small_model()
    x = images(3)
    x[2] = x[0]
    assert naswot(model, x) == -math.inf
    with pytest.raises(NasError, match="naswot.*identical activation codes"):
        compute_proxies(model, x, names=("naswot",))


def test_naswot_needs_two_images_and_relu_like_units():
    with pytest.raises(NasError, match="naswot.*at least 2"):
        naswot(small_model(), images(1))
    with pytest.raises(NasError, match="no ReLU-like"):
        naswot(nn.Sequential(nn.Linear(3, 2)), torch.rand(4, 3))


# ---------------------------------------------------------------------------- SynFlow


def test_synflow_two_layer_linear_toy_equals_twice_the_flow():
    net = nn.Sequential(nn.Linear(3, 2, bias=True), nn.ReLU(), nn.Linear(2, 1, bias=False))
    w1 = torch.tensor([[1.0, -2.0, 0.5], [-0.25, 3.0, -1.0]])
    b1 = torch.tensor([-0.5, 2.0])
    w2 = torch.tensor([[-4.0, 0.5]])
    with torch.no_grad():
        net[0].weight.copy_(w1), net[0].bias.copy_(b1), net[2].weight.copy_(w2)
    # R = Σ_j |w2_j| (Σ_k |w1_jk| + |b1_j|) = 4·(3.5 + 0.5) + 0.5·(4.25 + 2) = 19.125;
    # each layer's |θ|·∂R/∂θ sums to R (Euler), so the score is 2R.
    assert synflow(net, torch.rand(5, 3)) == pytest.approx(math.log(2 * 19.125), abs=1e-12)


def test_synflow_conv_toy_removes_batchnorm_and_counts_every_output_pixel():
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                        nn.Conv2d(2, 1, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([2.0, -3.0]).view(2, 1, 1, 1))
        net[1].weight.copy_(torch.tensor([5.0, -7.0]))
        net[1].running_var.fill_(100.0)
        net[1].running_mean.fill_(3.0)
        net[3].weight.copy_(torch.tensor([-1.0, 0.5]).view(1, 2, 1, 1))
    # per pixel flow 1·2 + 0.5·3 = 3.5, over a 3×3 all-ones image R = 31.5; score 2R (BN removed)
    assert synflow(net, torch.rand(8, 1, 3, 3)) == pytest.approx(math.log(63.0), abs=1e-12)


# ---------------------------------------------------------------------------- Zen, grad-norm


def test_zen_is_log_delta_plus_log_batch_std_of_bn_inputs():
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU())
    with torch.no_grad():
        net[0].weight.fill_(2.0)
    shape = (4, 1, 5, 5)
    gen = torch.Generator().manual_seed(11)
    x, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)

    def f(inp):  # the net's train-mode function, written out
        z = 2.0 * inp
        return torch.relu((z - z.mean()) / torch.sqrt(z.var(unbiased=False) + 1e-5))

    delta = (f(x) - f(x + 0.01 * eps)).abs().flatten(1).sum(1).mean()
    expected = math.log(float(delta)) + math.log(float((2.0 * x).std(unbiased=False)))
    assert zen(net, torch.zeros(shape), seed=11, gaussian_init=False) == pytest.approx(expected, rel=1e-5)


def test_grad_norm_with_a_loss_fn_matches_backward_on_a_copy():
    model, x = small_model(), images()

    def loss_fn(outputs, targets):
        return (outputs[0][..., 4] - targets).pow(2).mean()

    reference = copy.deepcopy(model).train()
    loss_fn(reference(x), 0.25).backward()
    expected = sum(float(m.weight.grad.norm()) for m in reference.modules()
                   if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None)
    got = compute_proxies(model, x, names=("grad_norm",),
                          options={"grad_norm": {"loss_fn": loss_fn, "targets": 0.25}})
    assert got["grad_norm"] == pytest.approx(expected, rel=1e-5)
    assert grad_norm(model, x) > 0  # label-free surrogate


# ---------------------------------------------------------------------------- robustness


def test_unknown_proxy_bad_images_and_nan_scores_raise_nas_error():
    model = small_model()
    with pytest.raises(NasError, match="unknown zero-cost proxy 'jacov'"):
        compute_proxies(model, images(), names=("jacov",))
    with pytest.raises(NasError, match="synflow.*floating-point"):
        compute_proxies(model, torch.zeros(2, 3, 64, 64, dtype=torch.uint8), names=("synflow",))
    x = images()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(NasError, match="'grad_norm' gave a non-finite score"):
        compute_proxies(model, x, names=("grad_norm",))
    with pytest.raises(NasError, match="'synflow' failed"):
        compute_proxies(model, torch.rand(2, 5, 64, 64), names=("synflow",))  # wrong channels


# ---------------------------------------------------------------------------- ordering


def test_synflow_naswot_and_zen_grow_with_width():
    """Wider versions of one architecture score higher (SynFlow: more and larger flow paths;
    NASWOT: more units, so a larger Hamming kernel; Zen: larger BN input variance)."""
    x = images(4)
    scores = [compute_proxies(small_model(w), x, names=("naswot", "synflow", "zen"))
              for w in (0.25, 0.5, 1.0)]
    for name in ("naswot", "synflow", "zen"):
        values = [s[name] for s in scores]
        assert values[0] < values[1] < values[2], (name, values)
