"""Does the search, at the user's budget, pick a detector that beats the hand design?

The protocol (issue: "measured where it can be believed"):

1. The hand design is the yolov7-tiny preset (``--width W < 1``: scaled to that width,
   concatenation-aware, for the CPU-sized ``yolov7-tiny-cpu`` space), timed in deploy form,
   batch 1, ``--threads``, with ``--latency-backend`` at ``--img``: the budget is ``--budget``
   (0.8) x that latency.
2. One supernet of ``--space`` with the preset's activation; with ``--random-from band`` (as
   ``y7nas run``) its random sub-networks come from a pool of architectures in the band.
3. ``--search-seeds`` independent searches (one study each; one-shot, objectives score +
   latency, ``max_latency`` = the budget), each followed by the choice ``y7nas run`` makes:
   the targeted phase fills the band, ``--finalists`` of the band's best (``--estimator``) are
   fine-tuned ``--finalist-epochs`` from their inherited weights, and the best mAP within the
   budget is the pick (:func:`nas.pipeline.best_finalist`; the same functions the pipeline calls).
4. Each pick and the hand design are re-timed side by side (lowest of 3 interleaved rounds) and
   trained from scratch with the same recipe on each of ``--train-seeds`` (shared: the hand
   design's trainings are reused by every search).
5. Prints each pick's latency ratio, whether it is inside the band, and its paired mAP@0.5:0.95
   difference to the hand design (per training seed, mean, 90 % t-interval); then the mean
   paired difference over every (search, seed) pair with its 90 % interval. Goal: every pick in
   the band, mean paired difference >= 0, the interval's lower end >= -0.01.

Every finished step (budget, supernet, each search's pick, each training) is saved to
``--results`` as it ends; a re-run with the same arguments resumes from it.

The CPU run (docs/SUPERNET.md; about two hours on 2 cores):
``.venv/bin/python benchmarks/beats_hand_design.py --space yolov7-tiny-cpu --width 0.5
--data synthetic-large --img 128 --results benchmarks/results/beats_hand_design-cpu-128.json``.
The full-space run, for a GPU machine:
``.venv/bin/python benchmarks/beats_hand_design.py --space yolov7-tiny --width 1 --img 256
--data synthetic-large --supernet-epochs 60 --train-epochs 60 --device cuda --latency-backend onnxruntime
--results benchmarks/results/beats_hand_design-full-256.json``.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from scipy import stats

from _saved import Saved, measure
from nas.build import build_model
from nas.cfg import parse_cfg
from nas.data import load_data_config
from nas.expand import expand
from nas.fuse import fuse
from nas.genome import Genome
from nas.latency import LatencyMeter
from nas.pipeline import best_finalist
from nas.presets import PRESETS
from nas.search import (DEFAULT_BAND, Budget, SearchConfig, draw_in_band, parse_band, search_filling_band,
                        train_finalists)
from nas.supernet import SupernetConfig, train_supernet
from nas.train import proxy_train
from scaling.compound import scale_genome
from search_spaces import get_space

LEVEL = 0.90


def deploy_latency(genome: Genome, img: int, meter: LatencyMeter) -> float:
    torch.manual_seed(0)
    model = fuse(build_model(parse_cfg(expand(genome), source="bench"))).eval()
    return meter.measure(model, img)


def side_by_side_latency(genomes: dict[str, Genome], img: int, meter: LatencyMeter,
                         rounds: int = 3) -> dict[str, float]:
    """Lowest of ``rounds`` interleaved timings (each a median of runs) of each genome: load on a
    shared machine only ever slows a timing down, and interleaving lets it hit both alike."""
    times: dict[str, list[float]] = {k: [] for k in genomes}
    for _ in range(rounds):
        for key, g in genomes.items():
            times[key].append(deploy_latency(g, img, meter))
    return {k: min(v) for k, v in times.items()}


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided Student-t interval of the mean (the mean twice for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="yolov7-tiny-cpu")
    p.add_argument("--width", type=float, default=0.5, help="hand design = yolov7-tiny at this width")
    p.add_argument("--latency-backend", default="onnxruntime")
    p.add_argument("--data", default="synthetic-large")
    p.add_argument("--img", type=int, default=128)
    p.add_argument("--budget", type=float, default=0.8)
    p.add_argument("--band", default="0.85,1.0")
    p.add_argument("--estimator", default="score")
    p.add_argument("--random-from", default="space", choices=("band", "space"))
    p.add_argument("--supernet-epochs", type=int, default=15)
    p.add_argument("--random-subnets", type=int, default=1)
    p.add_argument("--subset", type=int, default=0, help="training images (0: all)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--search-seeds", default="0,1,2")
    p.add_argument("--finalists", type=int, default=2)
    p.add_argument("--finalist-epochs", type=int, default=5)
    p.add_argument("--train-epochs", type=int, default=30)
    p.add_argument("--train-seeds", default="0,1,2")
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default="benchmarks/out")
    p.add_argument("--results", default="benchmarks/results/beats_hand_design.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    saved = Saved(Path(args.results), vars(args), {a.dest: a.default for a in p._actions})
    out_dir = Path(args.out_dir)
    data = load_data_config(args.data)
    subset = args.subset or None
    band = parse_band(args.band) if args.band != "none" else None
    hand = PRESETS["yolov7-tiny"].replace(nc=data.nc)
    if args.width != 1.0:
        hand = scale_genome(hand, 1.0, args.width)
    meter = LatencyMeter(args.latency_backend, threads=args.threads, runs=args.latency_runs, warmup=5)
    activation = hand.activation
    tag = f"{args.space}-w{args.width:g}-{args.img}px"

    # 1. the budget
    hand_ms = measure(saved, "hand_ms", lambda: side_by_side_latency({"hand": hand}, args.img, meter)["hand"])
    budget = Budget("latency_ms", args.budget * hand_ms)
    print(f"hand design yolov7-tiny x{args.width:g}: {hand_ms:.2f} ms at {args.img} px ({args.latency_backend}, "
          f"{args.threads} thread) -> budget {budget.describe(band)}", flush=True)

    # 2. the supernet
    space = get_space(args.space, nc=data.nc).fixed(activation=activation)
    sn_path = out_dir / f"beats-{tag}-{args.random_from}-e{args.supernet_epochs}.pt"
    pool = []
    if args.random_from == "band":
        pool = [space.decode(q) for q in draw_in_band(space, budget, band or DEFAULT_BAND, args.img, 16, seed=0,
                                                      meter=meter, max_draws=96)]
    config = SupernetConfig(epochs=args.supernet_epochs, img=args.img, batch=args.batch, seed=0,
                            activation=activation, random_subnets=args.random_subnets, subset=subset,
                            threads=args.threads, device=args.device)
    measure(saved, "supernet", lambda: train_supernet(
        get_space(args.space, nc=data.nc), data, sn_path, config, random_pool=pool or None,
        on_epoch=lambda s: print(f"  supernet epoch {s.epoch} loss {s.loss:.3f} {s.seconds:.0f}s", flush=True)
    ).map50_95_largest)

    # 3. the searches and their picks, chosen as y7nas run chooses
    picks: dict[int, Genome] = {}
    for search_seed in [int(x) for x in args.search_seeds.split(",")]:
        def choose(seed=search_seed):
            cfg = SearchConfig(study=f"{sn_path.stem}-s{seed}", space=args.space, trials=args.trials,
                               objectives=("score", "latency_ms"), fidelity="oneshot", supernet=str(sn_path),
                               img=args.img, data=args.data, nc=data.nc, max_latency=budget.limit,
                               threads=args.threads, seed=seed, results_dir=out_dir, device=args.device,
                               latency_runs=args.latency_runs, latency_backend=args.latency_backend,
                               latency_threads=args.threads)
            search_filling_band(cfg, space, band, args.finalists, say=lambda line: print(f"  {line}", flush=True))
            result = train_finalists(cfg.study, out_dir, top=args.finalists, epochs=args.finalist_epochs,
                                     img=args.img, subset=subset, threads=args.threads, device=args.device,
                                     space=space, band=band, estimator=args.estimator,
                                     progress=lambda line: print(f"  {line}", flush=True))
            best = best_finalist(result.rows, {"latency_ms": budget.limit})
            genome = Genome.from_yaml((cfg.study_dir / "models" / f"trial_{best['number']}.genome.yaml").read_text(),
                                      source="pick")
            return {"trial": best["number"], "search_latency_ms": best["latency_ms"], "genome": genome.to_dict()}
        pick = measure(saved, f"pick/s{search_seed}", choose, show=lambda v: f"trial {v['trial']}")
        picks[search_seed] = Genome.from_dict(pick["genome"], source=f"pick of search {search_seed}")

    # 4. side-by-side latency and training from scratch on shared seeds
    latency = measure(saved, "latency", lambda: side_by_side_latency(
        {"hand": hand, **{f"s{k}": g for k, g in picks.items()}}, args.img, meter), show=lambda v: "timed")
    seeds = [int(x) for x in args.train_seeds.split(",")]

    def trained(genome: Genome, seed: int) -> float:
        return float(proxy_train(genome, data, epochs=args.train_epochs, img=args.img, batch=args.batch,
                                 subset=subset, seed=seed, threads=args.threads, device=args.device,
                                 val_interval=args.train_epochs).map50_95)
    hand_maps = {s: measure(saved, f"train/hand/seed{s}", lambda s=s: trained(hand, s)) for s in seeds}
    pairs = []
    rows = []
    lo_band, hi_band = band or (0.0, 1.0)
    for k, genome in picks.items():
        maps = {s: measure(saved, f"train/s{k}/seed{s}", lambda s=s: trained(genome, s)) for s in seeds}
        diffs = [maps[s] - hand_maps[s] for s in seeds]
        pairs += diffs
        ratio = latency[f"s{k}"] / latency["hand"]
        inside = lo_band <= ratio / args.budget <= hi_band        # side by side, as a fraction of the budget
        rows.append((k, ratio, inside,
                     statistics.fmean(maps.values()), t_interval(diffs)))

    # 5. the figures
    print(f"\nhand design: {latency['hand']:.2f} ms side by side, mAP@0.5:0.95 "
          f"{statistics.fmean(hand_maps.values()):.4f} (seeds {args.train_seeds}: "
          f"{', '.join(f'{v:.4f}' for v in hand_maps.values())})")
    print(f"{'search':>6s} {'latency':>8s} {'in band':>7s} {'mAP':>7s} {'paired diff':>11s} {'90% interval':>18s}")
    for k, ratio, inside, mean_map, (d, lo, hi) in rows:
        print(f"{k:>6d} {ratio:7.2f}x {'yes' if inside else 'no':>7s} {mean_map:7.4f} {d:+11.4f} [{lo:+.4f}, {hi:+.4f}]")
    d, lo, hi = t_interval(pairs)
    met = all(r[2] for r in rows) and d >= 0 and lo >= -0.01
    print(f"all {len(pairs)} (search, seed) pairs: mean paired difference {d:+.4f}, 90% interval "
          f"[{lo:+.4f}, {hi:+.4f}] -> goal {'met' if met else 'missed'} (every pick in the band, mean >= 0, "
          f"lower end >= -0.01)")
    saved.doc["summary"] = {"hand_ms": latency["hand"], "budget_ms": budget.limit,
                            "hand_map": statistics.fmean(hand_maps.values()),
                            "searches": [{"seed": k, "latency_ratio": r, "in_band": bool(i), "map": m,
                                          "paired_diff": list(t)} for k, r, i, m, t in rows],
                            "paired_diff": [d, lo, hi], "goal_met": met}
    saved.save()


if __name__ == "__main__":
    main()
