""":class:`LatencyMeter`: how latency is measured, as one value that search, scaling and profile
share and that a study records.

A meter is either a backend (``torch`` or ``onnxruntime``, :mod:`nas.latency._backends`) timing
the deploy form on a device with a fixed number of threads, or a latency table
(``table=FILE``, :mod:`nas.latency._table`) that predicts the latency from per-layer timings
made once on the target device (layers it lacks are timed only on the machine and at the image
size it was built on, one at a time across processes; else one line says why, see
:mod:`nas.latency._table`). :meth:`LatencyMeter.record` is what a study stores so that a
resumed run or a joining worker measuring another way is refused (see
``nas.search.SearchConfig.check_against``).

Threads are part of the measurement, not of the machine: a search times every candidate with
``threads`` (``--latency-threads``, default 1) whatever ``--threads`` its workers train or score
with, so that latencies of one study stay comparable across workers and machines.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from nas.errors import NasError
from nas.latency._backends import get_backend
from nas.profile import LatencyResult, check_run_options, resolve_device

__all__ = ["LatencyMeter"]


@dataclass(frozen=True)
class LatencyMeter:
    """Measures the median latency (ms, batch 1) of a deploy-form model.

    ``backend``: a name of :data:`nas.latency.LATENCY_BACKENDS`. ``device``: ``cpu``, ``cuda`` or
    ``cuda:N``. ``threads``: intra-op CPU threads (None: the library's default). ``runs`` timed
    calls after ``warmup`` untimed ones. ``table``: a latency table file; when set, latencies are
    predicted by the table and backend/device/threads are the table's own (its ``meta``).
    """

    backend: str = "torch"
    device: str = "cpu"
    threads: int | None = 1
    runs: int = 10
    warmup: int = 3
    table: str | None = None

    def check(self) -> None:
        """One-line NasError for anything that cannot be measured, before any model is built."""
        if self.table is not None:
            _load_table(self.table)
            return
        backend = get_backend(self.backend)
        resolve_device(self.device)
        check_run_options(1, self.runs, self.warmup, self.threads)
        backend.check_available(self.device)     # e.g. ONNX Runtime's CUDA provider, before any trial

    def result(self, deploy_model: nn.Module, img: int, batch: int = 1, form: str = "deploy") -> LatencyResult:
        """The full timing (median, p90, mean, ...) of the backend; not available with a table."""
        if self.table is not None:
            raise NasError(f"latency table {self.table} predicts a median only, it does not time")
        return get_backend(self.backend).measure(deploy_model, img, batch, self.runs, self.warmup,
                                                 self.threads, self.device, form)

    def measure(self, deploy_model: nn.Module, img: int) -> float:
        """Median latency in ms of ``deploy_model`` at ``img``×``img``, batch 1."""
        if self.table is not None:
            return float(_load_table(self.table).predict(deploy_model, img))
        return self.result(deploy_model, img).median

    def report(self, model: nn.Module, img: int, batch: int = 1, form: str = "deploy") -> dict:
        """JSON-ready latency of ``model`` as ``y7nas profile`` prints it (``latency_ms``)."""
        if self.table is None:
            return {**self.result(model, img, batch, form).to_dict(), "backend": self.backend}
        if batch != 1:
            raise NasError(f"latency table {self.table} predicts batch 1; drop --batch {batch}")
        meta = self.record(img)
        return {"median": self.measure(model, img), "batch": 1, "img": img, "form": form,
                "backend": meta["backend"], "device": meta["device"], "threads": meta["threads"],
                "table": str(self.table), "table_sha": _load_table(self.table).sha256}

    def versions(self) -> dict[str, str]:
        """Library versions the measured numbers depend on."""
        return get_backend(self.backend).versions()

    def record(self, img: int) -> dict[str, Any]:
        """The settings a study stores: backend, device, threads, image size, library versions;
        with a table its identity (sha256 of its meta and calibration: it stays when missing
        layers are timed and added, so a search that grew a writable table still resumes) and the
        table's own backend/device/threads/versions."""
        if self.table is None:
            return {"backend": self.backend, "device": self.device, "threads": self.threads, "img": img,
                    "versions": self.versions()}
        table = _load_table(self.table)
        meta = table.meta
        return {"backend": meta.get("backend"), "device": meta.get("device"),
                "threads": meta.get("threads"), "img": img, "versions": meta.get("versions"),
                "table_id": table.identity}


_TABLES: dict[tuple[str, int, int], Any] = {}


def _load_table(path: str):
    """:func:`nas.latency._table.load_table`, loaded once per (file, size, mtime) per process."""
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise NasError(f"latency table {path}: cannot read ({exc.strerror or exc})") from None
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _TABLES:
        from nas.latency._table import load_table

        _TABLES[key] = load_table(path)
    return _TABLES[key]
