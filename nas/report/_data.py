"""The report's content as plain dicts and lists (pure functions: no storage, no files).

:func:`report_data` turns what :mod:`nas.report._gather` read (the study's stored settings, its
trials.csv rows, the presets' cached metrics, finalists, family, pruning, which model files
exist) into one JSON-ready dict. The HTML step renders it and embeds it for the page's script;
tests check this dict, not pixels. Non-finite numbers become the strings ``"nan"``/``"inf"``
(JSON has no NaN), so the embedded data always parses.
"""
from __future__ import annotations

import math
import shlex
from typing import Any, Mapping, Sequence

from nas.report._diff import nearest_preset
from nas.search._config import stored_deploy_img
from nas.search._fidelity import FIDELITIES
from nas.search._objectives import OBJECTIVES
from nas.search._pareto import pareto_rows
from nas.search._plot import _axis, _limits, pareto_plot_data  # pareto.png's axis conventions
from nas.search._pruning import pruning_summary

#: study setting → label, in display order; settings not listed follow under their own names
SETTING_LABELS = {
    "space": "search space", "space_signature": "space signature", "dimensions": "space dimensions",
    "nc": "classes", "objectives": "objectives", "fidelity": "fidelity", "img": "image size scored at (px)",
    "deploy_img": "deployment size: costs measured at (px)",
    "data": "data", "constraints": "constraints", "sampler": "sampler", "seed": "seed",
    "budget": "trial budget", "population_size": "NSGA-II population", "device": "latency device",
    "latency_runs": "latency runs (median of)", "latency_warmup": "latency warm-up runs",
    "zero_cost_batch": "zero-cost batch", "proxy_epochs": "proxy epochs", "proxy_subset": "proxy subset",
    "proxy_img": "proxy image size", "supernet": "supernet", "supernet_sha": "supernet sha256",
    "oneshot_calib": "one-shot BN calibration images", "oneshot_val": "one-shot val images",
    "prune": "pruning", "prune_eta": "pruning eta", "prune_min_epoch": "pruning first epoch",
    "latency": "latency measurement", "latency_table": "latency table", "storage": "storage",
}
_LATENCY_KEYS = ("device", "latency_runs", "latency_warmup")
_PRUNE_KEYS = ("prune", "prune_eta", "prune_min_epoch")
_HIDDEN = ("version",)
#: trials-table columns before the extra metrics (label, key)
_LEAD = ("number", "status")
_TAIL = ("feasible", "duplicate_of", "pruned_at", "pruned_reason", "fail_reason", "duration_s", "genome_hash")
_COST_COLUMNS = ("score", "params", "gflops", "latency_ms")
_NOT_SHOWN = {"state", "constraints", "retry_of", "datetime_start", "datetime_complete"}


