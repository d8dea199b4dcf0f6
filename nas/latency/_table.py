"""Latency tables: per-layer timings measured once on a device, summed to predict a model.

A table is one plain JSON file (:data:`TABLE_FORMAT`, version :data:`TABLE_VERSION`)::

    {"format": "y7nas-latency-table", "version": 1,
     "meta": {"device": "cpu", "device_name": ..., "host": ..., "backend": "onnxruntime",
              "threads": 1, "versions": {...}, "img": 160, "batch": 1, "space": "yolov7-tiny",
              "nc": 80, "head_class_counts": [1, 20, 80], "runs": 20, "warmup": 3, "created": "2025-...Z"},
     "calibration": {"curve": "power", "a": 1.1, "b": 1.2, "call_overhead_ms": 0.004,
                     "points": [...], ...},
     "coverage": {...},
     "layers": {"Conv(3, 16, 3, 2, None, 1, ReLU(inplace=True)) <- 1x3x160x160": 0.0731, ...},
     "hosts": {"3f2a9c1d0b7e": {"host": ..., "device_name": ..., "device": "cpu",
                                "backend": "onnxruntime", "threads": 1, "versions": {...}}},
     "timed_on": {"Conv(3, 16, 3, 2, None, 1, ReLU(inplace=True)) <- 1x3x160x160": "3f2a9c1d0b7e", ...}}

``layers`` maps a layer key (:func:`nas.latency._layers.layer_key`) to its median time alone in
milliseconds. A model's latency is predicted from ``Σ = Σ (layer − o)``: ``o`` is the time of one
call of an empty graph (what timing a layer alone adds to it, ~4 µs for ONNX Runtime), measured
when the table is built; the calibration maps Σ to latency by the curve, ``a·Σ + b`` or
``a·Σ^b``, that predicts a few whole models timed then (the preset, the space's smallest and
largest architectures, 6 random ones) with the lower leave-one-out error. It absorbs what
running the layers in one graph saves or costs (cold caches: larger models lose more).

A table answers for any class count: a detect head depends on it only through its output
channels, so every head is timed at ``meta.head_class_counts`` classes (1, 20, 80) and a head of
another count is interpolated linearly between the two neighbouring counts (beyond 80: the 20–80
segment continued; :func:`nas.latency._layers.head_time`). A head timed at its own class count
(a table written before this record timed heads at its ``meta.nc`` only) uses that time. ``meta.nc``
is the class count of the calibration models.

:func:`build_table` samples architectures of a search space, times every distinct layer once and
calibrates; :func:`load_table` reads and validates a table. A layer missing from a loaded table is
timed and added when the file is writable by this user (the file is rewritten atomically, merging
layers another process added meanwhile), else it is a one-line error naming the layer.

Which machine measured a table is its *fingerprint* (:data:`FINGERPRINT_FIELDS` of its meta: host
name, CPU model or GPU name, device, backend, threads, library versions); ``hosts`` maps a short
hash of each fingerprint that timed layers to the fingerprint, ``timed_on`` each layer to that
hash (layers of tables written before this record have none: unknown). Missing layers are timed
only where they mean what the table's others mean: at the table's image size (else one line naming
both sizes) and on a machine of the table's own fingerprint (else one line naming both machines).
Timing and saving hold an exclusive lock on ``TABLE.lock`` beside the file and re-read the file
inside it, so the processes of ``--workers N`` time missing layers one at a time and keep each
other's additions.
"""
from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import random
import socket
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from torch import nn

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import NasError
from nas.expand import expand
from nas.fuse import fuse
from nas.latency._backends import get_backend
from nas.latency._layers import (HEAD_CLASS_COUNTS, LAYER_TIMERS, LayerUse, head_time, is_deploy_form, layer_module,
                                 layer_uses, time_layer)

__all__ = ["FINGERPRINT_FIELDS", "TABLE_FORMAT", "TABLE_VERSION", "BuildResult", "LatencyTable", "TableError",
           "build_table", "fingerprint_key", "load_table", "machine_fingerprint"]

