"""The Pareto plot: a data step returning NamedTuples, and a drawing step (matplotlib, Agg).

Tests check :func:`pareto_plot_data`; :func:`draw_pareto` only draws what it is given. The plot
shows the first two objectives (with one objective: the objective against the trial number):
every COMPLETE trial, infeasible ones marked, the Pareto front highlighted and joined, and the
presets whose values fall inside the axes as labelled reference points.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from nas.search._files import write_atomically
from nas.search._objectives import OBJECTIVES
from nas.search._pareto import pareto_rows

_SCALE = {"params": (1e-6, "parameters (M, deploy form)")}


class PlotPoint(NamedTuple):
    number: int
    x: float
    y: float
    feasible: bool
    on_front: bool
    duplicate: bool


class ReferencePoint(NamedTuple):
    name: str
    x: float
    y: float


class ParetoPlotData(NamedTuple):
    title: str
    x_label: str
    y_label: str
    points: tuple[PlotPoint, ...]
    front: tuple[PlotPoint, ...]          # sorted by x, for the step line
    references: tuple[ReferencePoint, ...]
    x_range: tuple[float, float] | None   # axis limits (data range plus a margin)
    y_range: tuple[float, float] | None


def _axis(objective: str) -> tuple[float, str]:
    factor, label = _SCALE.get(objective, (1.0, OBJECTIVES[objective].label))
    arrow = "↑" if OBJECTIVES[objective].direction == "maximize" else "↓"
    return factor, f"{label} {arrow}"


def _limits(values: Sequence[float]) -> tuple[float, float] | None:
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def _finite(row: Mapping[str, Any], key: str) -> bool:
    return isinstance(row.get(key), (int, float)) and math.isfinite(row[key])


def pareto_plot_data(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str],
                     references: Mapping[str, Mapping[str, float]], title: str = "") -> ParetoPlotData:
    """Points, front and fitting reference points for the plot (no drawing)."""
    front_numbers = {r["number"] for r in pareto_rows(rows, objectives)}
    if len(objectives) >= 2:
        xo, yo = objectives[0], objectives[1]
        xf, x_label = _axis(xo)
    else:
        xo, yo = None, objectives[0]
        xf, x_label = 1.0, "trial number"
    yf, y_label = _axis(yo)
    points = []
    for r in rows:
        if r["state"] != "COMPLETE" or not _finite(r, yo) or (xo and not _finite(r, xo)):
            continue
        x = r[xo] * xf if xo else float(r["number"])
        points.append(PlotPoint(int(r["number"]), x, r[yo] * yf, r.get("feasible") is not False,
                                r["number"] in front_numbers, r.get("duplicate_of", "") != ""))
    x_range = _limits([p.x for p in points])
    y_range = _limits([p.y for p in points])
    refs = []
    if xo and x_range and y_range:
        for name, metrics in references.items():
            if not (_finite(metrics, xo) and _finite(metrics, yo)):
                continue
            x, y = metrics[xo] * xf, metrics[yo] * yf
            if x_range[0] <= x <= x_range[1] and y_range[0] <= y <= y_range[1]:
                refs.append(ReferencePoint(name, x, y))
    front = tuple(sorted((p for p in points if p.on_front), key=lambda p: (p.x, p.y)))
    if len(objectives) > 2:
        title = f"{title} (first two of {len(objectives)} objectives)".strip()
    return ParetoPlotData(title, x_label, y_label, tuple(points), front, tuple(refs), x_range, y_range)


def draw_pareto(data: ParetoPlotData, path: Path | None = None) -> bytes:
    """Draw ``data``; returns the PNG bytes and writes them to ``path`` when given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 5), dpi=110)
    ax = fig.subplots()
    groups = [
        ([p for p in data.points if p.feasible and not p.on_front], dict(c="#9aa5b1", marker="o", s=22,
                                                                           label="trial")),
        ([p for p in data.points if not p.feasible], dict(c="#d64545", marker="x", s=30, label="infeasible")),
        ([p for p in data.points if p.on_front], dict(c="#1f6feb", marker="o", s=46, edgecolors="black",
                                                       linewidths=0.6, label="Pareto front", zorder=3)),
    ]
    for pts, style in groups:
        if pts:
            ax.scatter([p.x for p in pts], [p.y for p in pts], **style)
    if len(data.front) > 1:
        ax.plot([p.x for p in data.front], [p.y for p in data.front], c="#1f6feb", lw=1, alpha=0.6,
                zorder=2)
    for p in data.front:
        ax.annotate(f"#{p.number}", (p.x, p.y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for ref in data.references:
        ax.scatter([ref.x], [ref.y], marker="*", s=140, c="#f0b400", edgecolors="black", linewidths=0.6,
                   zorder=4, label="preset" if ref == data.references[0] else None)
        ax.annotate(ref.name, (ref.x, ref.y), textcoords="offset points", xytext=(6, -10), fontsize=8)
    if data.x_range:
        ax.set_xlim(*data.x_range)
    if data.y_range:
        ax.set_ylim(*data.y_range)
    if not data.points:
        ax.text(0.5, 0.5, "no complete trials yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(data.x_label)
    ax.set_ylabel(data.y_label)
    ax.set_title(data.title)
    ax.grid(True, alpha=0.3)
    if data.points:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    if path is not None:
        write_atomically(Path(path), png)
    return png


__all__ = ["ParetoPlotData", "PlotPoint", "ReferencePoint", "draw_pareto", "pareto_plot_data"]
