"""Finalists: train a few architectures of a finished search, and the hand design beside them.

A search score (NASWOT, one-shot mAP) only correlates loosely with what a detector learns. This
stage confirms the screen by training. Which architectures:

* with a budget (the study's ``--max-latency``, ``--max-gflops`` or ``--max-params``): the best
  ``top`` of the *band* just below it by an estimator (:mod:`nas.search._choice`), so the pick
  fills the budget instead of landing wherever the front's flat top puts it;
* without one: up to ``top`` members of the study's Pareto front (as ``pareto.csv`` lists it),
  spread evenly along its first objective (both ends always included).

With ``baseline`` (``y7nas run`` and ``y7nas finalists`` pass the space's preset, shrunk to the
budget) the hand design is trained with the same recipe and listed beside them (``role``
``baseline``), never chosen. Each is trained briefly with :func:`nas.train.proxy_train` (one-shot
studies: fine-tuned from inherited weights) and its validation mAP reported. Finally the stage
marks the rows that stay non-dominated when the search score is replaced by mAP@0.5:0.95 (same
cost objectives).

Written to ``<results_dir>/<study>/``: ``finalists.csv`` (one row per finalist) and
``finalists.json`` (the settings used plus the same rows), ``models/trial_<N>.yaml`` (with its
``.genome.yaml``) for a searched finalist the search did not write (one off its front) and
``models/hand_design.yaml`` for the hand design; beside each YAML the trained weights,
``trial_<N>.pt`` / ``hand_design.pt``: the evaluated (EMA) network's state dict, on the CPU, which
``torch.load(..., weights_only=True)`` reads and the YAML's model loads strictly (a row's
``weights`` names the file, relative to the study folder).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from nas.errors import NasError, SearchError
from nas.search._choice import DEFAULT_BAND, DEFAULT_ESTIMATOR, band_rows, budget_of, choose_in_band, get_estimator
from nas.search._config import check_image_size
from nas.search._files import csv_text, is_number, write_atomically
from nas.search._objectives import OBJECTIVES
from nas.search._pareto import pareto_front, pareto_rows
from nas.search._results import genome_of, records, write_genome_files, write_model_files

#: the objective that replaces the search score in the finalists' front
MAP_OBJECTIVE = "map50_95"


@dataclass(frozen=True)
class FinalistsResult:
    """Outcome of :func:`train_finalists`.

    ``rows`` are in the order chosen (band: best estimate first; front: best first objective
    first), the baseline last; each has ``role`` (``searched`` or ``baseline``), ``name``,
    ``number`` (None for the baseline), ``genome_hash``, the study's objectives, ``params``,
    ``gflops``, ``init`` (``inherited`` / ``scratch``), ``map50``, ``map50_95``, ``train_s``
    (None for a finalist whose training failed), ``on_map_front`` and ``fail_reason`` ('' when
    it trained). ``map_objectives`` are the objectives of that front: ``map50_95`` followed by
    the study's cost objectives.
    """

    study: str
    fidelity: str
    objectives: tuple[str, ...]
    map_objectives: tuple[str, ...]
    front_size: int
    settings: Mapping[str, Any]
    rows: tuple[Mapping[str, Any], ...]
    csv_path: Path
    json_path: Path

    @property
    def searched(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(r for r in self.rows if r.get("role", "searched") == "searched")

    @property
    def baseline(self) -> Mapping[str, Any] | None:
        return next((r for r in self.rows if r.get("role") == "baseline"), None)


def spread_indices(values: Sequence[float], top: int) -> list[int]:
    """Indices of up to ``top`` items spread evenly over the range of ``values``.

    ``values`` are the front's first objective in front order (sorted, best first). All indices
    when there are at most ``top`` values. Otherwise both ends (first and last index) and, for
    each of the ``top - 2`` evenly spaced interior targets between the two end values, the
    nearest index not yet chosen (ties: the earlier index). Returned sorted.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    n = len(values)
    if n <= top:
        return list(range(n))
    if top == 1:
        return [0]
    chosen = [0, n - 1]
    lo, hi = values[0], values[-1]
    for k in range(1, top - 1):
        target = lo + (hi - lo) * k / (top - 1)
        free = [i for i in range(n) if i not in chosen]
        chosen.append(min(free, key=lambda i: (abs(values[i] - target), i)))
    return sorted(chosen)