TABLE_FORMAT = "y7nas-latency-table"
TABLE_VERSION = 1
#: Largest table file read (a table of a whole space holds some 10^4 layers, about 2 MB).
MAX_TABLE_BYTES = 256 * 1024 * 1024
#: meta fields every table has, with their JSON types.
META_FIELDS = {"device": str, "backend": str, "threads": int, "versions": dict, "img": int, "batch": int,
               "space": str, "nc": int, "runs": int, "warmup": int}
#: meta fields naming the machine that measured a table: what a layer's time depends on besides
#: the layer (its fingerprint; see :func:`machine_fingerprint`).
FINGERPRINT_FIELDS = ("host", "device_name", "device", "backend", "threads", "versions")


class TableError(NasError):
    """A latency table is unreadable, malformed, foreign, or lacks a layer it cannot add."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class LatencyTable:
    """A loaded (or freshly built) table; see the module docstring."""

    path: Path | None
    meta: dict
    layers: dict[str, float]
    calibration: dict = field(default_factory=lambda: {"curve": "linear", "a": 1.0, "b": 0.0, "points": []})
    coverage: dict = field(default_factory=dict)
    sha256: str = ""
    #: layers timed and added since the table was loaded (missing from the file when read)
    added: int = 0
    #: fingerprint key (:func:`fingerprint_key`) → fingerprint of every machine that timed layers
    hosts: dict[str, dict] = field(default_factory=dict)
    #: layer key → fingerprint key of the machine that timed it (absent: unknown, an older table)
    timed_on: dict[str, str] = field(default_factory=dict)

    # -- prediction --------------------------------------------------------------------
    def predict(self, model: nn.Module, img: int) -> float:
        """Predicted latency (ms, batch 1) of deploy-form ``model`` at ``img`` px: ``a·Σ + b``."""
        return self.calibrated(self.layer_sum(model, img))

    def calibrated(self, layer_sum: float) -> float:
        """The calibration curve at ``layer_sum`` (ms)."""
        cal = self.calibration
        return float(CURVES[cal.get("curve", "linear")][1](cal["a"], cal["b"], layer_sum))

    def layer_sum(self, model: nn.Module, img: int) -> float:
        """Σ of the table's times of ``model``'s layers, each less the per-call overhead of timing
        a layer alone (missing ones timed and added when the file is writable, else a
        :class:`TableError` naming the first)."""
        if not is_deploy_form(model):
            raise TableError(f"{self.name}: the table predicts deploy-form models; fuse the model first "
                             f"(nas.fuse.fuse)")
        uses = layer_uses(model, img, batch=self.meta["batch"])
        missing = self._lacking(uses)
        if missing:
            self._add_missing(model, missing, img)
        overhead = self.calibration.get("call_overhead_ms", 0.0)
        return sum(max(self.layer_ms(u) - overhead, 0.0) for u in uses)

    def layer_ms(self, use: LayerUse) -> float:
        """The table's time of one layer alone: its own, or for a detect head without one at its
        class count, interpolated from the head's times at :attr:`head_class_counts` (:func:`head_time`)."""
        if use.key in self.layers:
            return self.layers[use.key]
        return head_time(use.classes, {need.classes: self.layers[need.key] for need in self.needs(use)})

    def needs(self, use: LayerUse) -> list[LayerUse]:
        """The timed layers the time of ``use`` reads: ``use`` itself, or for a detect head the table
        has no time for at its own class count, the same head at each of :attr:`head_class_counts`."""
        if use.classes is None or use.key in self.layers:
            return [use]
        return [use.with_classes(nc) for nc in self.head_class_counts]

    @property
    def head_class_counts(self) -> tuple[int, ...]:
        """The class counts detect heads are timed at (meta's; a table older than that record: the
        current :data:`HEAD_CLASS_COUNTS`)."""
        return tuple(self.meta.get("head_class_counts", HEAD_CLASS_COUNTS))

    def missing(self, model: nn.Module, img: int) -> list[LayerUse]:
        """The layers the table lacks to predict ``model`` at ``img`` px, each once (nothing is
        timed): for a detect head, the head at the class counts it is timed at."""
        return self._lacking(layer_uses(model, img, batch=self.meta["batch"]))

    def _lacking(self, uses: list[LayerUse]) -> list[LayerUse]:
        lacking: dict[str, LayerUse] = {}
        for use in uses:
            for need in self.needs(use):
                if need.key not in self.layers:
                    lacking.setdefault(need.key, need)
        return list(lacking.values())

    @property
    def identity(self) -> str:
        """sha256 of what the table's numbers mean (meta and calibration, canonical JSON): unlike
        :attr:`sha256` it stays the same when missing layers are timed and added."""
        text = json.dumps({"meta": self.meta, "calibration": self.calibration}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "latency table"

    @property
    def fingerprint(self) -> dict | None:
        """The machine that measured the table (:data:`FINGERPRINT_FIELDS` of its meta); None when
        its meta does not say (host or device name missing)."""
        return _fingerprint_of(self.meta)

    def layer_host(self, key: str) -> dict | None:
        """The fingerprint of the machine that timed layer ``key``; None when unknown."""
        host = self.timed_on.get(key)
        return self.hosts.get(host) if host is not None else None

    @property
    def writable(self) -> bool:
        """Whether missing layers may be added to the file: this user may write it and its folder,
        and it has a write permission bit (``chmod a-w`` freezes a table, for root too)."""
        if self.path is None:
            return True
        try:
            mode = self.path.stat().st_mode
        except OSError:
            return False
        return (bool(mode & 0o222) and os.access(self.path, os.W_OK)
                and os.access(self.path.parent, os.W_OK | os.X_OK))

    def _add_missing(self, model: nn.Module, missing: list[LayerUse], img: int) -> None:
        """Time ``missing`` and add them, or one :class:`TableError` line saying why not: another
        image size, a file not writable, another machine (in that order)."""
        first = missing[0]
        count = f"{len(missing)} layer{'s' if len(missing) > 1 else ''}"
        if img != self.meta["img"]:
            raise TableError(f"{self.name}: built at {self.meta['img']} px, asked for {img} px: it has no time for "
                             f"{count} at {img} px (first: layer {first.index} {first.key}) and does not time "
                             f"layers at a size it was not built and calibrated at; build a table at --img {img}")
        if not self.writable:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise TableError(f"{self.name} has no time for layer {first.index} {first.key}{more} and the file "
                             f"is not writable, so it cannot be measured and added{self._head_note(model, missing)}: "
                             f"extend the table on its device (y7nas latency-table build ... -o {self.path.name})")
        here = self.check_machine(f"cannot time {count} it lacks (first: layer {first.index}) here")
        with self._locked():
            self._merge_from_disk(self.path)  # what sibling processes added while this one waited
            for use in missing:
                if use.key not in self.layers:
                    self._record(use.key, self.time(layer_module(model, use), use), here)
                    self.added += 1
            if self.path is not None:
                self.save()

    def _head_note(self, model: nn.Module, missing: list[LayerUse]) -> str:
        """Why a head at another class count than ``model``'s is missing ("" when none is)."""
        head = next((u for u in missing if u.classes is not None and u.classes != model.layers[u.index].nc), None)
        if head is None:
            return ""
        counts = ", ".join(map(str, self.head_class_counts))
        older = ("; this table was written by an older y7nas that timed heads at its --nc only: rebuild it"
                 if "head_class_counts" not in self.meta else "")
        return (f" (a detect head is timed at {counts} classes and interpolated to the model's "
                f"{model.layers[head.index].nc}{older})")

    def check_machine(self, doing: str = "cannot time layers into it here") -> dict:
        """This machine's fingerprint for the table's device, backend and threads, when it is the
        table's own; else one :class:`TableError` line naming both machines and what differs."""
        meta = self.meta
        here = machine_fingerprint(meta["device"], meta["backend"], meta["threads"])
        theirs = self.fingerprint
        if theirs is None:
            raise TableError(f"{self.name}: {doing}: the table records no machine it was measured on (no "
                             f"meta.host or meta.device_name: written by an older y7nas), so nothing is timed "
                             f"into it on {_describe(here)}; rebuild it on its device (y7nas latency-table build "
                             f"--space {meta['space']} --img {meta['img']} -o NEW.json)")
        differs = [name for name in FINGERPRINT_FIELDS if theirs.get(name) != here.get(name)]
        if differs:
            raise TableError(f"{self.name}: {doing}: it was measured on {_describe(theirs)}, this machine is "
                             f"{_describe(here)} (differs in {', '.join(differs)}); time missing layers on the "
                             f"table's machine, or build a table here (y7nas latency-table build --space "
                             f"{meta['space']} --img {meta['img']} -o NEW.json)")
        return here

    def _record(self, key: str, ms: float, host: dict) -> None:
        """Add layer ``key`` timed at ``ms`` on the machine ``host``."""
        hkey = fingerprint_key(host)
        self.hosts.setdefault(hkey, host)
        self.layers[key] = ms
        self.timed_on[key] = hkey

    def _locked(self):
        """The exclusive lock on ``TABLE.lock`` (nothing for a table without a file)."""
        return _file_lock(self.path) if self.path is not None else nullcontext()

    def _merge_from_disk(self, path: Path | None) -> None:
        """Add the layers the table file ``path`` has and this table lacks, when it was measured by
        the same machine at the same size (what other processes added since it was read)."""
        if path is None or not path.is_file():
            return
        try:
            on_disk = load_table(path)
        except TableError:
            return
        if _same_measurement(on_disk.meta, self.meta):
            for key, ms in on_disk.layers.items():
                if key not in self.layers:
                    self.layers[key] = ms
                    if key in on_disk.timed_on:
                        self.timed_on[key] = hkey = on_disk.timed_on[key]
                        self.hosts.setdefault(hkey, on_disk.hosts[hkey])

    def time(self, layer: nn.Module, use: LayerUse) -> float:
        """Median ms of one layer timed as this table's backend, device and threads run it."""
        meta = self.meta
        on_cpu = all(p.device.type == "cpu" for p in layer.parameters())
        if meta["backend"] == "onnxruntime" and not on_cpu:
            layer = copy.deepcopy(layer).cpu()  # exported from CPU tensors whatever the model's device
        return round(time_layer(meta["backend"], layer, use.inputs, use.multi_input, meta["runs"],
                                meta["warmup"], meta["threads"], meta["device"]), 5)

    # -- files -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        timed_on = {key: host for key, host in sorted(self.timed_on.items()) if key in self.layers}
        used = set(timed_on.values())
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "meta": self.meta,
                "calibration": self.calibration, "coverage": self.coverage,
                "layers": dict(sorted(self.layers.items())),
                "hosts": {key: fp for key, fp in sorted(self.hosts.items()) if key in used},
                "timed_on": timed_on}

    def save(self, path: str | Path | None = None) -> Path:
        """Write the table atomically to ``path`` (default: where it was loaded from). Layers
        another process added to that file meanwhile are kept."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise TableError("latency table: no file to save to")
        self._merge_from_disk(target)
        data = (json.dumps(self.to_dict(), indent=1) + "\n").encode()
        _write_atomically(target, data)
        self.path, self.sha256 = target, hashlib.sha256(data).hexdigest()
        return target

    def check_matches(self, backend: str | None = None, device: str | None = None,
                      threads: int | None = None) -> None:
        """One-line error when the table was measured with another backend, device or thread count."""
        for name, want in (("backend", backend), ("device", device), ("threads", threads)):
            if want is not None and self.meta[name] != want:
                raise TableError(f"{self.name} was measured with {name} {self.meta[name]!r}, not {want!r} "
                                 f"(build a table with --{name} {want})")


def _fingerprint_of(meta: dict) -> dict | None:
    if not meta.get("host") or not meta.get("device_name"):
        return None
    return {name: meta.get(name) for name in FINGERPRINT_FIELDS}


def _same_measurement(a: dict, b: dict) -> bool:
    """Whether layer times of tables of meta ``a`` and ``b`` mean the same: one known machine
    (fingerprint), one image size and batch."""
    fp = _fingerprint_of(a)
    return fp is not None and fp == _fingerprint_of(b) and a.get("img") == b.get("img") \
        and a.get("batch") == b.get("batch")


def fingerprint_key(fingerprint: dict) -> str:
    """A short stable name of a machine fingerprint: 12 hex digits of its canonical JSON's sha256."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def _machine(device: str, backend: str, threads: int) -> str:
    try:
        name = device_name(device)
    except Exception as exc:  # noqa: BLE001 - e.g. a cuda table on a machine without that GPU
        name = f"no {device} ({type(exc).__name__})"
    fingerprint = {"host": platform.node() or socket.gethostname(), "device_name": name, "device": device,
                   "backend": backend, "threads": threads, "versions": get_backend(backend).versions()}
    return json.dumps(fingerprint)


