"""Build an ``nn.Module`` from a validated yolov7-format cfg.

The rules follow YOLOv7's ``parse_model`` (REFERENCE.md) so that parameter counts match the
reference exactly: depth gain ``max(round(n·gd), 1) if n > 1``, widths ``ceil(c2·gw/8)·8`` for
channel-producing blocks unless ``c2`` is the detect output width, ``[c1, c2, *rest]`` arguments,
repeats inserted for DownC/SPPCSPC, and ``nn.Sequential`` for repeated rows. Besides channels, the
builder tracks each layer's stride so that a Concat of mismatched spatial sizes is caught before
any tensor is made.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from nas.cfg import ModelCfg, Row, load_cfg
from nas.errors import ConfigError
from nas.registry import (BATCHNORM, CONCAT, CONV, DETECT, REGISTRY, REORG, SHORTCUT, ArgError,
                          BlockSpec, check_args, known_modules, resolve_symbol)


@dataclass(frozen=True)
class LayerInfo:
    """What the builder decided for one row: final arguments, channels and stride."""

    index: int
    sources: tuple[int, ...]
    number: int
    module: str
    args: tuple
    out_channels: int
    stride: Fraction
    params: int


def scale_depth(n: int, depth_multiple: float) -> int:
    """YOLOv7's depth gain: repeats above one are scaled and rounded (Python round), min 1."""
    return max(round(n * depth_multiple), 1) if n > 1 else n


def scale_width(c2: int, width_multiple: float, divisor: int = 8) -> int:
    """YOLOv7's width gain: ``ceil(c2·gw / 8)·8``."""
    return math.ceil(c2 * width_multiple / divisor) * divisor


class Detector(nn.Module):
    """A YOLOv7-family detector: a list of layers, each reading earlier outputs by index.

    ``layers[i]`` reads ``sources[i]`` (−1 = the network input for layer 0, previous output
    otherwise); outputs needed later are kept. The last layer is the detect head.
    """

    def __init__(self, cfg: ModelCfg, layers: list[nn.Module], info: list[LayerInfo]):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(layers)
        self.info = tuple(info)
        self.sources = [row.sources for row in cfg.rows]
        self.multi_input = [row.multi_input for row in cfg.rows]
        self._kept = {s for srcs in self.sources for s in srcs if s >= 0}
        head = self.layers[-1]
        self.stride = head.stride.clone() if hasattr(head, "stride") else torch.tensor([])

    @property
    def head(self) -> nn.Module:
        return self.layers[-1]

    def forward(self, x: torch.Tensor):
        outputs: list[torch.Tensor | None] = []
        previous = x
        for i, layer in enumerate(self.layers):
            srcs = self.sources[i]
            if self.multi_input[i]:
                inp = [previous if s == i - 1 else outputs[s] for s in srcs]
            else:
                inp = previous if srcs[0] in (-1, i - 1) else outputs[srcs[0]]
            previous = layer(inp)
            outputs.append(previous if i in self._kept else None)
        return previous


def build_model(cfg: ModelCfg | str | Path, in_channels: int = 3) -> Detector:
    """Build a :class:`Detector` from a cfg (or a cfg file path)."""
    if not isinstance(cfg, ModelCfg):
        cfg = load_cfg(cfg)
    channels: list[int] = []
    strides: list[Fraction] = []
    layers, info = [], []
    for row in cfg.rows:
        spec = REGISTRY.get(row.module)
        if spec is None:
            raise ConfigError(f"unknown module {row.module!r} (known: {known_modules()})",
                              source=cfg.source, layer=row.index)
        if spec.rule == DETECT and row.index != len(cfg.rows) - 1:
            raise ConfigError(f"{row.module} must be the last layer", source=cfg.source, layer=row.index)
        try:
            module, c2, stride, args, number = _make_layer(cfg, row, spec, channels, strides, in_channels)
        except ArgError as exc:
            raise ConfigError(str(exc), source=cfg.source, layer=row.index) from None
        except ConfigError as exc:  # raised by a block itself, without a location
            if exc.where:
                raise
            raise ConfigError(str(exc), source=cfg.source, layer=row.index) from None
        except (ValueError, TypeError, RuntimeError) as exc:  # torch refusing a module's arguments
            raise ConfigError(f"{row.module} cannot be built: {exc}", source=cfg.source,
                              layer=row.index) from None
        channels.append(c2)
        strides.append(stride)
        layers.append(module)
        info.append(LayerInfo(row.index, row.sources, number, row.module, args, c2, stride,
                              sum(p.numel() for p in module.parameters())))
    if REGISTRY[cfg.rows[-1].module].rule != DETECT:
        raise ConfigError("the last layer must be a detect head (Detect, IDetect or IAuxDetect)",
                          source=cfg.source, layer=len(cfg.rows) - 1)
    model = Detector(cfg, layers, info)
    _initialise(model, cfg)
    return model


