"""The study runner: resumable, parallel, exact-count multi-objective architecture search.

Exact count with any number of workers: *tickets*
    When a study is created, ``--trials`` empty WAITING trials ("tickets") are queued and the
    budget is stored (``y7nas:budget``). A worker only ever runs a trial by atomically moving a
    WAITING trial to RUNNING (Optuna's storage guarantees one winner); it never creates trials
    with ``study.ask()``. A trial that fails queues exactly one replacement (a fresh ticket for a
    failed architecture, a retry of the same parameters for an interrupted or killed one), tagged
    ``y7nas:replaces`` so it is replaced only once. So WAITING + RUNNING + COMPLETE + PRUNED =
    budget at all times, and the study ends with exactly ``--trials`` evaluated trials (COMPLETE,
    or PRUNED when early stopping ended them: :mod:`nas.search._pruning`), however many workers
    share it. Re-running with a larger ``--trials`` queues the difference.

Dead workers
    While a trial runs, its worker records heartbeats. Idle workers (and every worker before
    taking a ticket) mark RUNNING trials whose heartbeat is older than the grace period FAIL and
    re-queue their parameters (:mod:`nas.search._storage`). A re-run after ``kill -9`` therefore
    waits up to the grace period for the lost trial, then retries it. Ctrl-C marks the current
    trial FAIL (``interrupted``) and re-queues its parameters before exiting.

Duplicates
    A trial's genome is reduced to its canonical form and hash (user attribute ``genome_hash``).
    If an earlier COMPLETE trial has the same hash, its metrics are copied (``duplicate_of``)
    instead of evaluating again; if a lower-numbered trial with the same hash is still running,
    the worker waits for it.
"""
from __future__ import annotations

import collections
import functools
import math
import multiprocessing
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from nas.errors import NasError, SearchError
from nas.search._config import (BUDGET_ATTR, CONFIG_ATTR, REFERENCES_ATTR, SearchConfig, constraint_values,
                                make_sampler, population_size)
from nas.search._fidelity import EvalContext, get_fidelity
from nas.search._files import write_atomically
from nas.search._objectives import OBJECTIVES
from nas.search._pareto import pareto_rows
from nas.search._pruning import Stopped as _Stop
from nas.search._pruning import TrialMonitor, peer_points, pruning_summary
from nas.search._results import records, write_model_files, write_results
from nas.search._storage import (StudyStorage, _optuna, has_replacement, open_storage, queue_replacement,
                                 redact, sqlite_file)


class ProgressUpdate(NamedTuple):
    """What a progress display needs after each trial (or poll)."""

    done: int           # evaluated trials: COMPLETE + PRUNED
    total: int          # the budget (--trials)
    running: int
    failed: int
    best: str           # e.g. "front 4 | best score 212.3"
    last: str | None    # one line about the trial that just finished, if any
    pruned: int = 0     # of ``done``, stopped early


Progress = Callable[[ProgressUpdate], None]


@dataclass(frozen=True)
class SearchSummary:
    study: str
    storage: str
    complete: int
    failed: int
    budget: int
    front: tuple[Mapping[str, Any], ...]
    results_dir: Path | None
    objectives: tuple[str, ...]
    pruned: int = 0
    pruning: Mapping[str, Any] | None = None  # time saved (:func:`nas.search._pruning.pruning_summary`)


# ------------------------------------------------------------------------------ evaluation
class Evaluator:
    """Builds, profiles and scores one genome (one per worker process)."""

    def __init__(self, cfg: SearchConfig, threads: int | None = None, space: Any = None):
        self.cfg = cfg
        self.threads = threads
        self.meter = cfg.latency_meter()
        self.fidelity = get_fidelity(cfg.fidelity)()
        self.context = EvalContext(img=cfg.img, device=cfg.device, seed=cfg.seed, data=cfg.data,
                                   batch=cfg.zero_cost_batch, threads=threads, space=space,
                                   options={"epochs": cfg.proxy_epochs, "subset": cfg.proxy_subset,
                                            "img": cfg.train_img, "supernet": cfg.supernet,
                                            "calib": cfg.oneshot_calib, "val": cfg.oneshot_val})
        self._prepared = False

    def prepare(self) -> None:
        """Fail early (before any trial) when the fidelity or its data cannot be used. Runs once
        per evaluator (``run_search`` prepares the evaluator it then hands to ``run_worker``; the
        one-shot fidelity loads its supernet here)."""
        if self._prepared:
            return
        self.fidelity.check_available()
        from nas.profile import resolve_device

        resolve_device(self.cfg.device)
        if self.cfg.needs_latency:
            self.meter.check()
        if self.fidelity.needs_data:
            self.context.images()
        self.fidelity.prepare(self.context)
        self._prepared = True

    def measure(self, genome: Any, monitor: TrialMonitor | None = None) -> dict[str, float]:
        """Params, GFLOPs (deploy form), deploy latency when needed, then the fidelity's metrics.

        Latency is measured by the study's :class:`nas.latency.LatencyMeter` (its own thread
        count, ``--latency-threads``); everything else runs with this worker's ``threads``.

        The costs are measured first and handed to ``monitor`` (which may stop the trial before
        or during a multi-epoch fidelity: see :mod:`nas.search._pruning`).
        """
        import torch

        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._measure(genome, monitor)
        finally:
            torch.set_num_threads(previous)

    def _measure(self, genome: Any, monitor: TrialMonitor | None) -> dict[str, float]:
        from nas.build import build_model
        from nas.cfg import parse_cfg
        from nas.expand import expand
        from nas.fuse import fuse
        from nas.profile import profile_model

        import torch

        # the initial weights are part of the measurement (zero-cost proxies read them, proxy
        # training starts from them): seed them, so a trial's metrics do not depend on what
        # this process ran before (resume, several workers, pruned neighbours)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            model = build_model(parse_cfg(expand(genome), source=f"genome {genome.genome_hash()}"))
        deploy = fuse(model).eval()
        prof = profile_model(deploy, self.cfg.cost_img)
        metrics: dict[str, float] = {"params": int(prof.params), "gflops": round(prof.gflops, 6)}
        if self.cfg.needs_latency:
            metrics["latency_ms"] = round(self.meter.measure(deploy, self.cfg.cost_img), 4)
        monitor = monitor or TrialMonitor(self.cfg.objectives, self.cfg.proxy_epochs)
        if not monitor.start(metrics):
            return metrics
        self.context.report = monitor.report
        metrics.update(self.fidelity.evaluate(genome, model, self.context))
        return metrics