def plain(value: Any) -> Any:
    """A JSON-safe copy: non-finite floats as strings, tuples as lists, mapping keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------- trials
def trial_status(row: Mapping[str, Any], front: set[int]) -> str:
    """front | complete | duplicate | infeasible | pruned | failed | waiting | running."""
    state = row["state"]
    if state == "FAIL":
        return "failed"
    if state != "COMPLETE":
        return state.lower()
    if row.get("feasible") is False:
        return "infeasible"
    if row["number"] in front:
        return "front"
    return "duplicate" if row.get("duplicate_of", "") != "" else "complete"


def table_columns(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> tuple[list[str], list[str]]:
    """(main columns, space-dimension columns) of the trials table."""
    costs = [*objectives, *[c for c in _COST_COLUMNS if c not in objectives]]
    extra, dims = [], []
    known = set(_LEAD) | set(costs) | set(_TAIL) | _NOT_SHOWN
    for row in rows:
        for key in row:
            if key in known:
                continue
            target = dims if key.startswith("param:") else extra
            if key not in target:
                target.append(key)
    present = [c for c in costs if c in objectives or any(c in r for r in rows)]
    return [*_LEAD, *present, *sorted(extra), *_TAIL], dims


def trial_entries(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str], genomes: Mapping[int, Any],
                  presets: Mapping[str, Any], links: Mapping[int, Mapping[str, str]]) -> list[dict[str, Any]]:
    """One JSON-ready dict per trial: its row, ``status``, ``diff`` (nearest preset) and ``links``."""
    front = {r["number"] for r in pareto_rows(rows, objectives)}
    diffs: dict[str, Any] = {}
    out = []
    for row in rows:
        entry = {k: plain(v) for k, v in row.items() if k not in _NOT_SHOWN or k == "state"}
        entry["status"] = trial_status(row, front)
        genome = genomes.get(row["number"])
        if genome is not None:
            key = row.get("genome_hash") or str(row["number"])
            if key not in diffs:
                diffs[key] = nearest_preset(genome, presets)
            entry["diff"] = diffs[key]
        entry["links"] = dict(links.get(row["number"], {}))
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- chart
def chart_data(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str],
               references: Mapping[str, Mapping[str, float]], title: str = "",
               constraints: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The Pareto chart: pareto.png's data (:func:`nas.search.pareto_plot_data`: COMPLETE trials,
    front, presets in the axes) plus the PRUNED and FAIL trials, each point with a ``kind``.

    A pruned trial with a partial score is a point; a PRUNED or FAIL trial with only its costs
    (stopped before training, failed while scoring) is a ``rug`` mark along the axis of the cost
    it has (``"rug": "x"`` or ``"y"``). The axes cover every point and mark, presets are kept
    when they fall inside, and each constraint on a plotted objective is a ``limits`` line.
    """
    base = pareto_plot_data(rows, objectives, references, title=title)
    two = len(objectives) >= 2
    xo, yo = (objectives[0], objectives[1]) if two else (None, objectives[0])
    xf = _axis(xo)[0] if xo else 1.0
    yf = _axis(yo)[0]
    kinds = {}
    for p in base.points:
        kinds[p.number] = ("infeasible" if not p.feasible else "front" if p.on_front
                           else "duplicate" if p.duplicate else "complete")
    points = [{"n": p.number, "x": p.x, "y": p.y, "kind": kinds[p.number]} for p in base.points]
    unplotted = {"pruned": 0, "failed": 0}
    for r in rows:
        if r["state"] not in ("PRUNED", "FAIL"):
            continue
        kind = "pruned" if r["state"] == "PRUNED" else "failed"
        has_x = xo is None or _finite(r.get(xo))
        x = (r[xo] * xf if xo else float(r["number"])) if has_x else None
        y = r[yo] * yf if _finite(r.get(yo)) else None
        if x is not None and y is not None:
            points.append({"n": int(r["number"]), "x": x, "y": y, "kind": kind})
        elif x is not None and xo is not None:
            points.append({"n": int(r["number"]), "x": x, "y": None, "kind": kind, "rug": "x"})
        elif y is not None and xo is not None:
            points.append({"n": int(r["number"]), "x": None, "y": y, "kind": kind, "rug": "y"})
        else:
            unplotted[kind] += 1
    x_range = _limits([p["x"] for p in points if p["x"] is not None])
    y_range = _limits([p["y"] for p in points if p["y"] is not None])
    if x_range is None and y_range is not None:
        x_range = (0.0, 1.0)
    if y_range is None and x_range is not None:
        y_range = (0.0, 1.0)
    refs = []
    if two and x_range and y_range:
        for name, metrics in references.items():
            if not (_finite(metrics.get(xo)) and _finite(metrics.get(yo))):
                continue
            x, y = metrics[xo] * xf, metrics[yo] * yf
            if x_range[0] <= x <= x_range[1] and y_range[0] <= y <= y_range[1]:
                refs.append({"name": name, "x": x, "y": y,
                             "metrics": plain({k: v for k, v in metrics.items() if k in _COST_COLUMNS})})
    limits = []
    for axis, objective, factor in (("x", xo, xf), ("y", yo, yf)):
        value = (constraints or {}).get(objective) if objective else None
        if _finite(value):
            limits.append({"axis": axis, "value": value * factor, "label": f"limit {value * factor:g}"})
    return plain({
        "title": base.title, "x_label": base.x_label, "y_label": base.y_label,
        "x_key": xo or "number", "y_key": yo, "x_factor": xf, "y_factor": yf,
        "points": points, "front": [[p.x, p.y, p.number] for p in base.front], "references": refs,
        "x_range": list(x_range) if x_range else None, "y_range": list(y_range) if y_range else None,
        "unplotted": unplotted, "limits": limits, "objectives": list(objectives),
        "directions": [OBJECTIVES[o].direction for o in objectives],
    })