def _make_layer(cfg: ModelCfg, row: Row, spec: BlockSpec, channels: list[int],
                strides: list[Fraction], in_channels: int):
    """Return (module, out_channels, stride, final_args, repeats) for one row."""
    input_channels = [in_channels if s == -1 else channels[s] for s in row.sources]
    input_strides = [Fraction(1) if s == -1 else strides[s] for s in row.sources]
    c1, s1 = input_channels[0], input_strides[0]
    if spec.rule not in (CONCAT, SHORTCUT, DETECT) and len(row.sources) > 1:
        raise ArgError(f"{spec.name} takes one input, 'from' lists {len(row.sources)}")
    args = tuple(resolve_symbol(a, cfg.nc, cfg.anchors) for a in row.args)
    if spec.rule != BATCHNORM:
        args = check_args(spec, args)
    number = scale_depth(row.number, cfg.depth_multiple)
    stride = s1 * spec.stride(args)

    if spec.rule == CONV:
        c2 = args[0]
        if c2 != cfg.outputs_per_level:
            c2 = scale_width(c2, cfg.width_multiple)
        args = (c1, c2, *args[1:])
        if spec.insert_repeats:
            args = (*args[:2], number, *args[2:])
            number = 1
        elif number > 1 and c1 != c2:
            raise ArgError(f"{spec.name} repeated {number}× needs equal input and output channels "
                           f"({c1} → {c2})")
    elif spec.rule == BATCHNORM:
        c2, args = c1, (c1,)
    elif spec.rule == CONCAT:
        _same_strides(input_strides, row, "Concat")
        c2 = sum(input_channels)
    elif spec.rule == SHORTCUT:
        _same_strides(input_strides, row, "Shortcut")
        if len(set(input_channels)) != 1:
            raise ArgError(f"Shortcut adds inputs of unequal channels {input_channels}")
        c2 = c1
    elif spec.rule == REORG:
        c2 = c1 * 4
    elif spec.rule == DETECT:
        nc, anchors = args[0], args[1]
        levels = len(row.sources) // (2 if spec.name == "IAuxDetect" else 1)
        if isinstance(anchors, int):
            anchors = [list(range(anchors * 2))] * levels
        if len(anchors) != levels:
            raise ArgError(f"{spec.name} has {len(row.sources)} inputs but {len(anchors)} anchor levels")
        args = (nc, anchors, input_channels)
        c2 = 0
        stride = s1
    else:
        c2 = c1
    if c2 < 0 or (c2 == 0 and spec.rule != DETECT):
        raise ArgError(f"{spec.name} produces {c2} channels")
    module = spec.factory(*args)
    if number > 1:
        module = nn.Sequential(*(spec.factory(*args) for _ in range(number)))
    if spec.rule == DETECT:
        _set_detect_geometry(module, input_strides[:len(args[1])])
    return module, c2, stride, args, number


def _same_strides(strides: list[Fraction], row: Row, name: str) -> None:
    if len(set(strides)) > 1:
        shown = ", ".join(f"layer {s}: /{float(st):g}" for s, st in zip(row.sources, strides))
        raise ArgError(f"{name} of mismatched spatial sizes ({shown})")


def _set_detect_geometry(head: nn.Module, strides: list[Fraction]) -> None:
    """Give the head its strides and anchors in grid units (what YOLOv7's Model does)."""
    if any(s.denominator != 1 for s in strides):
        raise ArgError(f"detect inputs must have integer strides, got {[float(s) for s in strides]}")
    head.set_stride(torch.tensor([float(s) for s in strides]))


def _initialise(model: Detector, cfg: ModelCfg) -> None:
    """YOLOv7's initial settings: BN eps/momentum, in-place activations, prior-based head biases."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
        elif isinstance(m, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6)):
            m.inplace = True
    head = model.head
    if hasattr(head, "initialize_biases"):
        head.initialize_biases()


def load_model(cfg_path: str | Path) -> Detector:
    return build_model(load_cfg(cfg_path))
