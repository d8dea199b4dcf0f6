"""Inline SVG charts (pure functions: plain data in, SVG text out; every label escaped).

* :func:`scatter_svg` — the Pareto chart of :func:`nas.report._data.chart_data`: one marker per
  trial (``class="pt k-<kind>"``, ``data-n="<trial>"`` for the page's hover script), the front
  joined, presets as labelled stars, a legend of the kinds present.
* :func:`line_svg` — a small multi-series line chart (the compound-scaled family).
* :func:`bar_svg` — counts per label (trials pruned per epoch).

Marker shapes are a registry (:data:`MARKERS`: kind → shape and legend label).
"""
from __future__ import annotations

import math
from html import escape
from typing import Any, Callable, Mapping, NamedTuple, Sequence

_FONT = 'font-family="system-ui,sans-serif"'


class Frame(NamedTuple):
    """Plot area of a chart: pixel box and the data ranges it shows."""

    left: float
    top: float
    right: float
    bottom: float
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    gap: float = 0.0      # room between the plot and the tick labels (for rug marks)

    def px(self, x: float) -> float:
        lo, hi = self.x_range
        return self.left + (x - lo) / ((hi - lo) or 1.0) * (self.right - self.left)

    def py(self, y: float) -> float:
        lo, hi = self.y_range
        return self.bottom - (y - lo) / ((hi - lo) or 1.0) * (self.bottom - self.top)


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 × 10^k) covering [lo, hi], about ``n`` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def fmt(value: float) -> str:
    return f"{value:.4g}"


# ----------------------------------------------------------------------------- markers
def _circle(r: float, fill: str, stroke: str = "none", width: float = 0.0) -> Callable[[float, float], str]:
    return lambda x, y: (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}" stroke="{stroke}" '
                         f'stroke-width="{width}"')


def _cross(s: float, color: str) -> Callable[[float, float], str]:
    return lambda x, y: (f'<path d="M{x - s:.1f},{y - s:.1f}L{x + s:.1f},{y + s:.1f}M{x - s:.1f},{y + s:.1f}'
                         f'L{x + s:.1f},{y - s:.1f}" stroke="{color}" stroke-width="2" fill="none"')


def _triangle(s: float, color: str) -> Callable[[float, float], str]:
    return lambda x, y: (f'<path d="M{x:.1f},{y - s:.1f}L{x + s:.1f},{y + s * 0.8:.1f}L{x - s:.1f},'
                         f'{y + s * 0.8:.1f}Z" fill="#fff" stroke="{color}" stroke-width="1.6"')


def _square(s: float, color: str) -> Callable[[float, float], str]:
    return lambda x, y: (f'<rect x="{x - s:.1f}" y="{y - s:.1f}" width="{2 * s}" height="{2 * s}" '
                         f'fill="#fff" stroke="{color}" stroke-width="1.6"')


def _star(r: float) -> Callable[[float, float], str]:
    def draw(x: float, y: float) -> str:
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append(f"{x + rad * math.cos(a):.1f},{y + rad * math.sin(a):.1f}")
        return f'<polygon points="{" ".join(pts)}" fill="#f0b400" stroke="#000" stroke-width="0.7"'
    return draw


class Marker(NamedTuple):
    label: str
    draw: Callable[[float, float], str]   # returns an unclosed SVG element (attributes may follow)
    order: int                            # drawing order (higher on top)


#: point kind → marker (kinds from :func:`nas.report._data.chart_data`)
MARKERS: Mapping[str, Marker] = {
    "complete": Marker("trial", _circle(3.5, "#9aa5b1"), 1),
    "duplicate": Marker("duplicate", _circle(3.5, "none", "#9aa5b1", 1.2), 0),
    "pruned": Marker("pruned (partial score)", _triangle(4.5, "#e07b00"), 2),
    "failed": Marker("failed", _square(3.5, "#8b1a1a"), 2),
    "infeasible": Marker("infeasible", _cross(4, "#d64545"), 3),
    "front": Marker("Pareto front", _circle(5.5, "#1f6feb", "#000", 0.7), 4),
}
_PRESET = Marker("preset", _star(8), 5)


# ----------------------------------------------------------------------------- frame, axes
def _frame(width: int, height: int, x_range: Sequence[float], y_range: Sequence[float],
           right: float = 18.0, gap: float = 0.0) -> Frame:
    return Frame(72.0 + gap, 34.0, width - right, height - 52.0 - gap, (float(x_range[0]), float(x_range[1])),
                 (float(y_range[0]), float(y_range[1])), gap)


