"""Profiling: parameters, multiply-adds (fvcore), per-layer table and latency.

Conventions, said once here and in every report: ``macs`` are multiply-adds as counted by fvcore
(convolutions, batch-norm, upsampling); ``gflops = 2·macs/1e9`` (the YOLO convention; EfficientNet
reports multiply-adds as "FLOPS"). Latency is wall-clock per batch in inference mode, after
warm-up, with CUDA synchronisation when timing on a GPU.

Which network is counted: a model as built (training form) is counted with its auxiliary heads
(IAuxDetect's ``m2`` convs and the layers feeding only them), exactly as YOLOv7's ``Model()``
summary counts it, so ``params`` and ``gflops`` describe the same network. A fused model
(:func:`nas.fuse.fuse`, deploy form) is counted as inference runs it, without the auxiliary heads;
so is any model with ``aux=False``. Models without an auxiliary head count the same either way.
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from nas.blocks import IAuxDetect
from nas.errors import NasError

# Ops our blocks emit that cost no multiply-adds worth counting (element-wise, pooling, shape).
# Registering them explicitly keeps fvcore silent instead of warning "unsupported operator".
_FREE_OPS = (
    "aten::silu", "aten::silu_", "aten::leaky_relu", "aten::leaky_relu_", "aten::relu", "aten::relu_",
    "aten::hardtanh", "aten::hardtanh_", "aten::hardswish", "aten::hardswish_", "aten::mish",
    "aten::sigmoid", "aten::sigmoid_", "aten::max_pool2d", "aten::avg_pool2d", "aten::add",
    "aten::add_", "aten::mul", "aten::mul_", "aten::sub", "aten::pow", "aten::cat", "aten::expand_as",
    "aten::view", "aten::reshape", "aten::permute", "aten::contiguous", "aten::clone", "aten::copy_",
    "aten::meshgrid", "aten::arange", "aten::stack", "aten::expand", "aten::to", "aten::zeros",
    "aten::ones", "aten::repeat", "aten::div", "aten::floor_divide", "aten::slice", "aten::select",
    "aten::index", "aten::unsqueeze", "aten::squeeze", "aten::pixel_unshuffle", "aten::flatten",
    "aten::lift_fresh", "aten::detach", "aten::rsub", "aten::empty_like", "aten::fill_",
)


@dataclass(frozen=True)
class LayerCost:
    index: int
    module: str
    params: int
    macs: int


@dataclass(frozen=True)
class LatencyResult:
    """Per-batch latency in milliseconds."""

    median: float
    p90: float
    mean: float
    runs: int
    warmup: int
    batch: int
    img: int
    threads: int
    device: str
    form: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Profile:
    params: int
    macs: int
    img: int
    layers: tuple[LayerCost, ...] = field(default=(), compare=False)

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def aux_heads(model: nn.Module) -> list[IAuxDetect]:
    """The detect heads of ``model`` that have auxiliary outputs (IAuxDetect)."""
    return [m for m in model.modules() if isinstance(m, IAuxDetect)]


def counts_aux(model: nn.Module, aux: bool | None = None) -> bool:
    """Whether a count of ``model`` includes auxiliary heads: ``aux`` when given, else the
    model's own form (yes as built, no once fused; see the module docstring)."""
    heads = aux_heads(model)
    if not heads:
        return False
    return aux if aux is not None else not any(h.implicit_folded for h in heads)


def inference_params(model: nn.Module) -> int:
    """Parameters of what an inference forward runs: without IAuxDetect's ``m2`` convs and the
    layers whose outputs reach only the auxiliary inputs (``count_params`` for other models)."""
    heads = aux_heads(model)
    sources = getattr(model, "sources", None)
    if not heads or sources is None or getattr(model, "head", None) is not heads[0]:
        return count_params(model)
    head, last = heads[0], len(model.layers) - 1
    needed, todo = {last}, [s if s >= 0 else last - 1 for s in sources[last][:head.nl]]
    while todo:
        i = todo.pop()
        if i in needed or i < 0:
            continue
        needed.add(i)
        todo += [s if s >= 0 else i - 1 for s in sources[i] if not (s == -1 and i == 0)]
    return sum(count_params(model.layers[i]) for i in needed) - count_params(head.m2)


