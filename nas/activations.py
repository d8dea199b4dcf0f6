"""Activation expressions such as ``nn.LeakyReLU(0.1)`` parsed by a tiny explicit grammar.

YOLOv7 cfgs write activations as Python expressions and the reference evaluates them. y7nas
never evaluates anything: an expression must match ``nn.<Name>(<number>, ...)`` where ``Name`` is
in :data:`ACTIVATIONS` and each argument is a literal of the kind its position takes (a finite
number for LeakyReLU's slope, ``True``/``False`` for ``inplace``). Everything else is rejected
with a :class:`ValueError` whose message says what is accepted.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

from torch import nn


NUMBER, BOOL = "number", "bool"


@dataclass(frozen=True)
class ActivationSpec:
    """One allowed activation: its factory and the kind of each positional literal it accepts."""

    factory: Callable[..., nn.Module]
    params: tuple[tuple[str, str], ...] = ()   # (name, NUMBER | BOOL)

    @property
    def max_args(self) -> int:
        return len(self.params)


_INPLACE = (("inplace", BOOL),)
ACTIVATIONS: dict[str, ActivationSpec] = {
    "SiLU": ActivationSpec(nn.SiLU, _INPLACE),
    "ReLU": ActivationSpec(nn.ReLU, _INPLACE),
    "ReLU6": ActivationSpec(nn.ReLU6, _INPLACE),
    "LeakyReLU": ActivationSpec(nn.LeakyReLU, (("negative_slope", NUMBER),) + _INPLACE),
    "Hardswish": ActivationSpec(nn.Hardswish, _INPLACE),
    "Mish": ActivationSpec(nn.Mish, _INPLACE),
    "Sigmoid": ActivationSpec(nn.Sigmoid),
    "Identity": ActivationSpec(nn.Identity),
}

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_NUMBER_CHARS = frozenset("0123456789.eE+-")
_MAX_LENGTH = 200  # longer strings are not activation expressions (and are never scanned)


def _split(text: str) -> tuple[str, str] | None:
    """``(Name, argument text)`` of ``nn.Name(args)``, or None. Plain string slicing: no
    backtracking regex, so a crafted string costs time linear in its length."""
    text = text.strip()
    if len(text) > _MAX_LENGTH or not text.startswith("nn.") or not text.endswith(")"):
        return None
    name, paren, args = text[3:-1].partition("(")
    if not paren or not _NAME.fullmatch(name):
        return None
    return name, args.strip()


def _literal(token: str, name: str, kind: str) -> float | int | bool:
    token = token.strip()
    if kind == BOOL:
        if token not in ("True", "False"):
            raise ValueError(f"activation argument {name} must be True or False, got {token!r}")
        return token == "True"
    try:
        value = float(token) if token and set(token) <= _NUMBER_CHARS else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"activation argument {name} must be a finite number, got {token!r}")
    return int(value) if value.is_integer() and "." not in token and "e" not in token.lower() else value


def looks_like_activation(text: str) -> bool:
    """True when ``text`` has the shape ``nn.Name(...)`` (valid or not)."""
    return _split(text) is not None


def parse_activation(text: str) -> nn.Module:
    """Build the activation module an expression like ``nn.LeakyReLU(0.1)`` describes."""
    parts = _split(text)
    if parts is None:
        raise ValueError(f"{text[:60]!r} is not an activation expression of the form nn.Name(args)")
    name, arg_text = parts
    spec = ACTIVATIONS.get(name)
    if spec is None:
        known = ", ".join(f"nn.{n}" for n in ACTIVATIONS)
        raise ValueError(f"unknown activation nn.{name} (known: {known})")
    tokens = arg_text.split(",") if arg_text else []
    if len(tokens) > spec.max_args:
        raise ValueError(f"nn.{name} takes at most {spec.max_args} argument(s), got {len(tokens)}")
    return spec.factory(*(_literal(t, p, kind) for t, (p, kind) in zip(tokens, spec.params)))


def activation_expression(module: nn.Module) -> str:
    """Inverse of :func:`parse_activation` for the modules it builds (used when writing YAML)."""
    name = type(module).__name__
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name} cannot be written as an expression")
    if isinstance(module, nn.LeakyReLU):
        return f"nn.LeakyReLU({module.negative_slope:g})"
    return f"nn.{name}()"
