"""Profiling speed and deploy-form gain, measured side by side in one process.

Prints:
  * time to expand + build the yolov7 preset, count its parameters, and count FLOPs at 640 px;
  * CPU latency of the train form vs the deploy (fused) form at the same size, and their ratio.

Run: ``.venv/bin/python benchmarks/profile_speed.py [--img 640] [--runs 10] [--threads 2]``
"""
from __future__ import annotations

import argparse
import time

import torch

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.expand import expand
from nas.fuse import fuse
from nas.presets import PRESETS
from nas.profile import count_macs, count_params, measure_latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="yolov7")
    parser.add_argument("--img", type=int, default=640)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.manual_seed(0)

    start = time.perf_counter()
    model = build_model(parse_cfg(expand(PRESETS[args.preset]), source=args.preset))
    built = time.perf_counter()
    params = count_params(model)
    counted = time.perf_counter()
    macs, _ = count_macs(model, args.img)
    flops_done = time.perf_counter()
    print(f"{args.preset}: params {params:,}  GFLOPs@{args.img} {2 * macs / 1e9:.2f} (2 x multiply-adds)")
    print(f"  build {built - start:.2f} s | count params {counted - built:.3f} s | "
          f"count FLOPs {flops_done - counted:.2f} s | total {flops_done - start:.2f} s")

    fused = fuse(model)
    train = measure_latency(model, args.img, runs=args.runs, warmup=args.warmup, threads=args.threads,
                            form="train")
    deploy = measure_latency(fused, args.img, runs=args.runs, warmup=args.warmup, threads=args.threads,
                             form="deploy")
    print(f"  latency @{args.img}, batch 1, {args.threads} threads, {args.runs} runs (median / p90):")
    print(f"    train form  {train.median:8.1f} / {train.p90:8.1f} ms")
    print(f"    deploy form {deploy.median:8.1f} / {deploy.p90:8.1f} ms")
    print(f"    deploy/train latency ratio: {deploy.median / train.median:.3f}")


if __name__ == "__main__":
    main()