def _fail_reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NasError):
        return text or type(exc).__name__
    from nas.profile import is_out_of_memory

    if is_out_of_memory(exc):
        return f"out of memory: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------------------ study setup
def _seed_for(seed: int, *parts: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def _attach_sampler(study: Any, cfg: SearchConfig, stored: Mapping[str, Any], worker: int,
                    existing: int) -> None:
    """Give ``study`` this worker's sampler: seeded from (seed, worker, trials so far) so that a
    resumed or parallel run does not replay the proposals already made."""
    study.sampler = make_sampler(cfg.sampler_name, _seed_for(cfg.seed, worker, existing),
                                 population_size=stored.get("population_size") or population_size(cfg.trials))


def _config_of(study: Any, name: str, wait_s: float) -> Mapping[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        stored = study.user_attrs.get(CONFIG_ATTR)
        if stored is not None:
            return stored
        if time.monotonic() >= deadline:
            raise SearchError(f"study {name!r} exists but was not created by y7nas (no {CONFIG_ATTR} "
                              f"attribute); use another --study name")
        time.sleep(0.5)


def _with_space(cfg: SearchConfig, space: Any) -> SearchConfig:
    if cfg.space != space.name:
        raise SearchError(f"config names space {cfg.space!r} but the space object is {space.name!r}")
    sha = cfg.supernet_sha
    if cfg.fidelity == "oneshot" and cfg.supernet:
        from nas.supernet import file_sha

        sha = file_sha(cfg.supernet)
    return cfg.replace(space_signature=space.signature(), nc=space.nc, supernet_sha=sha,
                       dimensions=tuple(d.name for d in space.dimensions()))


def _states(study: Any) -> collections.Counter:
    return collections.Counter(t.state.name for t in study.get_trials(deepcopy=False))


def _evaluated(states: Mapping[str, int]) -> int:
    """Trials that count toward the budget (by state name): COMPLETE and PRUNED."""
    return states["COMPLETE"] + states["PRUNED"]


def _missing_tickets(budget: int, states: Mapping[str, int]) -> int:
    """Tickets to queue so that WAITING + RUNNING + COMPLETE + PRUNED = budget (by state name)."""
    return budget - _evaluated(states) - states["RUNNING"] - states["WAITING"]


def name_objectives(study: Any, objectives: Sequence[str]) -> None:
    """Store the objectives' names on the study (Optuna's metric names, ``study.set_metric_names``),
    unless it has them already: optuna-dashboard and ``trials_dataframe`` label values with them
    instead of "Objective 0", "Objective 1"."""
    names = list(objectives)
    if study.metric_names != names:
        _optuna()  # silences the ExperimentalWarning of set_metric_names
        study.set_metric_names(names)


def _queue_tickets(study: Any, n: int) -> None:
    optuna = _optuna()
    for _ in range(n):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING))


