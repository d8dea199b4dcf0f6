"""Grid of candidate compound-scaling coefficients (Tan & Le 2019, §3.3 / §4 "STEP 1").

The paper fixes φ = 1 and grid-searches α, β, γ under α·β²·γ² ≈ 2, α, β, γ ≥ 1. This module only
enumerates the candidates; evaluating them (training/measuring a φ = 1 model) is someone else's
job.

Default grid size: with ``step=0.05, max_value=2.0, target=2.0, tolerance=0.1`` each axis has the
21 values 1.00, 1.05, …, 2.00 (9,261 triples) and **109** of them satisfy
``|α·β²·γ² − 2| ≤ 0.1``. The constraint bounds β and γ by itself (β² ≤ 2.1 ⇒ β, γ ≤ 1.449, so
at most 1.40 on this grid), so ``max_value`` effectively caps α only. EfficientNet's own (1.2, 1.1, 1.15) is a member
(product 1.92027).

Pure Python; no torch.
"""
from __future__ import annotations

import math
from numbers import Real

from nas.errors import ScalingError

from .coefficients import Coefficients

__all__ = ["coefficient_grid", "MAX_AXIS_POINTS"]

#: Refuse grids finer than this many values per axis (the triple loop is cubic).
MAX_AXIS_POINTS = 1000

_DIGITS = 10  # grid values are rounded to this many decimals (1 + 3·0.05 → 1.15, not 1.1500000000000001)
_EPS = 1e-12  # slack on the tolerance test so that float noise never drops a boundary member


def _positive(name: str, value, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ScalingError(f"grid {name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ScalingError(f"grid {name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return float(value)


def coefficient_grid(
    step: float = 0.05, max_value: float = 2.0, target: float = 2.0, tolerance: float = 0.1
) -> list[Coefficients]:
    """All (α, β, γ) on the grid ``1, 1+step, …, ≤ max_value`` with |α·β²·γ² − target| ≤ tolerance.

    Order is deterministic: ascending α, then β, then γ (lexicographic). No duplicates (each
    triple is generated once). Raises :class:`ScalingError` for a non-positive ``step``,
    ``max_value < 1``, ``target < 1`` (unreachable with coefficients ≥ 1), a negative
    ``tolerance``, or more than :data:`MAX_AXIS_POINTS` values per axis.
    """
    step = _positive("step", step)
    max_value = _positive("max_value", max_value)
    target = _positive("target", target)
    tolerance = _positive("tolerance", tolerance, allow_zero=True)
    if max_value < 1:
        raise ScalingError(f"grid max_value must be >= 1, got {max_value}")
    if target < 1:
        raise ScalingError(f"grid target must be >= 1 (alpha, beta, gamma >= 1), got {target}")
    n = math.floor((max_value - 1) / step + 1e-9) + 1
    if n > MAX_AXIS_POINTS:
        raise ScalingError(
            f"grid has {n} values per axis (step {step:g} up to {max_value:g}); "
            f"at most {MAX_AXIS_POINTS} allowed"
        )
    axis = [round(1 + i * step, _DIGITS) for i in range(n)]
    lo, hi = target - tolerance - _EPS, target + tolerance + _EPS
    out: list[Coefficients] = []
    for a in axis:
        if a > hi:
            break
        for b in axis:
            ab = a * b * b
            if ab > hi:
                break
            for g in axis:
                p = ab * g * g
                if p > hi:
                    break
                if p >= lo:
                    out.append(Coefficients(a, b, g))
    return out
