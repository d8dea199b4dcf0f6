"""The targeted phase of a search under a budget: fill the band just below the budget.

A multi-objective sampler spreads its trials over the whole front, so after ``--trials`` trials
the band ``[lo, hi] × budget`` (:mod:`nas.search._choice`) may hold fewer candidates than the
finalists asked for. :func:`fill_band` then draws random architectures of the space and measures
only their cost on the budget's metric (params and GFLOPs: counted, no weights trained; latency:
timed like a trial) until enough fall inside the band or ``max_draws`` are spent, and adds them
to the same study as extra trials with fixed parameters (Optuna's ``enqueue_trial``), raising
the study's trial budget by as many. The search then runs on as usual and scores them; nothing
else about the study changes, and a re-run after a kill finds them queued.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from nas.search._choice import Budget, band_rows
from nas.search._config import BUDGET_ATTR, SearchConfig

#: random draws spent per missing band candidate before giving up
DRAWS_PER_CANDIDATE = 60


def deploy_costs(genome: Any, img: int, meter: Any = None) -> dict[str, float]:
    """``genome``'s deploy-form ``params``, ``gflops`` and, with ``meter``, ``latency_ms`` at
    ``img``: what a trial records as its costs."""
    import torch

    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand
    from nas.fuse import fuse
    from nas.profile import profile_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        deploy = fuse(build_model(parse_cfg(expand(genome), source=f"genome {genome.genome_hash()}"))).eval()
    prof = profile_model(deploy, img)
    costs = {"params": int(prof.params), "gflops": round(prof.gflops, 6)}
    if meter is not None:
        costs["latency_ms"] = round(float(meter.measure(deploy, img)), 4)
    return costs


def architecture_cost(genome: Any, metric: str, img: int, meter: Any = None) -> float:
    """``genome``'s deploy-form params, GFLOPs or latency (ms, with ``meter``) at ``img``."""
    return float(deploy_costs(genome, img, meter if metric == "latency_ms" else None)[metric])


def draw_in_band(space: Any, budget: Budget, band: tuple[float, float], img: int, wanted: int,
                 exclude: Sequence[str] = (), seed: int = 0, meter: Any = None,
                 max_draws: int | None = None, on_draw: Callable[[int, int], None] | None = None
                 ) -> list[dict[str, Any]]:
    """Parameter dicts of up to ``wanted`` new architectures of ``space`` (genome hashes not in
    ``exclude``) whose cost lies in the band; random draws seeded by ``seed``."""
    lo, hi = budget.bounds(band)
    rng = random.Random(f"{seed}:band")
    seen, found = set(exclude), []
    limit = max_draws if max_draws is not None else DRAWS_PER_CANDIDATE * wanted
    for i in range(limit):
        if len(found) >= wanted:
            break
        params = space.sample_params(rng)
        genome = space.decode(params)
        digest = genome.genome_hash()
        if digest in seen:
            continue
        seen.add(digest)
        if lo <= architecture_cost(genome, budget.metric, img, meter) <= hi:
            found.append(params)
        if on_draw is not None:
            on_draw(i + 1, len(found))
    return found


def fill_band(cfg: SearchConfig, space: Any, budget: Budget, band: tuple[float, float], wanted: int,
              say: Callable[[str], None] = lambda line: None, max_draws: int | None = None) -> int:
    """Queue architectures in the band until the study's band holds ``wanted`` candidates (or
    ``max_draws`` random draws are spent); returns the study's trial budget afterwards."""
    from nas.search._results import records
    from nas.search._runner import open_results_study

    _cfg, study, _stored = open_results_study(cfg.study, cfg.results_dir, cfg.storage)
    trials = study.get_trials(deepcopy=False)
    budget_now = int(study.user_attrs.get(BUDGET_ATTR) or cfg.trials)
    queued = sum(t.state.name == "WAITING" for t in trials)
    have = len(band_rows(records(trials), budget, band, needs=())) + queued
    if have >= wanted:
        return budget_now
    hashes = [t.user_attrs.get("genome_hash", "") for t in trials]
    meter = cfg.latency_meter() if budget.metric == "latency_ms" else None
    say(f"band {budget.describe(band)} holds {have} of the {wanted} finalists asked for: drawing "
        f"architectures of the space until {wanted - have} more fall in it")
    found = draw_in_band(space, budget, band, cfg.cost_img, wanted - have, hashes, cfg.seed, meter, max_draws)
    for params in found:
        study.enqueue_trial(params)
    if found:
        study.set_user_attr(BUDGET_ATTR, budget_now + len(found))
    say(f"band: {len(found)} architecture(s) queued as extra trials"
        + ("" if len(found) == wanted - have else f" ({wanted - have} wanted; the band is rare in this space)"))
    return budget_now + len(found)


def current_trial_budget(cfg: SearchConfig) -> int:
    """``cfg.trials``, or the study's own trial budget when a targeted phase (:func:`fill_band`)
    raised it above that: what a resumed search must ask for."""
    from nas.search._storage import _optuna, open_storage

    store = open_storage(cfg.storage_url, heartbeat_interval=cfg.heartbeat_interval,
                         grace_period=cfg.grace_period)
    try:
        study = _optuna().load_study(study_name=cfg.study, storage=store.storage)
    except KeyError:        # not created yet
        return cfg.trials
    return max(cfg.trials, int(study.user_attrs.get(BUDGET_ATTR) or 0))


def search_filling_band(cfg: SearchConfig, space: Any, band: tuple[float, float] | None, wanted: int, *,
                        progress: Any = None, say: Callable[[str], None] = lambda line: None) -> Any:
    """:func:`nas.search.run_search`, then, with a budget among ``cfg``'s constraints and a
    ``band``, the targeted phase: when fewer than ``wanted`` scored candidates lie in the band,
    :func:`fill_band` queues random architectures that do and the same study scores them.
    Resumes like the search (a study whose budget the phase raised continues at that budget).
    Returns the last :class:`nas.search.SearchSummary`."""
    from nas.search._choice import budget_of
    from nas.search._runner import run_search

    cfg = cfg.replace(trials=current_trial_budget(cfg))
    summary = run_search(cfg, space, progress=progress)
    budget = budget_of(cfg.constraints) if band is not None else None
    if budget is None:
        return summary
    total = fill_band(cfg, space, budget, band, wanted, say=say)
    if total > cfg.trials:
        summary = run_search(cfg.replace(trials=total), space, progress=progress)
    return summary


__all__ = ["DRAWS_PER_CANDIDATE", "architecture_cost", "current_trial_budget", "deploy_costs", "draw_in_band",
           "fill_band", "search_filling_band"]
