"""scripts/gpu_check.py, the first command on a GPU machine, run here with --device cpu on a tiny
generated set: every step either passes or is skipped with its reason, and the summary says so."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_passes_on_the_cpu(tmp_path):
    from nas.data import generate_synthetic

    data = generate_synthetic(tmp_path / "data", n_train=16, n_val=8, img=64, seed=0, nc=3, workers=0)
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu",
                           "--space", "yolov7-tiny-cpu", "--data", str(data), "--img", "64", "--trials", "4",
                           "--max-gflops", "0.03", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = {s["name"]: s for s in json.loads((out / "summary.json").read_text())}
    assert done.returncode == 0, done.stdout[-3000:] + (out / "gpu_check.log").read_text()[-3000:]
    assert list(summary) == ["environment", "supernet", "run", "latency onnxruntime", "torchrun", "throughput"]
    assert all(s["status"] == "ok" for s in summary.values()), summary
    assert "resumed" in summary["supernet"]["detail"] or "before the kill" in summary["supernet"]["detail"]
    assert "chosen chosen.yaml" in summary["run"]["detail"]
    assert "gloo" in summary["torchrun"]["detail"] and "img/s" in summary["throughput"]["detail"]
    assert "y7nas GPU check on cpu" in done.stdout
