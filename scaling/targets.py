"""Find the compound exponent φ that meets a compute budget (GFLOPs, latency, …).

EfficientNet picks integer φ (Tan & Le 2019, §3.3); y7nas also lets a user ask for a budget
("the largest model under 150 GFLOPs") and solves for a continuous φ. The cost of the model
scaled by φ is supplied by the caller as ``evaluate(phi) -> cost`` — this module never builds
a model, so it stays pure.

Shape of the cost function. Channels, repeats and resolution are integer-rounded
(``scaling.rounding``), so ``evaluate`` is **piecewise constant** in φ with upward jumps: it is
non-decreasing for GFLOPs / params, roughly so for measured latency. The search therefore:

1. brackets: ``evaluate(0)`` must meet the target (else ``None``); if ``evaluate(phi_max)``
   meets it, ``phi_max`` is the answer (the search never extrapolates past ``phi_max``);
2. bisects the bracket ``[lo, hi]`` keeping the invariant *lo is feasible, hi is not*;
3. returns **lo**, never the midpoint: on a step function the midpoint of a bracket that
   straddles a jump may cost a whole step more than the target, while lo is a φ that was
   actually evaluated and met it. The answer lies within ``tol`` below the first jump past the
   target (the right end of the feasible plateau), which is the largest feasible φ up to ``tol``
   whether or not the jump point itself is feasible.

If ``evaluate`` is not monotone the result is still a feasible φ whose neighbour ``tol`` above it
is infeasible (a local boundary), not necessarily the global largest one.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from numbers import Real

from nas.errors import ScalingError

__all__ = ["phi_for_target", "phis_for_targets"]


def _finite(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ScalingError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ScalingError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def _memo(evaluate: Callable[[float], float]) -> Callable[[float], float]:
    """Wrap ``evaluate`` so each φ is evaluated once and its result validated."""
    cache: dict[float, float] = {}

    def cost(phi: float) -> float:
        if phi not in cache:
            value = evaluate(phi)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ScalingError(f"cost at phi={phi:g} is not a finite number: {value!r}")
            cache[phi] = float(value)
        return cache[phi]

    return cost


def _solve(cost: Callable[[float], float], target: float, phi_max: float, tol: float) -> float | None:
    if cost(0.0) > target:
        return None
    if cost(phi_max) <= target:
        return phi_max
    lo, hi = 0.0, phi_max  # invariant: cost(lo) <= target < cost(hi)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if mid <= lo or mid >= hi:  # float resolution reached
            break
        if cost(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def phi_for_target(
    evaluate: Callable[[float], float], target: float, phi_max: float = 8.0, tol: float = 1e-3
) -> float | None:
    """Largest φ in ``[0, phi_max]`` (to within ``tol``) with ``evaluate(φ) <= target``.

    ``evaluate`` maps φ to a cost in the same unit as ``target`` (say which: GFLOPs = 2 × MACs
    in YOLO convention, EfficientNet "FLOPS" = MACs). Returns ``None`` when even φ = 0 costs more
    than ``target``. The returned φ has always been evaluated and met the target. Uses about
    ``2 + log2(phi_max / tol)`` evaluations (15 for the defaults). See the module docstring for
    how step-wise costs are handled.
    """
    target = _finite("target", target)
    phi_max = _finite("phi_max", phi_max)
    tol = _finite("tol", tol, positive=True)
    return _solve(_memo(evaluate), target, phi_max, tol)


def phis_for_targets(
    evaluate: Callable[[float], float],
    targets: Iterable[float],
    phi_max: float = 8.0,
    tol: float = 1e-3,
) -> tuple[float | None, ...]:
    """:func:`phi_for_target` for each of ``targets``, in order; evaluations are shared.

    Every search bisects the same ``[0, phi_max]`` interval, so the first probes (φ = 0,
    ``phi_max``, ``phi_max/2``, …) coincide and are evaluated once across all targets.
    """
    phi_max = _finite("phi_max", phi_max)
    tol = _finite("tol", tol, positive=True)
    checked = [_finite(f"target {i}", t) for i, t in enumerate(targets, start=1)]
    cost = _memo(evaluate)
    return tuple(_solve(cost, t, phi_max, tol) for t in checked)