# ----------------------------------------------------------------------------- settings, commands
def _show(key: str, value: Any) -> str:
    if key == "constraints":
        parts = []
        for metric, limit in (value or {}).items():
            parts.append(f"params ≤ {limit / 1e6:g}M" if metric == "params" else f"{metric} ≤ {limit:g}")
        return ", ".join(parts) or "none"
    if key == "dimensions":
        return f"{len(value)}: {', '.join(map(str, value))}"
    if key == "prune":
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _prunable(stored: Mapping[str, Any]) -> bool:
    cls = FIDELITIES.get(stored.get("fidelity", ""))
    return bool(cls and cls.prunable)


def settings_rows(stored: Mapping[str, Any], budget: int | None = None,
                  storage: str | None = None) -> list[list[str]]:
    """``[[label, value], ...]`` of the study's settings: every stored setting that is set (the
    latency settings only when latency was measured, pruning only for a fidelity with epochs),
    known ones first in :data:`SETTING_LABELS` order, then any others under their own names."""
    values = {k: v for k, v in stored.items() if k not in _HIDDEN}
    if budget is not None:
        values["budget"] = budget
    if storage:
        values["storage"] = storage
    if values.get("device") is None:
        for key in _LATENCY_KEYS:
            values.pop(key, None)
    if not _prunable(stored):
        for key in _PRUNE_KEYS:
            values.pop(key, None)
    order = [k for k in SETTING_LABELS if k in values] + sorted(k for k in values if k not in SETTING_LABELS)
    return [[SETTING_LABELS.get(k, k), _show(k, values[k])] for k in order
            if values[k] is not None and values[k] != "" and values[k] != []]