def open_study(cfg: SearchConfig, store: StudyStorage, *, create: bool, wait_s: float = 60.0) -> tuple[Any, dict]:
    """Create (``create``) or load the study; check it against ``cfg``; make its budget right.

    Returns ``(study, stored_config)``. Loading only (a worker joining) never changes the budget.
    """
    optuna = _optuna()
    directions = cfg.directions
    created = False
    try:
        if create:
            study = optuna.create_study(study_name=cfg.study, storage=store.storage, directions=directions)
            created = True
        else:
            study = optuna.load_study(study_name=cfg.study, storage=store.storage)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=cfg.study, storage=store.storage)
    except KeyError:
        raise SearchError(f"no study {cfg.study!r} in {redact(store.url)}") from None
    except Exception as exc:  # noqa: BLE001 - storage errors vary; one line
        raise SearchError(f"storage {redact(store.url)}: {str(exc).strip().splitlines()[0]}") from None
    if created:
        name_objectives(study, cfg.objectives)
        stored = {**cfg.study_attrs(), "population_size": population_size(cfg.trials)}
        study.set_user_attr(CONFIG_ATTR, stored)
        _queue_tickets(study, cfg.trials)
        study.set_user_attr(BUDGET_ATTR, cfg.trials)
        return study, stored
    stored = dict(_config_of(study, cfg.study, wait_s if not create else 5.0))
    cfg.check_against(stored)
    name_objectives(study, stored.get("objectives", cfg.objectives))  # studies made before names were set
    budget = study.user_attrs.get(BUDGET_ATTR)
    if not create:
        deadline = time.monotonic() + wait_s
        while budget is None and time.monotonic() < deadline:
            time.sleep(0.5)
            budget = study.user_attrs.get(BUDGET_ATTR)
        if budget is None:
            raise SearchError(f"study {cfg.study!r} has no trial budget yet; start it with `y7nas search`")
        return study, stored
    if budget is None:  # the creator stopped between creating the study and queueing its tickets
        _queue_tickets(study, max(0, _missing_tickets(cfg.trials, _states(study))))
    elif cfg.trials > budget:
        _queue_tickets(study, cfg.trials - budget)
    elif cfg.trials < budget:
        raise SearchError(f"study {cfg.study!r} has a budget of {budget} trials; pass --trials {budget} "
                          f"(or more) to continue it")
    if budget != cfg.trials:
        study.set_user_attr(BUDGET_ATTR, cfg.trials)
    return study, stored


def _load_existing_study(study: str, storage: str, hint: str = ""):
    """Open an existing study; a missing SQLite file or study name is one clear error."""
    db = sqlite_file(storage)
    if db is not None and not db.is_file():
        raise SearchError(f"no study database at {db}{hint}")
    store = open_storage(storage, create_dirs=False)
    try:
        return _optuna().load_study(study_name=study, storage=store.storage)
    except KeyError:
        raise SearchError(f"no study {study!r} in {redact(storage)}") from None


def load_study_config(study: str, storage: str, **overrides: Any) -> SearchConfig:
    """The :class:`SearchConfig` of an existing study, read from its attributes (for workers)."""
    s = _load_existing_study(study, storage)
    attrs = _config_of(s, study, 5.0)
    budget = s.user_attrs.get(BUDGET_ATTR) or 1
    return SearchConfig.from_study_attrs(study, attrs, budget, storage=storage, **overrides)


