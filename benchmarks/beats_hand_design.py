"""Does the one-shot search beat the hand design? yolov7-tiny vs the best candidate found under
0.8x its latency.

1. Times the hand design, the yolov7-tiny preset (with ``--width W < 1``: scaled to that width,
   concatenation-aware, for the CPU-sized ``yolov7-tiny-cpu`` space), deploy form, batch 1,
   ``--threads``, with ``--latency-backend`` at ``--img``: the budget is ``--budget`` (0.8) x that
   latency.
2. Trains (or, with ``--supernet``, reuses) the supernet of the ``yolov7-tiny`` space with the
   preset's activation (LeakyReLU), then runs the real one-shot search (``run_search``,
   ``--fidelity oneshot``, objectives score + latency, ``max_latency`` = the budget) for
   ``--trials`` candidates.
3. Takes the best-scoring feasible candidate (with ``--finalists K``: the way ``y7nas run``
   chooses, i.e. K finalists spread over the Pareto front, each fine-tuned ``--finalist-epochs``
   from its inherited weights, and the one with the highest mAP@0.5:0.95 within the budget),
   re-times it and the preset side by side (interleaved rounds), and trains both from scratch
   with the same recipe, data and epochs.
4. Prints both mAPs and latencies side by side. Goal: found mAP ≥ preset mAP at ≤ 0.8x latency.

Run: ``.venv/bin/python benchmarks/beats_hand_design.py [--space yolov7-tiny] [--width 1]
[--data synthetic] [--img 128] [--supernet-epochs 16] [--trials 100] [--train-epochs 30]
[--latency-backend torch] [--threads 1] [--json FILE]``; the CPU-sized run in docs/SUPERNET.md:
``--space yolov7-tiny-cpu --width 0.5 --data synthetic-large --img 64 --subset 0
--supernet-epochs 15 --latency-backend onnxruntime``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.data import load_data_config
from nas.expand import expand
from nas.fuse import fuse
from nas.genome import Genome
from nas.presets import PRESETS
from nas.latency import LatencyMeter
from nas.pipeline import best_finalist
from nas.search import SearchConfig, run_search, train_finalists
from nas.supernet import SupernetConfig, train_supernet
from nas.train import proxy_train
from scaling.compound import scale_genome
from search_spaces import get_space


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


def choose_finalist(cfg: SearchConfig, args, space, subset: int | None, budget: float) -> dict:
    """What ``y7nas run`` does after its search: fine-tune ``args.finalists`` finalists of the
    front from their inherited weights and keep the best mAP@0.5:0.95 within the budget."""
    result = train_finalists(cfg.study, cfg.results_dir, top=args.finalists, epochs=args.finalist_epochs,
                             img=args.img, subset=subset, threads=args.threads, seed=args.seed,
                             supernet=cfg.supernet, space=space, progress=lambda line: print(f"  {line}", flush=True))
    return best_finalist(result.rows, {"latency_ms": budget})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="yolov7-tiny")
    p.add_argument("--width", type=float, default=1.0, help="hand design = yolov7-tiny at this width")
    p.add_argument("--latency-backend", default="torch")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--img", type=int, default=128)
    p.add_argument("--budget", type=float, default=0.8)
    p.add_argument("--budget-ms", type=float, default=None,
                   help="use this latency budget instead of --budget x the preset's timing (e.g. to "
                        "resume a finished study in --out-dir and only train)")
    p.add_argument("--supernet", default=None, help="reuse this trained supernet file")
    p.add_argument("--supernet-epochs", type=int, default=16)
    p.add_argument("--subset", type=int, default=256, help="training images (0: all)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--finalists", type=int, default=0,
                   help="choose among this many fine-tuned finalists (0: the best one-shot score)")
    p.add_argument("--finalist-epochs", type=int, default=5)
    p.add_argument("--train-epochs", type=int, default=30)
    p.add_argument("--train-seeds", default="0", help="train both from scratch once per seed (comma list)")
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="benchmarks/out")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data_config(args.data)
    subset = args.subset or None
    preset = PRESETS["yolov7-tiny"].replace(nc=data.nc)
    if args.width != 1.0:
        preset = scale_genome(preset, 1.0, args.width)
    meter = LatencyMeter(args.latency_backend, threads=args.threads, runs=args.latency_runs, warmup=5)
    activation = preset.activation
    report: dict = {"args": vars(args)}

    if args.budget_ms is None:
        preset_ms = side_by_side_latency({"preset": preset}, args.img, meter)["preset"]
        budget = args.budget * preset_ms
        print(f"yolov7-tiny (width x{args.width:g}) deploy latency {preset_ms:.2f} ms at {args.img}px "
              f"({args.latency_backend}, {args.threads} thread): budget {budget:.2f} ms", flush=True)
    else:
        preset_ms, budget = None, args.budget_ms
        print(f"latency budget {budget:.2f} ms (given)", flush=True)

    space = get_space(args.space, nc=data.nc)
    path = Path(args.supernet) if args.supernet else \
        out_dir / f"{args.space}-{activation}-{args.img}px-e{args.supernet_epochs}.pt"
    if not args.supernet:
        config = SupernetConfig(epochs=args.supernet_epochs, img=args.img, batch=args.batch,
                                seed=args.seed, activation=activation, subset=subset,
                                calib_images=args.calib, threads=args.threads)
        res = train_supernet(space, data, path, config,
                             on_epoch=lambda s: print(f"  supernet epoch {s.epoch} loss {s.loss:.3f} "
                                                      f"{s.seconds:.0f}s", flush=True))
        report["supernet"] = {"seconds": res.seconds, "map50_95_largest": res.map50_95_largest,
                              "map50_95_smallest": res.map50_95_smallest}
        print(f"supernet trained in {res.seconds:.0f}s", flush=True)
    t_search = time.perf_counter()
    cfg = SearchConfig(study=f"beats-hand-design-{args.space}-{args.img}", space=args.space, trials=args.trials,
                       objectives=("score", "latency_ms"), fidelity="oneshot", supernet=str(path),
                       img=args.img, data=args.data, nc=data.nc, max_latency=budget,
                       threads=args.threads, seed=args.seed, oneshot_calib=args.calib,
                       results_dir=out_dir, latency_runs=args.latency_runs,
                       latency_backend=args.latency_backend, latency_threads=args.threads)
    summary = run_search(cfg, space.fixed(activation=activation))
    search_s = time.perf_counter() - t_search
    feasible = [r for r in summary.front if r.get("feasible") is not False]
    if not feasible:
        print("no candidate within the budget was found")
        return
    best = max(feasible, key=lambda r: r["score"])
    if args.finalists:
        best = choose_finalist(cfg, args, space, subset, budget)
    models = cfg.study_dir / "models"
    found = Genome.from_yaml((models / f"trial_{best['number']}.genome.yaml").read_text(),
                             source="found")
    how = f"best of {args.finalists} finalists" if args.finalists else "best within budget"
    print(f"search: {args.trials} candidates in {search_s:.0f}s; {how}: trial "
          f"{best['number']} one-shot mAP {best['score']:.4f}, {best['latency_ms']:.2f} ms", flush=True)

    lat = side_by_side_latency({"preset": preset, "found": found}, args.img, meter)
    seeds = [int(x) for x in args.train_seeds.split(",")]
    runs: dict[str, list] = {"preset": [], "found": []}
    for seed in seeds:
        for key, g in (("preset", preset), ("found", found)):
            r = proxy_train(g, data, epochs=args.train_epochs, img=args.img, batch=args.batch,
                            subset=subset, seed=seed, threads=args.threads,
                            val_interval=args.train_epochs)
            runs[key].append((r.map50, r.map50_95, r.seconds))
            print(f"  trained {key} (seed {seed}): mAP@0.5 {r.map50:.4f} mAP@0.5:0.95 {r.map50_95:.4f} "
                  f"({r.seconds:.0f}s)", flush=True)
    maps = {k: tuple(statistics.fmean(col) for col in zip(*v)) for k, v in runs.items()}
    if len(seeds) > 1:
        diffs = [f[1] - p[1] for p, f in zip(runs["preset"], runs["found"])]
        print(f"  found - preset mAP@0.5:0.95 per seed: {', '.join(f'{d:+.4f}' for d in diffs)}; "
              f"mAPs below are means over seeds {args.train_seeds}", flush=True)
    params = {k: sum(q.numel() for q in build_model(parse_cfg(expand(g), source=k)).parameters())
              for k, g in (("preset", preset), ("found", found))}
    print(f"\n{'':8s} {'params':>10s} {'latency ms':>11s} {'mAP@0.5':>8s} {'mAP@.5:.95':>10s}")
    for key in ("preset", "found"):
        print(f"{key:8s} {params[key]:>10,} {lat[key]:>11.2f} {maps[key][0]:>8.4f} {maps[key][1]:>10.4f}")
    ratio = lat["found"] / lat["preset"]
    verdict = "meets" if maps["found"][1] >= maps["preset"][1] and ratio <= args.budget else "misses"
    print(f"found/preset: latency {ratio:.2f}x, mAP@0.5:0.95 {maps['found'][1] - maps['preset'][1]:+.4f} "
          f"-> {verdict} the goal (>= preset mAP at <= {args.budget}x latency)")
    report.update(train_runs=runs, chosen_by=how, preset_ms_first=preset_ms, budget_ms=budget, search_s=search_s, best_trial=best["number"],
                  found_genome=found.to_dict(), latency_ms=lat, maps=maps, params=params,
                  latency_ratio=ratio, verdict=verdict)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
