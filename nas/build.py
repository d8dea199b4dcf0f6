"""Build an ``nn.Module`` from a validated yolov7-format cfg.

The rules follow YOLOv7's ``parse_model`` (REFERENCE.md) so that parameter counts match the
reference exactly: depth gain ``max(round(n·gd), 1) if n > 1``, widths ``ceil(c2·gw/8)·8`` for
channel-producing blocks unless ``c2`` is the detect output width, ``[c1, c2, *rest]`` arguments,
repeats inserted for DownC/SPPCSPC, and ``nn.Sequential`` for repeated rows. Besides channels, the
builder tracks each layer's stride so that a Concat of mismatched spatial sizes is caught before
any tensor is made, and counts each layer's parameters on the meta device before allocating it
(:data:`MAX_PARAMS`, :data:`MAX_MODULES`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
from torch import nn

from nas.cfg import ModelCfg, Row, brief, load_cfg
from nas.errors import ConfigError
from nas.registry import (BATCHNORM, CONCAT, CONV, DETECT, PASS, REGISTRY, REORG, SHORTCUT,
                          ArgError, BlockSpec, check_args, known_modules, resolve_symbol)


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
        #: Input sides must be multiples of this so that every feature map has an integer size:
        #: the lcm of the numerators of all layer strides (32 for the P5 family).
        self.input_multiple = math.lcm(*(layer.stride.numerator for layer in self.info))

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


#: Largest model built, in parameters (YOLOv7-E6E has 166M). Checked layer by layer *before*
#: each layer's weights are allocated, so an absurd width or class count is one clear error.
MAX_PARAMS = 1_000_000_000
#: Most modules a model may have, row repeats included (see also nas.cfg.MAX_LAYERS).
MAX_MODULES = 4096


def build_model(cfg: ModelCfg | str | Path, in_channels: int = 3) -> Detector:
    """Build a :class:`Detector` from a cfg (or a cfg file path)."""
    if not isinstance(cfg, ModelCfg):
        cfg = load_cfg(cfg)
    channels: list[int] = []
    strides: list[Fraction] = []
    layers, info = [], []
    total_params = total_modules = 0
    for row in cfg.rows:
        spec = REGISTRY.get(row.module)
        if spec is None:
            raise ConfigError(f"unknown module {brief(row.module)} (known: {known_modules()})",
                              source=cfg.source, layer=row.index)
        if spec.rule == DETECT and row.index != len(cfg.rows) - 1:
            raise ConfigError(f"{row.module} must be the last layer", source=cfg.source, layer=row.index)
        try:
            layer = _plan_layer(cfg, row, spec, channels, strides, in_channels)
            total_modules += layer.number
            if total_modules > MAX_MODULES:
                raise ArgError(f"the model would have more than {MAX_MODULES:,} modules "
                               f"(this row repeats {layer.number:,}×)")
            params = _count_on_meta(spec, layer.args) * layer.number
            total_params += params
            if total_params > MAX_PARAMS:
                raise ArgError(f"{spec.name} would have {params:,} parameters, taking the model past "
                               f"the {MAX_PARAMS:,} supported")
            module = _make_module(spec, layer)
        except ArgError as exc:
            raise ConfigError(str(exc), source=cfg.source, layer=row.index) from None
        except ConfigError as exc:  # raised by a block itself, without a location
            if exc.where:
                raise
            raise ConfigError(str(exc), source=cfg.source, layer=row.index) from None
        except (ValueError, TypeError, RuntimeError) as exc:  # torch refusing a module's arguments
            raise ConfigError(f"{row.module} cannot be built: {str(exc).strip()}", source=cfg.source,
                              layer=row.index) from None
        channels.append(layer.out_channels)
        strides.append(layer.stride)
        layers.append(module)
        info.append(LayerInfo(row.index, row.sources, layer.number, row.module, layer.args,
                              layer.out_channels, layer.stride, params))
    if REGISTRY[cfg.rows[-1].module].rule != DETECT:
        raise ConfigError("the last layer must be a detect head (Detect, IDetect or IAuxDetect)",
                          source=cfg.source, layer=len(cfg.rows) - 1)
    model = Detector(cfg, layers, info)
    _initialise(model, cfg)
    return model


@dataclass(frozen=True)
class _Plan:
    """What one row becomes: constructor arguments, repeats, output channels and stride."""

    args: tuple
    number: int
    out_channels: int
    stride: Fraction
    input_strides: tuple[Fraction, ...]


def _plan_layer(cfg: ModelCfg, row: Row, spec: BlockSpec, channels: list[int],
                strides: list[Fraction], in_channels: int) -> _Plan:
    """Check one row against its block's schema and channel rule; nothing is allocated yet."""
    input_channels = [in_channels if s == -1 else channels[s] for s in row.sources]
    input_strides = [Fraction(1) if s == -1 else strides[s] for s in row.sources]
    if spec.rule in MULTI_INPUT_RULES:
        if not row.multi_input:
            raise ArgError(f"{spec.name} takes a list of inputs; write 'from' as a list, e.g. [-1, -2]")
    elif row.multi_input:
        raise ArgError(f"{spec.name} takes one input; write 'from' as an integer, not "
                       f"{brief(row.written_from)}")
    args = check_args(spec, tuple(resolve_symbol(a, cfg.nc, cfg.anchors) for a in row.args))
    number = scale_depth(row.number, cfg.depth_multiple)
    if number > 1 and spec.rule in MULTI_INPUT_RULES:
        raise ArgError(f"{spec.name} reads several layers and cannot be repeated (number {row.number})")
    layer_stride = spec.stride(args)
    args, c2, number = _CHANNEL_RULES[spec.rule](cfg, row, spec, args, input_channels,
                                                 input_strides, number)
    if c2 < 0 or (c2 == 0 and spec.rule != DETECT):
        raise ArgError(f"{spec.name} produces {c2} channels")
    # a repeated row applies its module `number` times in sequence, stride included
    stride = input_strides[0] if spec.rule == DETECT else input_strides[0] * layer_stride ** number
    return _Plan(args, number, c2, stride, tuple(input_strides))


