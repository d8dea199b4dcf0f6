"""Compound-scaling coefficients (α, β, γ) and compound exponents φ.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (ICML 2019),
§3.3, Eq. 3: depth d = α^φ, width w = β^φ, resolution r = γ^φ, subject to α·β²·γ² ≈ 2 and
α, β, γ ≥ 1. Since a conv net's FLOPs are proportional to d·w²·r², FLOPs then grow by
(α·β²·γ²)^φ ≈ 2^φ. A grid search at φ = 1 on EfficientNet-B0 gave α = 1.2, β = 1.1, γ = 1.15
(paper §4, "STEP 1"). These are *ideal* multipliers: integer rounding of channels, repeats and
resolution (``scaling.rounding``) makes the realised FLOPs differ, so the FLOPs multiplier here
is the continuous model's only.

Pure Python; no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from nas.errors import ScalingError

__all__ = ["Coefficients", "EFFICIENTNET", "MAX_PHI", "parse_phi_list"]

#: Largest compound exponent accepted: 2^10 ≈ 1000× the base FLOPs is far past any real family,
#: and larger values only overflow or exhaust memory.
MAX_PHI = 10.0
#: Largest α, β or γ accepted (the paper's are 1.1–1.2; 10 already makes φ = 1 a 10× model).
MAX_COEFFICIENT = 10.0


def _check_phi(phi) -> float:
    if isinstance(phi, bool) or not isinstance(phi, Real) or not math.isfinite(phi):
        raise ScalingError(f"phi must be a finite number, got {phi!r}")
    if not 0 <= phi <= MAX_PHI:
        raise ScalingError(f"phi must be between 0 and {MAX_PHI:g}, got {phi}")
    return float(phi)


def _power(name: str, base: float, phi: float) -> float:
    try:
        return base**phi
    except OverflowError:
        raise ScalingError(f"{name}^phi overflows at phi={phi:g}") from None


@dataclass(frozen=True)
class Coefficients:
    """Per-dimension bases: ``alpha`` (depth), ``beta`` (width), ``gamma`` (resolution).

    Each must be a finite number ≥ 1 (Tan & Le 2019, Eq. 3) and at most :data:`MAX_COEFFICIENT`;
    otherwise :class:`ScalingError`.
    """

    alpha: float
    beta: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                raise ScalingError(f"coefficient {name} must be a finite number, got {value!r}")
            if not 1 <= value <= MAX_COEFFICIENT:
                raise ScalingError(f"coefficient {name} must be between 1 and {MAX_COEFFICIENT:g}, "
                                   f"got {value}")
            object.__setattr__(self, name, float(value))

    @property
    def product(self) -> float:
        """α·β²·γ² — the FLOPs growth per unit of φ (≈ 2 by the paper's constraint)."""
        return self.alpha * self.beta**2 * self.gamma**2

    def at(self, phi: float) -> tuple[float, float, float]:
        """(depth, width, resolution) multipliers (α^φ, β^φ, γ^φ) for ``phi`` ≥ 0."""
        phi = _check_phi(phi)
        return (_power("alpha", self.alpha, phi), _power("beta", self.beta, phi),
                _power("gamma", self.gamma, phi))

    def flops_multiplier(self, phi: float) -> float:
        """Ideal FLOPs ratio to the base model, (α·β²·γ²)^φ (before any integer rounding)."""
        return _power("alpha*beta^2*gamma^2", self.product, _check_phi(phi))

    def __str__(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:g}, gamma={self.gamma:g}"


#: The paper's coefficients from the φ = 1 grid search on B0 (Tan & Le 2019, §4).
#: product = 1.2 · 1.1² · 1.15² = 1.92027 (not exactly 2).
EFFICIENTNET = Coefficients(1.2, 1.1, 1.15)


def parse_phi_list(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of compound exponents, e.g. ``"0,1,2,3"`` → (0.0, 1.0, 2.0, 3.0).

    Whitespace around items is ignored; order is kept. Raises :class:`ScalingError` naming the
    offending item (1-based position and text) when the list is empty, or an item is empty,
    non-numeric, non-finite, negative, above :data:`MAX_PHI` or a repeat of an earlier value.
    """
    if not isinstance(text, str):
        raise ScalingError(f"phi list must be a string such as '0,1,2', got {text!r}")
    if not text.strip():
        raise ScalingError("phi list is empty; give comma-separated values such as '0,1,2'")
    phis: list[float] = []
    for pos, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if not item:
            raise ScalingError(f"phi list item {pos} is empty in {text!r}")
        try:
            value = float(item)
        except ValueError:
            raise ScalingError(f"phi list item {pos} {item!r} is not a number") from None
        if not math.isfinite(value):
            raise ScalingError(f"phi list item {pos} {item!r} is not finite")
        if value < 0:
            raise ScalingError(f"phi list item {pos} {item!r} is negative; phi must be >= 0")
        if value > MAX_PHI:
            raise ScalingError(f"phi list item {pos} {item!r} is above the largest phi, {MAX_PHI:g}")
        if value in phis:
            raise ScalingError(f"phi list item {pos} {item!r} repeats an earlier value")
        phis.append(value + 0.0)  # normalises -0.0 to 0.0
    return tuple(phis)
