"""Latency backends: how a deploy-form model is timed, registered by name.

``torch``: eager PyTorch (what the search always used). ``onnxruntime``: the model exported to
ONNX (:mod:`nas.latency._onnx`) and run by ONNX Runtime, the CPU provider with the requested
intra-op threads, or the CUDA provider on a ``cuda`` device (timed with its input and outputs
bound on the device: :func:`time_session`): what most CPU deployments of YOLOv7 run, and up to
3x faster than eager on small models (docs/LATENCY.md).

Every backend answers :meth:`LatencyBackend.measure` with a :class:`nas.profile.LatencyResult`
(median, p90, mean per batch, ms) and names the library versions its numbers depend on, which a
study or a latency table records beside the device and thread count.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from nas.errors import NasError
from nas.profile import (LatencyResult, check_image_size, check_run_options, measure_latency, resolve_device,
                         summarise_times, time_calls)

__all__ = ["LATENCY_BACKENDS", "DEFAULT_BACKEND", "LatencyBackend", "get_backend", "time_calls"]

DEFAULT_BACKEND = "torch"


class LatencyBackend:
    """One way of timing a model. Subclasses set ``name`` and implement :meth:`measure`."""

    name: ClassVar[str]
    description: ClassVar[str]

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__.split("+")[0]}

    def check_available(self, device: str = "cpu") -> None:
        """Raise a one-line NasError when the backend cannot run here on ``device``."""

    def measure(self, model: nn.Module, img: int, batch: int = 1, runs: int = 50, warmup: int = 10,
                threads: int | None = None, device: str = "cpu", form: str = "deploy") -> LatencyResult:
        raise NotImplementedError


class TorchBackend(LatencyBackend):
    name = "torch"
    description = "eager PyTorch, torch CPU threads or CUDA"

    def measure(self, model, img, batch=1, runs=50, warmup=10, threads=None, device="cpu", form="deploy"):
        return measure_latency(model, img, batch, runs, warmup, threads, device, form)


class OnnxRuntimeBackend(LatencyBackend):
    name = "onnxruntime"
    description = "ONNX export run by ONNX Runtime (CPU provider, or CUDA provider on cuda)"

    def versions(self) -> dict[str, str]:
        from nas.latency._onnx import onnx_versions

        return onnx_versions()

    def check_available(self, device: str = "cpu") -> None:
        from nas.latency._onnx import require_provider

        self.versions()
        require_provider(device)

    def measure(self, model, img, batch=1, runs=50, warmup=10, threads=None, device="cpu", form="deploy"):
        from nas.latency._onnx import export_onnx, onnx_session

        dev = resolve_device(device)
        check_run_options(batch, runs, warmup, threads)
        check_image_size(model, img)
        session = onnx_session(export_onnx(model, img, batch), threads=threads or 1, device=str(dev))
        return time_session(session, img, batch, runs, warmup, threads or 1, str(dev), form)


def time_session(session, img: int, batch: int, runs: int, warmup: int, threads: int, device: str,
                 form: str, channels: int = 3) -> LatencyResult:
    """Latency of an ONNX Runtime session on a random ``batch``×channels×img×img input.

    What is timed (:class:`nas.latency._onnx.SessionRunner`): on the CPU the ``run`` call on host
    arrays; on a ``cuda`` device the run with its input and outputs already bound on the device
    (I/O binding: the input is copied there once, before any run), synchronised after each run,
    so no host-device copy is counted."""
    import numpy as np

    from nas.latency._onnx import SessionRunner

    x = np.random.default_rng(0).random((batch, channels, img, img), dtype=np.float32)
    runner = SessionRunner(session, {session.get_inputs()[0].name: x}, device)
    times = time_calls(runner, runs, warmup, runner.sync)
    return summarise_times(times, warmup, batch, img, threads, device, form)


#: Latency backends by name (``--latency-backend``).
LATENCY_BACKENDS: dict[str, type[LatencyBackend]] = {cls.name: cls for cls in (TorchBackend, OnnxRuntimeBackend)}


def get_backend(name: str) -> LatencyBackend:
    """The backend called ``name``; one line naming the valid ones otherwise."""
    if name not in LATENCY_BACKENDS:
        raise NasError(f"unknown latency backend {name!r} (valid: {', '.join(LATENCY_BACKENDS)})")
    return LATENCY_BACKENDS[name]()
