"""Pruning: time saved, and front kept, by early stopping in a proxy-fidelity search.

Runs the same seeded search twice, side by side in one process: ``--no-prune`` (the baseline)
and with pruning (the default rule of ``nas/search/_pruning.py``). The random sampler proposes
the same architectures in both runs and proxy training is deterministic for a seed, so every
trial the pruned run completes has exactly the baseline's score. Prints for each run the wall
time, epochs trained and Pareto front (score = proxy mAP@0.5:0.95 vs GFLOPs), then

* time ratio pruned / baseline,
* front recall: the share of the baseline's front that the pruned run also completed,
* hypervolume ratio of the two fronts (objectives normalised over both runs, reference 1.1).

Run: ``.venv/bin/python benchmarks/pruning_savings.py [--trials 16] [--epochs 5] [--img 128]
[--subset 256] [--space yolov7-tiny] [--seed 0] [--threads 1]``
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
from nas.train import proxy_train
from search_spaces import get_space

OBJECTIVES = ("score", "gflops")
DIRECTIONS = ("maximize", "minimize")


def run(args, prune: bool, root: Path):
    nc = load_data_config(args.data).nc
    cfg = SearchConfig(study="prune" if prune else "baseline", space=args.space, trials=args.trials,
                       objectives=OBJECTIVES, fidelity="proxy", sampler="random", seed=args.seed,
                       img=args.img, data=args.data, proxy_epochs=args.epochs, proxy_subset=args.subset,
                       threads=args.threads, results_dir=root, reference_presets=(), prune=prune)
    t0 = time.perf_counter()
    summary = run_search(cfg, get_space(args.space, nc=nc),
                         progress=lambda u: u.last and print(f"  [{u.done}/{u.total}] {u.last}", flush=True))
    seconds = time.perf_counter() - t0
    pruning = json.loads((cfg.study_dir / "pruning.json").read_text())
    return summary, seconds, pruning


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
    args = p.parse_args()
    # fill the in-process caches (scanned splits, letterboxed images) so neither run pays for them
    data = load_data_config(args.data)
    proxy_train(PRESETS["yolov7-tiny"].replace(nc=data.nc), data, epochs=1, img=args.img, subset=args.subset,
                seed=args.seed, threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"baseline (--no-prune): {args.trials} trials, proxy {args.epochs} epochs x {args.subset} images "
              f"at {args.img} px, {args.threads} thread(s)", flush=True)
        base, base_s, base_p = run(args, False, Path(tmp))
        print("pruned (default rule)", flush=True)
        pruned, pruned_s, pruned_p = run(args, True, Path(tmp))
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


if __name__ == "__main__":
    main()