# ------------------------------------------------------------------------------ the trial loop
class _Worker:
    def __init__(self, study: Any, store: StudyStorage, cfg: SearchConfig, space: Any,
                 evaluator: Evaluator, progress: Progress | None, name: str):
        self.study, self.store, self.cfg, self.space = study, store, cfg, space
        self.evaluator, self.progress, self.name = evaluator, progress, name
        self.optuna = _optuna()
        self.TS = self.optuna.trial.TrialState

    # -- loop ----------------------------------------------------------------------------
    def run(self) -> None:
        fails_in_row, last_reason, last_poll = 0, "", 0.0
        while True:
            self.store.fail_stale(self.study)
            trials = self.study.get_trials(deepcopy=False)
            states = collections.Counter(t.state.name for t in trials)
            budget = int(self.study.user_attrs.get(BUDGET_ATTR) or self.cfg.trials)
            if _evaluated(states) >= budget:
                self._report(trials, None)
                return
            trial = self._pop_ticket(trials)
            if trial is None:
                if states["RUNNING"] == 0 and states["WAITING"] == 0:
                    self._repair(trials, budget)
                if time.monotonic() - last_poll > 5:
                    self._report(trials, None)
                    last_poll = time.monotonic()
                time.sleep(self.cfg.poll_interval)
                continue
            ok, line = self._run_trial(trial)
            if ok:
                fails_in_row = 0
            else:
                fails_in_row, last_reason = fails_in_row + 1, line
                if fails_in_row >= self.cfg.max_consecutive_failures:
                    raise SearchError(f"{fails_in_row} trials in a row failed; last: {last_reason}")
            self._report(self.study.get_trials(deepcopy=False), line)

    def _pop_ticket(self, trials: Sequence[Any]) -> Any | None:
        """Atomically take a WAITING trial (WAITING → RUNNING); None when there is none."""
        storage = self.study._storage
        for t in sorted((t for t in trials if t.state == self.TS.WAITING), key=lambda t: t.number):
            try:
                self.store.beat(self.study, t._trial_id)  # so a crash right after the pop is detected
                if not storage.set_trial_state_values(t._trial_id, state=self.TS.RUNNING):
                    continue
            except self.optuna.exceptions.UpdateFinishedTrialError:
                continue
            self.study._thread_local.cached_all_trials = None  # as Study.ask: samplers see fresh trials
            return self.optuna.trial.Trial(self.study, t._trial_id)
        return None

    def _repair(self, trials: Sequence[Any], budget: int) -> None:
        """Re-queue tickets lost to a crash between failing a trial and queueing its replacement."""
        deficit = _missing_tickets(budget, collections.Counter(t.state.name for t in trials))
        for t in sorted((t for t in trials if t.state == self.TS.FAIL), key=lambda t: t.number):
            if deficit <= 0:
                return
            if not has_replacement(self.study, t.number):
                queue_replacement(self.study, t, retry_params="fail_reason" not in t.user_attrs,
                                  reason="repair")
                deficit -= 1
        if deficit > 0:
            _queue_tickets(self.study, deficit)

    # -- one trial -----------------------------------------------------------------------
    def _run_trial(self, trial: Any) -> tuple[bool, str]:
        start = time.monotonic()
        with self.store.heartbeat(self.study, trial._trial_id):
            try:
                trial.set_user_attr("worker", self.name)
                genome = self.space.suggest(trial)
                digest = genome.genome_hash()
                trial.set_user_attr("genome_hash", digest)
                trial.set_user_attr("genome", genome.canonical())
                original = self._wait_for_original(trial, digest)
                stopped = None
                if original is None:
                    monitor = self._monitor(trial)
                    metrics = self.evaluator.measure(genome, monitor)
                    stopped = monitor.stopped
                    original = self._earlier_twin(trial, digest)  # a concurrent twin finished first
                if original is not None:
                    metrics = dict(original.user_attrs["metrics"])
                    trial.set_user_attr("duplicate_of", original.user_attrs.get("duplicate_of", original.number))
                    if original.state == self.TS.PRUNED:
                        stopped = original.user_attrs.get("pruned") or {"epoch": 0, "reason": "duplicate"}
                        stopped = _Stop(int(stopped["epoch"]), f"as #{original.number}: {stopped['reason']}")
                constraints = constraint_values(metrics, self.cfg.constraints)
                trial.set_user_attr("metrics", metrics)
                if constraints:
                    trial.set_user_attr("constraints", constraints)
                trial.set_user_attr("feasible", all(c <= 0 for c in constraints.values()))
                if stopped is not None:
                    return self._prune(trial, stopped, start)
                values = [float(metrics[o]) for o in self.cfg.objectives]
                bad = [o for o, v in zip(self.cfg.objectives, values) if not math.isfinite(v)]
                if bad:
                    raise SearchError(f"non-finite {bad[0]} ({metrics[bad[0]]})")
                for key, value in constraints.items():
                    trial.set_constraint(key, value)
                trial.set_user_attr("duration_s", round(time.monotonic() - start, 3))
                self.study.tell(trial, values)
                return True, trial_line(self.study._storage.get_trial(trial._trial_id), self.cfg.objectives)
            except KeyboardInterrupt:
                self._fail(trial, "interrupted", retry=True)
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is recorded and the search goes on
                reason = _fail_reason(exc)
                if reason.startswith("out of memory"):
                    from nas.profile import free_device_memory

                    free_device_memory()
                if os.environ.get("Y7NAS_DEBUG"):
                    traceback.print_exc()
                self._fail(trial, reason, retry=False)
                return False, f"trial {trial.number} failed: {reason}"

    def _prune(self, trial: Any, stopped: Any, start: float) -> tuple[bool, str]:
        """Record a trial stopped early as PRUNED (it counts toward the budget)."""
        trial.set_user_attr("pruned", {"epoch": int(stopped.epoch), "reason": stopped.reason})
        trial.set_user_attr("duration_s", round(time.monotonic() - start, 3))
        self.study.tell(trial, state=self.TS.PRUNED)
        return True, trial_line(self.study._storage.get_trial(trial._trial_id), self.cfg.objectives)

    def _monitor(self, trial: Any) -> TrialMonitor:
        """The trial's :class:`TrialMonitor`: stores its costs (user attribute ``costs``) and
        per-epoch scores (``intermediate``, plus ``trial.report`` for one objective: Optuna has
        no intermediate values for several), and applies the study's pruning rule."""
        history: dict[str, float] = {}
        single = len(self.cfg.objectives) == 1

        def on_score(epoch: int, score: float) -> None:
            history[str(epoch)] = score
            trial.set_user_attr("intermediate", dict(history))
            if single:
                trial.report(score, epoch)

        def peers_at(epoch: int):
            trials = self.study.get_trials(deepcopy=False)
            return peer_points(trials, epoch, trial.number, self.cfg.constraints)

        return TrialMonitor(self.cfg.objectives, self.cfg.proxy_epochs, self.cfg.pruning_rule(),
                            self.cfg.constraints, peers_at=peers_at,
                            on_costs=lambda costs: trial.set_user_attr("costs", costs), on_score=on_score)

    def _fail(self, trial: Any, reason: str, *, retry: bool) -> None:
        try:
            trial.set_user_attr("fail_reason", reason)
            frozen = self.study._storage.get_trial(trial._trial_id)
            queue_replacement(self.study, frozen, retry_params=retry, reason=reason)
            self.study.tell(trial, state=self.TS.FAIL)
        except self.optuna.exceptions.UpdateFinishedTrialError:
            pass  # already marked failed by a stale-trial check (and replaced there)
        except Exception as exc:  # noqa: BLE001
            raise SearchError(f"could not record trial {trial.number} as failed ({reason}): "
                              f"{_fail_reason(exc)}") from None

    def _same_hash(self, trial: Any, digest: str, states: tuple) -> list[Any]:
        return [t for t in self.study.get_trials(deepcopy=False, states=states)
                if t.number != trial.number and t.user_attrs.get("genome_hash") == digest]

    def _wait_for_original(self, trial: Any, digest: str) -> Any | None:
        """An earlier COMPLETE trial with this genome, waiting for a lower-numbered running twin."""
        while True:
            twins = self._same_hash(trial, digest, (self.TS.COMPLETE, self.TS.PRUNED, self.TS.RUNNING))
            done = [t for t in twins if t.state != self.TS.RUNNING and "metrics" in t.user_attrs]
            if done:
                return min(done, key=lambda t: t.number)
            if not any(t.number < trial.number for t in twins):
                return None
            time.sleep(self.cfg.poll_interval)
            self.store.fail_stale(self.study)

    def _earlier_twin(self, trial: Any, digest: str) -> Any | None:
        done = [t for t in self._same_hash(trial, digest, (self.TS.COMPLETE, self.TS.PRUNED))
                if "metrics" in t.user_attrs]
        return min(done, key=lambda t: t.number) if done else None

    # -- progress ------------------------------------------------------------------------
    def _report(self, trials: Sequence[Any], line: str | None) -> None:
        if self.progress is not None:
            budget = int(self.study.user_attrs.get(BUDGET_ATTR) or self.cfg.trials)
            self.progress(progress_update(trials, self.cfg.objectives, budget, line))