def count_macs(model: nn.Module, img: int, batch: int = 1, in_channels: int = 3,
               aux: bool | None = None) -> tuple[int, dict]:
    """Multiply-adds of one forward pass at ``img``×``img`` (total, by-module-name dict).

    BN layers count in eval mode. With auxiliary heads counted (:func:`counts_aux`) those heads
    run their training forward, which computes the auxiliary branch; else the eval forward,
    whose trace leaves the auxiliary-only layers out.
    """
    device = next(model.parameters()).device
    was_training = model.training
    with_aux = counts_aux(model, aux)
    model.eval()
    if with_aux:
        for head in aux_heads(model):
            head.train()
    try:
        x = torch.zeros(batch, in_channels, img, img, device=device)
        with _quiet_fvcore():
            from fvcore.nn import FlopCountAnalysis  # its import warns about torch.jit.script

            analysis = FlopCountAnalysis(model, x)
            analysis.set_op_handle(**{op: None for op in _FREE_OPS})
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            total = int(analysis.total())
            by_module = {k: int(v) for k, v in analysis.by_module().items()}
    finally:
        model.train(was_training)
    return total, by_module


@contextlib.contextmanager
def _quiet_fvcore():
    """Silence fvcore's logger and the tracer's deprecation/trace warnings for our own ops."""
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def profile_model(model: nn.Module, img: int = 640, layers: bool = False, aux: bool | None = None) -> Profile:
    """Params and multiply-adds; with ``layers`` a per-layer breakdown (Detector models).

    ``aux``: count auxiliary heads or not (default: the model's own form, :func:`counts_aux`).
    ``params`` always counts every parameter the model holds (YOLOv7's convention, also after
    fuse(), which keeps the auxiliary convs); see :func:`inference_params` for the other count.
    """
    check_image_size(model, img)
    with _out_of_memory_as_error(model, img):
        macs, by_module = count_macs(model, img, aux=aux)
    costs: tuple[LayerCost, ...] = ()
    if layers and hasattr(model, "layers"):
        rows = []
        for i, layer in enumerate(model.layers):
            name = model.info[i].module if hasattr(model, "info") else type(layer).__name__
            rows.append(LayerCost(i, name, count_params(layer), by_module.get(f"layers.{i}", 0)))
        costs = tuple(rows)
    return Profile(count_params(model), macs, img, costs)


#: Largest input side profiled or timed (3.2× YOLOv7-E6E's 1280; fvcore keeps every activation).
MAX_IMG = 4096


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "cfg", None)
    return f"{cfg.source}: " if cfg is not None else ""


def check_image_size(model: nn.Module, img: int) -> None:
    """Refuse image sizes that are not a positive multiple of the model's largest stride
    (``Detector.input_multiple``: every feature map must have an integer size), or above
    :data:`MAX_IMG`."""
    multiple = getattr(model, "input_multiple", None)
    if multiple is None:
        multiple = int(max(getattr(model, "stride", torch.tensor([32.0])).tolist() or [32]))
    if isinstance(img, bool) or not isinstance(img, int) or img <= 0 or img % multiple:
        raise NasError(f"{_model_name(model)}image size {img} must be a positive multiple of the model's "
                       f"largest stride {multiple}")
    if img > MAX_IMG:
        raise NasError(f"image size {img} is above the {MAX_IMG} px supported")


@contextlib.contextmanager
def _out_of_memory_as_error(model: nn.Module, img: int, batch: int = 1):
    """A forward pass that does not fit in memory is a user-sized request, not a crash."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise NasError(f"{_model_name(model)}out of memory running batch {batch} at {img} px") from None
    except RuntimeError as exc:
        if "can't allocate memory" not in str(exc) and "out of memory" not in str(exc):
            raise
        raise NasError(f"{_model_name(model)}out of memory running batch {batch} at {img} px") from None


def check_run_options(batch: int = 1, runs: int = 1, warmup: int = 0, threads: int | None = None) -> None:
    """Refuse latency options that cannot be meant: batch/runs ≥ 1, warmup ≥ 0, threads ≥ 1."""
    for name, value, minimum in (("batch", batch, 1), ("runs", runs, 1), ("warmup", warmup, 0),
                                 ("threads", 1 if threads is None else threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise NasError(f"--{name} must be an integer ≥ {minimum}, got {value!r}")


def measure_latency(model: nn.Module, img: int = 640, batch: int = 1, runs: int = 50, warmup: int = 10,
                    threads: int | None = None, device: str = "cpu", form: str = "train") -> LatencyResult:
    """Median/p90 wall-clock latency per batch, in inference mode."""
    dev = resolve_device(device)
    check_run_options(batch, runs, warmup, threads)
    check_image_size(model, img)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    was_training = model.training
    model.eval().to(dev)
    x = torch.rand(batch, 3, img, img, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    try:
        with torch.inference_mode(), _out_of_memory_as_error(model, img, batch):
            times = time_calls(lambda: model(x), runs, warmup, sync)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return summarise_times(times, warmup, batch, img, threads or previous_threads, str(dev), form)


def time_calls(call: Callable[[], object], runs: int, warmup: int,
               sync: Callable[[], None] = lambda: None) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``call`` after ``warmup`` untimed ones
    (``sync`` after each, e.g. CUDA synchronisation)."""
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return times


