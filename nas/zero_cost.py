"""Training-free ("zero-cost") architecture scores, computed on one batch of images.

Every proxy has the signature ``proxy(model, images, *, seed=0, **options) -> float`` and works on
a deep copy of ``model``: the caller's parameters, buffers, gradients, ``training`` flags and
``requires_grad`` flags are left exactly as they were, whatever the proxy does to its copy (batch
statistics, weight re-initialisation, ``|θ|``, float64). ``images`` is a float tensor
``(B, C, H, W)`` (any ``(B, …)`` input the model accepts); it is moved to the model's device.

Proxies (higher = predicted better, within one search space):

``naswot``
    Mellor, Turner, Storkey & Crowley, "Neural Architecture Search without Training", ICML 2021.
    ``log|det K|`` of the Hamming kernel of binary activation codes. Needs ``B ≥ 2``.
``synflow``
    Tanaka, Kunin, Yamins & Ganguli, "Pruning neural networks without any data by iteratively
    conserving synaptic flow", NeurIPS 2020; used as a NAS proxy by Abdelfattah et al. (ICLR 2021).
    ``log Σ|θ ⊙ ∂R/∂θ|``, data-independent (only the image shape is used).
``zen``
    Lin, Wang, Sun, Chen, Sun, Qian, Li & Jin, "Zen-NAS: A Zero-Shot NAS for High-Performance
    Image Recognition", ICCV 2021. Expressivity of the features entering the detect head under a
    small Gaussian input perturbation, plus the BN-variance correction; label-free and
    data-independent (Gaussian inputs of the batch's shape).
``grad_norm``
    Abdelfattah, Mehrotra, Dudziak & Lane, "Zero-Cost Proxies for Lightweight NAS", ICLR 2021.
    ``Σ_layers ‖∂L/∂W‖₂`` over conv/linear weights for a loss ``L`` (label-free surrogate unless a
    ``loss_fn`` is given).

:func:`compute_proxies` runs several of them deterministically (each inside a
:func:`torch.random.fork_rng` seeded with ``seed``, so the global RNG state is untouched) and
turns a NaN/±inf score into a :class:`~nas.errors.NasError` naming the proxy. The individual
functions return the mathematical value, which for NASWOT may be ``-inf`` (singular kernel).
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

from nas.errors import NasError

__all__ = ["ZERO_COST_PROXIES", "compute_proxies", "grad_norm", "naswot", "synflow", "zen"]

#: Modules whose input sign defines a NASWOT activation code (ReLU-like: zero/small for
#: negative pre-activations, roughly linear for positive ones).
RELU_LIKE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.Hardswish, nn.Mish, nn.GELU, nn.ELU, nn.CELU,
    nn.SELU, nn.PReLU, nn.RReLU, nn.Softplus,
)


# --------------------------------------------------------------------------------------------
# helpers


def _check_images(images: Any, proxy: str, min_batch: int = 1) -> None:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise NasError(f"zero-cost proxy {proxy!r}: images must be a floating-point tensor, "
                       f"got {type(images).__name__}")
    if images.dim() < 2 or images.shape[0] < min_batch:
        raise NasError(f"zero-cost proxy {proxy!r}: needs a batch of at least {min_batch} "
                       f"image(s) shaped (B, C, H, W), got shape {tuple(images.shape)}")


def _working_copy(model: nn.Module) -> nn.Module:
    """A deep copy the proxy may mutate freely; the caller's model is never touched."""
    return copy.deepcopy(model)


