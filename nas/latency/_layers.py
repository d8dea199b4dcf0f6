"""The layers of a detector as a latency table sees them, and how one layer is timed.

A detector's latency is predicted from its layers (nn-Meter's idea): each layer of a
:class:`nas.build.Detector` is named by a *key* that fixes everything its running time depends
on (block, constructor arguments, repeats and the shape of every input) and is timed alone, once,
in the form the backend runs it:

* ``onnxruntime``: the single layer (deploy form) exported to ONNX with as many inputs as it
  reads (a Concat of three feature maps takes three) and run by ONNX Runtime;
* ``torch``: the module called eagerly on tensors of those shapes.

The layer timers are registered by backend name in :data:`LAYER_TIMERS`.

A detect head depends on the class count only through its output channels (``na·(5 + nc)`` per
level: the 1×1 convs and the decode grow with them), so a table times it at the reference class
counts :data:`HEAD_CLASS_COUNTS` (:meth:`LayerUse.with_classes`, :func:`layer_module`) and
:func:`head_time` interpolates any other count from those measurements.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from nas.build import LayerInfo
from nas.errors import NasError
from nas.fuse import fuse
from nas.latency._backends import time_calls
from nas.latency._onnx import DEFAULT_OPSET, PredictionsOnly, SessionRunner, export_module, onnx_session
from nas.registry import DETECT_NAMES, REGISTRY

__all__ = ["HEAD_CLASS_COUNTS", "LAYER_TIMERS", "LayerUse", "export_layer_onnx", "head_time", "is_deploy_form",
           "layer_module", "layer_uses", "time_layer"]

#: class counts a table times every detect head at: one-class detectors, small custom data sets, COCO.
HEAD_CLASS_COUNTS = (1, 20, 80)


@dataclass(frozen=True)
class LayerUse:
    """One layer of a model: its index, table key and the (batch, C, H, W) of each input; ``info``
    is what the builder decided for it (block, arguments, repeats)."""

    index: int
    key: str
    inputs: tuple[tuple[int, int, int, int], ...]
    multi_input: bool
    info: LayerInfo | None = field(default=None, compare=False, repr=False)

    @property
    def classes(self) -> int | None:
        """The class count of a detect head (its first argument); None for any other layer."""
        return self.info.args[0] if self.info is not None and self.info.module in DETECT_NAMES else None

    def with_classes(self, nc: int) -> "LayerUse":
        """This detect head with ``nc`` classes: same anchors, input channels and input shapes."""
        info = replace(self.info, args=(nc, *self.info.args[1:]))
        return replace(self, key=layer_key(info.module, info.args, info.number, self.inputs), info=info)


def head_time(nc: int, times: dict[int, float]) -> float:
    """A detect head's ms at ``nc`` classes from its ms at the class counts of ``times`` (two or
    more): linear in ``nc`` between the two neighbouring counts, the nearest segment continued
    beyond the smallest or largest count (never below zero). More classes never run faster, and
    timing noise only ever adds time, so a count's time above a larger count's is taken as that."""
    counts = sorted(times)
    times = dict(times)
    for smaller, larger in zip(reversed(counts[:-1]), reversed(counts[1:])):
        times[smaller] = min(times[smaller], times[larger])
    upper = next((i for i, count in enumerate(counts) if count >= nc), len(counts) - 1)
    lo, hi = counts[max(upper - 1, 0)], counts[max(upper, 1)]
    slope = (times[hi] - times[lo]) / (hi - lo)
    return max(times[lo] + slope * (nc - lo), 0.0)


def layer_module(model: nn.Module, use: LayerUse) -> nn.Module:
    """The module ``use`` times: ``model``'s layer, or for a detect head at another class count
    than the model's a new head of that count (same block, anchors, channels, strides), fused."""
    layer = model.layers[use.index]
    if use.classes is None or use.classes == layer.nc:
        return layer
    head = REGISTRY[use.info.module].factory(*use.info.args)
    head.set_stride(layer.stride.cpu())
    return fuse(head, inplace=True).to(layer.stride.device)


def _source(i: int, s: int) -> int:
    """Absolute index of source ``s`` of layer ``i`` (−1: the network input for layer 0)."""
    return i - 1 if s == -1 else s


