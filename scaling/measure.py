"""Build and measure scaled genomes: what both :mod:`scaling.family` and
:mod:`scaling.grid_search` use.

:func:`build_genome` turns a genome into its (training-form) model; :class:`Measurer` gives
params, GFLOPs and deploy-form latency of (genome, img), each computed once per pair. Nothing here
imports another ``scaling`` module.

GFLOPs = 2 × multiply-adds / 1e9 (fvcore) of the training form, at the member's own input size:
counted once at :data:`PROBE_IMG` and multiplied by ``(img / PROBE_IMG)²``, which is exact for
these fully convolutional detectors at multiples of their largest stride (every feature map side
is ``img/stride``; tests/scaling/test_family.py checks it against a direct count). Latency is the
median wall-clock per image (batch 1) of the **deploy** form (``nas.fuse.fuse``), measured by a
:class:`nas.latency.LatencyMeter` (``--latency-backend torch|onnxruntime``, or predicted by a
``--latency-table``).
"""
from __future__ import annotations

from typing import NamedTuple

from nas.errors import ScalingError
from nas.genome import Genome

__all__ = ["PROBE_IMG", "Measurement", "Measurer", "build_genome"]

#: Input size at which GFLOPs are counted before scaling by (img / PROBE_IMG)².
PROBE_IMG = 64
#: (params, GFLOPs at PROBE_IMG) by canonical genome, shared by every Measurer (deterministic).
_STATIC_CACHE: dict[str, tuple[int, float]] = {}


class Measurement(NamedTuple):
    params: int
    gflops: float
    latency_ms: float | None


def build_genome(genome: Genome, source: str = "scaled genome"):
    """The training-form model of ``genome`` (errors name ``source``)."""
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand

    return build_model(parse_cfg(expand(genome), source=source))


class Measurer:
    """Params, GFLOPs and deploy-form latency of (genome, img), each computed once per pair.

    ``latency_runs = 0`` skips latency. Results are cached by the genome's canonical form, so a
    target search that lands on the same rounded member at many φ measures it once. ``backend``
    and ``table`` choose how latency is measured (:class:`nas.latency.LatencyMeter`, ``threads``
    None: the library's default); :attr:`meter` is that meter (None when latency is off).
    """

    def __init__(self, latency_runs: int = 10, warmup: int = 2, threads: int | None = None,
                 device: str = "cpu", backend: str = "torch", table: str | None = None):
        from nas.latency import LatencyMeter

        if isinstance(latency_runs, bool) or not isinstance(latency_runs, int) or latency_runs < 0:
            raise ScalingError(f"latency runs must be an integer >= 0, got {latency_runs!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ScalingError(f"threads must be a positive integer, got {threads!r}")
        self.latency_runs, self.warmup, self.threads, self.device = \
            latency_runs, warmup, threads, device
        self.meter = LatencyMeter(backend, device, threads, runs=latency_runs, warmup=min(warmup, latency_runs),
                                  table=table) if latency_runs else None
        self._latency: dict[tuple[str, int], float] = {}

    def check(self) -> None:
        """One-line error when latency cannot be measured as asked (before any member)."""
        if self.meter is not None:
            self.meter.check()

    def static(self, genome: Genome, img: int) -> tuple[int, float]:
        """(params, GFLOPs at ``img``) of the training form."""
        from nas.profile import profile_model

        key = genome.canonical()
        if key not in _STATIC_CACHE:
            prof = profile_model(build_genome(genome), PROBE_IMG)
            _STATIC_CACHE[key] = (prof.params, prof.gflops)
        params, probe_gflops = _STATIC_CACHE[key]
        return params, probe_gflops * (img / PROBE_IMG) ** 2

    def latency(self, genome: Genome, img: int) -> float | None:
        """Median deploy-form latency in ms at ``img`` (None when latency is off)."""
        if self.meter is None:
            return None
        key = (genome.canonical(), img)
        if key not in self._latency:
            from nas.fuse import fuse

            fused = fuse(build_genome(genome), inplace=True)
            self._latency[key] = self.meter.measure(fused, img)
        return self._latency[key]

    def __call__(self, genome: Genome, img: int) -> Measurement:
        params, gflops = self.static(genome, img)
        return Measurement(params, gflops, self.latency(genome, img))