def _device_dtype(model: nn.Module, images: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    for p in model.parameters():
        return p.device, p.dtype
    return images.device, images.dtype


def _train_without_dropout(net: nn.Module) -> None:
    """Train mode (BN uses batch statistics; heads return raw levels) but dropout disabled."""
    net.train()
    for m in net.modules():
        if isinstance(m, _DropoutNd):
            m.eval()


def _tensors(out: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) model output: a tensor, or lists/tuples of them."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, Mapping):
        return [t for o in out.values() for t in _tensors(o)]
    return []


def _remove_batchnorm(module: nn.Module) -> None:
    """Replace every BatchNorm submodule by ``nn.Identity`` (in place)."""
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _remove_batchnorm(child)


def _feature_module(net: nn.Module) -> nn.Module | None:
    """The detect head, whose inputs are the 'pre-head features', or None for other models."""
    head = getattr(net, "head", None)
    return head if isinstance(head, nn.Module) else None


@contextmanager
def _hooks(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------
# NASWOT

#: float32 sums of 0/1 values stay exact up to this many terms
_EXACT_F32 = 2 ** 24


def naswot_kernel(codes: torch.Tensor) -> torch.Tensor:
    """Hamming kernel ``K[i, j] = N_A − d_H(c_i, c_j)`` of binary codes ``(B, N_A)``, in float64.

    ``K = c cᵀ + (1 − c)(1 − c)ᵀ = N_A − r_i − r_j + 2·c cᵀ`` with ``r_i = Σ c_i`` (the
    authors' formulation). ``c cᵀ`` is one float32 matmul of 0/1 values — exact, since it is
    done in chunks of at most 2²⁴ units — accumulated in float64.
    """
    c = codes.flatten(1).to(torch.float32)
    units = c.shape[1]
    gram = torch.zeros(c.shape[0], c.shape[0], dtype=torch.float64, device=c.device)
    for start in range(0, units, _EXACT_F32):
        part = c[:, start:start + _EXACT_F32]
        gram += (part @ part.T).double()
    r = gram.diagonal()
    return units - r[:, None] - r[None, :] + 2 * gram


def naswot(model: nn.Module, images: torch.Tensor, *, seed: int = 0,
           normalize: bool = False) -> float:
    """NASWOT score ``log|det K_H|`` (Mellor et al., ICML 2021, eq. 2 and the authors' code).

    For image ``i`` the binary code ``c_i`` concatenates, over every call of a ReLU-like
    activation module (:data:`RELU_LIKE`; our detectors use SiLU or LeakyReLU, so the "ReLU is
    on" indicator is generalised to *pre-activation > 0*, read by a forward pre-hook on the
    activation's input), one bit per unit. ``K_H[i, j] = N_A − d_H(c_i, c_j)`` summed over all
    ``N_A`` units, and the score is ``log|det K_H|`` from :func:`torch.linalg.slogdet` in float64,
    which cannot overflow however many units the model has (entries are exact integer counts).

    The copy runs in train mode, i.e. BatchNorm uses the batch's own statistics, as in the
    authors' implementation (and the caller's running statistics are untouched).

    * The batch must hold at least 2 images (``B = 1`` gives a 1×1 kernel, a constant
      ``log N_A``); :class:`NasError` otherwise. The score depends on ``B`` (roughly
      ``B·log N_A`` plus a diversity term), so compare models only at the same batch size.
    * Two images with identical codes (e.g. identical images) make ``K_H`` singular: the
      score is then ``-inf`` (the worst possible value); :func:`compute_proxies` reports that as
      an error.
    * ``normalize=True`` returns ``log|det(K_H / N_A)|`` = score − ``B·log N_A`` ∈ (−∞, 0] (a
      unit-diagonal kernel), which removes the plain "more units" term.

    ``seed`` is accepted for the common proxy signature; the score is deterministic.
    """
    _check_images(images, "naswot", min_batch=2)
    net = _working_copy(model)
    _train_without_dropout(net)
    device, dtype = _device_dtype(net, images)
    batch = images.shape[0]
    kernel = torch.zeros(batch, batch, dtype=torch.float64, device=device)
    units = 0

    def hook(_module: nn.Module, inputs: tuple) -> None:
        nonlocal kernel, units
        x = inputs[0].detach()
        code = (x > 0).flatten(1)
        kernel += naswot_kernel(code)
        units += code.shape[1]

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, RELU_LIKE)]
    if not handles:
        raise NasError("zero-cost proxy 'naswot': the model has no ReLU-like activation modules "
                       f"({', '.join(t.__name__ for t in RELU_LIKE)})")
    with _hooks(handles), torch.no_grad():
        net(images.to(device=device, dtype=dtype))
    _sign, logabs = torch.linalg.slogdet(kernel)
    score = float(logabs)
    if normalize:
        score -= batch * math.log(units)
    return score


# --------------------------------------------------------------------------------------------
# SynFlow