def _axes(f: Frame, x_label: str, y_label: str, title: str, width: int, x_ticks: bool = True) -> list[str]:
    out = [f'<rect x="{f.left}" y="{f.top}" width="{f.right - f.left}" height="{f.bottom - f.top}" '
           f'fill="#fff" stroke="#bbb"/>']
    for t in nice_ticks(*f.x_range) if x_ticks else ():
        x = f.px(t)
        out.append(f'<line x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{f.bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{f.bottom + f.gap + 15}" text-anchor="middle" font-size="11">'
                   f'{fmt(t)}</text>')
    for t in nice_ticks(*f.y_range):
        y = f.py(t)
        out.append(f'<line x1="{f.left}" y1="{y:.1f}" x2="{f.right}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{f.left - f.gap - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">'
                   f'{fmt(t)}</text>')
    mid_x, mid_y = (f.left + f.right) / 2, (f.top + f.bottom) / 2
    out.append(f'<text x="{mid_x:.1f}" y="{f.bottom + f.gap + 36}" text-anchor="middle" font-size="12">'
               f'{escape(x_label)}</text>')
    out.append(f'<text x="16" y="{mid_y:.1f}" text-anchor="middle" font-size="12" '
               f'transform="rotate(-90 16 {mid_y:.1f})">{escape(y_label)}</text>')
    out.append(f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="14" font-weight="600">'
               f'{escape(title)}</text>')
    return out


def _svg(width: int, height: int, body: Sequence[str], css_class: str, label: str) -> str:
    return (f'<svg class="{css_class}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-label="{escape(label)}" {_FONT}>'
            + "".join(body) + "</svg>")


def _empty(width: int, height: int, text: str, css_class: str) -> str:
    return _svg(width, height, [f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
                                f'font-size="14" fill="#666">{escape(text)}</text>'], css_class, text)


# ----------------------------------------------------------------------------- charts
def scatter_svg(chart: Mapping[str, Any], width: int = 900, height: int = 500) -> str:
    """The Pareto chart of ``chart`` (:func:`nas.report._data.chart_data`); the legend sits to the
    right of the plot, rug marks (trials with one value only) just outside its axes."""
    if not chart.get("points") or not chart.get("x_range") or not chart.get("y_range"):
        return _empty(width, height, "no trial with values yet", "pareto-chart")
    rug = any(p.get("rug") for p in chart["points"])
    f = _frame(width, height, chart["x_range"], chart["y_range"], right=190.0, gap=16.0 if rug else 0.0)
    body = _axes(f, chart["x_label"], chart["y_label"], chart.get("title", ""), width)
    for limit in chart.get("limits") or []:
        body += _limit_line(f, limit)
    front = chart.get("front") or []
    if len(front) > 1:
        pts = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y, *_ in front)
        body.append(f'<polyline points="{pts}" fill="none" stroke="#1f6feb" stroke-opacity="0.6"/>')
    for p in sorted(chart["points"], key=lambda p: MARKERS[p["kind"]].order):
        x = f.px(p["x"]) if p.get("rug") != "y" else f.left - 9
        y = f.py(p["y"]) if p.get("rug") != "x" else f.bottom + 9
        shape = MARKERS[p["kind"]].draw(x, y)
        what = escape(p["kind"]) + (", one value only" if p.get("rug") else "")
        body.append(f'{shape} class="pt k-{escape(p["kind"])}" data-n="{int(p["n"])}" tabindex="0">'
                    f'<title>trial {int(p["n"])} ({what})</title></{_tag(shape)}>')
    placed: list[tuple[float, float]] = []
    for x, y, n in front:  # label front points, skipping a label that would overlap an earlier one
        lx, ly = f.px(x) + 6, f.py(y) - 6
        if all(abs(lx - px) > 24 or abs(ly - py) > 11 for px, py in placed):
            placed.append((lx, ly))
            body.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10">#{int(n)}</text>')
    for ref in chart.get("references") or []:
        x, y = f.px(ref["x"]), f.py(ref["y"])
        body.append(f'{_PRESET.draw(x, y)} class="ref" data-preset="{escape(ref["name"])}">'
                    f'<title>preset {escape(ref["name"])}</title></polygon>')
        body.append(f'<text x="{x + 9:.1f}" y="{y + 12:.1f}" font-size="11">{escape(ref["name"])}</text>')
    kinds = [k for k in MARKERS if any(p["kind"] == k for p in chart["points"])]
    body += _legend(f, kinds, bool(chart.get("references")), rug)
    return _svg(width, height, body, "pareto-chart", chart.get("title") or "Pareto chart")