def trial_line(trial: Any, objectives: Sequence[str]) -> str:
    """One line about a finished trial (FrozenTrial), as the progress display prints it."""
    attrs = trial.user_attrs
    if trial.state.name == "PRUNED":
        stop = attrs.get("pruned") or {}
        return f"trial {trial.number} pruned at epoch {stop.get('epoch', '?')}: {stop.get('reason', '')}"
    if trial.state.name != "COMPLETE":
        return f"trial {trial.number} failed: {attrs.get('fail_reason') or 'worker lost'}"
    metrics = attrs.get("metrics") or {}
    shown = ", ".join(f"{o}={_fmt(metrics.get(o))}" for o in objectives)
    note = f" (duplicate of #{attrs['duplicate_of']})" if "duplicate_of" in attrs else ""
    infeasible = "" if attrs.get("feasible", True) else " [infeasible]"
    return f"trial {trial.number} complete: {shown}{note}{infeasible}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value / 1e6:.3g}M"
    return str(value)


def progress_update(trials: Sequence[Any], objectives: Sequence[str], budget: int,
                    line: str | None = None) -> ProgressUpdate:
    """Counts plus a 'best so far' text (front size and best first objective among feasible)."""
    states = collections.Counter(t.state.name for t in trials)
    rows = records([t for t in trials if t.state.name == "COMPLETE"])
    front = pareto_rows(rows, objectives)
    best = "no complete trial yet"
    if front:
        first = objectives[0]
        pick = max if OBJECTIVES[first].direction == "maximize" else min
        best_row = pick(front, key=lambda r: r[first])
        best = f"front {len(front)} | best {first} {_fmt(best_row[first])} (#{best_row['number']})"
    return ProgressUpdate(_evaluated(states), budget, states["RUNNING"], states["FAIL"], best, line,
                          states["PRUNED"])