def synflow(model: nn.Module, images: torch.Tensor, *, seed: int = 0) -> float:
    """log-SynFlow: ``log Σ_θ |θ ⊙ ∂R/∂θ|`` (Tanaka et al., NeurIPS 2020, eq. 4).

    On a float64 copy: every parameter is replaced by ``|θ|``; every BatchNorm layer is
    **removed** (replaced by identity), as in the zero-cost-proxy implementation of Abdelfattah
    et al. (ICLR 2021, ``bn=False`` for synflow), so the score depends on the architecture and
    the weights only, never on batch or running statistics. The input is one all-ones image of the
    batch's shape ``(1, C, H, W)`` (only the shape of ``images`` is used); the copy runs in train
    mode without dropout, so a detect head returns its raw levels, and ``R`` is the sum of every
    output element. The sum over all parameters (conv, BN-free head, biases, implicit terms) is
    returned as a natural log because raw SynFlow spans hundreds of orders of magnitude across
    model sizes; float64 keeps yolov7-size models finite, a deeper/wider model whose flow
    overflows float64 gives ``inf`` (reported as an error by :func:`compute_proxies`).

    For a bias-free positively-homogeneous chain of ``L`` layers, Euler's theorem gives
    ``Σ|θ ⊙ ∂R/∂θ| = L·R`` exactly (each layer's parameters contribute ``R``) — the hand-checked
    case in the tests. ``seed`` is accepted for the common signature; the score is deterministic.
    """
    _check_images(images, "synflow")
    net = _working_copy(model)
    _remove_batchnorm(net)
    net.double()
    _train_without_dropout(net)
    device, _ = _device_dtype(net, images)
    params = list(net.parameters())
    if not params:
        raise NasError("zero-cost proxy 'synflow': the model has no parameters")
    with torch.no_grad():
        for p in params:
            p.abs_()
    for p in params:
        p.requires_grad_(True)
    ones = torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=device)
    with torch.enable_grad():
        r = sum(t.sum() for t in _tensors(net(ones)))
        grads = torch.autograd.grad(r, params, allow_unused=True)
    total = sum(float((p.detach() * g).abs().sum()) for p, g in zip(params, grads) if g is not None)
    return math.log(total) if total > 0 else -math.inf


# --------------------------------------------------------------------------------------------
# Zen-score


