"""Shared pieces of the search tests: a tiny search space and test fidelities.

Kept in an importable module (not conftest) so that spawned worker processes and the
kill-test subprocess can import the same classes.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping

from nas.errors import NasError
from nas.search import Fidelity, SearchConfig, register_fidelity
from search_spaces import Dimension, YoloV7TinySpace


class FourGenomeSpace(YoloV7TinySpace):
    """yolov7-tiny at width 0.25 with only two binary dimensions: exactly 4 distinct genomes."""

    name = "four"
    description = "test space with 4 genomes"

    def dimensions(self):
        return (Dimension("width", choices=(0.25, 0.375)), Dimension("outputs", choices=("conv", "repconv")))

    def active(self, params: Mapping[str, Any]):
        return ("width", "outputs")

    def decode(self, params):
        full = {d.name: d.values()[0] for d in super().dimensions()}
        full.update({"activation": "leakyrelu", "spp_plain": "sp", **{k: v for k, v in params.items()}})
        for level in ("p2", "p3", "p4", "p5", "td_p4", "td_p3", "bu_p4", "bu_p5"):
            full.update({f"{level}.depth": 1, f"{level}.hidden": 0.5, f"{level}.out": 0.5})
        full.update({"p3.down": "mp", "p4.down": "mp", "p5.down": "mp", "bu_p4.down": "conv",
                     "bu_p5.down": "conv"})
        return super().decode(full)


class SmallSpace(FourGenomeSpace):
    """The same tiny models with two more dimensions: 32 genomes, each cheap to build and time."""

    name = "small"
    description = "test space with 32 small genomes"

    def dimensions(self):
        return (*super().dimensions(), Dimension("p5.depth", low=1, high=4, step=1),
                Dimension("activation", choices=("leakyrelu", "relu")))

    def active(self, params: Mapping[str, Any]):
        return ("width", "outputs", "p5.depth", "activation")

    def suggest(self, trial):
        _barrier()
        return super().suggest(trial)

    def decode(self, params):
        genome = super().decode({k: params[k] for k in ("width", "outputs")})
        stages = list(genome.stages)
        stages[3] = stages[3].__class__(stages[3].down, stages[3].elan.__class__(
            params["p5.depth"], "all", *(getattr(stages[3].elan, f) for f in ("entry", "chain", "out"))))
        return genome.replace(stages=tuple(stages), activation=params["activation"])


_ARRIVED = False


def _barrier() -> None:
    """With $Y7NAS_TEST_BARRIER=DIR:N, each process's first trial waits until N processes have
    started a trial (so a multi-worker test does not depend on process start-up timing)."""
    global _ARRIVED
    spec = os.environ.get("Y7NAS_TEST_BARRIER")
    if not spec or _ARRIVED:
        return
    _ARRIVED = True
    folder, n = spec.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(list(Path(folder).iterdir())) < int(n):
        if time.monotonic() > deadline:
            raise RuntimeError(f"test barrier: fewer than {n} processes arrived in 300 s")
        time.sleep(0.05)


EVALUATIONS: list[str] = []


@register_fidelity
class CountingFidelity(Fidelity):
    """Score = -GFLOPs-ish constant per genome; records every evaluation in EVALUATIONS."""

    name = "test-counting"
    scores = True

    def evaluate(self, genome, model, context):
        EVALUATIONS.append(genome.genome_hash())
        return {"score": float(sum(p.numel() for p in model.parameters()) % 1000)}


@register_fidelity
class StallFidelity(Fidelity):
    """Stalls forever on the evaluation number $Y7NAS_TEST_STALL_AT (0-based) of this process,
    after touching $Y7NAS_TEST_MARKER; raises KeyboardInterrupt there when $Y7NAS_TEST_INTERRUPT."""

    name = "test-stall"
    scores = False
    calls = 0

    def evaluate(self, genome, model, context):
        n, StallFidelity.calls = StallFidelity.calls, StallFidelity.calls + 1
        if str(n) == os.environ.get("Y7NAS_TEST_STALL_AT"):
            Path(os.environ["Y7NAS_TEST_MARKER"]).write_text(genome.genome_hash())
            if os.environ.get("Y7NAS_TEST_INTERRUPT"):
                raise KeyboardInterrupt
            time.sleep(600)
        return {}


@register_fidelity
class FlakyFidelity(Fidelity):
    """Fails every second evaluation (NasError), returns a NaN score on the third."""

    name = "test-flaky"
    scores = True
    calls = 0

    def evaluate(self, genome, model, context):
        n, FlakyFidelity.calls = FlakyFidelity.calls, FlakyFidelity.calls + 1
        if n % 2 == 1:
            raise NasError("synthetic build failure")
        return {"score": float("nan") if n == 2 else 1.0}


def config(tmp_path: Path, **kw) -> SearchConfig:
    """A cheap config: flops fidelity, 64 px, no preset reference points, fast heartbeats."""
    values = dict(study="t", space="yolov7-tiny", trials=3, objectives=("gflops", "params"), fidelity="flops",
                  img=64, results_dir=tmp_path / "results", reference_presets=(), latency_runs=2,
                  latency_warmup=1, heartbeat_interval=1, grace_period=2, poll_interval=0.2, threads=1)
    values.update(kw)
    return SearchConfig(**values)


def load(cfg: SearchConfig):
    import optuna

    return optuna.load_study(study_name=cfg.study, storage=cfg.storage_url)


@register_fidelity
class EpochsFidelity(Fidelity):
    """A multi-epoch fidelity without training: after epoch e the score is e/E · 1e4/params
    (smaller models 'learn more'), reported per epoch; stops when ``report`` says so."""

    name = "test-epochs"
    scores = True
    prunable = True

    def evaluate(self, genome, model, context):
        epochs = int(context.options["epochs"])
        base = 1e4 / sum(p.numel() for p in model.parameters())
        score, done = 0.0, 0
        for epoch in range(1, epochs + 1):
            score, done = base * epoch / epochs, epoch
            if context.report(epoch, score):
                break
        return {"score": score, "epochs_trained": done, "train_s": 0.5 * done}


@register_fidelity
class WeightsFidelity(Fidelity):
    """Score = the sum of the initial weights (shows whether a trial's initialisation is seeded)."""

    name = "test-weights"
    scores = True

    def evaluate(self, genome, model, context):
        return {"score": float(sum(p.detach().double().sum() for p in model.parameters()))}