def machine_fingerprint(device: str, backend: str, threads: int) -> dict:
    """This machine measuring on ``device`` with ``backend`` and ``threads`` threads, as a table's
    meta records it (:data:`FINGERPRINT_FIELDS`): host name, CPU model (``cpu``) or GPU name
    (``cuda``), device, backend, threads and the backend's library versions."""
    return json.loads(_machine(device, backend, threads))


def _describe(fp: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in sorted((fp.get("versions") or {}).items()))
    threads = fp.get("threads")
    return (f"{fp.get('host')!r} ({fp.get('device_name')}, {fp.get('device')}, {fp.get('backend')} {threads} "
            f"thread{'' if threads == 1 else 's'}, {versions})")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``PATH.lock`` (created beside ``path``, left in place: removing it
    would let a waiting process lock a file a newcomer no longer sees)."""
    lock = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise TableError(f"{lock}: cannot create the lock of latency table {path} ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_atomically(path: Path, data: bytes) -> None:
    if path.is_dir():
        raise TableError(f"{path}: is a folder; give a file name for the latency table")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise TableError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise TableError(f"{path}: cannot write ({exc.strerror or exc})") from None


# -- reading ---------------------------------------------------------------------------
def load_table(path: str | Path) -> LatencyTable:
    """Read and validate a latency table; every problem is one :class:`TableError` line naming
    the file and the field."""
    path = Path(path)
    try:
        if path.is_dir():
            raise TableError(f"{path}: is a folder, not a latency table")
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise TableError(f"{path}: larger than {MAX_TABLE_BYTES >> 20} MiB, not a latency table")
        data = path.read_bytes()
    except FileNotFoundError:
        raise TableError(f"{path}: no such latency table (build one with y7nas latency-table build)") from None
    except OSError as exc:
        raise TableError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise TableError(f"{path}: not a latency table (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise TableError(f"{path}: not a latency table (invalid JSON at line {exc.lineno}, column "
                         f"{exc.colno}: {exc.msg})") from None
    table = _from_dict(doc, str(path))
    table.path, table.sha256 = path, hashlib.sha256(data).hexdigest()
    return table


def _from_dict(doc: Any, where: str) -> LatencyTable:
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT:
        raise TableError(f"{where}: not a y7nas latency table (expected \"format\": \"{TABLE_FORMAT}\")")
    if doc.get("version") != TABLE_VERSION:
        raise TableError(f"{where}: latency table version {doc.get('version')!r} is not supported "
                         f"(this y7nas reads version {TABLE_VERSION})")
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise TableError(f"{where}: meta must be an object")
    for name, kind in META_FIELDS.items():
        value = meta.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TableError(f"{where}: meta.{name} must be a {kind.__name__}, got {value!r}")
    if meta["backend"] not in LAYER_TIMERS:
        raise TableError(f"{where}: meta.backend {meta['backend']!r} is not a latency backend "
                         f"(valid: {', '.join(LAYER_TIMERS)})")
    for name in ("threads", "img", "batch", "runs"):
        if meta[name] < 1:
            raise TableError(f"{where}: meta.{name} must be ≥ 1, got {meta[name]}")
    counts = meta.get("head_class_counts", HEAD_CLASS_COUNTS)  # absent in tables that keyed heads by --nc
    if not (isinstance(counts, (list, tuple)) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                                                      for n in counts) and len(set(counts)) >= 2):
        raise TableError(f"{where}: meta.head_class_counts must be a list of two or more distinct class counts "
                         f"≥ 1, got {counts!r}")
    calibration = doc.get("calibration")
    if not isinstance(calibration, dict) or not all(_is_number(calibration.get(k)) for k in ("a", "b")):
        raise TableError(f"{where}: calibration must be an object with numbers a and b")
    overhead = calibration.get("call_overhead_ms", 0.0)
    if not _is_number(overhead) or overhead < 0:
        raise TableError(f"{where}: calibration.call_overhead_ms must be a non-negative number, got {overhead!r}")
    if calibration.get("curve", "linear") not in CURVES:
        raise TableError(f"{where}: calibration.curve must be one of {', '.join(CURVES)}, got "
                         f"{calibration.get('curve')!r}")
    if calibration["a"] <= 0:
        raise TableError(f"{where}: calibration.a must be positive, got {calibration['a']}")
    layers = doc.get("layers")
    if not isinstance(layers, dict):
        raise TableError(f"{where}: layers must be an object mapping layer keys to milliseconds")
    for key, ms in layers.items():
        if not _is_number(ms) or ms < 0:
            raise TableError(f"{where}: layers[{key!r}] must be a non-negative number of ms, got {ms!r}")
    coverage = doc.get("coverage", {})
    if not isinstance(coverage, dict):
        raise TableError(f"{where}: coverage must be an object")
    hosts = doc.get("hosts", {})  # absent in tables written before layers recorded their machine
    if not isinstance(hosts, dict) or not all(isinstance(fp, dict) for fp in hosts.values()):
        raise TableError(f"{where}: hosts must be an object mapping fingerprint keys to machine fingerprints")
    timed_on = doc.get("timed_on", {})
    if not isinstance(timed_on, dict):
        raise TableError(f"{where}: timed_on must be an object mapping layer keys to fingerprint keys")
    for key, host in timed_on.items():
        if key not in layers:
            raise TableError(f"{where}: timed_on[{key!r}] names a layer the table has no time for")
        if not isinstance(host, str) or host not in hosts:
            raise TableError(f"{where}: timed_on[{key!r}] must be a key of hosts, got {host!r}")
    return LatencyTable(None, meta, dict(layers), dict(calibration), coverage, hosts=dict(hosts),
                        timed_on=dict(timed_on))


# -- building --------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildResult:
    table: LatencyTable
    path: Path
    layers: int
    timed: int
    seconds: float
    calibration: dict
    coverage: dict


#: progress(stage, done, total, layers): stage is "sampling", "calibrating" or "coverage".
Progress = Callable[[str, int, int, int], None]


def device_name(device: str) -> str:
    """A human name of the device timed: the CPU model, or the CUDA device's name."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _check_build_options(img, threads, samples, calibration_models, holdout, runs, warmup) -> None:
    for name, value, low in (("img", img, 32), ("threads", threads, 1), ("samples", samples, 1),
                             ("calibration", calibration_models, 2), ("holdout", holdout, 0),
                             ("runs", runs, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise TableError(f"--{name} must be an integer ≥ {low}, got {value!r}")
    if img % 32:
        raise TableError(f"--img must be a multiple of 32, got {img}")


def _genomes(space, count: int, seed: int) -> list:
    rng = random.Random(seed)
    return [space.decode(space.sample_params(rng)) for _ in range(count)]


def _built(genome, source: str):
    """The genome's detector as built (layer keys do not depend on fusion)."""
    return build_model(parse_cfg(expand(genome), source=source)).eval()


def _time_new_layers(table: LatencyTable, model: nn.Module, img: int, here: dict) -> None:
    """Time the layers of ``model`` (as built) the table lacks, each fused alone, on ``here``."""
    for use in table.missing(model, img):
        table._record(use.key, table.time(fuse(layer_module(model, use)), use), here)


def build_table(space, img: int, output: str | Path, backend: str = "onnxruntime", threads: int = 1,
                device: str = "cpu", samples: int = 100, calibration_models: int = 6, holdout: int = 20,
                seed: int = 0, runs: int = 20, warmup: int = 3, calibration_runs: int = 30,
                progress: Progress | None = None) -> BuildResult:
    """Time every distinct layer of ``samples`` random architectures of ``space`` (plus its
    preset) at ``img`` px, calibrate on ``calibration_models`` more plus the preset and the
    space's smallest and largest architectures (:func:`extreme_genomes`), estimate
    coverage on ``holdout`` further architectures (not timed), and write the table to ``output``.
    Detect heads are timed at :data:`HEAD_CLASS_COUNTS` classes whatever ``space.nc`` (the class
    count of the calibration models), so the table predicts models of any class count.

    An existing table at ``output`` measured by this machine (same fingerprint: host, CPU/GPU,
    backend, device, threads, library versions) at the same ``img`` is extended: its layers are
    kept, not re-timed; another is refused in one line.
    """
    from nas.profile import resolve_device

    _check_build_options(img, threads, samples, calibration_models, holdout, runs, warmup)
    timer_backend = get_backend(backend)
    dev = str(resolve_device(device))
    timer_backend.check_available(dev)
    output = Path(output)
    progress = progress or (lambda *a: None)
    here = machine_fingerprint(dev, backend, threads)
    meta = {**here, "img": img, "batch": 1, "space": space.name, "nc": space.nc,
            "head_class_counts": list(HEAD_CLASS_COUNTS), "runs": runs, "warmup": warmup,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    signature = getattr(space, "signature", None)
    if signature is not None:
        meta["space_signature"] = signature()
    table = LatencyTable(None, meta, {})
    if output.exists():
        previous = load_table(output)
        if previous.meta["img"] != img:
            raise TableError(f"{output}: exists and was built at {previous.meta['img']} px, not {img} px; "
                             f"give another -o (one table per image size)")
        theirs = previous.fingerprint
        if theirs != here:
            differs = [n for n in FINGERPRINT_FIELDS if (theirs or {}).get(n) != here.get(n)]
            elsewhere = _describe(theirs) if theirs else "an unrecorded machine (written by an older y7nas)"
            raise TableError(f"{output}: exists and was measured on {elsewhere}, this build runs on "
                             f"{_describe(here)} (differs in {', '.join(differs)}); give another -o")
        table.layers.update(previous.layers)
        table.hosts.update(previous.hosts)
        table.timed_on.update(previous.timed_on)
    start = time.perf_counter()
    known = len(table.layers)
    # what timing one layer alone adds to its own time: a call of a graph that does nothing
    overhead = time_layer(backend, nn.Identity(), [(1, 1, 1, 1)], False, 200, 20, threads, dev)
    table.calibration = {"curve": "linear", "a": 1.0, "b": 0.0, "call_overhead_ms": round(overhead, 5)}

    preset = getattr(space, "base", None)
    presets = [replace(preset, nc=space.nc)] if preset is not None else []
    sampled = presets + _genomes(space, samples, seed)
    for i, genome in enumerate(sampled):
        _time_new_layers(table, _built(genome, f"{space.name} sample {i}"), img, here)
        progress("sampling", i + 1, len(sampled), len(table.layers))

    calibration_set = presets + extreme_genomes(space) + _genomes(space, calibration_models, seed + 1)
    calibration = _calibrate(table, space, calibration_set, img, backend, calibration_runs, progress)
    table.calibration = calibration
    seconds = time.perf_counter() - start
    table.coverage = _coverage(table, space, holdout, seed + 2, img, progress)
    table.coverage.update(architectures=len(sampled), seed=seed, build_seconds=round(seconds, 1))
    with _file_lock(output):
        path = table.save(output)
    return BuildResult(table, path, len(table.layers), len(table.layers) - known, seconds, calibration,
                       table.coverage)


#: calibration curves: name → (fit(x, y) → (a, b) or None when it does not apply, predict(a, b, x)).
#: ``x`` is the Σ of a model's layer times, ``y`` its measured latency (ms).
def _fit_linear(x, y):
    """Least squares on relative errors (weights 1/y); refused when the intercept is negative (a
    small enough model would be predicted to run in negative time)."""
    import numpy as np

    (a, b), *_ = np.linalg.lstsq(np.stack([x / y, 1 / y], axis=1), np.ones_like(y), rcond=None)
    return (float(a), float(b)) if a > 0 and b >= 0 else None


def _fit_power(x, y):
    """``log y = log a + b·log x``, least squares: relative errors by construction."""
    import numpy as np

    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(log_a)), float(b)


CURVES = {
    "linear": (_fit_linear, lambda a, b, x: a * x + b),
    "power": (_fit_power, lambda a, b, x: a * x ** b),
}


def _loo_mape(fit, predict, x, y) -> float | None:
    """Leave-one-out mean absolute percentage error of a curve (None when a fold cannot be fitted)."""
    import numpy as np

    errors = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        params = fit(x[keep], y[keep])
        if params is None:
            return None
        errors.append(abs(predict(*params, x[i]) - y[i]) / y[i])
    return float(np.mean(errors) * 100)


def measure_quietest(backend, model: nn.Module, img: int, runs: int, warmup: int, threads: int, device: str,
                     rounds: int = 2) -> float:
    """The lowest of ``rounds`` medians of ``runs`` timed runs (ms, batch 1): on a machine other jobs
    share, the round that others disturbed least; on a quiet device, the median."""
    return min(backend.measure(model, img, 1, runs, warmup, threads, device, "deploy").median
               for _ in range(rounds))


def measure_round_robin(backend, models: list[nn.Module], img: int, runs: int, warmup: int, threads: int,
                        device: str, rounds: int = 3) -> list[float]:
    """:func:`measure_quietest` of several models, the rounds interleaved (model 1, 2, ..., 1, 2, ...):
    a burst of other work on a shared machine then spoils one round of several models, not every
    round of one."""
    best = [math.inf] * len(models)
    for _ in range(rounds):
        for i, model in enumerate(models):
            best[i] = min(best[i], backend.measure(model, img, 1, runs, warmup, threads, device, "deploy").median)
    return best


def _calibrate(table: LatencyTable, space, genomes: list, img: int, backend: str, runs: int,
               progress: Progress) -> dict:
    """Time whole models and choose the curve (:data:`CURVES`) from Σ layers to measured latency
    with the lower leave-one-out error: ``a·Σ + b`` or ``a·Σ^b``. Timing layers alone keeps their
    weights in cache, so larger models run slower than the sum of their layers: the gap grows
    with size, which a power curve follows where a line would need a negative intercept."""
    import numpy as np

    meta, timer = table.meta, get_backend(backend)
    models, sums = [], []
    for i, genome in enumerate(genomes):
        models.append(fuse(_built(genome, f"{space.name} calibration {i}"), inplace=True))
        sums.append(table.layer_sum(models[-1], img))
        progress("calibrating", i + 1, len(genomes) + 1, len(table.layers))
    measured = measure_round_robin(timer, models, img, runs, max(meta["warmup"], 3), meta["threads"],
                                   meta["device"])
    progress("calibrating", len(genomes) + 1, len(genomes) + 1, len(table.layers))
    points = [{"layer_sum_ms": round(x, 4), "measured_ms": round(y, 4)} for x, y in zip(sums, measured)]
    x = np.array([p["layer_sum_ms"] for p in points])
    y = np.array([p["measured_ms"] for p in points])
    scores = {name: _loo_mape(fit, predict, x, y) for name, (fit, predict) in CURVES.items()}
    usable = {name: score for name, score in scores.items() if score is not None and CURVES[name][0](x, y)}
    curve = min(usable, key=usable.get) if usable else "power"
    a, b = CURVES[curve][0](x, y)
    fitted = CURVES[curve][1](a, b, x)
    return {"curve": curve, "a": round(a, 6), "b": round(b, 6),
            "call_overhead_ms": table.calibration["call_overhead_ms"],
            "fit_mape_percent": round(float(np.mean(np.abs(fitted - y) / y) * 100), 2),
            "loo_mape_percent": {name: None if v is None else round(v, 2) for name, v in scores.items()},
            "points": points}


def extreme_genomes(space) -> list:
    """The space's architecture of every first choice (smallest numeric values) and of every last
    (largest): the ends of the range a calibration line must hold over."""
    genomes = []
    for pick in (0, -1):
        params: dict = {}
        for dim in space.dimensions():
            if dim.name in space.active(params):
                params[dim.name] = dim.values()[pick]
        genomes.append(space.decode(params))
    return genomes


def _coverage(table: LatencyTable, space, count: int, seed: int, img: int, progress: Progress) -> dict:
    """How often later random architectures find their layers in the table (nothing timed)."""
    hits = total = complete = 0
    for i, genome in enumerate(_genomes(space, count, seed)):
        uses = layer_uses(_built(genome, f"{space.name} holdout {i}"), img)
        found = sum(not table._lacking([u]) for u in uses)
        hits, total, complete = hits + found, total + len(uses), complete + (found == len(uses))
        progress("coverage", i + 1, count, len(table.layers))
    return {"holdout_architectures": count,
            "holdout_layer_hit_rate": round(hits / total, 4) if total else None,
            "holdout_complete_rate": round(complete / count, 4) if count else None}
