"""The first thing to run on a GPU machine: does y7nas work there, end to end, and how fast?

Runs the steps a GPU user takes, each as the user runs it (the `y7nas` command in a subprocess),
and prints a one-screen summary (each step ok / failed / skipped with its reason, seconds, and for
the throughput step peak GPU memory and images/s):

1. ``environment``: torch, CUDA, the GPU, ONNX Runtime's providers;
2. ``supernet``: `y7nas supernet train` 2 epochs at ``--img`` px, killed (SIGKILL) once its first
   epoch is checkpointed, then re-run: it must resume and finish;
3. ``run``: `y7nas run` with a one-shot search of ``--trials`` candidates, latency timed on the
   device by torch, a GFLOPs budget, 1 finalist, the family, the report, the chosen model;
4. ``latency onnxruntime``: `y7nas profile --latency --latency-backend onnxruntime` on the device
   (skipped when ONNX Runtime lacks the device's provider);
5. ``torchrun``: `torchrun --nproc-per-node 2` of `y7nas supernet train` (the DDP path; gloo on
   the CPU when fewer than 2 GPUs are present, as NCCL needs one GPU per rank);
6. ``throughput``: training images/s and peak GPU memory of the yolov7-tiny preset at ``--img``
   (with and without mixed precision where `y7nas train` offers `--amp`).

``--device cpu`` runs the same steps on the CPU (CI runs it on a tiny generated dataset, so the
script itself cannot rot). Everything is written under ``--out`` (default a fresh temporary
folder). Exit status 0 when no step failed.

``scripts/gpu_check.sh`` wraps it: it first installs the project's pure-Python dependencies
from wheels carried beside it (the GPU machine has no network; README "GPU check" says how to
download them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    status: str = "skipped"        # ok / failed / skipped
    seconds: float = 0.0
    detail: str = ""


def y7nas(*args: str) -> list[str]:
    """The command line of ``y7nas ARGS`` with this interpreter (no PATH lookup)."""
    return [sys.executable, "-c", "import cli; cli.app()", *args]


def run_cmd(cmd: list[str], timeout: float, log: Path) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the project root, its output appended to ``log``; raise on failure."""
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        done = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=fh, text=True,
                              timeout=timeout)
        fh.write(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {_last_line(log)}")
    return done


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def step(name: str, steps: list[Step], body: Callable[[], str | None]) -> None:
    """Run one step: ok with its detail, skipped with the reason ``body`` raises as Skip, or
    failed with the error's first line."""
    s = Step(name)
    started = time.perf_counter()
    try:
        s.detail = body() or ""
        s.status = "ok"
    except Skip as why:
        s.status, s.detail = "skipped", str(why)
    except Exception as exc:  # noqa: BLE001 - a failed step is reported, the others still run
        s.status, s.detail = "failed", (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    s.seconds = time.perf_counter() - started
    steps.append(s)
    print(f"[{s.status}] {name} ({s.seconds:.0f} s) {s.detail}", flush=True)


class Skip(Exception):
    """A step that does not apply on this machine (the message says why)."""


def environment(device: str) -> str:
    import torch

    text = f"torch {torch.__version__}"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("CUDA is not available to torch")
        text += f", CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    try:
        import onnxruntime as ort

        text += f", onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())})"
    except ImportError:
        text += ", no onnxruntime"
    return text


def supernet_kill_resume(args, out: Path, log: Path) -> str:
    """Train 2 epochs, SIGKILL after the first checkpoint, re-run: resumes and finishes."""
    path = out / "supernet.pt"
    cmd = y7nas("supernet", "train", "--space", args.space, "--data", args.data, "-o", str(path), "--epochs", "2",
                "--img", str(args.img), "--device", args.device, "--random-subnets", "1", "--json",
                *(["--subset", str(args.subset)] if args.subset else []))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("a") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=fh)
        deadline = time.time() + args.step_timeout
        while proc.poll() is None and time.time() < deadline and not _epochs_done(path):
            time.sleep(0.5)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    first = _epochs_done(path)
    done = json.loads(run_cmd(cmd, args.step_timeout, log).stdout.strip().splitlines()[-1])
    how = f"killed after epoch {first}, resumed" if killed and first else "finished before the kill"
    return (f"{how}; largest / smallest mAP@0.5:0.95 {done['map50_95_largest']:.3f} / "
            f"{done['map50_95_smallest']:.3f}")


def _epochs_done(path: Path) -> int:
    """Epochs the supernet checkpoint at ``path`` holds (0 when absent or unreadable)."""
    if not path.is_file():
        return 0
    try:
        from nas.supernet import read_checkpoint

        return int(read_checkpoint(path)["meta"].get("epochs_done", 0))
    except Exception:  # noqa: BLE001 - a checkpoint being written is read again later
        return 0


def pipeline(args, out: Path, log: Path) -> str:
    done = run_cmd(y7nas("run", "--space", args.space, "--data", args.data, "--study", "check", "--results-dir",
                         str(out / "results"), "--img", str(args.img), "--supernet-epochs", "2", "--random-subnets",
                         "1", "--trials", str(args.trials), "--finalists", "1", "--finalist-epochs", "1",
                         "--max-gflops", str(args.max_gflops), "--device", args.device, "--json"),
                   args.step_timeout * 2, log)
    stages = json.loads(done.stdout)["stages"]
    chosen = stages["family"]["outputs"].get("chosen", {})
    return ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in stages.items()) + \
        f"; chosen {Path(chosen.get('yaml', '?')).name}"