def summarise_times(times: list[float], warmup: int, batch: int, img: int, threads: int, device: str,
                    form: str) -> LatencyResult:
    """Median, p90 and mean of per-batch ``times`` (ms) with how they were taken."""
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return LatencyResult(statistics.median(times), p90, statistics.fmean(times), len(times), warmup, batch, img,
                         threads, device, form)


def resolve_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise NasError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NasError(f"device {device!r} requested but CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise NasError(f"unsupported device {device!r} (use cpu, cuda or cuda:N)")
    return dev


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory failure (host or device)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_device_memory() -> None:
    """Hand cached CUDA blocks back after a failed model, so the next one starts clean."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def max_abs_difference(reference: nn.Module, other: nn.Module, img: int, seed: int = 0) -> float:
    """Largest absolute difference of the eval-mode (decoded) outputs on one random image."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, img, img, generator=generator)
    reference.eval()
    other.eval()
    with torch.inference_mode():
        a, b = _first_tensor(reference(x)), _first_tensor(other(x))
    return float((a - b).abs().max())


def _first_tensor(output) -> torch.Tensor:
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def profile_report(model: nn.Module, img: int = 640, batch: int = 1, deploy: bool = False,
                   latency: bool = False, runs: int = 50, warmup: int = 10, threads: int | None = None,
                   device: str = "cpu", layers: bool = False, meter=None) -> dict:
    """Everything ``y7nas profile`` prints, as one JSON-ready dict.

    Keys: ``params``, ``macs``, ``gflops``, ``img``, ``aux_heads`` (and ``layers`` when asked);
    ``params``/``gflops`` describe the model as built, auxiliary heads included (YOLOv7's
    ``Model()`` summary). With auxiliary heads (IAuxDetect) also ``params_inference``,
    ``macs_inference``, ``gflops_inference``: what an inference forward runs (main branch only,
    unfused). With ``deploy`` also ``params_deploy`` (everything fuse() keeps, auxiliary convs
    included, as YOLOv7's fuse()), ``macs_deploy``, ``gflops_deploy`` (inference cost of the fused
    model: no auxiliary heads) and ``max_abs_diff`` (fused vs eval-mode original on a random image);
    with ``latency`` a ``latency_ms`` object measured on the deploy form when ``deploy`` is set,
    else on the train form. ``meter`` (a :class:`nas.latency.LatencyMeter`, handed in by the caller:
    ``nas.latency`` imports this module) measures it with its backend or table and adds
    ``backend``; None times eager torch with ``runs``/``warmup``/``threads``/``device``.
    """
    from nas.fuse import fuse

    resolve_device(device)
    check_run_options(batch, runs, warmup, threads)
    check_image_size(model, img)
    base = profile_model(model, img, layers=layers, aux=True)
    has_aux = bool(aux_heads(model))
    report: dict = {"params": base.params, "macs": base.macs, "gflops": round(base.gflops, 4), "img": img,
                    "flops_convention": "gflops = 2 * multiply-adds / 1e9 (fvcore count)",
                    "aux_heads": has_aux}
    if has_aux:
        inference = profile_model(model, img, aux=False)
        report.update(params_inference=inference_params(model), macs_inference=inference.macs,
                      gflops_inference=round(inference.gflops, 4))
    if layers:
        report["layers"] = [asdict(layer) for layer in base.layers]
    timed, form = model, "train"
    if deploy:
        fused = fuse(model)
        fused_profile = profile_model(fused, img, aux=False)
        report.update(params_deploy=fused_profile.params, macs_deploy=fused_profile.macs,
                      gflops_deploy=round(fused_profile.gflops, 4),
                      max_abs_diff=max_abs_difference(model, fused, img))
        timed, form = fused, "deploy"
    if latency:
        if meter is not None:
            report["latency_ms"] = meter.report(timed, img, batch, form)
        else:
            report["latency_ms"] = measure_latency(timed, img, batch, runs, warmup, threads, device, form).to_dict()
    return report
