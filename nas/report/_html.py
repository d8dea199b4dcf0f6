"""HTML assembly: one self-contained page from :func:`nas.report._data.report_data`'s dict.

Everything is inline (style, script, SVG charts): the page opens without a network and refers
to nothing outside itself except relative links to the study's model files. Every string put
into markup goes through :func:`html.escape`; the data for the page's script is embedded as JSON
in a ``<script type="application/json">`` block with ``<``, ``>`` and ``&`` written as ``\\u``
escapes, so no value can close the block. The script builds the trials table from that JSON,
sorts tables on a header click and shows each chart point's details on hover.
"""
from __future__ import annotations

import json
from html import escape
from importlib import resources
from typing import Any, Mapping, Sequence

from nas.report._svg import bar_svg, fmt, line_svg, scatter_svg
from nas.search._finalists import finalists_columns, hand_design_verdict

#: column key → header label of the trials and finalists tables (others: the key itself)
LABELS = {
    "number": "trial", "status": "status", "score": "score", "params": "params (M)", "gflops": "GFLOPs",
    "latency_ms": "latency ms", "feasible": "feasible", "duplicate_of": "duplicate of",
    "pruned_at": "pruned at epoch", "pruned_reason": "pruned because", "fail_reason": "failed because",
    "duration_s": "time s", "genome_hash": "genome", "map50": "mAP@0.5", "map50_95": "mAP@0.5:0.95",
    "train_s": "train s", "on_map_front": "on mAP front", "gflops_ratio": "GFLOPs ratio",
    "ideal": "ideal ratio", "phi": "φ", "img": "img",
}


def _asset(name: str) -> str:
    return resources.files("nas.report").joinpath(name).read_text(encoding="utf-8")