# Channel rules of YOLOv7's parse_model, one function per rule (REFERENCE.md). Each takes the
# checked arguments as written and returns (constructor arguments, output channels, repeats).
def _conv_rule(cfg, row, spec, args, channels, strides, number):
    c1, c2 = channels[0], args[0]
    if c2 != cfg.outputs_per_level:
        c2 = scale_width(c2, cfg.width_multiple)
    args = (c1, c2, *args[1:])
    if spec.insert_repeats:
        return (*args[:2], number, *args[2:]), c2, 1
    if number > 1 and c1 != c2:
        raise ArgError(f"{spec.name} repeated {number}× needs equal input and output channels "
                       f"({c1} → {c2})")
    return args, c2, number


def _batchnorm_rule(cfg, row, spec, args, channels, strides, number):
    return (channels[0],), channels[0], number


def _concat_rule(cfg, row, spec, args, channels, strides, number):
    _same_strides(strides, row, "Concat")
    return args, sum(channels), number


def _shortcut_rule(cfg, row, spec, args, channels, strides, number):
    if len(channels) != 2:
        raise ArgError(f"Shortcut adds exactly two inputs, 'from' lists {len(channels)}")
    _same_strides(strides, row, "Shortcut")
    if len(set(channels)) != 1:
        raise ArgError(f"Shortcut adds inputs of unequal channels {channels}")
    return args, channels[0], number


def _reorg_rule(cfg, row, spec, args, channels, strides, number):
    return args, channels[0] * 4 ** number, number


def _pass_rule(cfg, row, spec, args, channels, strides, number):
    return args, channels[0], number


def _detect_rule(cfg, row, spec, args, channels, strides, number):
    nc, anchors = args[0], args[1]
    if nc != cfg.nc:
        raise ArgError(f"{spec.name} has nc {nc} but the cfg's nc is {cfg.nc} (write `nc`)")
    levels = len(row.sources) // (2 if spec.name == "IAuxDetect" else 1)
    if isinstance(anchors, int):
        anchors = [list(range(anchors * 2))] * levels
    if len(anchors) != levels:
        raise ArgError(f"{spec.name} has {len(row.sources)} inputs but {len(anchors)} anchor levels")
    return (nc, anchors, channels), 0, number


_CHANNEL_RULES = {CONV: _conv_rule, BATCHNORM: _batchnorm_rule, CONCAT: _concat_rule,
                  SHORTCUT: _shortcut_rule, REORG: _reorg_rule, PASS: _pass_rule, DETECT: _detect_rule}
MULTI_INPUT_RULES = (CONCAT, SHORTCUT, DETECT)


_META_COUNTS: dict[tuple[str, str], int] = {}


def _count_on_meta(spec: BlockSpec, args: tuple) -> int:
    """Parameters of one ``spec.factory(*args)``, counted without allocating any memory
    (remembered by block and arguments: a detector repeats the same few layers)."""
    key = (spec.name, repr(args))
    if key not in _META_COUNTS:
        with torch.device("meta"):
            count = sum(p.numel() for p in spec.factory(*args).parameters())
        if len(_META_COUNTS) > 10_000:
            _META_COUNTS.clear()
        _META_COUNTS[key] = count
    return _META_COUNTS[key]


def _make_module(spec: BlockSpec, plan: _Plan) -> nn.Module:
    module = spec.factory(*plan.args)
    if plan.number > 1:
        module = nn.Sequential(*(spec.factory(*plan.args) for _ in range(plan.number)))
    if spec.rule == DETECT:
        _set_detect_geometry(module, list(plan.input_strides[:len(plan.args[1])]))
    return module


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


#: What a trainable tensor is, for the optimizer: ``decay`` (conv/linear weights), ``bias`` (any
#: bias) or ``other`` (BatchNorm scales, YOLOR implicit vectors, anything else; no decay).
PARAMETER_ROLES = ("other", "decay", "bias")


def parameter_role(module: nn.Module, leaf: str) -> str:
    """The role of ``module``'s own parameter called ``leaf`` (YOLOv7's train.py split: biases;
    weights of every module but BatchNorm decay; BatchNorm weights and other tensors do not)."""
    if leaf == "bias":
        return "bias"
    if leaf == "weight" and not isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "decay"
    return "other"


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """``{parameter name: role}`` of every trainable tensor of ``model``, by the module that owns
    it (not by the name's spelling). A model that shares its tensors differently (the supernet)
    answers with its own ``parameter_roles()``."""
    own = getattr(model, "parameter_roles", None)
    if callable(own):
        return own()
    roles = {}
    for prefix, module in model.named_modules():
        for leaf, _p in module.named_parameters(recurse=False):
            roles[f"{prefix}.{leaf}" if prefix else leaf] = parameter_role(module, leaf)
    return roles


def module_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s tensors (CPU for a model without any): what code that feeds it
    moves its inputs to, so a model and its data cannot sit on two devices."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")
