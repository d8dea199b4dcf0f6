"""How far is the supernet's largest sub-network from the same network trained alone?

Trains the supernet of ``--space`` (or reuses ``--supernet FILE``), takes its largest
sub-network's one-shot mAP@0.5:0.95 (BatchNorm re-estimated on ``--calib`` images), then trains
that same architecture stand-alone from scratch with the supernet's recipe (same data, image
size, epochs, batch) once per ``--seeds``. Prints both and the gap as a fraction of the
stand-alone mAP. Goal (issue: a supernet that ranks at equal cost): one-shot within 20 % of
stand-alone at the demo's size.

Every finished step is saved to ``--results`` and a re-run resumes from it.

Run (the figure in docs/SUPERNET.md): ``.venv/bin/python benchmarks/supernet_gap.py
--supernet benchmarks/out/band-yolov7-tiny-cpu-synthetic-large-64-e15-s0.pt
--results benchmarks/results/supernet_gap-demo.json``.
"""
from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch

from _saved import Saved, measure
from nas.data import load_data_config
from nas.supernet import OneShotScorer, SupernetConfig, load_supernet, read_checkpoint, sample_genome, train_supernet
from nas.train import proxy_train
from search_spaces import get_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="yolov7-tiny-cpu")
    p.add_argument("--data", default="synthetic-large")
    p.add_argument("--img", type=int, default=64)
    p.add_argument("--activation", default="relu")
    p.add_argument("--epochs", type=int, default=15, help="supernet epochs, and the stand-alone training's")
    p.add_argument("--random-subnets", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--calib", type=int, default=64)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--supernet", default=None, help="reuse this trained supernet file (its settings win)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default="benchmarks/out")
    p.add_argument("--results", default="benchmarks/results/supernet_gap.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    saved = Saved(Path(args.results), vars(args), {a.dest: a.default for a in p._actions})
    data = load_data_config(args.data)
    space = get_space(args.space, nc=data.nc)
    path = Path(args.supernet) if args.supernet else \
        Path(args.out_dir) / f"gap-{args.space}-{args.img}-e{args.epochs}.pt"
    if not args.supernet:
        train_supernet(space, data, path, SupernetConfig(epochs=args.epochs, img=args.img, batch=args.batch,
                                                         activation=args.activation,
                                                         random_subnets=args.random_subnets, threads=args.threads))
    meta = read_checkpoint(path)["meta"]
    img, epochs, activation = meta["img"], meta["epochs"], meta["activation"]
    largest = sample_genome(space, activation, random.Random(0), "largest")
    net = load_supernet(path, space).eval()
    oneshot = measure(saved, "oneshot_largest", lambda: OneShotScorer(
        net, data, img, calib_images=args.calib, batch=args.batch).score(largest).map50_95)
    alone = [measure(saved, f"alone/seed{s}", lambda s=s: float(proxy_train(
        largest, data, epochs=epochs, img=img, batch=args.batch, subset=None, seed=s, threads=args.threads,
        val_interval=epochs).map50_95)) for s in (int(x) for x in args.seeds.split(","))]
    mean = statistics.fmean(alone)
    gap = (mean - oneshot) / mean
    print(f"largest sub-network of {args.space} ({activation}, {epochs} epochs at {img} px, {args.data}): "
          f"one-shot mAP@0.5:0.95 {oneshot:.4f}; stand-alone {mean:.4f} (seeds {args.seeds}: "
          f"{', '.join(f'{a:.4f}' for a in alone)}); gap {gap:.0%} of stand-alone -> goal (<= 20 %) "
          f"{'met' if gap <= 0.20 else 'missed'}")
    saved.doc["summary"] = {"oneshot": oneshot, "alone": alone, "gap": gap, "random_pool": meta.get("random_pool")}
    saved.save()


if __name__ == "__main__":
    main()
