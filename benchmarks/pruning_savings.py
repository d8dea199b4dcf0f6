"""Pruning: time saved, and front kept, by early stopping in a proxy-fidelity search.

Runs the same seeded search twice, side by side in one process: ``--no-prune`` (the baseline)
and with pruning (the default rule of ``nas/search/_pruning.py``). The random sampler proposes
the same architectures in both runs and proxy training is deterministic for a seed, so every
trial the pruned run completes has exactly the baseline's score. Prints for each run the wall
time, epochs trained and Pareto front (score = proxy mAP@0.5:0.95 vs GFLOPs), then

* time ratio pruned / baseline,
* front recall: the share of the baseline's front that the pruned run also completed,
* hypervolume ratio of the two fronts (objectives normalised over both runs, reference 1.1),
* a replay of the baseline's per-epoch scores under variants of the rule (no training: the
  scores a trial reaches are the same whether or not it is later stopped), showing the
  trade-off between epochs saved and front members lost.

``--max-gflops G`` adds a constraint to both runs: the baseline trains infeasible candidates
(as a search without pruning does), the pruned run skips them.

Run: ``.venv/bin/python benchmarks/pruning_savings.py [--trials 16] [--epochs 5] [--img 128]
[--subset 256] [--space yolov7-tiny] [--seed 0] [--threads 1] [--max-gflops G]``
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nas.data import load_data_config
from nas.presets import PRESETS
from nas.search import SearchConfig, hypervolume_2d, run_search
from nas.search._pruning import PruningRule
from nas.train import proxy_train
from search_spaces import get_space

OBJECTIVES = ("score", "gflops")
DIRECTIONS = ("maximize", "minimize")


def run(args, prune: bool, root: Path):
    nc = load_data_config(args.data).nc
    cfg = SearchConfig(study="prune" if prune else "baseline", space=args.space, trials=args.trials,
                       objectives=OBJECTIVES, fidelity="proxy", sampler="random", seed=args.seed,
                       img=args.img, data=args.data, proxy_epochs=args.epochs, proxy_subset=args.subset,
                       threads=args.threads, results_dir=root, reference_presets=(), prune=prune,
                       max_gflops=args.max_gflops)
    t0 = time.perf_counter()
    summary = run_search(cfg, get_space(args.space, nc=nc),
                         progress=lambda u: u.last and print(f"  [{u.done}/{u.total}] {u.last}", flush=True))
    seconds = time.perf_counter() - t0
    pruning = json.loads((cfg.study_dir / "pruning.json").read_text())
    return summary, seconds, pruning, cfg


def replay(cfg, rule, limits):
    """Epochs trained and final front when ``rule`` is applied to the baseline's histories
    (trials in number order, one worker, as in the real run)."""
    import optuna

    from nas.search._pareto import pareto_front
    from nas.search._pruning import Point, decide, violations

    trials = [t for t in optuna.load_study(study_name=cfg.study, storage=cfg.storage_url).trials
              if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    trials.sort(key=lambda t: t.number)
    history = [{int(k): v for k, v in t.user_attrs["intermediate"].items()} for t in trials]
    costs = [t.user_attrs["costs"] for t in trials]
    feasible = [not violations(c, limits) for c in costs]
    stop = {}
    for i in range(len(trials)):
        if not feasible[i]:
            stop[i] = 0
            continue
        for rung in rule.rungs(cfg.proxy_epochs):
            peers = [Point(history[j][rung], costs[j]) for j in range(i)
                     if feasible[j] and stop.get(j, cfg.proxy_epochs) >= rung]
            if not decide(Point(history[i][rung], costs[i]), peers, ("gflops",), rule).keep:
                stop[i] = rung
                break
    done = [i for i in range(len(trials)) if i not in stop and feasible[i]]
    front = {trials[done[k]].number for k in pareto_front(
        [[history[i][cfg.proxy_epochs], costs[i]["gflops"]] for i in done], DIRECTIONS)}
    return sum(stop.get(i, cfg.proxy_epochs) for i in range(len(trials))), front


def normalised_hv(front, bounds):
    pts = [[(r[o] - lo) / (hi - lo or 1.0) for o, (lo, hi) in zip(OBJECTIVES, bounds)] for r in front]
    # score is maximised: reference below the worst score, above the worst GFLOPs
    return hypervolume_2d(pts, (-0.1, 1.1), DIRECTIONS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="yolov7-tiny")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--img", type=int, default=128)
    p.add_argument("--subset", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-gflops", type=float, default=None, help="constraint for both runs")
    args = p.parse_args()
    # fill the in-process caches (scanned splits, letterboxed images) so neither run pays for them
    data = load_data_config(args.data)
    proxy_train(PRESETS["yolov7-tiny"].replace(nc=data.nc), data, epochs=1, img=args.img, subset=args.subset,
                seed=args.seed, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"baseline (--no-prune): {args.trials} trials, proxy {args.epochs} epochs x {args.subset} images "
              f"at {args.img} px, {args.threads} thread(s)", flush=True)
        base, base_s, base_p, base_cfg = run(args, False, Path(tmp))
        print("pruned (default rule)", flush=True)
        pruned, pruned_s, pruned_p, _ = run(args, True, Path(tmp))
        variants = {
            "default (eta 3, margin 0.0005 + 10%)": PruningRule(),
            "no tie margin": PruningRule(margin=0.0, rel_margin=0.0),
            "eta 2": PruningRule(eta=2),
            "first check at epoch 2": PruningRule(min_epoch=2),
            "one beating peer is enough (eta 1000)": PruningRule(eta=1000),
        }
        replays = {name: replay(base_cfg, rule, base_cfg.constraints) for name, rule in variants.items()}
    rows = [*base.front, *pruned.front]
    bounds = [(min(r[o] for r in rows), max(r[o] for r in rows)) for o in OBJECTIVES]
    hv_base, hv_pruned = normalised_hv(base.front, bounds), normalised_hv(pruned.front, bounds)
    kept = {r["genome_hash"] for r in pruned.front}
    recall = sum(r["genome_hash"] in kept for r in base.front) / max(len(base.front), 1)
    print(f"\n{'run':10s} {'wall s':>8s} {'epochs':>8s} {'pruned':>7s} {'front':>6s}")
    print(f"{'baseline':10s} {base_s:8.0f} {base_p['epochs_trained']:8d} {base.pruned:7d} {len(base.front):6d}")
    print(f"{'pruned':10s} {pruned_s:8.0f} {pruned_p['epochs_trained']:8d} {pruned.pruned:7d} {len(pruned.front):6d}")
    print(f"time ratio pruned/baseline {pruned_s / base_s:.2f}; epochs ratio "
          f"{pruned_p['epochs_trained'] / max(base_p['epochs_trained'], 1):.2f}; estimated saving (pruning.json) "
          f"{100 * pruned_p['saved_fraction']:.0f}%")
    print(f"front recall {recall:.2f} ({sum(r['genome_hash'] in kept for r in base.front)} of {len(base.front)}); "
          f"hypervolume ratio {hv_pruned / hv_base:.3f}")
    base_front = {r["number"] for r in base.front}
    print("\nreplay of the baseline's per-epoch scores (epochs trained / baseline's, front members kept):")
    for name, (epochs, front) in replays.items():
        print(f"  {name:38s} epochs {epochs / max(base_p['epochs_trained'], 1):.2f}  "
              f"front {len(front & base_front)}/{len(base_front)}")


if __name__ == "__main__":
    main()