# ------------------------------------------------------------------------------ entry points
def _threads_per_worker(cfg: SearchConfig) -> int:
    """``--threads`` divided among the workers; one per worker by default.

    The models a search builds are small: on a CPU they gain little from intra-op threads,
    while threads competing for busy cores slow everything (several times over on a shared
    machine) and make latency noisy. Scale a search with ``--workers``, not threads. Latency is
    not timed with these threads but with the study's ``--latency-threads`` (a study field).
    """
    return max(1, (cfg.threads or cfg.workers) // cfg.workers)


def _worker_name(index: int | None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}" + (f":w{index}" if index is not None else "")


def run_worker(cfg: SearchConfig, space: Any, *, progress: Progress | None = None,
               worker_index: int | None = None, threads: int | None = None,
               store: StudyStorage | None = None, evaluator: Evaluator | None = None) -> None:
    """Join an existing study and run trials until it has its budget of evaluated trials."""
    cfg = _with_space(cfg, space)
    evaluator = evaluator or Evaluator(cfg, threads or _threads_per_worker(cfg), space)
    evaluator.prepare()
    store = store or open_storage(cfg.storage_url, heartbeat_interval=cfg.heartbeat_interval,
                                  grace_period=cfg.grace_period, create_dirs=False)
    study, stored = open_study(cfg, store, create=False)
    index = worker_index if worker_index is not None else os.getpid()
    _attach_sampler(study, cfg, stored, index, len(study.get_trials(deepcopy=False)))
    _Worker(study, store, cfg, space, evaluator, progress, _worker_name(worker_index)).run()


def _worker_process(cfg: SearchConfig, space: Any, index: int, threads: int, errors: Any) -> None:
    """Entry point of one ``--workers`` process (spawned)."""
    try:
        run_worker(cfg, space, worker_index=index, threads=threads)
    except KeyboardInterrupt:
        sys.exit(130)
    except NasError as exc:
        errors.put(f"worker {index}: {exc}")
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - report one line to the parent
        errors.put(f"worker {index}: {_fail_reason(exc)}")
        sys.exit(1)


def run_search(cfg: SearchConfig, space: Any, *, progress: Progress | None = None,
               write: bool = True) -> SearchSummary:
    """Create or resume ``cfg.study`` and run it to ``cfg.trials`` evaluated (COMPLETE or PRUNED) trials.

    ``cfg.workers == 1`` runs in this process; more start that many worker processes on this
    machine sharing the storage (torch threads divided among them). Results are written to
    ``<results_dir>/<study>/`` at the end (``write``).
    """
    cfg = _with_space(cfg, space)
    threads = _threads_per_worker(cfg)
    evaluator = Evaluator(cfg, threads, space)
    evaluator.prepare()  # refuse an unusable fidelity/data/device before touching the storage
    store = open_storage(cfg.storage_url, heartbeat_interval=cfg.heartbeat_interval,
                         grace_period=cfg.grace_period)
    study, stored = open_study(cfg, store, create=True)
    if cfg.workers == 1:
        run_worker(cfg, space, progress=progress, worker_index=0, threads=threads, store=store,
                   evaluator=evaluator)
    else:
        _run_processes(cfg, space, study, threads, progress)
    study = _optuna().load_study(study_name=cfg.study, storage=store.storage)
    return finish(cfg, study, stored, write=write)


def _run_processes(cfg: SearchConfig, space: Any, study: Any, threads: int, progress: Progress | None) -> None:
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_worker_process, args=(cfg, space, i, threads, errors),
                         name=f"y7nas-worker-{i}") for i in range(cfg.workers)]
    for p in procs:
        p.start()
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=1.0 / len(procs))
            if progress is not None:
                trials = study.get_trials(deepcopy=False)
                budget = int(study.user_attrs.get(BUDGET_ATTR) or cfg.trials)
                new = sorted((t for t in trials if t.state.is_finished() and t.number not in seen),
                             key=lambda t: t.datetime_complete or t.datetime_start)
                for t in new:
                    seen.add(t.number)
                    progress(progress_update(trials, cfg.objectives, budget, trial_line(t, cfg.objectives)))
                if not new:
                    progress(progress_update(trials, cfg.objectives, budget))
    except KeyboardInterrupt:
        for p in procs:  # they got the same SIGINT; give them time to record their trials
            p.join(timeout=30)
        raise
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    failed = [p for p in procs if p.exitcode not in (0, None)]
    if failed:
        if any(p.exitcode == 130 for p in failed):
            raise KeyboardInterrupt
        raise SearchError(messages[0] if messages else
                          f"worker process {failed[0].name} exited with status {failed[0].exitcode}")


def finish(cfg: SearchConfig, study: Any, stored: Mapping[str, Any], *, write: bool = True) -> SearchSummary:
    """Write the result files (when ``write``) and summarise the study.

    For a fidelity with epochs (proxy) the summary includes how much time pruning saved, also
    written to ``pruning.json``.
    """
    import json

    trials = study.get_trials(deepcopy=False)
    objectives = tuple(stored.get("objectives", cfg.objectives))
    dims = tuple(stored.get("dimensions", cfg.dimensions))
    if write:
        refs = reference_points(cfg, study)
        result = write_results(trials, cfg.study_dir, study=cfg.study, objectives=objectives,
                               dimensions=dims, references=refs)
        rows, front = result["rows"], result["front"]
    else:
        rows = records(trials, dims)
        front = pareto_rows(rows, objectives)
    pruning = None
    if get_fidelity(stored.get("fidelity", cfg.fidelity)).prunable:
        pruning = {"enabled": cfg.pruning_rule() is not None, "eta": cfg.prune_eta,
                   "min_epoch": cfg.prune_min_epoch, **pruning_summary(rows, cfg.proxy_epochs)}
        if write:
            write_atomically(cfg.study_dir / "pruning.json", json.dumps(pruning, indent=2) + "\n")
    states = collections.Counter(t.state.name for t in trials)
    return SearchSummary(cfg.study, redact(cfg.storage_url), states["COMPLETE"], states["FAIL"],
                         int(study.user_attrs.get(BUDGET_ATTR) or cfg.trials), tuple(front),
                         cfg.study_dir if write else None, objectives, states["PRUNED"], pruning)


