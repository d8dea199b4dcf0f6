"""The block registry: module name → class, argument schema, channel rule and stride rule.

A cfg row names a module; :data:`REGISTRY` says how to check its arguments, how many channels it
produces (the rules of YOLOv7's ``parse_model``, see REFERENCE.md) and how it changes the
feature-map stride. No name is ever evaluated: anything not in the registry is an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from torch import nn

from nas import blocks
from nas.activations import looks_like_activation, parse_activation
from nas.cfg import brief, check_anchors


# ----------------------------------------------------------------------------- argument kinds
class ArgError(ValueError):
    """An argument does not fit its schema; the builder adds file and layer."""


@dataclass(frozen=True)
class Arg:
    """One positional argument as written in the cfg (before ``c1`` is inserted)."""

    name: str
    check: Callable[[Any], Any]


def _int(value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgError(f"expected an integer, got {brief(value)}")
    if minimum is not None and value < minimum:
        raise ArgError(f"must be ≥ {minimum}, got {value}")
    return value


def positive_int(value: Any) -> int:
    return _int(value, minimum=1)


def non_negative_int(value: Any) -> int:
    return _int(value, minimum=0)


def integer(value: Any) -> int:
    return _int(value)


def optional_int(value: Any) -> int | None:
    return None if value is None else non_negative_int(value)


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArgError(f"expected a number, got {brief(value)}")
    return value


def positive_number(value: Any) -> float:
    if number(value) <= 0:
        raise ArgError(f"must be > 0, got {value}")
    return value


def optional_positive_int(value: Any) -> int | None:
    return None if value is None else positive_int(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgError(f"expected True or False, got {brief(value)}")
    return value


def kernel_sizes(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ArgError("expected one or more kernel sizes")
    return tuple(positive_int(v) for v in values)


def activation(value: Any) -> bool | nn.Module:
    """``True`` (SiLU), ``False`` (none) or a parsed activation module."""
    if isinstance(value, (bool, nn.Module)):
        return value
    raise ArgError(f"expected True/False or an activation like nn.LeakyReLU(0.1), got {brief(value)}")


def choice(*options: Any) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or value not in options:
            raise ArgError(f"expected one of {', '.join(map(str, options))}, got {brief(value)}")
        return value
    return check


def whole_number(value: Any) -> float:
    """A positive whole number, written as an int or a float (``2`` or ``2.0``)."""
    if positive_number(value) != int(value) or value < 1:
        raise ArgError(f"must be a whole number ≥ 1, got {value}")
    return value


def optional_whole_number(value: Any) -> float | None:
    return None if value is None else whole_number(value)


def anchors_arg(value: Any) -> Any:
    try:
        return check_anchors(value)
    except ValueError as exc:
        raise ArgError(f"{exc} (write `anchors` to use the cfg's)") from None


# ----------------------------------------------------------------------------- channel rules
CONV, CONCAT, SHORTCUT, REORG, DETECT, PASS, BATCHNORM = (
    "conv", "concat", "shortcut", "reorg", "detect", "pass", "batchnorm")


# A layer's stride rule reads its checked arguments (as written, before c1 is inserted) and
# returns the factor by which it divides the feature-map side. The builder tracks strides
# symbolically, which is exact only for windows that map a side of n·s pixels to exactly n for
# every n; :func:`_window` refuses the others (e.g. even kernels with 'same' padding), so a
# mismatch can never first show up as a shape error in the forward pass.
def _no_stride(args: tuple) -> Fraction:
    return Fraction(1)


def _arg(args: tuple, position: int, default: Any = None) -> Any:
    value = args[position] if len(args) > position else None
    return default if value is None else value


def _window(k: int, s: int, p: int, dilation: int = 1) -> Fraction:
    """Stride ``s`` of a conv/pool window, when it maps n·s pixels to n; ArgError otherwise."""
    span = dilation * (k - 1) + 1
    lo, hi = -(-(span - s) // 2), (span - 1) // 2   # ceil((span - s)/2) ≤ p ≤ floor((span - 1)/2)
    if not lo <= p <= hi:
        if lo > hi:  # stride 1 with an even span: no padding keeps the size
            need = "an odd kernel"
        else:
            need = f"padding {lo}" if lo == hi else f"padding {max(lo, 0)} to {hi}"
        raise ArgError(f"kernel {k}{f' (dilation {dilation})' if dilation > 1 else ''} with stride {s} and "
                       f"padding {p} does not divide the feature-map size by exactly {s} (needs {need})")
    return Fraction(s)


def _conv_stride(args: tuple) -> Fraction:
    """Conv / RepConv ``(c2, k=1, s=1, p=None → k//2, ...)``."""
    k = _arg(args, 1, 1)
    return _window(k, _arg(args, 2, 1), _arg(args, 3, k // 2))


def _conv2d_stride(args: tuple) -> Fraction:
    """nn.Conv2d ``(c2, k, s=1, p=0, dilation=1, ...)``."""
    return _window(args[1], _arg(args, 2, 1), _arg(args, 3, 0), _arg(args, 4, 1))


def _pool_stride(args: tuple) -> Fraction:
    """nn.MaxPool2d / nn.AvgPool2d ``(k, stride=None → k, padding=0)``."""
    return _window(args[0], _arg(args, 1, args[0]), _arg(args, 2, 0))


def _mp_stride(args: tuple) -> Fraction:
    k = _arg(args, 0, 2)
    return _window(k, k, 0)


def _sp_stride(args: tuple) -> Fraction:
    k = _arg(args, 0, 3)
    return _window(k, _arg(args, 1, 1), k // 2)


def _same_pools(position: int, default: tuple[int, ...]) -> Callable[[tuple], Fraction]:
    """SPP-style blocks: parallel stride-1 max-pools with padding k//2 (odd kernels only)."""
    def stride(args: tuple) -> Fraction:
        kernels = _arg(args, position, default)
        for k in (kernels if isinstance(kernels, tuple) else (kernels,)):
            _window(k, 1, k // 2)
        return Fraction(1)
    return stride


def _downc_stride(args: tuple) -> Fraction:
    return Fraction(_arg(args, 1, 2))  # 3x3 conv stride k padding 1 ∥ max-pool k: always exact


def _upsample_stride(args: tuple) -> Fraction:
    scale = _arg(args, 1)
    if scale is None:
        raise ArgError("nn.Upsample needs a scale_factor (size-based upsampling is not supported)")
    return 1 / Fraction(int(scale))


@dataclass(frozen=True)
class BlockSpec:
    """How a cfg module name becomes a module.

    ``rule`` is the channel rule of YOLOv7's parse_model; ``insert_repeats`` marks blocks that take
    the row's ``number`` as their own third argument (DownC, SPPCSPC) instead of being repeated.
    """

    name: str
    factory: Callable[..., nn.Module]
    args: tuple[Arg, ...] = ()
    required: int = 0
    rule: str = PASS
    stride: Callable[[tuple], Fraction] = _no_stride
    insert_repeats: bool = False


def _conv_args(extra: tuple[Arg, ...] = ()) -> tuple[Arg, ...]:
    return (Arg("c2", positive_int), Arg("k", positive_int), Arg("s", positive_int),
            Arg("p", optional_int), Arg("g", positive_int), Arg("act", activation)) + extra


_POOL_ARGS = (Arg("kernel_size", positive_int), Arg("stride", optional_positive_int),
              Arg("padding", non_negative_int))

_SPECS = [
    BlockSpec("Conv", blocks.Conv, _conv_args(), 1, CONV, _conv_stride),
    BlockSpec("RepConv", blocks.RepConv, _conv_args((Arg("deploy", boolean),)), 1, CONV, _conv_stride),
    BlockSpec("DownC", blocks.DownC, (Arg("c2", positive_int), Arg("k", positive_int)), 1, CONV,
              _downc_stride, insert_repeats=True),
    BlockSpec("SPPCSPC", blocks.SPPCSPC, (Arg("c2", positive_int), Arg("shortcut", boolean),
                                          Arg("g", positive_int), Arg("e", positive_number),
                                          Arg("k", kernel_sizes)), 1, CONV, _same_pools(4, (5, 9, 13)),
              insert_repeats=True),
    BlockSpec("SPP", blocks.SPP, (Arg("c2", positive_int), Arg("k", kernel_sizes)), 1, CONV,
              _same_pools(1, (5, 9, 13))),
    BlockSpec("SPPF", blocks.SPPF, (Arg("c2", positive_int), Arg("k", positive_int)), 1, CONV,
              _same_pools(1, 5)),
    BlockSpec("nn.Conv2d", nn.Conv2d, (Arg("c2", positive_int), Arg("k", positive_int),
                                       Arg("s", positive_int), Arg("p", non_negative_int),
                                       Arg("dilation", positive_int), Arg("groups", positive_int),
                                       Arg("bias", boolean)), 2, CONV, _conv2d_stride),
    # YOLOv7 replaces nn.BatchNorm2d's arguments by the input channels; one may be written.
    BlockSpec("nn.BatchNorm2d", nn.BatchNorm2d, (Arg("num_features", positive_int),), 0, BATCHNORM),
    # Concat's channel rule (sum of the inputs) holds for the channel dimension only.
    BlockSpec("Concat", blocks.Concat, (Arg("dimension", choice(1)),), 0, CONCAT),
    BlockSpec("Shortcut", blocks.Shortcut, (Arg("dimension", integer),), 0, SHORTCUT),
    BlockSpec("ReOrg", blocks.ReOrg, rule=REORG, stride=lambda args: Fraction(2)),
    BlockSpec("MP", blocks.MP, (Arg("k", positive_int),), 0, PASS, _mp_stride),
    BlockSpec("SP", blocks.SP, (Arg("k", positive_int), Arg("s", positive_int)), 0, PASS, _sp_stride),
    BlockSpec("nn.MaxPool2d", nn.MaxPool2d, _POOL_ARGS, 1, PASS, _pool_stride),
    BlockSpec("nn.AvgPool2d", nn.AvgPool2d, _POOL_ARGS, 1, PASS, _pool_stride),
    BlockSpec("nn.Upsample", nn.Upsample, (Arg("size", optional_int),
                                           Arg("scale_factor", optional_whole_number),
                                           Arg("mode", choice("nearest", "bilinear", "bicubic"))),
              0, PASS, _upsample_stride),
    BlockSpec("nn.Identity", nn.Identity),
    BlockSpec("Detect", blocks.Detect, (Arg("nc", positive_int), Arg("anchors", anchors_arg)), 2, DETECT),
    BlockSpec("IDetect", blocks.IDetect, (Arg("nc", positive_int), Arg("anchors", anchors_arg)), 2, DETECT),
    BlockSpec("IAuxDetect", blocks.IAuxDetect, (Arg("nc", positive_int), Arg("anchors", anchors_arg)), 2,
              DETECT),
]

REGISTRY: dict[str, BlockSpec] = {spec.name: spec for spec in _SPECS}
DETECT_NAMES = tuple(s.name for s in _SPECS if s.rule == DETECT)


def known_modules() -> str:
    return ", ".join(REGISTRY)


# ----------------------------------------------------------------------------- string arguments
_SYMBOLS = {"None": None, "True": True, "False": False}


def resolve_symbol(value: Any, nc: int, anchors: Any) -> Any:
    """Turn the few symbolic strings YOLOv7 cfgs use into values, without evaluating anything.

    ``None``/``True``/``False``, ``nc``, ``anchors`` and activation expressions are understood;
    any other string is returned unchanged so that its argument check (e.g. Upsample's mode) can
    accept or reject it.
    """
    if not isinstance(value, str):
        return value
    if value in _SYMBOLS:
        return _SYMBOLS[value]
    if value == "nc":
        return nc
    if value == "anchors":
        return anchors
    if looks_like_activation(value):
        try:
            return parse_activation(value)
        except ValueError as exc:
            raise ArgError(str(exc)) from None
    return value


def check_args(spec: BlockSpec, args: tuple) -> tuple:
    """Validate positional arguments against a block's schema; returns the checked values."""
    if len(args) > len(spec.args):
        names = ", ".join(a.name for a in spec.args) or "none"
        raise ArgError(f"{spec.name} takes at most {len(spec.args)} argument(s) ({names}), got {len(args)}")
    if len(args) < spec.required:
        names = ", ".join(a.name for a in spec.args[:spec.required])
        raise ArgError(f"{spec.name} needs at least {spec.required} argument(s) ({names}), got {len(args)}")
    checked = []
    for schema, value in zip(spec.args, args):
        try:
            checked.append(schema.check(value))
        except ArgError as exc:
            raise ArgError(f"argument '{schema.name}': {exc}") from None
    return tuple(checked)