def layer_uses(model: nn.Module, img: int, batch: int = 1, in_channels: int = 3) -> list[LayerUse]:
    """The key and input shapes of every layer of ``model`` (a :class:`nas.build.Detector`) at
    ``img``×``img``. Needs no forward pass: shapes follow from each layer's channels and stride."""
    info = getattr(model, "info", None)
    if info is None:
        raise NasError(f"a latency table predicts y7nas detectors, not {type(model).__name__}")
    uses = []
    for i, layer in enumerate(info):
        shapes = []
        for s in layer.sources:
            src = _source(i, s)
            if src < 0:
                shapes.append((batch, in_channels, img, img))
                continue
            side = img / info[src].stride
            if side.denominator != 1:
                raise NasError(f"layer {i} ({layer.module}) reads a feature map of {float(side):g} px "
                               f"at {img} px: the image size must be a multiple of {model.input_multiple}")
            shapes.append((batch, info[src].out_channels, int(side), int(side)))
        uses.append(LayerUse(i, layer_key(layer.module, layer.args, layer.number, shapes), tuple(shapes),
                             model.multi_input[i], layer))
    return uses


def layer_key(module: str, args: tuple, number: int, shapes: list[tuple[int, ...]]) -> str:
    """``Conv(16, 32, 3, 2, None, 1, ReLU(inplace=True)) <- 1x16x80x80``: block, arguments as the
    builder passes them (activations by their repr), repeats when more than one, input shapes."""
    repeat = f" x{number}" if number != 1 else ""
    inputs = " + ".join("x".join(str(d) for d in shape) for shape in shapes)
    return f"{module}({', '.join(repr(a) for a in args)}){repeat} <- {inputs}"


def is_deploy_form(model: nn.Module) -> bool:
    """Whether every Conv, RepConv and IDetect of ``model`` is fused (what :func:`nas.fuse.fuse`
    returns): a table holds deploy-form timings only."""
    from nas.blocks import Conv, IDetect, RepConv

    for m in model.modules():
        if isinstance(m, Conv) and isinstance(m.bn, nn.BatchNorm2d):
            return False
        if isinstance(m, RepConv) and m.rbr_reparam is None:
            return False
        if isinstance(m, IDetect) and not m.implicit_folded:
            return False
    return True


def _inputs(shapes, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.rand(*shape, generator=generator).to(device) for shape in shapes)


def export_layer_onnx(layer: nn.Module, shapes, multi_input: bool, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized ONNX of one layer on inputs ``x0, x1, ...`` of ``shapes``; output ``y`` (its
    first output tensor: a detect head's decoded predictions, as the whole-model export keeps)."""
    wrapped = PredictionsOnly(layer, multi_input).eval()
    return export_module(wrapped, _inputs(shapes), [f"x{i}" for i in range(len(shapes))], ["y"], opset=opset)


def _time_onnxruntime(layer, shapes, multi_input, runs, warmup, threads, device) -> list[float]:
    session = onnx_session(export_layer_onnx(layer, shapes, multi_input), threads=threads, device=device)
    feed = {f"x{i}": x.numpy() for i, x in enumerate(_inputs(shapes))}
    runner = SessionRunner(session, feed, str(device))   # CUDA: inputs and outputs bound on the device
    return time_calls(runner, runs, warmup, runner.sync)


def _time_torch(layer, shapes, multi_input, runs, warmup, threads, device) -> list[float]:
    dev = torch.device(device)
    wrapped = PredictionsOnly(layer, multi_input).eval().to(dev)
    xs = _inputs(shapes, dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            return time_calls(lambda: wrapped(*xs), runs, warmup, sync)
    finally:
        torch.set_num_threads(previous)


#: backend name → function timing one layer: (layer, shapes, multi_input, runs, warmup, threads,
#: device) → milliseconds of each timed run.
LAYER_TIMERS: dict[str, Callable[..., list[float]]] = {
    "onnxruntime": _time_onnxruntime,
    "torch": _time_torch,
}


def time_layer(backend: str, layer: nn.Module, shapes, multi_input: bool, runs: int, warmup: int,
               threads: int, device: str) -> float:
    """Median milliseconds of one layer (deploy form, in eval mode) on inputs of ``shapes``."""
    import statistics

    if backend not in LAYER_TIMERS:
        raise NasError(f"no layer timer for latency backend {backend!r} (valid: {', '.join(LAYER_TIMERS)})")
    was_training = layer.training
    layer.eval()
    try:
        return statistics.median(LAYER_TIMERS[backend](layer, shapes, multi_input, runs, warmup, threads, device))
    finally:
        layer.train(was_training)
