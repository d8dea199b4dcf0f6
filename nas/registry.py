"""The block registry: module name → class, argument schema, channel rule and stride rule.

A cfg row names a module; :data:`REGISTRY` says how to check its arguments, how many channels it
produces (the rules of YOLOv7's ``parse_model``, see REFERENCE.md) and how it changes the
feature-map stride. No name is ever evaluated: anything not in the registry is an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from torch import nn

from nas import blocks
from nas.activations import looks_like_activation, parse_activation


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
        raise ArgError(f"expected an integer, got {value!r}")
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
        raise ArgError(f"expected a number, got {value!r}")
    return value


def positive_number(value: Any) -> float:
    if number(value) <= 0:
        raise ArgError(f"must be > 0, got {value}")
    return value


def optional_positive_number(value: Any) -> float | None:
    return None if value is None else positive_number(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgError(f"expected True or False, got {value!r}")
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
    raise ArgError(f"expected True/False or an activation like nn.LeakyReLU(0.1), got {value!r}")


def choice(*options: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ArgError(f"expected one of {', '.join(options)}, got {value!r}")
        return value
    return check


def anchors_arg(value: Any) -> Any:
    ok = (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
        isinstance(value, list) and value and all(isinstance(v, list) for v in value))
    if not ok:
        raise ArgError(f"expected the anchors (write `anchors`), got {value!r}")
    return value


# ----------------------------------------------------------------------------- channel rules
CONV, CONCAT, SHORTCUT, REORG, DETECT, PASS, BATCHNORM = (
    "conv", "concat", "shortcut", "reorg", "detect", "pass", "batchnorm")


def _no_stride(args: tuple) -> Fraction:
    return Fraction(1)


def _arg_stride(position: int, default: int, fallback: int | None = None) -> Callable[[tuple], Fraction]:
    """Stride read from a user argument; when it is absent or None, the argument at ``fallback``
    (pooling layers default their stride to their kernel size), else ``default``."""
    def stride(args: tuple) -> Fraction:
        value = args[position] if len(args) > position else None
        if value is None and fallback is not None and len(args) > fallback:
            value = args[fallback]
        return Fraction(default if value is None else value)
    return stride


def _upsample_stride(args: tuple) -> Fraction:
    scale = args[1] if len(args) > 1 else None
    if scale is None:
        raise ArgError("nn.Upsample needs a scale_factor (size-based upsampling is not supported)")
    return 1 / Fraction(scale).limit_denominator(1000)


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
    notes: str = field(default="", compare=False)


def _conv_args(extra: tuple[Arg, ...] = ()) -> tuple[Arg, ...]:
    return (Arg("c2", positive_int), Arg("k", positive_int), Arg("s", positive_int),
            Arg("p", optional_int), Arg("g", positive_int), Arg("act", activation)) + extra


_SPECS = [
    BlockSpec("Conv", blocks.Conv, _conv_args(), 1, CONV, _arg_stride(2, 1)),
    BlockSpec("RepConv", blocks.RepConv, _conv_args((Arg("deploy", boolean),)), 1, CONV, _arg_stride(2, 1)),
    BlockSpec("DownC", blocks.DownC, (Arg("c2", positive_int), Arg("k", positive_int)), 1, CONV,
              _arg_stride(1, 2), insert_repeats=True),
    BlockSpec("SPPCSPC", blocks.SPPCSPC, (Arg("c2", positive_int), Arg("shortcut", boolean),
                                          Arg("g", positive_int), Arg("e", positive_number),
                                          Arg("k", kernel_sizes)), 1, CONV, insert_repeats=True),
    BlockSpec("SPP", blocks.SPP, (Arg("c2", positive_int), Arg("k", kernel_sizes)), 1, CONV),
    BlockSpec("SPPF", blocks.SPPF, (Arg("c2", positive_int), Arg("k", positive_int)), 1, CONV),
    BlockSpec("nn.Conv2d", nn.Conv2d, (Arg("c2", positive_int), Arg("k", positive_int),
                                       Arg("s", positive_int), Arg("p", non_negative_int),
                                       Arg("dilation", positive_int), Arg("groups", positive_int),
                                       Arg("bias", boolean)), 2, CONV, _arg_stride(2, 1)),
    BlockSpec("nn.BatchNorm2d", nn.BatchNorm2d, rule=BATCHNORM),
    BlockSpec("Concat", blocks.Concat, (Arg("dimension", integer),), 0, CONCAT),
    BlockSpec("Shortcut", blocks.Shortcut, (Arg("dimension", integer),), 0, SHORTCUT),
    BlockSpec("ReOrg", blocks.ReOrg, rule=REORG, stride=lambda args: Fraction(2)),
    BlockSpec("MP", blocks.MP, (Arg("k", positive_int),), 0, PASS, _arg_stride(0, 2)),
    BlockSpec("SP", blocks.SP, (Arg("k", positive_int), Arg("s", positive_int)), 0, PASS,
              _arg_stride(1, 1)),
    BlockSpec("nn.MaxPool2d", nn.MaxPool2d, (Arg("kernel_size", positive_int), Arg("stride", optional_int),
                                             Arg("padding", non_negative_int)), 1, PASS, _arg_stride(1, 1, 0)),
    BlockSpec("nn.AvgPool2d", nn.AvgPool2d, (Arg("kernel_size", positive_int), Arg("stride", optional_int),
                                             Arg("padding", non_negative_int)), 1, PASS, _arg_stride(1, 1, 0)),
    BlockSpec("nn.Upsample", nn.Upsample, (Arg("size", optional_int),
                                           Arg("scale_factor", optional_positive_number),
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
    if len(args) > len(spec.args) and spec.rule != BATCHNORM:
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
