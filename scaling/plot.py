"""``family.png``: GFLOPs and latency of a scaled family against φ, log scale.

Split as Optuna's plots are: :func:`family_plot_data` turns a :class:`~scaling.family.Family`
into NamedTuples (tests check these), :func:`draw_family` draws them with matplotlib's Agg
backend and returns PNG bytes.

The ideal line is ``value(φ=0)·(α·β²·γ²)^φ`` (≈ 2^φ), anchored at the measured φ = 0 member, on
both panels (for latency it assumes latency ∝ FLOPs). The presets are reference points on the
GFLOPs panel at their GFLOPs at the family's base input size, placed at the φ where the ideal
line reaches that value: ``φ_eq = log(G_preset / G_0) / log(α·β²·γ²)``.
"""
from __future__ import annotations

import io
import math
from typing import Mapping, NamedTuple

__all__ = ["MemberPoint", "ReferencePoint", "FamilyPlotData", "family_plot_data", "draw_family",
           "preset_references"]

_IDEAL_STEPS = 50


class MemberPoint(NamedTuple):
    phi: float
    img: int
    gflops: float
    latency_ms: float | None


class ReferencePoint(NamedTuple):
    name: str
    phi: float      # φ_eq on the ideal line
    gflops: float   # at the family's base input size


class FamilyPlotData(NamedTuple):
    title: str
    product: float
    members: tuple[MemberPoint, ...]
    ideal_phi: tuple[float, ...]
    ideal_gflops: tuple[float, ...]
    ideal_latency: tuple[float, ...] | None   # None when latency was not measured
    references: tuple[ReferencePoint, ...]


def family_plot_data(family, references: Mapping[str, float] | None = None) -> FamilyPlotData:
    """Plot data of ``family``; ``references`` maps a preset name to its GFLOPs at base size."""
    product = family.coeffs.product
    members = tuple(MemberPoint(m.phi, m.img, m.gflops, m.latency_ms) for m in family.members)
    refs = []
    if references and product > 1 + 1e-9:
        for name, gflops in references.items():
            refs.append(ReferencePoint(name, math.log(gflops / family.base.gflops) / math.log(product),
                                       gflops))
    hi = max([m.phi for m in members] + [r.phi for r in refs] + [1.0])
    lo = min([0.0] + [r.phi for r in refs])
    xs = tuple(lo + (hi - lo) * i / _IDEAL_STEPS for i in range(_IDEAL_STEPS + 1))
    ideal_g = tuple(family.base.gflops * product ** x for x in xs)
    lat0 = family.base.latency_ms
    ideal_l = None if lat0 is None else tuple(lat0 * product ** x for x in xs)
    title = (f"{family.name}: {family.coeffs} (alpha*beta^2*gamma^2 = {product:.3f}), "
             f"base {family.base_img} px")
    return FamilyPlotData(title, product, members, xs, ideal_g, ideal_l, tuple(refs))


def draw_family(data: FamilyPlotData) -> bytes:
    """Two log-scale panels (GFLOPs, latency vs φ) as PNG bytes (matplotlib Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_g, ax_l = fig.subplots(1, 2)
    phis = [m.phi for m in data.members]
    ideal_label = f"ideal {data.product:.3f}^phi"

    ax_g.plot(data.ideal_phi, data.ideal_gflops, "--", color="grey", label=ideal_label)
    ax_g.plot(phis, [m.gflops for m in data.members], "o-", color="C0", label="family")
    for m in data.members:
        ax_g.annotate(f"{m.img}px", (m.phi, m.gflops), textcoords="offset points", xytext=(4, -10),
                      fontsize=7)
    for r in data.references:
        ax_g.plot([r.phi], [r.gflops], "s", color="C3")
        ax_g.annotate(r.name, (r.phi, r.gflops), textcoords="offset points", xytext=(5, 4),
                      fontsize=8, color="C3")
    ax_g.set_yscale("log")
    ax_g.set_xlabel("phi")
    ax_g.set_ylabel("GFLOPs (2 x multiply-adds)")
    ax_g.legend(loc="upper left", fontsize=8)
    ax_g.grid(True, which="both", alpha=0.3)

    timed = [m for m in data.members if m.latency_ms is not None]
    if timed and data.ideal_latency is not None:
        ax_l.plot(data.ideal_phi, data.ideal_latency, "--", color="grey", label=ideal_label)
        ax_l.plot([m.phi for m in timed], [m.latency_ms for m in timed], "o-", color="C1",
                  label="family (deploy form)")
        ax_l.set_yscale("log")
        ax_l.legend(loc="upper left", fontsize=8)
    else:
        ax_l.text(0.5, 0.5, "latency not measured", ha="center", va="center",
                  transform=ax_l.transAxes)
    ax_l.set_xlabel("phi")
    ax_l.set_ylabel("latency, median ms (batch 1)")
    ax_l.grid(True, which="both", alpha=0.3)

    fig.suptitle(data.title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def preset_references(img: int, measure) -> dict[str, float]:
    """GFLOPs of every preset at ``img`` (counted with ``measure``, a family Measurer)."""
    from nas.presets import PRESETS

    return {name: measure.static(genome, img)[1] for name, genome in PRESETS.items()}
