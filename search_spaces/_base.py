"""The search-space interface: named dimensions sampled through an Optuna trial into a Genome.

A space is a small object with two duties:

* :meth:`SearchSpace.dimensions` describes every dimension once: a stable Optuna parameter
  name, its choices (categorical) or its integer/float range with a step, and, for conditional
  dimensions, the condition under which it is sampled. The names never change between trials,
  and each name always has the same distribution (Optuna requires this), so studies can be
  resumed and parameters compared across trials.
* :meth:`SearchSpace.suggest` samples those dimensions through ``trial`` (define-by-run) and
  returns a valid :class:`~nas.genome.Genome`. Invalid combinations are never produced: a
  dimension whose values depend on another (ELAN concat pattern only for even chain lengths,
  SiLU-only SPP blocks only with the SiLU activation) is sampled under its own name only when
  its condition holds.

:meth:`SearchSpace.decode` maps a parameter dict to a genome without a trial, so a stored
trial's parameters can be turned back into its architecture.
"""
from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from nas.errors import SearchError
from nas.genome import Genome


@dataclass(frozen=True)
class Dimension:
    """One searchable decision.

    Attributes:
        name: the Optuna parameter name (stable across trials and versions).
        choices: the categorical values, or ``None`` for a numeric range.
        low, high, step: the numeric range (inclusive) for int/float dimensions.
        condition: ``None`` (always sampled) or a short text naming when it is sampled.
        help: what the dimension controls.
    """

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    condition: str | None = None
    help: str = ""

    def __post_init__(self) -> None:
        numeric = self.low is not None and self.high is not None
        if self.choices is None and not numeric:
            raise ValueError(f"dimension {self.name!r} needs choices or low/high")
        if self.choices is not None and numeric:
            raise ValueError(f"dimension {self.name!r} has both choices and a range")

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.low, self.high, self.step))

    def values(self) -> tuple[Any, ...]:
        """Every value this dimension can take (numeric ranges enumerated by ``step``)."""
        if self.choices is not None:
            return self.choices
        step = self.step or 1
        n = int(round((self.high - self.low) / step))
        vals = [self.low + i * step for i in range(n + 1)]
        return tuple(int(v) for v in vals) if self.is_int else tuple(round(v, 10) for v in vals)

    def suggest(self, trial: Any) -> Any:
        """Sample this dimension through an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step)

    def describe(self) -> str:
        """Choices or range as short text (``2, 4, 6, 8`` / ``0.25 .. 1.0 step 0.125``)."""
        if self.choices is not None:
            return ", ".join(str(c) for c in self.choices)
        return f"{self.low} .. {self.high}" + (f" step {self.step}" if self.step else "")


class SearchSpace(abc.ABC):
    """Base class of every search space (see the module docstring)."""

    #: the name users pass as ``--space``
    name: str = ""
    #: one line shown by ``y7nas spaces``
    description: str = ""

    def __init__(self, nc: int = 80):
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise SearchError(f"number of classes must be a positive integer, got {nc!r}")
        self.nc = nc

    @abc.abstractmethod
    def dimensions(self) -> tuple[Dimension, ...]:
        """Every dimension, in sampling order."""

    @abc.abstractmethod
    def decode(self, params: Mapping[str, Any]) -> Genome:
        """The genome for a complete parameter dict (as produced by :meth:`suggest`)."""

    @abc.abstractmethod
    def active(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """Names of the dimensions that are sampled given the values sampled so far.

        Called with a growing ``params`` dict, in :meth:`dimensions` order; conditional
        dimensions appear only when their condition holds.
        """

    def suggest(self, trial: Any) -> Genome:
        """Sample every active dimension through ``trial`` and decode the genome."""
        params: dict[str, Any] = {}
        for dim in self.dimensions():
            if dim.name in self.active(params):
                params[dim.name] = dim.suggest(trial)
        return self.decode(params)

    def sample_params(self, rng: Any) -> dict[str, Any]:
        """A random parameter dict drawn with ``rng`` (a ``random.Random``), without Optuna."""
        params: dict[str, Any] = {}
        for dim in self.dimensions():
            if dim.name in self.active(params):
                params[dim.name] = rng.choice(dim.values())
        return params

    def signature(self) -> str:
        """Short hash of the space's name, class count and dimensions (for study consistency)."""
        dims = [[d.name, list(d.values()), d.condition] for d in self.dimensions()]
        text = json.dumps([self.name, self.nc, dims], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def fixed(self, **values: Any) -> "SearchSpace":
        """This space with some categorical dimensions narrowed to one value (e.g. the
        activation of a one-shot search, which a supernet cannot share). The result has its own
        signature; :attr:`unfixed` is this space."""
        return FixedSpace(self, values)

    @property
    def unfixed(self) -> "SearchSpace":
        """The space without fixed dimensions (itself for a plain space)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, nc={self.nc})"


class FixedSpace(SearchSpace):
    """A space with some categorical dimensions fixed to one value (see :meth:`SearchSpace.fixed`)."""

    def __init__(self, base: SearchSpace, values: Mapping[str, Any]):
        super().__init__(base.nc)
        dims = {d.name: d for d in base.dimensions()}
        for name, value in values.items():
            dim = dims.get(name)
            if dim is None or dim.choices is None:
                raise SearchError(f"space {base.name!r} has no categorical dimension {name!r}")
            if value not in dim.choices:
                raise SearchError(f"space {base.name!r}: {name} must be one of "
                                  f"{', '.join(map(str, dim.choices))}, got {value!r}")
        self.base, self.values = base, dict(values)
        self.name, self.description = base.name, base.description
        self._dims = tuple(Dimension(d.name, choices=(self.values[d.name],), condition=d.condition,
                                     help=d.help) if d.name in self.values else d
                           for d in base.dimensions())

    @property
    def unfixed(self) -> SearchSpace:
        return self.base.unfixed

    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    def active(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        return self.base.active(params)

    def decode(self, params: Mapping[str, Any]) -> Genome:
        for name, value in self.values.items():
            if name in params and params[name] != value:
                raise SearchError(f"space {self.name!r}: {name} is fixed to {value!r}, got {params[name]!r}")
        return self.base.decode(params)


def round8(value: float, minimum: int = 8) -> int:
    """Round a channel width to the nearest multiple of 8 (at least ``minimum``)."""
    return max(minimum, int(round(value / 8.0)) * 8)