def onnxruntime_latency(args, out: Path, log: Path) -> str:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Skip("onnxruntime is not installed") from exc
    wanted = "CUDAExecutionProvider" if args.device.startswith("cuda") else "CPUExecutionProvider"
    if wanted not in ort.get_available_providers():
        raise Skip(f"onnxruntime has no {wanted} (providers: {', '.join(ort.get_available_providers())})")
    done = run_cmd(y7nas("profile", "yolov7-tiny", "--img", str(args.img), "--deploy", "--latency",
                         "--latency-backend", "onnxruntime", "--device", args.device, "--json"),
                   args.step_timeout, log)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return f"yolov7-tiny at {args.img} px: {report['latency_ms']['median']:.2f} ms"


def torchrun(args, out: Path, log: Path) -> str:
    import torch

    device = args.device if args.device.startswith("cuda") and torch.cuda.device_count() >= 2 else "cpu"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "cli", "supernet", "train", "--space", args.space, "--data", args.data, "-o",
           str(out / "ddp.pt"), "--epochs", "1", "--img", str(args.img), "--device", device,
           "--random-subnets", "1", "--threads", "1", "--json",
           *(["--subset", str(args.subset)] if args.subset else [])]
    run_cmd(cmd, args.step_timeout, log)
    return f"2 ranks on {device} ({'nccl' if device.startswith('cuda') else 'gloo'})"


def throughput(args, out: Path, log: Path) -> str:
    """Images/s of 1 training epoch of yolov7-tiny, with and without --amp when train offers it;
    peak GPU memory in-process."""
    help_text = subprocess.run(y7nas("train", "--help"), cwd=ROOT, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    variants = (["--amp"], ["--no-amp"]) if "--amp" in help_text else ([],)
    parts = []
    for extra in variants:
        done = run_cmd(y7nas("train", "yolov7-tiny", "--data", args.data, "--epochs", "1", "--img", str(args.img),
                             "--device", args.device, "-o", str(out / f"train{len(parts)}"), "--exist-ok",
                             "--json", *extra), args.step_timeout, log)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        peak = report.get("peak_gpu_memory_mb")
        parts.append(f"{' '.join(extra) or 'default'} {report['images_per_second']:.1f} img/s"
                     + (f", peak {peak:.0f} MB" if peak is not None else ""))
    if not variants[0]:
        parts.append("(no --amp option yet)")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--space", default="yolov7-tiny")
    p.add_argument("--data", default="synthetic-large")
    p.add_argument("--img", type=int, default=256)
    p.add_argument("--subset", type=int, default=0, help="supernet training images (0: all)")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--max-gflops", type=float, default=0.5, help="the run's budget at --img")
    p.add_argument("--step-timeout", type=float, default=300.0)
    p.add_argument("--out", default=None)
    p.add_argument("--skip", default="", help="comma list of steps to leave out")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="y7nas-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_check.log"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    steps: list[Step] = []
    started = time.perf_counter()
    bodies = {"environment": lambda: environment(args.device),
              "supernet": lambda: supernet_kill_resume(args, out, log),
              "run": lambda: pipeline(args, out, log),
              "latency onnxruntime": lambda: onnxruntime_latency(args, out, log),
              "torchrun": lambda: torchrun(args, out, log),
              "throughput": lambda: throughput(args, out, log)}
    for name, body in bodies.items():
        if name in skip:
            steps.append(Step(name, "skipped", 0.0, "--skip"))
            continue
        step(name, steps, body)
    print(f"\ny7nas GPU check on {args.device}: {time.perf_counter() - started:.0f} s, log {log}")
    for s in steps:
        print(f"  {s.status:7s} {s.name:20s} {s.seconds:6.0f} s  {s.detail}")
    (out / "summary.json").write_text(json.dumps([s.__dict__ for s in steps], indent=2) + "\n")
    return 1 if any(s.status == "failed" for s in steps) else 0


if __name__ == "__main__":
    if shutil.which("nvidia-smi") is None and "--device" not in " ".join(sys.argv):
        print("note: no nvidia-smi on PATH; pass --device cpu to check the CPU path", file=sys.stderr)
    sys.exit(main())
