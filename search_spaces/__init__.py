"""Search spaces: what the architecture search samples (Optuna trial → Genome).

``get_space(name, nc)`` returns a fresh space; ``SPACES`` maps each name to its class. Every space
implements :class:`SearchSpace` (``suggest(trial) -> Genome``, ``dimensions()``, ``decode``).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from nas.errors import SearchError
from search_spaces._base import Dimension, FixedSpace, SearchSpace, round8
from search_spaces._elan import ElanRanges, ElanSpace, YoloV7Space, YoloV7TinyCpuSpace, YoloV7TinySpace

#: name → space class, in the order ``y7nas spaces`` lists them
SPACES: Mapping[str, type[SearchSpace]] = MappingProxyType({
    YoloV7TinySpace.name: YoloV7TinySpace,
    YoloV7TinyCpuSpace.name: YoloV7TinyCpuSpace,
    YoloV7Space.name: YoloV7Space,
})


def get_space(name: str, nc: int = 80) -> SearchSpace:
    """The space called ``name`` for ``nc`` classes; one-line error listing the known ones."""
    try:
        cls = SPACES[name]
    except KeyError:
        raise SearchError(f"unknown search space {name!r} (known: {', '.join(SPACES)})") from None
    return cls(nc=nc)


__all__ = ["Dimension", "ElanRanges", "ElanSpace", "FixedSpace", "SPACES", "SearchSpace", "YoloV7Space", "YoloV7TinyCpuSpace",
           "YoloV7TinySpace", "get_space", "round8"]