def reference_points(cfg: SearchConfig, study: Any, *,
                     note: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of the presets (same nc, image size and fidelity), cached on the study.

    One-shot: the supernet scores a preset that belongs to its space (the space as the search
    fixed it: the supernet's activation; a preset with another of the space's activations is
    placed with the supernet's, as its weights hold no other). Its entry, which the charts use
    as the label, says so: ``yolov7-tiny (one-shot score)``, ``yolov7-tiny (relu, one-shot
    score)``; the score is the supernet's inherited-weights mAP, as every trial's, not the
    preset's own trained mAP.

    Presets that cannot fall inside the plot's axes are skipped without being scored or timed:
    those with a third of the smallest or three times the largest parameter count of the trials,
    and those whose params/GFLOPs put them outside (see :func:`_off_axes`). Skips are not cached,
    so a later ``y7nas pareto`` over a wider range reconsiders them. Every preset not placed gets
    one line through ``note`` (default: stderr): ``note: preset P not on the chart: ...`` for a
    skip, ``warning: preset P not placed: <reason>`` when it could not be scored (outside the
    one-shot space, a failed build, a missing supernet file...).
    """
    from nas.presets import PRESETS

    note = note or _stderr_line
    objectives = list(cfg.objectives[:2])
    if len(objectives) < 2 or not cfg.reference_presets:
        return {}
    cached = dict(study.user_attrs.get(REFERENCES_ATTR) or {})
    rows = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
            and all(isinstance((t.user_attrs.get("metrics") or {}).get(o), (int, float)) for o in objectives)]
    if not rows:
        return cached
    ranges = {}
    for o in objectives:
        values = [t.user_attrs["metrics"][o] for t in rows]
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
        ranges[o] = (lo - pad, hi + pad)
    oneshot = cfg.fidelity == "oneshot"
    changed = False
    evaluator = None
    space: Any = None
    for name in cfg.reference_presets:
        if name not in PRESETS or _cached_label(cached, name, oneshot) is not None:
            continue
        genome = PRESETS[name].replace(nc=cfg.nc)
        label = name
        try:
            params = [t.user_attrs["metrics"]["params"] for t in rows if "params" in t.user_attrs["metrics"]]
            size = _train_params(genome)
            if params and not min(params) / 3 <= size <= max(params) * 3:
                # an order of magnitude off the trials: not on these axes
                note(f"note: preset {name} not on the chart: params {_fmt(size)}, the trials "
                     f"{_fmt(min(params))}-{_fmt(max(params))}")
                continue
            cheap = dict(_cheap_metrics(genome, cfg.cost_img))
            if _off_axes(cheap, ranges, rows, objectives):
                note(f"note: preset {name} not on the chart: {_off_axes_text(cheap, rows, objectives)}")
                continue
            if oneshot:
                space = space or _oneshot_space(cfg)
                genome, label = _oneshot_preset(name, genome, space)
            evaluator = evaluator or Evaluator(cfg, _threads_per_worker(cfg.replace(workers=1)), space)
            cached[label] = evaluator.measure(genome)
        except Exception as exc:  # noqa: BLE001 - a preset that cannot be scored is one line, not a failed search
            note(f"warning: preset {name} not placed: {_fail_reason(exc)}")
            continue
        changed = True
    if changed:
        study.set_user_attr(REFERENCES_ATTR, cached)
    return cached


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _cached_label(cached: Mapping[str, Any], name: str, oneshot: bool) -> str | None:
    """The key under which preset ``name`` is cached (one-shot: ``name (...one-shot score)``)."""
    if not oneshot:
        return name if name in cached else None
    return next((key for key in cached if key.startswith(f"{name} (") and key.endswith("one-shot score)")),
                None)


def _oneshot_space(cfg: SearchConfig) -> Any:
    """The space of a one-shot study as its search used it: ``cfg.nc`` classes, the activation
    fixed to its supernet's (the supernet rebuilds over it)."""
    from nas.supernet import read_checkpoint
    from search_spaces import get_space

    if not cfg.supernet:
        raise SearchError("the study names no supernet file")
    activation = read_checkpoint(cfg.supernet)["meta"]["activation"]
    return get_space(cfg.space, nc=cfg.nc).fixed(activation=activation)


def _oneshot_preset(name: str, genome: Any, space: Any) -> tuple[Any, str]:
    """(genome the supernet scores, its label) of preset ``name`` in a one-shot ``space``.

    A supernet holds weights for one activation: a preset with another activation of the space
    is placed with the supernet's (and the label names it). Whether the rest of the preset
    belongs to the space, the supernet decides when it extracts it (one line when it does not).
    """
    choices = next((tuple(d.choices) for d in space.dimensions() if d.name == "activation"), None)
    label = f"{name} (one-shot score)"
    if choices is not None and genome.activation not in choices:
        own = next((tuple(d.choices) for d in space.unfixed.dimensions() if d.name == "activation"), ())
        if len(choices) != 1 or genome.activation not in own:
            raise SearchError(f"its activation {genome.activation!r} is not one of space {space.name!r}'s "
                              f"({', '.join(map(str, own or choices))})")
        try:
            genome = genome.replace(activation=choices[0])
        except NasError as exc:
            raise SearchError(f"the supernet scores activation {choices[0]!r} only, and the preset with it "
                              f"is not a valid architecture ({_fail_reason(exc)})") from None
        label = f"{name} ({choices[0]}, one-shot score)"
    return genome, label


def _off_axes(metrics: Mapping[str, float], ranges: Mapping[str, tuple[float, float]], rows: Sequence[Any],
              objectives: Sequence[str]) -> bool:
    """Whether a preset surely falls outside the plot, judged from its params/GFLOPs alone.

    Exact for a params or GFLOPs axis. For a latency or score axis a preset with less than half
    or more than twice the GFLOPs of every trial is taken as off the axes (latency grows with
    GFLOPs) rather than spending a full scoring and timing run on it.
    """
    if any(o in metrics and not ranges[o][0] <= metrics[o] <= ranges[o][1] for o in objectives):
        return True
    if all(o in metrics for o in objectives):
        return False
    flops = [t.user_attrs["metrics"]["gflops"] for t in rows if "gflops" in t.user_attrs["metrics"]]
    return bool(flops) and not min(flops) / 2 <= metrics["gflops"] <= max(flops) * 2


def _off_axes_text(metrics: Mapping[str, float], rows: Sequence[Any], objectives: Sequence[str]) -> str:
    """Why :func:`_off_axes` put a preset outside the plot, e.g. ``params 6.02M, the trials
    0.358M-3.02M``."""
    for o in [*(o for o in objectives if o in metrics), "gflops"]:
        values = [t.user_attrs["metrics"][o] for t in rows if o in t.user_attrs["metrics"]]
        if values and not min(values) <= metrics[o] <= max(values):
            return f"{o} {_fmt(metrics[o])}, the trials {_fmt(min(values))}-{_fmt(max(values))}"
    return "outside the chart's axes"


@functools.lru_cache(maxsize=32)
def _train_params(genome: Any) -> int:
    """Parameters of the built (train-form) model: the cheapest size measure (cached)."""
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand

    return sum(p.numel() for p in build_model(parse_cfg(expand(genome), source="preset")).parameters())


@functools.lru_cache(maxsize=32)
def _cheap_metrics(genome: Any, img: int) -> dict[str, float]:
    """Deploy-form params and GFLOPs (cached per process: presets are measured once)."""
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand
    from nas.fuse import fuse
    from nas.profile import profile_model

    deploy = fuse(build_model(parse_cfg(expand(genome), source="preset"))).eval()
    prof = profile_model(deploy, img)
    return {"params": int(prof.params), "gflops": round(prof.gflops, 6)}


def open_results_study(study: str, results_dir: Path, storage: str | None) -> tuple[SearchConfig, Any, dict]:
    """Load a finished or running study for ``y7nas pareto`` / ``export``."""
    url = storage or f"sqlite:///{(Path(results_dir) / study / 'study.db').resolve()}"
    s = _load_existing_study(study, url, hint=" (pass --storage URL if the study lives elsewhere)")
    stored = dict(_config_of(s, study, 0.0))
    budget = s.user_attrs.get(BUDGET_ATTR) or 1
    cfg = SearchConfig.from_study_attrs(study, stored, budget, storage=url, results_dir=Path(results_dir))
    return cfg, s, stored


def write_study_results(study: str, results_dir: Path, storage: str | None = None) -> SearchSummary:
    """Regenerate ``<results_dir>/<study>/`` from storage (``y7nas pareto``); names the study's
    objectives in the storage when it lacks the names (:func:`name_objectives`)."""
    cfg, s, stored = open_results_study(study, results_dir, storage)
    name_objectives(s, stored.get("objectives", cfg.objectives))
    return finish(cfg, s, stored)


def export_trial(study: str, number: int, results_dir: Path, storage: str | None = None,
                 output: Path | None = None) -> tuple[Path, Path]:
    """Write trial ``number`` as a flat yolov7 YAML (and its genome YAML next to it)."""
    cfg, s, _ = open_results_study(study, results_dir, storage)
    matches = [t for t in s.get_trials(deepcopy=False) if t.number == number]
    if not matches:
        raise SearchError(f"study {study!r} has no trial {number} (trials 0..{len(s.trials) - 1})")
    out = Path(output) if output else cfg.study_dir / "models" / f"trial_{number}.yaml"
    return write_model_files(matches[0], out, study)


__all__ = ["Evaluator", "Progress", "ProgressUpdate", "SearchSummary", "export_trial", "finish",
           "load_study_config", "name_objectives", "open_results_study", "open_study", "progress_update",
           "reference_points", "run_search", "run_worker", "write_study_results"]
