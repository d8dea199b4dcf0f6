"""Which estimator ranks architectures of about equal cost? The band benchmark.

A user with a budget chooses among candidates that all cost about the budget. Over a draw that
spans sizes, stand-alone mAP follows size and any size-tracking score looks good; this benchmark
asks the question the choice needs:

1. draws ``--n-arch`` distinct architectures of ``--space`` whose deploy GFLOPs at ``--img`` lie
   within ±``--tol`` of one target (``--target-gflops``; default: 0.8x the GFLOPs of the hand
   design, the space's preset at ``--width``, as ``beats_hand_design.py`` budgets) with the same random
   draws the search's targeted phase uses (:func:`nas.search.draw_in_band`);
2. trains the supernet of the space once (``nas.supernet.train_supernet``, resumable), and
   (``--pool-supernet``, default) a second one whose random sub-networks come from a pool of 16
   *other* architectures of the band, as ``y7nas run --random-from band`` trains it;
3. scores every architecture with each estimator: one-shot (val mAP@0.5:0.95 with inherited
   weights) with BatchNorm re-estimated on each of ``--calib`` image counts, one-shot after
   ``--finetune-epochs`` of fine-tuning, one-shot with the band-pool supernet (the largest
   ``--calib``), the ``--proxy-epochs`` proxy, NASWOT, params, and the rank mean of one-shot
   and params;
4. trains every architecture stand-alone (``--ref-epochs``, same recipe and data) once per
   ``--ref-seeds``: the reference.

It prints, per estimator, Kendall's τ-b against the mean of the seeds with a bootstrap 90 %
interval (architectures and seeds resampled together), the paired difference to params with its
interval, and the top-1 regret (reference mAP lost by taking the estimator's top-1 instead of
the best); and the split-half seed ceiling (each seed against the mean of the others).

Every finished measurement is saved to ``--results`` (JSON) as it ends, and a re-run with the
same arguments resumes from it, so a run spanning several sittings finishes.

Run (the figures in docs/SUPERNET.md):
``.venv/bin/python benchmarks/band_ranking.py --data synthetic-large --results
benchmarks/results/band_ranking-synthetic-large.json``
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau

from _saved import Saved, measure
from nas.data import load_data_config, make_loader, scan_split
from nas.search import Budget, deploy_costs, draw_in_band
from nas.supernet import OneShotScorer, SupernetConfig, load_supernet, train_supernet
from nas.train import prepare_model, proxy_train
from nas.zero_cost import compute_proxies
from scaling.baseline import hand_design
from scaling.compound import scale_genome
from search_spaces import get_space

LEVEL = 0.90          # two-sided interval


# ------------------------------------------------------------------------------ statistics
def tau_b(x, y) -> float:
    t = kendalltau(x, y, variant="b").statistic
    return 0.0 if t != t else float(t)        # NaN (a constant column) → no ranking


def bootstrap(scores: dict[str, list[float]], refs: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """τ-b of each estimator vs the seed mean, its interval, and the paired difference to
    params, over ``n_boot`` resamples of architectures and seeds (``refs``: archs × seeds)."""
    rng = np.random.default_rng(seed)
    n, k = refs.shape
    draws = {name: [] for name in scores}
    diffs = {name: [] for name in scores}
    for _ in range(n_boot):
        archs = rng.integers(0, n, n)
        seeds = rng.integers(0, k, k)
        ref = refs[np.ix_(archs, seeds)].mean(1)
        base = tau_b(np.asarray(scores["params"])[archs], ref)
        for name, values in scores.items():
            t = tau_b(np.asarray(values)[archs], ref)
            draws[name].append(t)
            diffs[name].append(t - base)
    q = [(1 - LEVEL) / 2, (1 + LEVEL) / 2]
    mean_ref = refs.mean(1)
    out = {}
    for name, values in scores.items():
        best = int(np.argmax(mean_ref))
        top = int(np.argmax(values))
        out[name] = {"tau": tau_b(values, mean_ref), "tau_ci": np.quantile(draws[name], q).tolist(),
                     "vs_params": tau_b(values, mean_ref) - tau_b(scores["params"], mean_ref),
                     "vs_params_ci": np.quantile(diffs[name], q).tolist(),
                     "top1_regret": float(mean_ref[best] - mean_ref[top])}
    return out


def split_half_ceiling(refs: np.ndarray) -> float:
    """Mean τ-b of each seed against the mean of the other seeds."""
    k = refs.shape[1]
    return statistics.fmean(tau_b(refs[:, s], np.delete(refs, s, 1).mean(1)) for s in range(k))


def _ranks(values):
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return order.astype(float)


# ------------------------------------------------------------------------------ the run
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="yolov7-tiny-cpu")
    p.add_argument("--data", default="synthetic-large")
    p.add_argument("--img", type=int, default=64)
    p.add_argument("--activation", default="relu")
    p.add_argument("--n-arch", type=int, default=16)
    p.add_argument("--target-gflops", type=float, default=None)
    p.add_argument("--width", type=float, default=0.5, help="hand design = the preset at this width")
    p.add_argument("--budget", type=float, default=0.8, help="target = this x the hand design's GFLOPs")
    p.add_argument("--tol", type=float, default=0.10)
    p.add_argument("--subset", type=int, default=0, help="training images (0: all)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--supernet-epochs", type=int, default=15)
    p.add_argument("--random-subnets", type=int, default=1)
    p.add_argument("--pool-supernet", action=argparse.BooleanOptionalAction, default=True,
                   help="also score with a supernet whose random sub-networks come from a pool of other "
                        "band architectures (y7nas run --random-from band)")
    p.add_argument("--calib", default="64,256,512")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--proxy-epochs", type=int, default=5)
    p.add_argument("--ref-epochs", type=int, default=20)
    p.add_argument("--ref-seeds", default="0,1,2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default="benchmarks/out")
    p.add_argument("--results", default="benchmarks/results/band_ranking.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    saved = Saved(Path(args.results), vars(args), {a.dest: a.default for a in p._actions})
    saved.doc.setdefault("archs", [])
    data = load_data_config(args.data)
    subset = args.subset or None
    splits = (scan_split(data, "train"), scan_split(data, "val"))
    space = get_space(args.space, nc=data.nc).fixed(activation=args.activation)
    calibs = [min(int(c), len(splits[0])) for c in args.calib.split(",")]
    seeds = [int(s) for s in args.ref_seeds.split(",")]

    # 1. the band
    target = args.target_gflops
    if target is None:
        _name, preset = hand_design("preset", space, args.activation)
        if args.width != 1.0:
            preset = scale_genome(preset, 1.0, args.width)
        target = args.budget * deploy_costs(preset, args.img)["gflops"]
    budget = Budget("gflops", target * (1 + args.tol))
    band = ((1 - args.tol) / (1 + args.tol), 1.0)
    if not saved.doc["archs"]:
        found = draw_in_band(space, budget, band, args.img, args.n_arch, seed=args.seed, max_draws=200 * args.n_arch)
        saved.doc["target_gflops"] = target
        saved.doc["archs"] = [{"choice": p, "genome": space.decode(p).genome_hash(),
                               **deploy_costs(space.decode(p), args.img)} for p in found]
        saved.save()
    archs = saved.doc["archs"]
    if len(archs) < 3:
        raise SystemExit(f"only {len(archs)} architectures of {space.name} lie within {args.tol:.0%} of "
                         f"{target:.4g} GFLOPs at {args.img} px; pick another --target-gflops")
    genomes = [space.decode(a["choice"]) for a in archs]
    print(f"{len(genomes)} architectures of {space.name} at {target:.4g} GFLOPs ±{args.tol:.0%} ({args.img} px, "
          f"{args.data}): {min(a['gflops'] for a in archs):.4g}-{max(a['gflops'] for a in archs):.4g} GFLOPs, "
          f"params {min(a['params'] for a in archs) / 1e6:.3g}-{max(a['params'] for a in archs) / 1e6:.3g}M",
          flush=True)

    # 2. the supernet
    out_dir = Path(args.out_dir)
    sn_path = out_dir / f"band-{space.name}-{args.data}-{args.img}-e{args.supernet_epochs}-s{args.seed}.pt"
    config = SupernetConfig(epochs=args.supernet_epochs, img=args.img, batch=args.batch, seed=args.seed,
                            activation=args.activation, random_subnets=args.random_subnets, subset=subset,
                            threads=args.threads)
    if saved.get("supernet") is None:
        t0 = time.process_time()
        res = train_supernet(space, data, sn_path, config,
                             on_epoch=lambda s: print(f"  supernet epoch {s.epoch} loss {s.loss:.3f} {s.seconds:.0f}s",
                                                      flush=True))
        saved.put("supernet", {"value": res.map50_95_largest, "smallest": res.map50_95_smallest,
                               "cpu_s": round(time.process_time() - t0, 1)})
    net = load_supernet(sn_path, space).eval()
    pool_net = None
    if args.pool_supernet:   # as y7nas run --random-from band: a pool of *other* band architectures
        pool_path = sn_path.with_name(sn_path.stem + "-pool.pt")
        pool = [space.decode(p) for p in draw_in_band(space, budget, band, args.img, 16, [a["genome"] for a in archs],
                                                      seed=args.seed + 1000, max_draws=200 * 16)]
        if saved.get("pool_supernet") is None:
            t0 = time.process_time()
            res = train_supernet(space, data, pool_path, config, random_pool=pool,
                                 on_epoch=lambda s: print(f"  pool supernet epoch {s.epoch} loss {s.loss:.3f} "
                                                          f"{s.seconds:.0f}s", flush=True))
            saved.put("pool_supernet", {"value": res.map50_95_largest, "smallest": res.map50_95_smallest,
                                        "pool": len(pool), "cpu_s": round(time.process_time() - t0, 1)})
        pool_net = load_supernet(pool_path, space).eval()

    # 3. the estimators
    zc_batch = next(iter(make_loader(splits[0], img=args.img, batch=16, subset=16, seed=args.seed)))[0]
    for calib in calibs:
        scorer = OneShotScorer(net, data, args.img, calib_images=calib, seed=args.seed, batch=args.batch, splits=splits)
        for i, g in enumerate(genomes):
            measure(saved, f"oneshot_c{calib}/{i}", lambda: scorer.score(g).map50_95)
            if args.finetune_epochs and calib == calibs[0]:
                measure(saved, f"finetune/{i}", lambda: proxy_train(
                    scorer.model(g), data, epochs=args.finetune_epochs, img=args.img, batch=args.batch,
                    subset=subset, seed=args.seed, threads=args.threads, lr=0.001).map50_95)
    if pool_net is not None:
        scorer = OneShotScorer(pool_net, data, args.img, calib_images=calibs[-1], seed=args.seed, batch=args.batch,
                               splits=splits)
        for i, g in enumerate(genomes):
            measure(saved, f"oneshot_pool_c{calibs[-1]}/{i}", lambda: scorer.score(g).map50_95)
    for i, g in enumerate(genomes):
        measure(saved, f"naswot/{i}", lambda: compute_proxies(prepare_model(g, data.nc, seed=args.seed)[0],
                                                              zc_batch, ("naswot",), seed=args.seed)["naswot"])
        if args.proxy_epochs:
            measure(saved, f"proxy/{i}", lambda: proxy_train(g, data, epochs=args.proxy_epochs, img=args.img,
                                                             batch=args.batch, subset=subset, seed=args.seed,
                                                             threads=args.threads).map50_95)

    # 4. the reference, seed by seed (each training saved as it ends)
    for seed in seeds:
        for i, g in enumerate(genomes):
            measure(saved, f"ref_seed{seed}/{i}", lambda: proxy_train(
                g, data, epochs=args.ref_epochs, img=args.img, batch=args.batch, subset=subset, seed=seed,
                threads=args.threads, val_interval=args.ref_epochs).map50_95)

    summarise(saved, len(genomes), calibs, seeds, args)


def summarise(saved: Saved, n: int, calibs, seeds, args) -> None:
    m = saved.doc["measured"]
    col = lambda key: [m[f"{key}/{i}"]["value"] for i in range(n)]          # noqa: E731
    refs = np.array([[m[f"ref_seed{s}/{i}"]["value"] for s in seeds] for i in range(n)])
    scores = {f"oneshot (calib {c})": col(f"oneshot_c{c}") for c in calibs}
    if args.pool_supernet:
        scores[f"oneshot, band-pool supernet (calib {calibs[-1]})"] = col(f"oneshot_pool_c{calibs[-1]}")
    if args.finetune_epochs:
        scores[f"oneshot + {args.finetune_epochs}-epoch fine-tune"] = col("finetune")
    if args.proxy_epochs:
        scores[f"{args.proxy_epochs}-epoch proxy"] = col("proxy")
    scores["naswot"] = col("naswot")
    scores["params"] = [float(a["params"]) for a in saved.doc["archs"]]      # deploy-form parameter count
    first = f"oneshot (calib {calibs[0]})"
    scores["oneshot+params (rank mean)"] = list((_ranks(scores[first]) + _ranks(scores["params"])) / 2)
    stats = bootstrap(scores, refs, seed=args.seed)
    ceiling = split_half_ceiling(refs)
    ref_mean = refs.mean(1)
    print(f"\n{n} architectures at {saved.doc['target_gflops']:.4g} GFLOPs ±{args.tol:.0%}; reference "
          f"mAP@0.5:0.95 (mean of seeds {','.join(map(str, seeds))}) {ref_mean.min():.4f}-{ref_mean.max():.4f}")
    print(f"{'estimator':40s} {'tau-b':>6s} {'90% interval':>16s} {'- params':>9s} {'90% interval':>16s} {'top-1 regret':>12s}")
    for name, s in stats.items():
        print(f"{name:40s} {s['tau']:6.3f} [{s['tau_ci'][0]:6.3f}, {s['tau_ci'][1]:6.3f}] {s['vs_params']:9.3f} "
              f"[{s['vs_params_ci'][0]:6.3f}, {s['vs_params_ci'][1]:6.3f}] {s['top1_regret']:12.4f}")
    print(f"{'split-half seed ceiling':40s} {ceiling:6.3f}")
    saved.doc["summary"] = {"estimators": stats, "split_half_ceiling": ceiling,
                            "reference_range": [float(ref_mean.min()), float(ref_mean.max())]}
    saved.save()


if __name__ == "__main__":
    main()
