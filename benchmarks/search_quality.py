"""Search quality: hypervolume of NSGA-II and TPE vs random search on a fixed space.

Objectives: zero-cost score (NASWOT on one batch of synthetic images, maximise) and GFLOPs (deploy
form, minimise) over the ``yolov7-tiny`` space at a small image size — cheap and deterministic,
so every architecture is evaluated once (results are memoised by genome hash) and runs differ
only in what the samplers propose. Each sampler gets ``--trials`` trials for each of
``--seeds`` seeds. The reference is the front of *every* architecture evaluated (all runs plus
``--reference`` extra random samples), a stand-in for the exhaustive front of a space far too
large to enumerate.

Hypervolume is computed on objectives normalised to [0, 1] over all evaluated points (score
flipped so both are minimised), with the reference point (1.1, 1.1); it is reported as a
fraction of the reference front's hypervolume.

    .venv/bin/python benchmarks/search_quality.py            # ~10 min on 2 busy cores
    .venv/bin/python benchmarks/search_quality.py --trials 20 --seeds 1 --reference 40   # quick look
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402

from nas.data import load_data_config  # noqa: E402
from nas.errors import NasError  # noqa: E402
from nas.search import (Evaluator, Fidelity, SearchConfig, hypervolume_2d, make_sampler,  # noqa: E402
                        pareto_front, population_size, register_fidelity)
from search_spaces import get_space  # noqa: E402

DIRECTIONS = ("maximize", "minimize")


@register_fidelity
class NaswotOnly(Fidelity):
    """The zero-cost fidelity's score alone (NASWOT), to keep the benchmark cheap."""

    name = "bench-naswot"
    scores = True
    needs_data = True

    def evaluate(self, genome, model, context):
        from nas.zero_cost import compute_proxies

        return {"score": compute_proxies(model, context.images(), names=("naswot",), seed=context.seed)["naswot"]}


class Memo:
    """genome hash → (score, gflops); counts distinct evaluations."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator, self.cache, self.seconds = evaluator, {}, 0.0

    def __call__(self, genome) -> tuple[float, float]:
        key = genome.genome_hash()
        if key not in self.cache:
            start = time.perf_counter()
            try:
                m = self.evaluator.measure(genome)
                self.cache[key] = (float(m["score"]), float(m["gflops"]))
            except NasError:  # e.g. a singular NASWOT kernel: the trial fails, as in a search
                self.cache[key] = None
            self.seconds += time.perf_counter() - start
        return self.cache[key] or (float("nan"), float("nan"))


def run_sampler(name: str, seed: int, trials: int, space, memo: Memo) -> list[tuple[float, float]]:
    sampler = make_sampler(name, seed, population_size=population_size(trials))
    study = optuna.create_study(directions=list(DIRECTIONS), sampler=sampler)
    study.optimize(lambda t: memo(space.suggest(t)), n_trials=trials)
    return [tuple(t.values) for t in study.trials if t.values is not None]


def normalised_hv(points, lo, hi) -> float:
    def norm(p):
        score, flops = p
        return ((hi[0] - score) / (hi[0] - lo[0]), (flops - lo[1]) / (hi[1] - lo[1]))

    front = [points[i] for i in pareto_front(points, DIRECTIONS)]
    return hypervolume_2d([norm(p) for p in front], (1.1, 1.1), ("minimize", "minimize"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--reference", type=int, default=200, help="extra random architectures for the reference")
    ap.add_argument("--img", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8, help="images in the NASWOT batch")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    cfg = SearchConfig(study="bench", space="yolov7-tiny", trials=args.trials, objectives=("score", "gflops"),
                       fidelity="bench-naswot", img=args.img, zero_cost_batch=args.batch)
    evaluator = Evaluator(cfg, threads=args.threads)
    evaluator.prepare()
    space = get_space("yolov7-tiny", nc=load_data_config(cfg.data).nc)
    memo = Memo(evaluator)
    start = time.perf_counter()

    runs: dict[str, list[list[tuple[float, float]]]] = {}
    for name in ("random", "tpe", "nsga2"):
        for seed in range(args.seeds):
            runs.setdefault(name, []).append(run_sampler(name, seed, args.trials, space, memo))
            print(f"  {name:6s} seed {seed}: done ({len(memo.cache)} distinct architectures so far)", flush=True)
    rng = random.Random(12345)
    for _ in range(args.reference):
        memo(space.decode(space.sample_params(rng)))

    everything = [v for v in memo.cache.values() if v is not None]
    lo = (min(p[0] for p in everything), min(p[1] for p in everything))
    hi = (max(p[0] for p in everything), max(p[1] for p in everything))
    ref_hv = normalised_hv(everything, lo, hi)
    ref_front = len(pareto_front(everything, DIRECTIONS))

    print()
    print(f"space yolov7-tiny, img {args.img}, objectives: NASWOT score (max, batch {args.batch}) vs GFLOPs (min)")
    print(f"{args.trials} trials per run, {args.seeds} seeds; reference front: {ref_front} of {len(everything)} "
          f"distinct architectures evaluated, normalised HV {ref_hv:.4f} (ref. point 1.1, 1.1)")
    print()
    header = f"{'sampler':8s} " + " ".join(f"{'seed ' + str(s):>9s}" for s in range(args.seeds)) + \
        f" {'mean':>9s} {'std':>7s} {'% of ref':>9s}"
    print(header)
    print("-" * len(header))
    for name, results in runs.items():
        hvs = [normalised_hv(r, lo, hi) for r in results]
        mean = statistics.fmean(hvs)
        std = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
        print(f"{name:8s} " + " ".join(f"{h:9.4f}" for h in hvs) + f" {mean:9.4f} {std:7.4f} {100 * mean / ref_hv:8.1f}%")
    print()
    print(f"{len(memo.cache)} distinct evaluations in {memo.seconds:.0f} s; total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
