"""The hand design at the user's budget: a preset compound-scaled *down* until it fits.

The search is judged against the hand design of the same cost. When the space's preset costs
more than the budget, it is shrunk with the project's own compound scaler at the deployment
size: depth ×α^φ and width ×β^φ with φ < 0 (the resolution stays: the budget is measured at the
size the model is deployed at). Costs are step-wise in φ (channels round to multiples of 8,
chains to whole convs), so :func:`shrink_phi` bisects for the *smallest* shrink that fits, and
returns a φ that was evaluated and met the limit.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from nas.errors import ScalingError
from nas.genome import Genome
from scaling.coefficients import Coefficients
from scaling.compound import scale_genome

#: the furthest a baseline is shrunk (β^-8 ≈ 0.47 of the width with EfficientNet's β = 1.1)
PHI_FLOOR = -12.0


def shrink_phi(cost: Callable[[float], float], limit: float, phi_floor: float = PHI_FLOOR,
               tol: float = 1e-3) -> float:
    """The largest φ in ``[phi_floor, 0]`` (to ``tol``) with ``cost(φ) <= limit``, for a cost
    that grows with φ. 0 when φ = 0 fits already; :class:`ScalingError` when even ``phi_floor``
    does not."""
    if not (math.isfinite(limit) and limit > 0):
        raise ScalingError(f"a budget must be a positive number, got {limit!r}")
    if cost(0.0) <= limit:
        return 0.0
    if cost(phi_floor) > limit:
        raise ScalingError(f"even phi={phi_floor:g} costs {cost(phi_floor):.4g}, over the budget {limit:.4g}")
    lo, hi = phi_floor, 0.0          # invariant: cost(lo) <= limit < cost(hi)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if cost(mid) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def shrunk(genome: Genome, coeffs: Coefficients, phi: float) -> Genome:
    """``genome`` with depth ×α^φ and width ×β^φ (φ ≤ 0; φ = 0 returns it unchanged)."""
    if phi == 0:
        return genome
    return scale_genome(genome, coeffs.alpha ** phi, coeffs.beta ** phi)


def fit_to_budget(genome: Genome, coeffs: Coefficients, cost: Callable[[Genome], float], limit: float,
                  tol: float = 1e-3) -> tuple[Genome, float]:
    """(``genome`` shrunk by the largest φ ≤ 0 whose ``cost`` is at most ``limit``, that φ).
    ``cost`` measures a genome in the budget's unit at the deployment size."""
    phi = shrink_phi(lambda p: cost(shrunk(genome, coeffs, p)), limit, tol=tol)
    return shrunk(genome, coeffs, phi), phi


def hand_design(spec: str, space: Any, activation: str | None = None) -> tuple[str, Genome] | None:
    """(name, genome) of the baseline ``spec``: ``preset`` (the preset the space is built
    around), a preset name, a genome YAML or a flat yolov7 YAML (its genome recognised), or
    ``none`` (None). The genome gets the space's class count and, when given, ``activation``
    (a one-shot run's supernet has one; an SPP block with a built-in SiLU becomes the plain
    ``spp3`` then, so the genome stays valid)."""
    from nas.errors import NasError
    from nas.recognise import recognise
    from nas.sources import resolve_model

    if spec == "none":
        return None
    if spec == "preset":
        base = getattr(getattr(space, "unfixed", space), "base", None)
        if base is None:
            raise ScalingError(f"space {space.name!r} is not built around a preset; pass --baseline NAME|YAML|none")
        name = getattr(getattr(space, "unfixed", space), "ranges").preset
        genome = base
    else:
        try:
            source = resolve_model(spec)
            genome = source.genome or recognise(source.cfg)
        except NasError as exc:
            raise ScalingError(f"--baseline {spec}: {str(exc).splitlines()[0]}") from None
        name = source.name
    genome = genome.replace(nc=space.nc)
    if activation is not None and genome.activation != activation:
        from nas.genome import SILU_ONLY_SPP

        spp = genome.spp
        if activation != "silu" and spp.kind in SILU_ONLY_SPP:
            spp = dataclasses.replace(spp, kind="spp3")
        genome = genome.replace(activation=activation, spp=spp)
        name = f"{name} ({activation})"
    return name, genome


__all__ = ["PHI_FLOOR", "fit_to_budget", "hand_design", "shrink_phi", "shrunk"]
