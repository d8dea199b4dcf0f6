"""Activation expressions such as ``nn.LeakyReLU(0.1)`` parsed by a tiny explicit grammar.

YOLOv7 cfgs write activations as Python expressions and the reference evaluates them. y7nas
never evaluates anything: an expression must match ``nn.<Name>(<number>, ...)`` where ``Name`` is
in :data:`ACTIVATIONS` and the arguments are plain numeric or boolean literals. Everything else
is rejected with a :class:`ValueError` whose message says what is accepted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class ActivationSpec:
    """One allowed activation: its factory and how many positional literals it accepts."""

    factory: Callable[..., nn.Module]
    max_args: int


ACTIVATIONS: dict[str, ActivationSpec] = {
    "SiLU": ActivationSpec(nn.SiLU, 1),
    "ReLU": ActivationSpec(nn.ReLU, 1),
    "ReLU6": ActivationSpec(nn.ReLU6, 1),
    "LeakyReLU": ActivationSpec(nn.LeakyReLU, 2),
    "Hardswish": ActivationSpec(nn.Hardswish, 1),
    "Mish": ActivationSpec(nn.Mish, 1),
    "Sigmoid": ActivationSpec(nn.Sigmoid, 0),
    "Identity": ActivationSpec(nn.Identity, 0),
}

_EXPRESSION = re.compile(r"^\s*nn\.([A-Za-z][A-Za-z0-9]*)\(\s*(.*?)\s*\)\s*$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _literal(token: str) -> float | int | bool:
    token = token.strip()
    if token in ("True", "False"):
        return token == "True"
    if not _NUMBER.match(token):
        raise ValueError(f"activation argument {token!r} is not a number or True/False")
    value = float(token)
    return int(value) if value.is_integer() and "." not in token and "e" not in token.lower() else value


def looks_like_activation(text: str) -> bool:
    """True when ``text`` has the shape ``nn.Name(...)`` (valid or not)."""
    return bool(_EXPRESSION.match(text))


def parse_activation(text: str) -> nn.Module:
    """Build the activation module an expression like ``nn.LeakyReLU(0.1)`` describes."""
    match = _EXPRESSION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an activation expression of the form nn.Name(args)")
    name, arg_text = match.groups()
    spec = ACTIVATIONS.get(name)
    if spec is None:
        known = ", ".join(f"nn.{n}" for n in ACTIVATIONS)
        raise ValueError(f"unknown activation nn.{name} (known: {known})")
    args = [_literal(a) for a in arg_text.split(",")] if arg_text else []
    if len(args) > spec.max_args:
        raise ValueError(f"nn.{name} takes at most {spec.max_args} argument(s), got {len(args)}")
    return spec.factory(*args)


def activation_expression(module: nn.Module) -> str:
    """Inverse of :func:`parse_activation` for the modules it builds (used when writing YAML)."""
    name = type(module).__name__
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name} cannot be written as an expression")
    if isinstance(module, nn.LeakyReLU):
        return f"nn.LeakyReLU({module.negative_slope:g})"
    return f"nn.{name}()"