def _gaussian_init(net: nn.Module, generator: torch.Generator) -> None:
    """Zen-NAS's re-initialisation: conv/linear weights N(0, 1), biases 0; norm γ=1, β=0."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, 1.0, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()


def zen(model: nn.Module, images: torch.Tensor, *, seed: int = 0, alpha: float = 0.01,
        gaussian_init: bool = True) -> float:
    """Zen-score (Lin et al., ICCV 2021, Algorithm 1 / eq. 7), label-free and data-free.

    ``Zen = log Δ + Σ_i log σ̄_i`` where, on a copy in train mode (BN on batch statistics):

    * weights are re-drawn as in Zen-NAS (conv/linear ``N(0, 1)``, BN ``γ=1, β=0``) unless
      ``gaussian_init=False``, from a generator seeded with ``seed``;
    * ``x, ε ~ N(0, 1)`` of the batch's shape (only the shape of ``images`` is used);
    * ``f`` = every feature map entering the detect head (for IAuxDetect its auxiliary inputs
      too; for a model without ``.head``, its output tensors);
      ``Δ = mean_batch Σ_{levels, c, h, w} |f(x) − f(x + α·ε)|`` with ``α = 0.01``;
    * ``σ̄_i = sqrt(mean_c Var_batch[BN_i input]_c)`` for each BatchNorm call during the
      unperturbed pass — the mini-batch standard deviation the paper defines (Zen-NAS's code
      reads it back from ``running_var``).

    Higher is better; the BN term makes the score grow with fan-in/width even though BN
    normalises the features.
    """
    _check_images(images, "zen")
    net = _working_copy(model)
    _train_without_dropout(net)
    device, dtype = _device_dtype(net, images)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    if gaussian_init:
        _gaussian_init(net, gen)
    x = torch.randn(images.shape, generator=gen, device=device, dtype=dtype)
    eps = torch.randn(images.shape, generator=gen, device=device, dtype=dtype)

    captured: list[torch.Tensor] = []
    log_sigma: list[float] = []
    record_bn = True
    head = _feature_module(net)

    def head_hook(_module: nn.Module, inputs: tuple) -> None:
        captured.extend(_tensors(inputs))

    def bn_hook(_module: nn.Module, inputs: tuple) -> None:
        if record_bn:
            z = inputs[0].detach()
            dims = [d for d in range(z.dim()) if d != 1]  # all but the channel axis
            var = z.var(dim=dims, unbiased=False).double().mean()
            log_sigma.append(0.5 * math.log(float(var)) if float(var) > 0 else -math.inf)

    handles = [m.register_forward_pre_hook(bn_hook) for m in net.modules() if isinstance(m, _BatchNorm)]
    if head is not None:
        handles.append(head.register_forward_pre_hook(head_hook))

    def features(inp: torch.Tensor) -> list[torch.Tensor]:
        captured.clear()
        out = net(inp)
        return list(captured) if head is not None else _tensors(out)

    with _hooks(handles), torch.no_grad():
        f1 = features(x)
        record_bn = False
        f2 = features(x + alpha * eps)
    if not f1:
        raise NasError("zero-cost proxy 'zen': the model produced no feature tensors")
    per_image = sum((a.double() - b.double()).abs().flatten(1).sum(1) for a, b in zip(f1, f2))
    delta = float(per_image.mean())
    if delta <= 0:
        return -math.inf
    return math.log(delta) + sum(log_sigma)


# --------------------------------------------------------------------------------------------
# grad-norm


def squared_output_loss(outputs: Any, targets: Any = None) -> torch.Tensor:
    """Label-free surrogate loss: mean of the squared raw head outputs (all levels together)."""
    tensors = _tensors(outputs)
    return sum(t.pow(2).sum() for t in tensors) / sum(t.numel() for t in tensors)


def grad_norm(model: nn.Module, images: torch.Tensor, *, seed: int = 0,
              loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
              targets: Any = None) -> float:
    """grad-norm ``Σ_layers ‖∂L/∂W_l‖₂`` (Abdelfattah et al., ICLR 2021).

    As in the authors' implementation the sum runs over the weight tensors of ``nn.Conv2d`` and
    ``nn.Linear`` layers (one L2 norm per layer). The copy runs in train mode (BN on batch
    statistics, a detect head returning raw levels); ``L = loss_fn(outputs, targets)``. The paper
    uses the task's training loss on labelled data; **without a ``loss_fn`` this uses a
    label-free surrogate**, :func:`squared_output_loss` (mean of the squared raw head outputs),
    so the score then measures gradient magnitude of the untrained outputs, not of the detection
    objective. Returned raw (not logged), as in the paper.
    """
    _check_images(images, "grad_norm")
    net = _working_copy(model)
    _train_without_dropout(net)
    device, dtype = _device_dtype(net, images)
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not weights:
        raise NasError("zero-cost proxy 'grad_norm': the model has no conv or linear layers")
    for p in net.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        out = net(images.to(device=device, dtype=dtype))
        loss = (loss_fn or squared_output_loss)(out, targets)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise NasError("zero-cost proxy 'grad_norm': loss_fn must return a scalar tensor")
        grads = torch.autograd.grad(loss.reshape(()), weights, allow_unused=True)
    return float(sum(g.double().norm() for g in grads if g is not None))


# --------------------------------------------------------------------------------------------
# registry


#: name → proxy; each is ``proxy(model, images, *, seed=0, **options) -> float``.
ZERO_COST_PROXIES: dict[str, Callable[..., float]] = {
    "naswot": naswot,
    "synflow": synflow,
    "zen": zen,
    "grad_norm": grad_norm,
}


def _rng_devices(model: nn.Module) -> list[int]:
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def compute_proxies(model: nn.Module, images: torch.Tensor,
                    names: Sequence[str] = ("naswot", "synflow", "zen"), seed: int = 0,
                    options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, float]:
    """Score ``model`` with each proxy in ``names``; deterministic for a given ``seed``.

    Each proxy runs inside :func:`torch.random.fork_rng` after ``torch.manual_seed(seed)`` (so
    any randomness is reproducible and the caller's global RNG state is restored) and receives
    ``seed`` plus ``options.get(name, {})`` as keyword arguments (e.g.
    ``options={"grad_norm": {"loss_fn": loss, "targets": t}}``). The model is left unchanged.

    Raises :class:`NasError` for an unknown proxy name, bad images, a forward pass that fails, or
    a score that is NaN or ±inf (the message names the proxy; for NASWOT ``-inf`` means two
    images have identical activation codes).
    """
    if isinstance(names, str):
        names = (names,)
    unknown = [n for n in names if n not in ZERO_COST_PROXIES]
    if unknown:
        raise NasError(f"unknown zero-cost proxy {unknown[0]!r} "
                       f"(known: {', '.join(ZERO_COST_PROXIES)})")
    options = options or {}
    scores: dict[str, float] = {}
    for name in names:
        with torch.random.fork_rng(devices=_rng_devices(model)):
            torch.manual_seed(seed)
            try:
                value = ZERO_COST_PROXIES[name](model, images, seed=seed, **dict(options.get(name, {})))
            except NasError:
                raise
            except (RuntimeError, ValueError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise NasError(f"zero-cost proxy {name!r} failed: {first}") from None
        if not math.isfinite(value):
            hint = " (singular kernel: two images have identical activation codes)" \
                if name == "naswot" and value == -math.inf else ""
            raise NasError(f"zero-cost proxy {name!r} gave a non-finite score {value}{hint}")
        scores[name] = float(value)
    return scores