def _limit_line(f: Frame, limit: Mapping[str, Any]) -> list[str]:
    v = float(limit["value"])
    style = 'stroke="#d64545" stroke-dasharray="6 4" stroke-width="1.2"'
    label = escape(str(limit.get("label", "limit")))
    if limit["axis"] == "x" and f.x_range[0] <= v <= f.x_range[1]:
        x = f.px(v)
        return [f'<line class="limit" x1="{x:.1f}" y1="{f.top}" x2="{x:.1f}" y2="{f.bottom}" {style}/>',
                f'<text x="{x + 4:.1f}" y="{f.top + 12}" font-size="10" fill="#d64545">{label}</text>']
    if limit["axis"] == "y" and f.y_range[0] <= v <= f.y_range[1]:
        y = f.py(v)
        return [f'<line class="limit" x1="{f.left}" y1="{y:.1f}" x2="{f.right}" y2="{y:.1f}" {style}/>',
                f'<text x="{f.left + 4}" y="{y - 4:.1f}" font-size="10" fill="#d64545">{label}</text>']
    return []


def _tag(shape: str) -> str:
    return shape[1:].split(" ", 1)[0]


def _legend(f: Frame, kinds: Sequence[str], presets: bool, rug: bool) -> list[str]:
    entries = [MARKERS[k] for k in kinds] + ([_PRESET] if presets else [])
    x, y = f.right + 24, f.top + 10
    out = []
    for m in entries:
        shape = m.draw(x + 4, y)
        out.append(f"{shape}></{_tag(shape)}>")
        out.append(f'<text x="{x + 16}" y="{y + 4}" font-size="11">{escape(m.label)}</text>')
        y += 18
    if rug:
        out.append(f'<text x="{x}" y="{y + 8}" font-size="10" fill="#57606a">marks outside the axes:</text>')
        out.append(f'<text x="{x}" y="{y + 21}" font-size="10" fill="#57606a">no score (not trained /</text>')
        out.append(f'<text x="{x}" y="{y + 34}" font-size="10" fill="#57606a">failed), at their cost</text>')
    return out


_SERIES_COLOURS = ("#1f6feb", "#e07b00", "#2da44e", "#8250df")


def line_svg(series: Sequence[Mapping[str, Any]], x_label: str, y_label: str, title: str,
             width: int = 460, height: int = 320, css_class: str = "line-chart") -> str:
    """Lines with dots: ``series`` = ``[{"name", "points": [[x, y], ...], "dashed": bool}]``."""
    values = [(x, y) for s in series for x, y in s["points"]
              if isinstance(x, (int, float)) and isinstance(y, (int, float))]
    if not values:
        return _empty(width, height, "no values", css_class)
    xs, ys = [v[0] for v in values], [v[1] for v in values]
    pad_x = (max(xs) - min(xs)) * 0.06 or 0.5
    pad_y = (max(ys) - min(ys)) * 0.08 or abs(max(ys)) * 0.1 or 1.0
    f = _frame(width, height, (min(xs) - pad_x, max(xs) + pad_x), (min(ys) - pad_y, max(ys) + pad_y))
    body = _axes(f, x_label, y_label, title, width)
    for i, s in enumerate(series):
        colour = _SERIES_COLOURS[i % len(_SERIES_COLOURS)]
        pts = [(f.px(x), f.py(y)) for x, y in s["points"] if isinstance(y, (int, float))]
        dash = ' stroke-dasharray="5 4"' if s.get("dashed") else ""
        body.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" '
                    f'stroke="{colour}" stroke-width="1.6"{dash}/>')
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in pts]
        body.append(f'<text x="{f.left + 10}" y="{f.top + 16 + 15 * i}" font-size="11" fill="{colour}">'
                    f'{escape(s["name"])}</text>')
    return _svg(width, height, body, css_class, title)


def bar_svg(bars: Sequence[tuple[str, int]], title: str, width: int = 460, height: int = 220) -> str:
    """One bar per ``(label, count)``."""
    if not bars:
        return _empty(width, height, "nothing stopped early", "bar-chart")
    top = max(n for _, n in bars) or 1
    f = _frame(width, height, (0, len(bars)), (0, top * 1.15))
    body = _axes(f, "", "trials", title, width, x_ticks=False)
    slot = (f.right - f.left) / len(bars)
    for i, (label, n) in enumerate(bars):
        x0, y0 = f.left + slot * (i + 0.2), f.py(n)
        body.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{slot * 0.6:.1f}" height="{f.bottom - y0:.1f}" '
                    f'fill="#e07b00"/>')
        body.append(f'<text x="{x0 + slot * 0.3:.1f}" y="{y0 - 4:.1f}" text-anchor="middle" font-size="11">'
                    f'{n}</text>')
        body.append(f'<text x="{x0 + slot * 0.3:.1f}" y="{f.bottom + 16}" text-anchor="middle" '
                    f'font-size="11">{escape(label)}</text>')
    return _svg(width, height, body, "bar-chart", title)


__all__ = ["Frame", "MARKERS", "Marker", "bar_svg", "fmt", "line_svg", "nice_ticks", "scatter_svg"]
