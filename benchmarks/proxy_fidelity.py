"""Proxy fidelity: does a short training (or a zero-cost score) rank architectures like a long one?

For ``--n-arch`` architectures sampled around yolov7-tiny (the ``yolov7-tiny`` search space with
Optuna's RandomSampler, global width fixed to ×0.25 / ×0.375 / ×0.5 in turn; a small built-in
sampler when the search space package is missing), it measures

* params (baseline), the zero-cost proxies of :func:`nas.zero_cost.compute_proxies` on one batch
  of training images, and the proxy score :func:`nas.train.proxy_train` (``--proxy-epochs`` on
  ``--subset`` images);
* the reference: mAP@0.5:0.95 after ``--long-epochs`` on ``--long-subset`` images (≥ 10× the
  proxy's image passes by default),

then prints Kendall's τ (scipy.stats.kendalltau) of each score against the reference, and writes
one CSV row per architecture (``--csv``). All runs share seed, data and image size.

Run: ``.venv/bin/python benchmarks/proxy_fidelity.py [--n-arch 10] [--proxy-epochs 5]
[--long-epochs 50] [--img 160] [--subset 256] [--threads 1]``
"""
from __future__ import annotations

import argparse
import csv
import random
import sys
import time

import torch
from scipy.stats import kendalltau

from nas.data import load_data_config, make_loader, scan_split
from nas.errors import NasError
from nas.presets import PRESETS
from nas.train import prepare_model, proxy_train
from nas.zero_cost import compute_proxies

WIDTHS = (0.25, 0.375, 0.5)
ZERO_COST = ("naswot", "synflow", "zen")


def _round8(w: float) -> int:
    return max(8, int(round(w / 8)) * 8)


def sample_genomes(n: int, nc: int, seed: int):
    """``n`` distinct genomes: the search space's random sampler, width fixed per architecture."""
    try:
        import optuna
        from search_spaces import get_space
    except ImportError:
        return _fallback_genomes(n, nc, seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space("yolov7-tiny", nc=nc)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out, seen = [], set()
    for i in range(20 * n):
        study.enqueue_trial({"width": WIDTHS[len(out) % len(WIDTHS)]}, skip_if_exists=False)
        trial = study.ask()
        genome = space.suggest(trial)
        study.tell(trial, 0.0)
        if genome.genome_hash() not in seen:
            seen.add(genome.genome_hash())
            out.append(genome)
        if len(out) == n:
            break
    return out


def _fallback_genomes(n: int, nc: int, seed: int):
    """Built-in sampler: yolov7-tiny with a global width, per-stage ELAN depth and downsample."""
    from nas.genome import Downsample

    rng = random.Random(seed)
    base = PRESETS["yolov7-tiny"].replace(nc=nc)
    out = []
    for i in range(n):
        w = WIDTHS[i % len(WIDTHS)]
        g = base.map_fields(lambda _p, v, w=w: _round8(v * w))
        for s in range(4):
            g = g.replace_at(f"stages[{s}].elan.depth", rng.choice((1, 2, 3, 4)))
        for s in (1, 2, 3):
            if rng.random() < 0.5:
                width = g.get(f"stages[{s - 1}].elan.out")
                g = g.replace_at(f"stages[{s}].down", Downsample("conv", width))
        out.append(g)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic")
    p.add_argument("--n-arch", type=int, default=10)
    p.add_argument("--proxy-epochs", type=int, default=5)
    p.add_argument("--long-epochs", type=int, default=50)
    p.add_argument("--img", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--subset", type=int, default=256, help="training images of the proxy")
    p.add_argument("--long-subset", type=int, default=None,
                   help="training images of the reference run (default: --subset)")
    p.add_argument("--val-subset", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default=None, help="write per-architecture rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    long_subset = args.long_subset or args.subset
    ratio = args.long_epochs * long_subset / (args.proxy_epochs * args.subset)

    data = load_data_config(args.data)
    train_split = scan_split(data, "train")
    batch = next(iter(make_loader(train_split, img=args.img, batch=16, subset=16, seed=args.seed)))[0]
    genomes = sample_genomes(args.n_arch, data.nc, args.seed)
    print(f"{len(genomes)} architectures, proxy {args.proxy_epochs} ep x {args.subset} img, "
          f"reference {args.long_epochs} ep x {long_subset} img ({ratio:.0f}x), {args.img}px, "
          f"{args.threads} thread(s)", flush=True)
    rows = []
    t_all = time.perf_counter()
    for i, g in enumerate(genomes):
        net, _ = prepare_model(g, data.nc, seed=args.seed)
        row = {"arch": i, "genome": g.genome_hash(),
               "params": sum(q.numel() for q in net.parameters())}
        try:
            row.update(compute_proxies(net, batch, ZERO_COST, seed=args.seed))
        except NasError as exc:
            print(f"  arch {i}: zero-cost failed: {exc}", file=sys.stderr)
        common = dict(img=args.img, batch=args.batch, seed=args.seed, threads=args.threads,
                      val_subset=args.val_subset)
        try:
            short = proxy_train(g, data, epochs=args.proxy_epochs, subset=args.subset, **common)
            # the reference: same recipe, longer, validated once at the end
            long = proxy_train(g, data, epochs=args.long_epochs, subset=long_subset,
                               val_interval=args.long_epochs, **common)
        except NasError as exc:
            print(f"  arch {i}: training failed: {exc}", file=sys.stderr)
            continue
        row.update(proxy_map50_95=short.map50_95, proxy_map50=short.map50,
                   proxy_seconds=short.seconds, long_map50_95=long.map50_95,
                   long_map50=long.map50, long_seconds=long.seconds)
        rows.append(row)
        print(f"  arch {i} {row['genome']} params {row['params']:>9,}  proxy {short.map50_95:.4f} "
              f"({short.seconds:.0f}s)  long {long.map50_95:.4f} ({long.seconds:.0f}s)", flush=True)

    if args.csv and rows:
        keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k)
                      if k in rows[0] else 99)
        with open(args.csv, "w", newline="") as fh:
            w = csv.DictWriter(fh, keys)
            w.writeheader()
            w.writerows(rows)
    ref = [r["long_map50_95"] for r in rows]
    print(f"\nKendall tau vs reference mAP@0.5:0.95 ({len(rows)} architectures, "
          f"{time.perf_counter() - t_all:.0f}s total)")
    print(f"  {'score':18s} {'tau':>7s} {'p-value':>8s}")
    for key in ("proxy_map50_95", "proxy_map50", *ZERO_COST, "params"):
        pairs = [(r[key], r["long_map50_95"]) for r in rows if key in r]
        if len(pairs) < 3:
            continue
        tau, pval = kendalltau([a for a, _ in pairs], [b for _, b in pairs])
        print(f"  {key:18s} {tau:7.3f} {pval:8.3f}")
    if len(ref) >= 2:
        print(f"  reference mAP@0.5:0.95 range {min(ref):.4f} .. {max(ref):.4f}")


if __name__ == "__main__":
    main()