def json_for_script(data: Any) -> str:
    """JSON text safe inside ``<script type="application/json">`` (no ``<``, ``>``, ``&``)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _cell(key: str, value: Any) -> tuple[str, str]:
    """(sort value, shown text) of one table cell."""
    if value is None or value == "":
        return "", ""
    if isinstance(value, bool):
        return str(int(value)), "yes" if value else "no"
    if isinstance(value, (int, float)):
        shown = f"{value / 1e6:.3g}" if key == "params" else fmt(value) if isinstance(value, float) else str(value)
        return repr(value), shown
    return str(value), str(value)


def _link(href: str | None, text: str) -> str:
    return f'<a href="{escape(href)}">{escape(text)}</a>' if href else ""


def static_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], table_id: str,
                 links: Mapping[Any, Mapping[str, str]] | None = None, link_key: str = "number") -> str:
    """A sortable table rendered here (finalists, family); ``links`` by ``row[link_key]`` add a
    'model' column with links to YAML / ONNX files."""
    head = "".join(f'<th data-key="{escape(c)}">{escape(LABELS.get(c, c))}</th>' for c in columns)
    if links is not None:
        head += "<th>model</th>"
    body = []
    for row in rows:
        cells = []
        for c in columns:
            sort, shown = _cell(c, row.get(c))
            cells.append(f'<td data-v="{escape(sort)}">{escape(shown)}</td>')
        if links is not None:
            files = links.get(row.get(link_key)) or {}
            cells.append("<td>" + " ".join(_link(files.get(k), k) for k in ("yaml", "onnx") if files.get(k))
                         + "</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table id="{escape(table_id)}" class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


# ----------------------------------------------------------------------------- sections
def _summary(data: Mapping[str, Any]) -> str:
    c = data["counts"]
    parts = [f"{c.get('trials', 0)} trials (budget {data['budget']})"]
    for key, label in (("front", "on the Pareto front"), ("complete", "complete"), ("duplicate", "duplicates"),
                       ("infeasible", "infeasible"), ("pruned", "pruned"), ("failed", "failed"),
                       ("running", "running"), ("waiting", "waiting")):
        if c.get(key):
            parts.append(f"{c[key]} {label}")
    return escape(", ".join(parts))


def settings_section(data: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in data["settings"])
    commands = "\n".join(data["commands"])
    return (f'<section id="settings"><h2>Settings</h2><table class="kv">{rows}</table>'
            f'<h3>Reproduce</h3><pre class="commands">{escape(commands)}</pre></section>')


def chart_section(data: Mapping[str, Any]) -> str:
    chart = data["chart"]
    missing = chart.get("unplotted") or {}
    note = ", ".join(f"{n} {k}" for k, n in missing.items() if n)
    note = f'<p class="note">Not plotted (no values): {escape(note)}.</p>' if note else ""
    return (f'<section id="pareto"><h2>Pareto chart</h2><p class="note">Hover or focus a point for its '
            f'trial, costs, score and how its genome differs from the nearest preset; click it to find '
            f'its row.</p><div class="chart-box">{scatter_svg(chart)}'
            f'<div id="tip" class="tip" hidden></div></div>{note}</section>')


def trials_section(data: Mapping[str, Any]) -> str:
    columns = [*data["columns"], "preset", "model"]
    labels = {**LABELS, "preset": "nearest preset (fields differing)", "model": "model"}
    head = "".join(f'<th data-key="{escape(c)}">{escape(labels.get(c, c))}</th>' for c in columns)
    dims = "".join(f'<th data-key="{escape(c)}" class="dim">{escape(c.removeprefix("param:"))}</th>'
                   for c in data["dimensions"])
    toggle = ('<label><input type="checkbox" id="show-dims"> show the space dimensions</label>'
              if data["dimensions"] else "")
    return (f'<section id="trials-section"><h2>Trials</h2><p class="note">Click a header to sort. '
            f'{toggle}</p><div class="scroll"><table id="trials" class="sortable hide-dims">'
            f'<thead><tr>{head}{dims}</tr></thead><tbody></tbody></table></div>'
            f'<noscript><p>The trials table is built by the page\'s script; see trials.csv.</p></noscript>'
            f'</section>')


def finalists_section(data: Mapping[str, Any]) -> str:
    fin = data.get("finalists")
    if not fin:
        return ""
    rows = fin.get("rows") or []
    objectives = list(fin.get("objectives") or data["objectives"])
    columns = fin.get("columns") or finalists_columns(objectives)
    s = fin.get("settings") or {}
    how = "fine-tuned from inherited weights" if s.get("init_from") else "proxy-trained"
    choice = s.get("choice") or {"by": "front"}
    searched = sum(1 for r in rows if r.get("role", "searched") == "searched")
    if choice.get("by") == "band":
        lo, hi = choice["band"]
        where = (f"the band {lo:g}-{hi:g} x the budget {choice['budget']['metric']} <= {choice['budget']['limit']:.4g} "
                 f"({choice.get('in_band', '?')} candidates in it), best by {choice.get('estimator')}")
    else:
        where = f"a {fin.get('front_size', '?')}-trial front"
    hand = " and the hand design (same recipe; never chosen; its init column says how it started)" \
        if s.get("baseline") else ""
    detail = (f"{searched} finalist(s) from {where}{hand}, {how} {s.get('epochs', '?')} epoch(s) at "
              f"{s.get('img', '?')} px on {s.get('subset') or 'all'} images")
    verdict = hand_design_verdict(rows)
    verdict_html = f'<p class="verdict"><strong>{escape(verdict[0].upper() + verdict[1:])}.</strong></p>' if verdict else ""
    links = {t["number"]: t.get("links") or {} for t in data["trials"]}
    typed = [dict(r) for r in rows]
    for r in typed:
        try:
            r["number"] = int(r["number"])
        except (KeyError, TypeError, ValueError):
            pass
    return (f'<section id="finalists"><h2>Finalists</h2><p class="note">{escape(detail) if s else ""}</p>'
            f'{verdict_html}{static_table(columns, typed, "finalists-table", links)}</section>')


def pruning_section(data: Mapping[str, Any]) -> str:
    p = data.get("pruning")
    if not p:
        return ""
    lines = [f"{p.get('pruned_total', 0)} trial(s) stopped early, {p.get('constraint_skipped', 0)} of them "
             f"before training (constraint broken: infeasible, not trained)"]
    if p.get("duplicates"):
        lines.append(f"{p['duplicates']} of them duplicates of a stopped architecture")
    if "epochs_trained" in p:
        lines.append(f"{p['epochs_trained']} of {p.get('epochs_full', '?')} epochs trained")
    if "saved_s" in p:
        total = (p.get("spent_s") or 0) + (p.get("saved_s") or 0)
        lines.append(f"~{p['saved_s'] / 60:.1f} min saved of ~{total / 60:.1f} "
                     f"({100 * (p.get('saved_fraction') or 0):.0f} %, estimated)")
    if "enabled" in p:
        lines.append("pruning " + ("on" if p["enabled"] else "off") +
                     (f" (eta {p.get('eta')}, first check at epoch {p.get('min_epoch')})" if p["enabled"] else ""))
    bars = [("before training" if e == 0 else f"epoch {e}", n) for e, n in p.get("by_epoch") or []]
    table = "".join(f"<tr><th>{escape(label)}</th><td>{n}</td></tr>" for label, n in bars)
    return (f'<section id="pruning"><h2>Pruning</h2><p>{escape("; ".join(lines))}.</p>'
            f'<div class="row"><table class="kv"><tr><th>stopped</th><th>trials</th></tr>{table}</table>'
            f'{bar_svg(bars, "trials stopped, by epoch")}</div></section>')


def family_section(data: Mapping[str, Any]) -> str:
    fam = data.get("family")
    if not fam:
        return ""
    rows, columns = fam["rows"], list(fam["columns"])
    phis = [r.get("phi") for r in rows]
    ratio = {"name": "GFLOPs ratio", "points": [[p, r.get("gflops_ratio")] for p, r in zip(phis, rows)]}
    ideal = {"name": "ideal (α·β²·γ²)^φ", "points": [[p, r.get("ideal")] for p, r in zip(phis, rows)], "dashed": True}
    charts = [line_svg([ratio, ideal], "φ", "GFLOPs / GFLOPs(φ=0)", "compute vs φ", css_class="family-chart")]
    if fam.get("has_latency"):
        charts.append(line_svg([{"name": "latency ms", "points": [[r.get("gflops"), r.get("latency_ms")]
                                                                 for r in rows]}],
                               "GFLOPs", "latency ms", "latency vs GFLOPs", css_class="family-chart"))
    links = {r.get("phi"): r.get("links") or {} for r in rows}
    return (f'<section id="family"><h2>Compound-scaled family</h2>'
            f'{static_table(columns, rows, "family-table", links, link_key="phi")}'
            f'<div class="row">{"".join(charts)}</div></section>')


def render_html(data: Mapping[str, Any]) -> str:
    """The whole page for ``data`` (:func:`nas.report._data.report_data`)."""
    title = f"y7nas report: study {data['study']}"
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, present in (
        ("settings", "settings", True), ("pareto", "Pareto chart", True), ("trials-section", "trials", True),
        ("finalists", "finalists", data.get("finalists")), ("pruning", "pruning", data.get("pruning")),
        ("family", "family", data.get("family"))) if present)
    body = "".join([settings_section(data), chart_section(data), trials_section(data), finalists_section(data),
                    pruning_section(data), family_section(data)])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{escape(title)}</title>"
        f"<style>{_asset('report.css')}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p class=\"summary\">{_summary(data)}</p>"
        f"<p class=\"note\">objectives: {escape(', '.join(data['objectives']))}"
        f"{' · generated ' + escape(data['generated']) if data.get('generated') else ''}</p>"
        f"<nav>{nav}</nav></header><main>{body}</main>"
        f"<script type=\"application/json\" id=\"report-data\">{json_for_script(data)}</script>"
        f"<script>{_asset('report.js')}</script></body></html>\n")


__all__ = ["LABELS", "json_for_script", "render_html", "static_table"]
