"""Study → result files: trials.csv, pareto.csv, pareto.png and models/.

Everything here is regenerated from the study storage (``y7nas pareto``); nothing depends on the
process that ran the trials. The Pareto set is computed (:func:`nas.search._pareto.pareto_rows`),
not taken from Optuna: it is the non-dominated set of COMPLETE, feasible trials under the study's objectives, counting each
architecture once (trials marked ``duplicate_of`` re-use an earlier trial's result and are left
out of pareto.csv).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from nas.errors import SearchError
from nas.search._files import csv_text, format_cell, is_number, write_atomically
from nas.search._pareto import is_candidate, pareto_rows
from nas.search._plot import draw_pareto, pareto_plot_data

METRIC_COLUMNS = ("score", "params", "gflops", "latency_ms")
LEADING = ("number", "state")
TRAILING = ("feasible", "constraints", "genome_hash", "duplicate_of", "retry_of", "duration_s",
            "fail_reason", "pruned_at", "pruned_reason", "datetime_start", "datetime_complete")
LOST_REASON = "worker lost (no heartbeat; killed or crashed)"


def trial_record(trial: Any, dimensions: Sequence[str] = ()) -> dict[str, Any]:
    """One flat row for ``trial`` (an Optuna FrozenTrial)."""
    attrs, system = trial.user_attrs, trial.system_attrs
    state = trial.state.name
    row: dict[str, Any] = {"number": trial.number, "state": state}
    row.update(attrs.get("metrics") or {})
    history = system.get("retry_history") or []
    start, end = trial.datetime_start, trial.datetime_complete
    duration = attrs.get("duration_s")
    if duration is None and start is not None and end is not None:
        duration = round((end - start).total_seconds(), 3)
    reason = attrs.get("fail_reason", "")
    if state == "FAIL" and not reason:
        reason = LOST_REASON
    stop = (attrs.get("pruned") or {}) if state == "PRUNED" else {}
    row.update(
        feasible=attrs.get("feasible", "") if state == "COMPLETE" else "",
        constraints=json.dumps(attrs["constraints"]) if attrs.get("constraints") else "",
        genome_hash=attrs.get("genome_hash", ""),
        duplicate_of=attrs.get("duplicate_of", ""),
        retry_of=history[-1] if history else "",
        duration_s=duration if duration is not None else "",
        fail_reason=reason,
        pruned_at=stop.get("epoch", ""),
        pruned_reason=stop.get("reason", ""),
        datetime_start=start.isoformat(timespec="seconds") if start else "",
        datetime_complete=end.isoformat(timespec="seconds") if end else "",
    )
    for name in dimensions:
        row[f"param:{name}"] = trial.params.get(name, "")
    for name, value in trial.params.items():
        row.setdefault(f"param:{name}", value)
    return row


def records(trials: Iterable[Any], dimensions: Sequence[str] = ()) -> list[dict[str, Any]]:
    return [trial_record(t, dimensions) for t in sorted(trials, key=lambda t: t.number)]


def columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Column order: number, state, the four cost/score metrics, other metrics, bookkeeping,
    then one ``param:<dimension>`` column per space dimension."""
    extra_metrics: list[str] = []
    params: list[str] = []
    fixed = set(LEADING) | set(METRIC_COLUMNS) | set(TRAILING)
    for row in rows:
        for key in row:
            if key in fixed:
                continue
            target = params if key.startswith("param:") else extra_metrics
            if key not in target:
                target.append(key)
    return [*LEADING, *METRIC_COLUMNS, *sorted(extra_metrics), *TRAILING, *params]


def genome_of(trial: Any):
    """The Genome stored on a trial (user attribute ``genome``), or a SearchError line."""
    from nas.genome import Genome

    text = trial.user_attrs.get("genome")
    if not text:
        raise SearchError(f"trial {trial.number} ({trial.state.name}) has no architecture recorded yet")
    return Genome.from_dict(json.loads(text), source=f"trial {trial.number}")


def write_model_files(trial: Any, flat_path: Path, study: str) -> tuple[Path, Path]:
    """``flat_path`` (flat yolov7 YAML) and its ``.genome.yaml`` sibling for one trial."""
    genome = genome_of(trial)
    header = f"y7nas study {study}, trial {trial.number}, genome {genome.genome_hash()}"
    metrics = trial.user_attrs.get("metrics") or {}
    if metrics:
        header += "\n" + ", ".join(f"{k}={format_cell(v)}" for k, v in metrics.items())
    return write_genome_files(genome, flat_path, header)


def write_genome_files(genome: Any, flat_path: Path, header: str) -> tuple[Path, Path]:
    """``flat_path`` (the flat yolov7 YAML of ``genome``) and its ``.genome.yaml`` sibling, both
    under ``header``."""
    from nas.expand import dump_yaml, expand

    genome_path = flat_path.with_name(flat_path.name.removesuffix(".yaml") + ".genome.yaml")
    write_atomically(flat_path, dump_yaml(expand(genome), header=header))
    write_atomically(genome_path, genome.to_yaml(header=header))
    return flat_path, genome_path


def write_results(trials: Sequence[Any], out_dir: Path, *, study: str, objectives: Sequence[str],
                  dimensions: Sequence[str] = (),
                  references: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Write trials.csv, pareto.csv, pareto.png and models/ for the front; returns a summary."""
    rows = records(trials, dimensions)
    header = columns(rows)
    front = pareto_rows(rows, objectives)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(out_dir / "trials.csv", csv_text(rows, header))
    write_atomically(out_dir / "pareto.csv", csv_text(front, header))
    models = out_dir / "models"
    keep = set()
    by_number = {t.number: t for t in trials}
    for row in front:
        flat, gen = write_model_files(by_number[row["number"]], models / f"trial_{row['number']}.yaml", study)
        keep |= {flat.name, gen.name}
    if models.is_dir():
        for stale in models.glob("trial_*.yaml"):
            if stale.name not in keep:
                stale.unlink()
    data = pareto_plot_data(rows, objectives, references or {}, title=f"study {study}")
    draw_pareto(data, out_dir / "pareto.png")
    return {"rows": rows, "front": front, "columns": header, "dir": out_dir}


# csv_text, is_candidate, is_number, pareto_rows and write_atomically live in _files / _pareto
# (which import nothing of this module) and are re-exported here for existing callers.
__all__ = ["LOST_REASON", "columns", "csv_text", "genome_of", "is_candidate", "is_number", "pareto_rows", "records",
           "trial_record", "write_atomically", "write_model_files", "write_results"]