def _flags(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    out = []
    for flag, value in pairs:
        if value is None or value is False:
            continue
        out.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return out


def _latency_flags(stored: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """How latency was measured (the study's ``latency`` record), as search options."""
    if stored.get("latency_table"):
        return [("--latency-table", stored["latency_table"])]
    latency = stored.get("latency") if isinstance(stored.get("latency"), Mapping) else {}
    return [("--latency-backend", latency.get("backend") if latency.get("backend") not in (None, "torch") else None),
            ("--latency-threads", latency.get("threads") if latency.get("threads") not in (None, 1) else None)]


def reproduce_commands(study: str, stored: Mapping[str, Any], budget: int, *, results_dir: str = "results",
                       storage: str | None = None, finalists: Mapping[str, Any] | None = None) -> list[str]:
    """The shell commands that make this study again: search, finalists (when run), report."""
    where = _flags([("--results-dir", results_dir if results_dir != "results" else None),
                    ("--storage", storage)])
    limits = stored.get("constraints") or {}
    params = limits.get("params")
    search = ["y7nas search", *_flags([
        ("--space", stored.get("space")), ("--trials", budget), ("--study", study),
        ("--objectives", ",".join(stored.get("objectives", ()))), ("--fidelity", stored.get("fidelity")),
        ("--sampler", stored.get("sampler")), ("--seed", stored.get("seed")), ("--img", stored.get("img")),
        ("--deploy-img", stored_deploy_img(stored)), ("--data", stored.get("data")), ("--max-latency", limits.get("latency_ms")),
        ("--max-gflops", limits.get("gflops")),
        ("--max-params", None if params is None else f"{params / 1e6:g}"),
        ("--latency-device", stored.get("device") if stored.get("device") not in (None, "cpu") else None),
        ("--proxy-epochs", stored.get("proxy_epochs")), ("--proxy-subset", stored.get("proxy_subset")),
        ("--proxy-img", stored.get("proxy_img")), ("--supernet", stored.get("supernet")),
        ("--oneshot-calib", stored.get("oneshot_calib")), ("--oneshot-val", stored.get("oneshot_val")),
        *_latency_flags(stored)])]
    if _prunable(stored):
        search += _flags([("--no-prune", stored.get("prune") is False), ("--prune-eta", stored.get("prune_eta")),
                          ("--prune-min-epoch", stored.get("prune_min_epoch"))])
    commands = [" ".join([*search, *where])]
    if finalists:
        s = finalists.get("settings") or {}
        commands.append(" ".join(["y7nas finalists", *_flags([
            ("--study", study), ("--top", s.get("top")), ("--epochs", s.get("epochs")), ("--img", s.get("img")),
            ("--subset", s.get("subset")), ("--data", s.get("data")), ("--seed", s.get("seed")),
            ("--threads", s.get("threads")), ("--supernet", s.get("init_from")), ("--lr", s.get("lr")),
            *_choice_flags(s)]),
            *where]))
    commands.append(" ".join(["y7nas report", *_flags([("--study", study)]), *where]))
    return commands


def _choice_flags(settings: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """How the finalists were chosen (finalists.json's settings), as ``y7nas finalists`` options."""
    choice = settings.get("choice") or {}
    pairs: list[tuple[str, Any]] = []
    if choice.get("by") == "band":
        pairs += [("--band", ",".join(f"{v:g}" for v in choice["band"])), ("--estimator", choice.get("estimator"))]
    spec = settings.get("baseline_spec")
    if spec is not None and spec != "preset":       # preset: the default
        pairs.append(("--baseline", spec))
    return pairs


#: ``y7nas run`` settings (run.json) → its options, in the order the command shows them.
_RUN_FLAGS = (("space", "--space"), ("data", "--data"), ("img", "--img"), ("deploy_img", "--deploy-img"),
              ("max_latency", "--max-latency"),
              ("max_gflops", "--max-gflops"), ("max_params", "--max-params"), ("objectives", "--objectives"),
              ("fidelity", "--fidelity"), ("trials", "--trials"), ("finalists", "--finalists"),
              ("finalist_epochs", "--finalist-epochs"), ("band", "--band"), ("estimator", "--estimator"),
              ("baseline", "--baseline"), ("family_targets", "--family-targets"),
              ("supernet_epochs", "--supernet-epochs"), ("activation", "--activation"),
              ("random_subnets", "--random-subnets"), ("random_from", "--random-from"), ("latency_backend", "--latency-backend"),
              ("latency_threads", "--latency-threads"), ("latency_table", "--latency-table"), ("seed", "--seed"))
_ONESHOT_ONLY = {"supernet_epochs", "activation", "random_subnets", "random_from"}


def run_command(study: str, settings: Mapping[str, Any], *, results_dir: str = "results") -> str:
    """The ``y7nas run`` command line of a run's recorded settings (its run.json)."""
    oneshot = settings.get("fidelity") == "oneshot"
    pairs = [("--study", study)]
    for key, flag in _RUN_FLAGS:
        value = settings.get(key)
        if key in _ONESHOT_ONLY and not oneshot:
            continue
        if key == "band" and value is None and "band" in settings:
            value = "none"              # finalists spread over the front
        if isinstance(value, (list, tuple)):
            value = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
        pairs.append((flag, value))
    if settings.get("latency_device") not in (None, settings.get("device")):
        pairs.append(("--latency-device", settings["latency_device"]))   # the training device is local
    pairs.append(("--results-dir", results_dir if results_dir != "results" else None))
    return " ".join(["y7nas run", *_flags(pairs)])


# ----------------------------------------------------------------------------- pruning, family
def pruning_data(rows: Sequence[Mapping[str, Any]], stored: Mapping[str, Any],
                 saved: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """How many trials were stopped at which epoch (0: before training, constraint-skipped), plus
    the time-saved summary (``pruning.json`` when given, else computed from the rows); None for
    a study without pruning and without PRUNED trials."""
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    if not pruned and not _prunable(stored) and not saved:
        return None
    by_epoch: dict[int, int] = {}
    for r in pruned:
        epoch = int(r["pruned_at"]) if _finite(r.get("pruned_at")) else 0
        by_epoch[epoch] = by_epoch.get(epoch, 0) + 1
    summary = dict(saved) if saved else pruning_summary(rows, int(stored.get("proxy_epochs") or 5))
    return plain({
        **summary, "by_epoch": [[e, n] for e, n in sorted(by_epoch.items())],
        "constraint_skipped": by_epoch.get(0, 0), "pruned_total": len(pruned),
        "duplicates": sum(1 for r in pruned if r.get("duplicate_of", "") != ""),
    })


def _number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def family_data(columns: Sequence[str], rows: Sequence[Mapping[str, str]],
                links: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, Any]:
    """family.csv (``scaling.family.family_csv``: phi, depth, width, img, params, gflops,
    latency_ms, gflops_ratio, ideal) as typed rows, each with its model ``links`` by phi label."""
    typed = []
    for row in rows:
        entry = {c: _number(row.get(c, "")) for c in columns}
        entry["links"] = dict((links or {}).get(str(row.get("phi", "")), {}))
        typed.append(entry)
    return plain({"columns": list(columns), "rows": typed,
                  "has_latency": any(_finite(r.get("latency_ms")) for r in typed)})


# ----------------------------------------------------------------------------- all of it
def report_data(study: str, stored: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *,
                budget: int | None = None, references: Mapping[str, Mapping[str, float]] | None = None,
                genomes: Mapping[int, Any] | None = None, presets: Mapping[str, Any] | None = None,
                links: Mapping[int, Mapping[str, str]] | None = None,
                finalists: Mapping[str, Any] | None = None, family: Mapping[str, Any] | None = None,
                pruning: Mapping[str, Any] | None = None, results_dir: str = "results",
                storage: str | None = None, generated: str = "",
                run: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the report shows, as one JSON-ready dict (see the module docstring). ``run``:
    the settings of the ``y7nas run`` that made the study (its command comes first)."""
    objectives = list(stored.get("objectives") or ("score",))
    budget = budget if budget is not None else len(rows)
    columns, dims = table_columns(rows, objectives)
    trials = trial_entries(rows, objectives, genomes or {}, presets or {}, links or {})
    counts: dict[str, int] = {"trials": len(rows)}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return plain({
        "study": study, "generated": generated, "objectives": objectives, "budget": budget,
        "settings": settings_rows(stored, budget, storage),
        "commands": ([run_command(study, run, results_dir=results_dir)] if run else [])
        + reproduce_commands(study, stored, budget, results_dir=results_dir, storage=storage, finalists=finalists),
        "counts": counts, "columns": columns, "dimensions": dims, "trials": trials,
        "chart": chart_data(rows, objectives, {**(references or {}), **hand_design_reference(finalists)},
                            title=f"study {study}", constraints=stored.get("constraints")),
        "finalists": dict(finalists) if finalists else None, "family": dict(family) if family else None,
        "pruning": pruning_data(rows, stored, pruning),
    })


def hand_design_reference(finalists: Mapping[str, Any] | None) -> dict[str, dict[str, float]]:
    """The finalists' hand design as a chart reference, ``{"<name> (hand design)": metrics}``
    (measured like a trial: :func:`nas.search.train_finalists`); empty without one."""
    rows = (finalists or {}).get("rows") or []
    base = next((r for r in rows if r.get("role") == "baseline"), None)
    if base is None:
        return {}
    return {f"{base['name']} (hand design)": {k: float(v) for k, v in base.items()
                                              if k in (*OBJECTIVES, *_COST_COLUMNS) and _finite(v)}}


__all__ = ["SETTING_LABELS", "chart_data", "hand_design_reference", "family_data", "plain", "pruning_data", "report_data",
           "reproduce_commands", "run_command", "settings_rows", "table_columns", "trial_entries", "trial_status"]
