"""Small real studies for the report tests, made once per session with the project's own code.

* ``real_study`` — a zero-cost search (NASWOT on real synthetic images) of the 32-genome test
  space at 64 px, score vs GFLOPs with a GFLOPs limit (some trials infeasible), then the
  finalists stage (2 finalists, 1 epoch on 8 images), a compound-scaled family of a front trial
  written where ``y7nas run`` puts it (``family/``) and an ONNX file next to one front model.
* ``mixed_study`` — a multi-epoch test fidelity with pruning and a parameter limit (trials stopped
  before training and at a rung) that fails on one kind of architecture with a hostile message.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from nas.errors import NasError
from nas.search import register_fidelity, run_search
from tests.search._helpers import EpochsFidelity, SmallSpace, config

HOSTILE = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'


@register_fidelity
class MixedFidelity(EpochsFidelity):
    """:class:`EpochsFidelity` (score e/E · 1e4/params after epoch e, prunable), except that
    ReLU + RepConv architectures fail with :data:`HOSTILE` in their reason."""

    name = "test-report-mixed"

    def evaluate(self, genome, model, context):
        if genome.activation == "relu" and genome.outputs.kind == "repconv":
            raise NasError(f"synthetic failure {HOSTILE}")
        return super().evaluate(genome, model, context)


@pytest.fixture(scope="session")
def report_data_yaml(tmp_path_factory) -> str:
    from nas.data import synthetic_dataset

    return str(synthetic_dataset(cache_dir=tmp_path_factory.mktemp("data"), n_train=16, n_val=8, img=64))


@pytest.fixture(scope="session")
def real_study(tmp_path_factory, report_data_yaml) -> Path:
    """results dir of study 'real' (see the module docstring)."""
    from nas.search import train_finalists
    from scaling.family import ScaleRequest, run_scale

    tmp = tmp_path_factory.mktemp("real")
    cfg = config(tmp, study="real", space="small", trials=8, fidelity="zero-cost", objectives=("score", "gflops"),
                 data=report_data_yaml, zero_cost_batch=4, max_gflops=0.006, sampler="random", seed=3)
    summary = run_search(cfg, SmallSpace(nc=5))
    front = [r["number"] for r in summary.front]
    train_finalists("real", cfg.results_dir, top=2, epochs=1, img=64, subset=8, data=report_data_yaml, threads=1)
    run_scale(ScaleRequest(study="real", trial=front[0], results_dir=cfg.results_dir, phi="0,1", img=64,
                           latency_runs=2, threads=1, plot=False, out_dir=cfg.study_dir / "family"))
    try:
        from nas.build import build_model
        from nas.cfg import load_cfg
        from nas.latency import write_onnx

        model = build_model(load_cfg(cfg.study_dir / "models" / f"trial_{front[0]}.yaml"))
        write_onnx(model, cfg.study_dir / "models" / f"trial_{front[0]}.onnx", img=64)
    except (ImportError, NasError):
        pass  # no ONNX here: the report just has no .onnx link
    return cfg.results_dir


@pytest.fixture(scope="session")
def mixed_study(tmp_path_factory) -> Path:
    """results dir of study 'mixed' (see the module docstring)."""
    tmp = tmp_path_factory.mktemp("mixed")
    cfg = config(tmp, study="mixed", space="small", trials=20, fidelity="test-report-mixed",
                 objectives=("score", "params"), sampler="random", proxy_epochs=9, seed=1, max_params=0.43)
    run_search(cfg, SmallSpace())
    return cfg.results_dir