def check_finalist_options(top: int, epochs: int, img: int | None, subset: int | None, threads: int | None) -> None:
    """One line for the first bad option of :func:`train_finalists`."""
    if top < 1:
        raise SearchError(f"--top must be >= 1, got {top}")
    if epochs < 1:
        raise SearchError(f"--epochs must be >= 1, got {epochs}")
    check_image_size("--img", img)
    if subset is not None and subset < 1:
        raise SearchError(f"--subset must be >= 1, got {subset}")
    if threads is not None and threads < 1:
        raise SearchError(f"--threads must be >= 1, got {threads}")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def train_finalists(study: str, results_dir: Path, storage: str | None = None, top: int = 4,
                    epochs: int = 5, img: int | None = None, subset: int | None = 256,
                    data: str | None = None, threads: int | None = 1, seed: int | None = None,
                    device: str = "cpu", progress: Callable[[str], None] | None = None,
                    supernet: str | None = None, space: Any = None, lr: float | None = None,
                    band: tuple[float, float] | None = DEFAULT_BAND, estimator: str = DEFAULT_ESTIMATOR,
                    baseline: Any = None, baseline_name: str = "baseline",
                    baseline_spec: str | None = None) -> FinalistsResult:
    """Train up to ``top`` finalists of ``study`` (and ``baseline``); write finalists.csv/.json.

    A study with a budget takes them from the band (``band`` = (lo, hi) fractions of the budget,
    ranked by ``estimator``); ``band=None`` or a study without a budget takes them spread over
    its Pareto front. ``baseline`` (a Genome, named ``baseline_name``) is trained the same way
    and listed last: when it cannot inherit weights from the supernet (not in the space) it is
    trained from scratch at the proxy recipe's rate, and its row says ``init`` = ``scratch``.
    ``baseline_spec`` (what ``--baseline`` was given: ``preset``, a name, a file, ``none``) is
    recorded in the settings, so the report can repeat the command.

    ``img`` (default: the study's training size, ``proxy_img`` or ``img``), ``data`` and ``seed``
    default to the study's. The recipe is the proxy's, except that each finalist is validated
    once, after its last epoch: only the final mAP is used, and validating every epoch adds about
    a third to the time of a small model. ``progress(line)`` receives one line when each
    finalist starts and one when it ends. A :class:`NasError` while training one finalist (or
    running out of host or device memory) is recorded as its ``fail_reason``, the device's cached
    memory is released, and the others go on.

    With ``supernet`` (a one-shot study's default: its own supernet file) each finalist starts
    from the weights it inherits instead of a random initialisation (fine-tuning; ``space`` is
    the study's search space, ``lr`` the fine-tuning rate, default 0.001).

    Raises:
        SearchError: bad settings, an unknown study, or a study without a COMPLETE feasible
            trial (nothing to train).
    """
    from nas.profile import free_device_memory, is_out_of_memory
    from nas.search._runner import open_results_study
    from nas.train import proxy_train

    check_finalist_options(top, epochs, img, subset, threads)
    get_estimator(estimator)
    cfg, s, stored = open_results_study(study, Path(results_dir), storage)
    objectives = tuple(stored.get("objectives", cfg.objectives))
    trials = s.get_trials(deepcopy=False)
    rows_all = records(trials)
    front = pareto_rows(rows_all, objectives)
    if not front:
        raise SearchError(f"study {study!r} has no COMPLETE feasible trial yet: nothing to train "
                          f"(run or finish the search first)")
    budget = budget_of(cfg.constraints) if band is not None else None
    if budget is not None:
        picks = choose_in_band(rows_all, budget, top, band, estimator)
        choice = {"by": "band", "budget": {"metric": budget.metric, "limit": budget.limit}, "band": list(band),
                  "estimator": estimator, "in_band": len(band_rows(rows_all, budget, band, get_estimator(estimator).needs))}
    else:
        picks = [front[i] for i in spread_indices([r[objectives[0]] for r in front], top)]
        choice = {"by": "front"}
    train_img = img or stored.get("proxy_img") or cfg.img  # a proxy study's own training size
    supernet = supernet or (cfg.supernet if cfg.fidelity == "oneshot" else None)
    if supernet and space is None:
        raise SearchError("fine-tuning finalists from a supernet needs the study's search space")
    settings = {"top": top, "epochs": epochs, "img": train_img, "subset": subset,
                "data": data or cfg.data, "seed": cfg.seed if seed is None else seed,
                "threads": threads, "device": device, "init_from": supernet,
                "lr": (lr or 0.001) if supernet else lr, "choice": choice,
                "baseline": baseline_name if baseline is not None else None, "baseline_spec": baseline_spec}
    by_number = {t.number: t for t in trials}
    entries = [("searched", f"trial {p['number']}", p, genome_of(by_number[p["number"]])) for p in picks]
    for p in picks:   # a band pick may lie off the front, whose members alone the search wrote out
        flat = cfg.study_dir / "models" / f"trial_{p['number']}.yaml"
        if not flat.with_name(flat.stem + ".genome.yaml").is_file():
            write_model_files(by_number[p["number"]], flat, study)
    if baseline is not None:
        write_genome_files(baseline, cfg.study_dir / "models" / f"{HAND_DESIGN_FILE}.yaml",
                           f"y7nas study {study}, hand design {baseline_name}, genome {baseline.genome_hash()}")
        entries.append(("baseline", baseline_name, {"number": None, "genome_hash": baseline.genome_hash(),
                                                    **_baseline_metrics(cfg.replace(device=device), baseline, space,
                                                                       threads, progress)},
                        baseline))
    shared = None              # the supernet, loaded at the first finalist and kept for the others
    say = progress or (lambda line: None)
    rows: list[dict[str, Any]] = []
    for k, (role, name, pick, genome) in enumerate(entries, 1):
        head = f"finalist {k}/{len(entries)}: {name}" + (" (hand design)" if role == "baseline" else "")
        shown = ", ".join(f"{o} {_fmt(pick[o])}" for o in objectives if pick.get(o) is not None)
        row: dict[str, Any] = {"role": role, "name": name, "number": pick["number"],
                               "genome_hash": pick.get("genome_hash", "")}
        for key in (*objectives, "params", "gflops"):
            row[key] = pick.get(key)
        row.update(init="scratch", map50=None, map50_95=None, train_s=None, on_map_front=False, fail_reason="",
                   weights="")
        try:
            model, lr_used = genome, lr
            if supernet:
                from nas.supernet import SupernetError, extract, load_supernet

                if shared is None:
                    shared = load_supernet(supernet, space, device=device)
                try:
                    model, lr_used, row["init"] = extract(shared, genome), settings["lr"], "inherited"
                except SupernetError:
                    if role != "baseline":
                        raise
            how = "fine-tuning from inherited weights" if row["init"] == "inherited" else "proxy training"
            say(f"{head} ({shown}): {how} {epochs} epoch(s) at {settings['img']} px on "
                f"{subset or 'all'} images")
            extra = {"lr": lr_used} if lr_used else {}
            result = proxy_train(model, settings["data"], epochs=epochs, img=settings["img"],
                                 subset=subset, seed=settings["seed"], threads=threads, device=device,
                                 val_interval=epochs, **extra)  # only the final mAP is used: validate once
        except Exception as exc:  # noqa: BLE001 - a NasError or running out of memory fails one finalist
            if not (isinstance(exc, NasError) or is_out_of_memory(exc)):
                raise
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            row["fail_reason"] = text if isinstance(exc, NasError) else f"out of memory: {text}"
            model = result = None
            free_device_memory()
            say(f"{head} failed: {row['fail_reason']}")
        else:
            row.update(map50=float(result.map50), map50_95=float(result.map50_95),
                       train_s=round(float(result.seconds), 3))
            if result.model is not None:
                stem = f"trial_{pick['number']}" if role == "searched" else HAND_DESIGN_FILE
                row["weights"] = save_weights(result.model, cfg.study_dir / "models" / f"{stem}.pt",
                                              cfg.study_dir)
            say(f"{head} done: mAP@0.5 {row['map50']:.4f}, mAP@0.5:0.95 {row['map50_95']:.4f} "
                f"({row['train_s']:.1f} s)")
        rows.append(row)

    map_objectives = (MAP_OBJECTIVE, *[o for o in objectives if o != "score"])
    trained = [r for r in rows if all(is_number(r.get(o)) for o in map_objectives)]
    directions = ["maximize", *[OBJECTIVES[o].direction for o in map_objectives[1:]]]
    for i in pareto_front([[r[o] for o in map_objectives] for r in trained], directions):
        trained[i]["on_map_front"] = True

    out_dir = cfg.study_dir
    header = finalists_columns(objectives)
    csv_path, json_path = out_dir / "finalists.csv", out_dir / "finalists.json"
    write_atomically(csv_path, csv_text([{k: ("" if v is None else v) for k, v in r.items()} for r in rows],
                                        header))
    payload = {"study": study, "fidelity": cfg.fidelity, "objectives": list(objectives),
               "map_objectives": list(map_objectives), "front_size": len(front),
               "settings": settings, "rows": rows}
    write_atomically(json_path, json.dumps(payload, indent=2) + "\n")
    return FinalistsResult(study=study, fidelity=cfg.fidelity, objectives=objectives,
                           map_objectives=map_objectives, front_size=len(front), settings=settings,
                           rows=tuple(rows), csv_path=csv_path, json_path=json_path)


