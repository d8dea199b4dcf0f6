"""Latency table vs measurement: does a per-layer table predict ONNX Runtime latency?

For each space (``--spaces``, default ``yolov7-tiny,yolov7``) at its image size (``--imgs``,
default 160 px for both: minutes on a 2-core CPU):

1. builds a latency table (``nas.latency._table.build_table``: ``--samples`` random
   architectures' distinct layers timed alone in ONNX Runtime, ``--threads`` intra-op threads,
   calibrated on 6 random whole models, the preset and the space's smallest and largest
   architectures) and times the build;
2. draws ``--n-arch`` further random architectures (another seed) and, for each, side by side:
   the table's prediction and the measured ONNX Runtime latency of the deploy form (the lowest
   of ``--rounds`` medians of ``--runs`` runs after ``--warmup``, rounds interleaved over blocks of
   10 architectures: on a shared machine, the round other jobs disturbed least), with the layers
   the table lacked counted and then timed
   and added (the table is writable, as on the device it was built on);
3. prints the mean absolute percentage error, Kendall's τ (scipy), the cost of one prediction
   (given the deploy model: layer keys + look-ups + the calibrated sum) vs one measurement
   (export + session + warm-up + one round of runs), the table's coverage of the new architectures, and the
   table build time, against the goals (MAPE ≤ 10 %, τ ≥ 0.9, ≥ 100× cheaper).

Run: ``.venv/bin/python benchmarks/latency_predictor.py [--n-arch 30] [--spaces yolov7-tiny,yolov7]
[--imgs 160,160] [--samples 100,60] [--runs 30] [--rounds 3] [--threads 1] [--nice 0] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from scipy.stats import kendalltau

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.expand import expand
from nas.fuse import fuse
from nas.latency import export_onnx, onnx_session, time_session
from nas.latency._table import build_table
from search_spaces import get_space

GOALS = {"mape_percent": 10.0, "tau": 0.9, "cost_ratio": 100.0}
#: architectures whose ONNX sessions are kept at once while their rounds interleave
BLOCK = 10


def deploy_model(genome, source: str):
    return fuse(build_model(parse_cfg(expand(genome), source=source)).eval(), inplace=True)


def evaluate(space_name: str, img: int, samples: int, n_arch: int, runs: int, warmup: int, threads: int,
             seed: int, folder: Path, rounds: int) -> dict:
    space = get_space(space_name)
    t0 = time.perf_counter()
    built = build_table(space, img, folder / f"{space_name}-{img}.json", threads=threads, samples=samples,
                        seed=seed, progress=lambda stage, done, total, layers: print(
                            f"  {space_name} {stage} {done}/{total} ({layers} layers, "
                            f"{time.perf_counter() - t0:.0f}s)", flush=True) if done == total or done % 20 == 0 else None)
    table = built.table
    rng = random.Random(seed + 1000)
    rows = []
    for block in range(0, n_arch, BLOCK):
        sessions = []
        for i in range(block, min(n_arch, block + BLOCK)):
            genome = space.decode(space.sample_params(rng))
            model = deploy_model(genome, f"{space_name} arch {i}")
            n_layers = len(model.layers)
            missing = len(table.missing(model, img))
            start = time.perf_counter()
            table.predict(model, img)                  # times and adds the layers the table lacks
            first_call = time.perf_counter() - start
            start = time.perf_counter()
            predicted = table.predict(model, img)       # a prediction proper: every layer present
            predict_s = time.perf_counter() - start
            start = time.perf_counter()
            sessions.append(onnx_session(export_onnx(model, img), threads=threads))
            prepare_s = time.perf_counter() - start
            rows.append({"arch": i, "genome_hash": genome.genome_hash(), "layers": n_layers, "missing": missing,
                         "predicted_ms": round(predicted, 4), "predict_s": predict_s,
                         "first_predict_s": first_call, "prepare_s": prepare_s, "measured_ms": math.inf})
        # measured: the lowest of `rounds` medians, rounds interleaved over the block's models
        for _ in range(rounds):
            for row, session in zip(rows[block:], sessions):
                start = time.perf_counter()
                median = time_session(session, img, 1, runs, warmup, threads, "cpu", "deploy").median
                row["measure_s"] = row["prepare_s"] + time.perf_counter() - start  # export+session+one round
                row["measured_ms"] = min(row["measured_ms"], round(median, 4))
        for row in rows[block:]:
            row["error_percent"] = round(100 * (row["predicted_ms"] - row["measured_ms"]) / row["measured_ms"], 2)
            print(f"  {space_name} arch {row['arch']:2d}: predicted {row['predicted_ms']:8.2f} ms  measured "
                  f"{row['measured_ms']:8.2f} ms  ({row['error_percent']:+6.1f} %)  {row['missing']}/"
                  f"{row['layers']} layers were missing", flush=True)
    predicted = [r["predicted_ms"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    tau = float(kendalltau(predicted, measured)[0])
    mape = statistics.fmean(abs(r["error_percent"]) for r in rows)
    predict_s = statistics.median(r["predict_s"] for r in rows)
    measure_s = statistics.median(r["measure_s"] for r in rows)
    return {"space": space_name, "img": img, "samples": samples, "table_layers": built.layers,
            "build_s": round(built.seconds, 1), "calibration": {k: built.calibration[k] for k in
                                                                 ("curve", "a", "b", "call_overhead_ms", "fit_mape_percent", "loo_mape_percent")},
            "holdout": built.coverage, "n_arch": n_arch, "runs": runs, "rounds": rounds, "threads": threads,
            "mape_percent": round(mape, 2), "tau": round(tau, 3),
            "max_abs_error_percent": round(max(abs(r["error_percent"]) for r in rows), 1),
            "predict_ms": round(1000 * predict_s, 3), "measure_ms": round(1000 * measure_s, 1),
            "cost_ratio": round(measure_s / predict_s, 1),
            "layer_hit_rate": round(1 - sum(r["missing"] for r in rows) / sum(r["layers"] for r in rows), 4),
            "archs_complete": sum(r["missing"] == 0 for r in rows),
            "first_predict_ms_median": round(1000 * statistics.median(r["first_predict_s"] for r in rows), 1),
            "rows": rows}


def report(results: list[dict]) -> None:
    print()
    print(f"{'space':12} {'img':>4} {'table':>6} {'build':>7} {'hit':>6} {'MAPE':>7} {'tau':>6} "
          f"{'predict':>9} {'measure':>9} {'ratio':>8}")
    for r in results:
        print(f"{r['space']:12} {r['img']:>4} {r['table_layers']:>6} {r['build_s']:>6.0f}s "
              f"{r['layer_hit_rate']:>6.1%} {r['mape_percent']:>6.1f}% {r['tau']:>6.3f} "
              f"{r['predict_ms']:>7.2f}ms {r['measure_ms']:>7.0f}ms {r['cost_ratio']:>7.0f}x")
    print(f"goals: MAPE <= {GOALS['mape_percent']:g} %, tau >= {GOALS['tau']:g}, prediction >= "
          f"{GOALS['cost_ratio']:g}x cheaper than a measurement")
    for r in results:
        met = [r["mape_percent"] <= GOALS["mape_percent"], r["tau"] >= GOALS["tau"],
               r["cost_ratio"] >= GOALS["cost_ratio"]]
        print(f"{r['space']}: MAPE {'met' if met[0] else 'MISSED'}, tau {'met' if met[1] else 'MISSED'}, "
              f"cost {'met' if met[2] else 'MISSED'}; {r['archs_complete']}/{r['n_arch']} new architectures "
              f"fully in the table (their missing layers cost a median {r['first_predict_ms_median']:.0f} ms "
              f"to time and add on the first prediction); calibration {r['calibration']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spaces", default="yolov7-tiny,yolov7")
    p.add_argument("--imgs", default="160,160", help="image size per space")
    p.add_argument("--samples", default="100,60", help="table architectures per space")
    p.add_argument("--n-arch", type=int, default=30)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="measured latency: lowest median of this many rounds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nice", type=int, default=0, help="raise this process's nice value first")
    p.add_argument("--tables", type=Path, default=None, help="keep the tables in this folder")
    p.add_argument("--json", type=Path, default=None, help="write every figure and row here")
    args = p.parse_args()
    if args.nice:
        os.nice(args.nice)
    spaces = args.spaces.split(",")
    imgs = [int(v) for v in args.imgs.split(",")]
    samples = [int(v) for v in args.samples.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.tables or Path(tmp)
        results = [evaluate(name, imgs[i], samples[i], args.n_arch, args.runs, args.warmup, args.threads,
                            args.seed, folder, args.rounds) for i, name in enumerate(spaces)]
    report(results)
    if args.json:
        args.json.write_text(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
