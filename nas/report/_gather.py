"""Read what the report shows: the study from its storage, and the files next to it.

The only module of :mod:`nas.report` that touches storage and files; it hands plain values to
:func:`nas.report._data.report_data`. Optional files (finalists.json/.csv, pruning.json,
family/family.csv, model YAMLs and ONNX files) are used when present; a malformed one is a
:class:`~nas.errors.ReportError` naming the file.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from nas.errors import NasError, ReportError
from nas.report._data import family_data, report_data
from nas.search._config import BUDGET_ATTR, REFERENCES_ATTR
from nas.search._runner import open_results_study
from nas.search._results import records
from nas.search._storage import redact

#: read at most this much of any optional file (the report stays a few MB)
_MAX_FILE = 8 * 1024 * 1024


def href(target: Path, base: Path) -> str:
    """A relative, URL-quoted link from a page in ``base`` to ``target``."""
    rel = os.path.relpath(Path(target).resolve(), Path(base).resolve())
    return quote(Path(rel).as_posix())


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > _MAX_FILE:
            raise ReportError(f"{path}: larger than {_MAX_FILE // 2**20} MiB; not put into the report")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV file; a malformed file is one ReportError line."""
    try:
        reader = csv.DictReader(_read_text(path).splitlines())
        rows = list(reader)
        return list(reader.fieldnames or []), rows
    except csv.Error as exc:
        raise ReportError(f"{path}: not a valid CSV file ({exc})") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return value


def model_links(study_dir: Path, page_dir: Path, numbers: list[int]) -> dict[int, dict[str, str]]:
    """``{number: {"yaml", "genome", "onnx"}}`` for the trials whose files exist in models/."""
    models = study_dir / "models"
    out: dict[int, dict[str, str]] = {}
    if not models.is_dir():
        return out
    for n in numbers:
        links = {}
        for key, name in (("yaml", f"trial_{n}.yaml"), ("genome", f"trial_{n}.genome.yaml"),
                          ("onnx", f"trial_{n}.onnx")):
            if (models / name).is_file():
                links[key] = href(models / name, page_dir)
        if links:
            out[n] = links
    return out


def finalists_file(study_dir: Path) -> dict[str, Any] | None:
    """finalists.json (settings and rows), else the rows of finalists.csv, else None."""
    if (study_dir / "finalists.json").is_file():
        payload = read_json(study_dir / "finalists.json")
        if not isinstance(payload.get("rows"), list):
            raise ReportError(f"{study_dir / 'finalists.json'}: no 'rows' list")
        return payload
    if (study_dir / "finalists.csv").is_file():
        header, rows = read_csv(study_dir / "finalists.csv")
        return {"settings": {}, "rows": rows, "columns": header}
    return None


def family_file(study_dir: Path, page_dir: Path) -> dict[str, Any] | None:
    """``family/family.csv`` (written by ``y7nas run`` with scaling's writer) with links to each
    member's YAML (``*-phi<k>.yaml``) and ONNX file, or None."""
    folder = study_dir / "family"
    if not (folder / "family.csv").is_file():
        return None
    header, rows = read_csv(folder / "family.csv")
    if "phi" not in header:
        raise ReportError(f"{folder / 'family.csv'}: no 'phi' column")
    links: dict[str, dict[str, str]] = {}
    for row in rows:
        phi = row.get("phi", "")
        for path in sorted(folder.glob(f"*-phi{phi}.yaml")):
            entry = {"yaml": href(path, page_dir)}
            for key, sibling in (("genome", path.with_name(path.stem + ".genome.yaml")),
                                 ("onnx", path.with_suffix(".onnx"))):
                if sibling.is_file():
                    entry[key] = href(sibling, page_dir)
            links[phi] = entry
    return family_data(header, rows, links)


def _genomes(trials: list[Any]) -> dict[int, Any]:
    from nas.genome import Genome

    out = {}
    for t in trials:
        text = t.user_attrs.get("genome")
        if not text:
            continue
        try:
            out[t.number] = Genome.from_dict(json.loads(text), source=f"trial {t.number}")
        except (NasError, ValueError):
            continue  # an unreadable genome only loses its preset comparison
    return out


def _with_costs(rows: list[dict[str, Any]], trials: list[Any]) -> list[dict[str, Any]]:
    """FAIL rows get the costs measured before the trial failed (user attribute ``costs``)."""
    by_number = {t.number: t for t in trials}
    for row in rows:
        if row["state"] == "FAIL":
            for key, value in (by_number[row["number"]].user_attrs.get("costs") or {}).items():
                row.setdefault(key, value)
    return rows


def gather(study: str, results_dir: Path, page_dir: Path, storage: str | None = None) -> dict[str, Any]:
    """Open ``study`` and return :func:`report_data` for it (links relative to ``page_dir``)."""
    from nas.presets import PRESETS

    cfg, s, stored = open_results_study(study, Path(results_dir), storage)
    trials = s.get_trials(deepcopy=False)
    dims = tuple(stored.get("dimensions", ()))
    rows = _with_costs(records(trials, dims), trials)
    study_dir = cfg.study_dir
    nc = int(stored.get("nc") or 80)
    presets: Mapping[str, Any] = {name: g.replace(nc=nc) for name, g in PRESETS.items()}
    pruning = read_json(study_dir / "pruning.json") if (study_dir / "pruning.json").is_file() else None
    run = read_json(study_dir / "run.json").get("settings") if (study_dir / "run.json").is_file() else None
    return report_data(
        study, stored, rows, budget=int(s.user_attrs.get(BUDGET_ATTR) or len(rows)),
        references=s.user_attrs.get(REFERENCES_ATTR) or {}, genomes=_genomes(trials), presets=presets,
        links=model_links(study_dir, page_dir, [r["number"] for r in rows]),
        finalists=finalists_file(study_dir), family=family_file(study_dir, page_dir), pruning=pruning,
        results_dir=str(results_dir), storage=redact(storage) if storage else None,
        generated=_dt.datetime.now().isoformat(timespec="seconds"), run=run)


__all__ = ["family_file", "finalists_file", "gather", "href", "model_links", "read_csv", "read_json"]