#: the hand design's model files in ``models/`` (``hand_design.yaml``, ``.genome.yaml``, ``.pt``)
HAND_DESIGN_FILE = "hand_design"


def save_weights(model: Any, path: Path, study_dir: Path) -> str:
    """Save ``model``'s state dict (CPU tensors) to ``path`` atomically; returns ``path`` relative
    to ``study_dir`` (what a finalists row records)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}, buf)
    write_atomically(path, buf.getvalue())
    return path.relative_to(study_dir).as_posix()


def _baseline_metrics(cfg: Any, genome: Any, space: Any, threads: int | None,
                      progress: Callable[[str], None] | None) -> dict[str, float]:
    """The hand design measured like a trial of the study (costs and its search score, so it has
    a place on the study's chart); only its costs when the study's fidelity cannot score it (a
    one-shot supernet that does not hold it), with one line saying why."""
    from nas.search._band import deploy_costs
    from nas.search._runner import Evaluator

    from nas.data import scan_reporter

    try:
        with scan_reporter(None):     # the finalists' own training reports the splits it reads
            evaluator = Evaluator(cfg, threads, space)
            evaluator.prepare()
            return dict(evaluator.measure(genome))
    except NasError as exc:
        (progress or (lambda line: None))(f"hand design: no {cfg.fidelity} score ({str(exc).splitlines()[0]}); "
                                          f"its costs only")
        return deploy_costs(genome, cfg.cost_img, cfg.latency_meter() if cfg.needs_latency else None)


def finalists_columns(objectives: Sequence[str]) -> list[str]:
    """The columns of finalists.csv for a study with ``objectives``."""
    return ["role", "name", "number", "genome_hash", *objectives,
            *[c for c in ("params", "gflops") if c not in objectives],
            "init", "map50", "map50_95", "train_s", "on_map_front", "fail_reason", "weights"]


def hand_design_verdict(result: FinalistsResult | Sequence[Mapping[str, Any]]) -> str | None:
    """One plain sentence comparing the best searched finalist with the hand design (None
    without a trained baseline or a trained searched finalist). ``result``: a
    :class:`FinalistsResult` or the rows of finalists.json."""
    rows = result.rows if isinstance(result, FinalistsResult) else result
    base = next((r for r in rows if r.get("role") == "baseline"), None)
    searched = [r for r in rows if r.get("role", "searched") == "searched" and is_number(r.get("map50_95"))]
    if base is None or not is_number(base.get("map50_95")) or not searched:
        return None
    best = max(searched, key=lambda r: float(r["map50_95"]))
    diff = float(best["map50_95"]) - float(base["map50_95"])
    verb = "beats" if diff > 0 else "ties with" if diff == 0 else "loses to"
    text = (f"the best searched finalist ({best['name']}, mAP@0.5:0.95 {float(best['map50_95']):.4f}) {verb} the "
            f"hand design ({base['name']}, {float(base['map50_95']):.4f}) by {diff:+.4f}")
    return text + ("" if diff >= 0 else "; the hand design won this comparison")


__all__ = ["HAND_DESIGN_FILE", "MAP_OBJECTIVE", "FinalistsResult", "check_finalist_options", "finalists_columns", "hand_design_verdict", "spread_indices",
           "train_finalists"]
