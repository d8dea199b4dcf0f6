"""One-shot fidelity: does a trained supernet rank architectures like stand-alone training?

For ``--n-arch`` architectures drawn at random from the ``yolov7-tiny`` space (global width
capped at ``--width-max``, the activation fixed to ``--activation``, as a one-shot search fixes
it), side by side:

* the one-shot score: val mAP@0.5:0.95 with weights inherited from a supernet trained once
  (``nas.supernet.train_supernet``, ``--supernet-epochs``), BatchNorm re-estimated on
  ``--calib`` training images; with ``--compare-distill`` a second supernet trained with in-place
  distillation is scored too;
* with ``--finetune-epochs K``: the one-shot score after K epochs of fine-tuning from the
  inherited weights (lr 0.001, what ``y7nas finalists`` does on a one-shot study);
* the 5-epoch proxy (``nas.train.proxy_train``, what ``--fidelity proxy`` runs) and NASWOT;
* the reference: stand-alone training of every architecture for ``--ref-epochs`` (same recipe,
  data and image size), once per ``--ref-seeds``; the τ between two seeds' references is the
  ceiling no score can beat (with more than two seeds: the mean over every pair of seeds).

``--draw random`` draws the architectures uniformly; ``--draw spread`` draws a pool of 30 per
architecture and keeps the ones at evenly spaced quantiles of their parameter count, so the
reference spans the space from small to large (architectures drawn uniformly cluster in the
middle, where two seeds of stand-alone training cannot tell them apart).

It prints Kendall's τ of every score against the reference (mean over the seeds' mAPs) and
against each seed, and the cost of scoring 100 candidates: supernet training + 100 one-shot
evaluations vs 100 proxy trainings (CPU seconds measured here per candidate, × 100).

Run: ``.venv/bin/python benchmarks/oneshot_fidelity.py [--n-arch 12] [--img 128]
[--supernet-epochs 20] [--ref-epochs 20] [--ref-seeds 0,1] [--threads 1] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau

from nas.data import load_data_config, make_loader, scan_split
from nas.supernet import OneShotScorer, SupernetConfig, sample_genome, train_supernet
from nas.train import prepare_model, proxy_train
from nas.zero_cost import compute_proxies
from search_spaces import ElanRanges, YoloV7TinySpace


def narrowed_space(width_max: float, nc: int):
    """The yolov7-tiny space with the global width capped (a cheaper supernet on CPU)."""
    base = YoloV7TinySpace.ranges

    class Narrowed(YoloV7TinySpace):
        name = f"yolov7-tiny-w{width_max:g}"
        ranges = ElanRanges(preset=base.preset, width=(base.width[0], width_max, base.width[2]),
                            depth=base.depth, hidden=base.hidden, out=base.out,
                            activations=base.activations)
    return Narrowed(nc=nc)


def draw_architectures(space, activation: str, n: int, draw: str, nc: int, seed: int) -> list:
    """``n`` distinct genomes: a uniform draw, or (``spread``) the genomes at evenly spaced
    quantiles of parameter count in a pool of 30 x ``n`` uniform draws."""
    rng = random.Random(seed)
    pool_size = n if draw == "random" else 30 * n
    pool, seen = [], set()
    for _ in range(100 * pool_size):
        if len(pool) == pool_size:
            break
        g = sample_genome(space, activation, rng, "random")
        if g.genome_hash() not in seen:
            seen.add(g.genome_hash())
            pool.append(g)
    if draw == "random":
        return pool
    sized = sorted(pool, key=lambda g: sum(q.numel() for q in prepare_model(g, nc, seed=seed)[0].parameters()))
    return [sized[int((i + 0.5) * len(sized) / n)] for i in range(n)]


def tau(xs, ys) -> tuple[float, float]:
    t, p = kendalltau(xs, ys)
    return float(t), float(p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic")
    p.add_argument("--n-arch", type=int, default=12)
    p.add_argument("--img", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--subset", type=int, default=256, help="training images (all runs)")
    p.add_argument("--width-max", type=float, default=0.5)
    p.add_argument("--draw", choices=("random", "spread"), default="random",
                   help="uniform draw, or evenly spaced quantiles of params from a larger pool")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="also score after this many epochs of fine-tuning from inherited weights")
    p.add_argument("--activation", default="leakyrelu")
    p.add_argument("--supernet-epochs", type=int, default=20)
    p.add_argument("--random-subnets", type=int, default=2)
    p.add_argument("--compare-distill", action="store_true")
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--proxy-epochs", type=int, default=5)
    p.add_argument("--ref-epochs", type=int, default=20)
    p.add_argument("--ref-seeds", default="0,1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default="benchmarks/out")
    p.add_argument("--json", default=None, help="write every measurement here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.ref_seeds.split(",")]

    data = load_data_config(args.data)
    splits = (scan_split(data, "train"), scan_split(data, "val"))
    space = narrowed_space(args.width_max, data.nc)
    genomes = draw_architectures(space, args.activation, args.n_arch, args.draw, data.nc, args.seed)
    print(f"{len(genomes)} architectures of {space.name} ({args.activation}, {args.draw} draw), {args.img}px, "
          f"{args.subset} training images, {args.threads} thread(s)", flush=True)

    report: dict = {"args": vars(args), "supernets": {}, "archs": []}
    variants = [("oneshot", False)] + ([("oneshot_distill", True)] if args.compare_distill else [])
    scorers = {}
    for key, distill in variants:
        config = SupernetConfig(epochs=args.supernet_epochs, img=args.img, batch=args.batch,
                                seed=args.seed, activation=args.activation,
                                random_subnets=args.random_subnets, distill=distill,
                                subset=args.subset, calib_images=args.calib, threads=args.threads)
        path = out_dir / f"{space.name}-{key}-e{args.supernet_epochs}.pt"
        t0 = time.process_time()
        res = train_supernet(space, data, path, config,
                             on_epoch=lambda s, k=key: print(f"  {k} epoch {s.epoch} loss {s.loss:.3f} "
                                                              f"{s.seconds:.0f}s", flush=True))
        cpu = time.process_time() - t0
        report["supernets"][key] = {"path": str(path), "wall_s": res.seconds, "cpu_s": cpu,
                                    "resumed_from": res.resumed_from,
                                    "map50_95_largest": res.map50_95_largest,
                                    "map50_95_smallest": res.map50_95_smallest}
        print(f"supernet {key}: {res.seconds:.0f}s wall, largest {res.map50_95_largest:.4f}, "
              f"smallest {res.map50_95_smallest:.4f}", flush=True)
        from nas.supernet import load_supernet
        net = load_supernet(path, space).eval()
        scorers[key] = OneShotScorer(net, data, args.img, calib_images=args.calib, seed=args.seed,
                                     batch=args.batch, splits=splits)

    zc_batch = next(iter(make_loader(splits[0], img=args.img, batch=16, subset=16, seed=args.seed)))[0]
    rows = report["archs"]
    for i, g in enumerate(genomes):
        net, _ = prepare_model(g, data.nc, seed=args.seed)
        row = {"arch": i, "genome": g.genome_hash(), "params": sum(q.numel() for q in net.parameters())}
        row["naswot"] = compute_proxies(net, zc_batch, ("naswot",), seed=args.seed)["naswot"]
        for key, scorer in scorers.items():
            t0 = time.process_time()
            s = scorer.score(g)
            row[key] = s.map50_95
            row[f"{key}_cpu_s"] = time.process_time() - t0
            if args.finetune_epochs:
                t0 = time.process_time()
                tuned = proxy_train(scorer.model(g), data, epochs=args.finetune_epochs, img=args.img,
                                    batch=args.batch, subset=args.subset, seed=args.seed,
                                    threads=args.threads, lr=0.001)
                row[f"{key}_ft"] = tuned.map50_95
                row[f"{key}_ft_cpu_s"] = row[f"{key}_cpu_s"] + time.process_time() - t0
        t0 = time.process_time()
        short = proxy_train(g, data, epochs=args.proxy_epochs, img=args.img, batch=args.batch,
                            subset=args.subset, seed=args.seed, threads=args.threads)
        row.update(proxy=short.map50_95, proxy_cpu_s=time.process_time() - t0)
        rows.append(row)
        print(f"  arch {i} {row['genome']} params {row['params']:>9,}  oneshot {row['oneshot']:.4f} "
              f"({row['oneshot_cpu_s']:.1f} cpu-s)  proxy {short.map50_95:.4f} ({row['proxy_cpu_s']:.0f} cpu-s)",
              flush=True)
        _dump(args.json, report)
    for seed in seeds:
        for row, g in zip(rows, genomes):
            t0 = time.process_time()
            ref = proxy_train(g, data, epochs=args.ref_epochs, img=args.img, batch=args.batch,
                              subset=args.subset, seed=seed, threads=args.threads,
                              val_interval=args.ref_epochs)
            row[f"ref_seed{seed}"] = ref.map50_95
            row[f"ref_seed{seed}_cpu_s"] = time.process_time() - t0
            print(f"  reference seed {seed} arch {row['arch']}: {ref.map50_95:.4f} "
                  f"({row[f'ref_seed{seed}_cpu_s']:.0f} cpu-s)", flush=True)
            _dump(args.json, report)
    keys = [k for k, _ in variants]
    summarise(report, seeds, keys + ([f"{k}_ft" for k in keys] if args.finetune_epochs else []))
    _dump(args.json, report)


def summarise(report: dict, seeds: list[int], oneshot_keys: list[str]) -> None:
    rows = report["archs"]
    for r in rows:
        r["ref_mean"] = statistics.fmean(r[f"ref_seed{s}"] for s in seeds)
    print(f"\nKendall tau vs stand-alone training ({len(rows)} architectures)")
    cols = ["ref_mean"] + [f"ref_seed{s}" for s in seeds]
    print(f"  {'score':16s}" + "".join(f" {c:>16s}" for c in cols))
    taus = {}
    for key in oneshot_keys + ["proxy", "naswot", "params"]:
        vals = [tau([r[key] for r in rows], [r[c] for r in rows]) for c in cols]
        taus[key] = vals[0][0]
        print(f"  {key:16s}" + "".join(f" {t:7.3f} (p {pv:4.2f})" for t, pv in vals))
    pair_taus = []
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            t, pv = tau([r[f"ref_seed{a}"] for r in rows], [r[f"ref_seed{b}"] for r in rows])
            pair_taus.append(t)
            print(f"  {f'seed {a} vs {b}':16s} {t:7.3f} (p {pv:4.2f})")
    if pair_taus:
        taus["seed_to_seed"] = statistics.fmean(pair_taus)
        print(f"  {'seed-to-seed':16s} {taus['seed_to_seed']:7.3f}   <- ceiling (mean over seed pairs)")
    ref = [r["ref_mean"] for r in rows]
    print(f"  reference mAP@0.5:0.95 {min(ref):.4f} .. {max(ref):.4f}")
    sn = report["supernets"]["oneshot"]
    per_eval = statistics.fmean(r["oneshot_cpu_s"] for r in rows)
    per_proxy = statistics.fmean(r["proxy_cpu_s"] for r in rows)
    oneshot_cost = sn["cpu_s"] + 100 * per_eval
    proxy_cost = 100 * per_proxy
    print(f"\ncost of 100 candidates (CPU seconds): one-shot {oneshot_cost:.0f} "
          f"(supernet {sn['cpu_s']:.0f} + 100 x {per_eval:.1f}) vs proxy {proxy_cost:.0f} "
          f"(100 x {per_proxy:.1f}): ratio {oneshot_cost / proxy_cost:.2f}")
    for key in (k for k in oneshot_keys if k.endswith("_ft")):
        per_ft = statistics.fmean(r[f"{key}_cpu_s"] for r in rows)
        cost = report["supernets"][key[:-3]]["cpu_s"] + 100 * per_ft
        print(f"  {key}: {cost:.0f} (100 x {per_ft:.1f}): ratio {cost / proxy_cost:.2f}")
    report["summary"] = {"tau": taus, "cost_oneshot_cpu_s": oneshot_cost,
                         "cost_proxy_cpu_s": proxy_cost, "cost_ratio": oneshot_cost / proxy_cost}


def _dump(path: str | None, report: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
