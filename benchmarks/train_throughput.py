"""Training throughput (images/s) of a preset on the synthetic set, with a per-stage breakdown.

One process, same data, same model: every variant runs ``--steps`` timed training steps (after
``--warmup`` untimed ones) of the real loop pieces — loader (letterboxed images cached in RAM,
flip + HSV augmentation), forward, SimOTA loss, backward, SGD step, EMA update — and prints
images/s per variant plus its ratio to the first (baseline) variant. Variants: contiguous
(NCHW, the default) and channels-last memory format.

Run: ``.venv/bin/python benchmarks/train_throughput.py [--preset yolov7-tiny] [--img 256]
[--batch 16] [--steps 10] [--threads 2]``
"""
from __future__ import annotations

import argparse
import time

import torch

from nas.data import load_data_config, make_loader, scan_split
from nas.loss import DetectionLoss
from nas.sources import resolve_model
from nas.train import ModelEMA, build_optimizer, prepare_model


def run_variant(name, cfg, nc, loader, img, steps, warmup, channels_last):
    net, _ = prepare_model(cfg, nc, seed=0)
    net.train()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    opt = build_optimizer(net, "sgd", 0.01, 0.937, 5e-4 * loader.batch_size / 64)
    ema = ModelEMA(net)
    loss_fn = DetectionLoss(net.head, img)
    stage = dict(data=0.0, forward=0.0, loss=0.0, backward=0.0, step=0.0)
    it = iter(loader)
    images_done = 0
    t_start = None
    for i in range(warmup + steps):
        if i == warmup:
            stage = {k: 0.0 for k in stage}
            images_done = 0
            t_start = time.perf_counter()
        t0 = time.perf_counter()
        try:
            images, targets, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, targets, _ = next(it)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        t1 = time.perf_counter()
        out = net(images)
        t2 = time.perf_counter()
        loss, _items = loss_fn(out, targets)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        ema.update()
        t5 = time.perf_counter()
        for k, dt in zip(stage, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            stage[k] += dt
        images_done += images.shape[0]
    total = time.perf_counter() - t_start
    return images_done / total, stage, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="yolov7-tiny", help="preset, genome or flat YAML")
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--img", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    source = resolve_model(args.preset)
    data = load_data_config(args.data)
    split = scan_split(data, "train")
    loader = make_loader(split, img=args.img, batch=args.batch, augment=True, seed=0,
                         subset=args.batch * (args.steps + args.warmup), shuffle=True)
    for _ in loader:  # decode + letterbox once so every variant reads the RAM cache
        pass
    print(f"{source.name} @ {args.img}px, batch {args.batch}, {args.threads} threads, "
          f"{args.steps} timed steps (+{args.warmup} warm-up), nc={data.nc}")
    base = None
    for name, cl in (("contiguous", False), ("channels_last", True)):
        ips, stage, total = run_variant(name, source.cfg, data.nc, loader, args.img, args.steps,
                                        args.warmup, cl)
        base = base or ips
        parts = "  ".join(f"{k} {100 * v / total:.0f}%" for k, v in stage.items())
        print(f"  {name:14s} {ips:7.2f} img/s  ({ips / base:.2f}x baseline)  {parts}")


if __name__ == "__main__":
    main()
