"""The objectives a study can optimise: name, direction and axis label.

The bottom of ``nas.search``: it imports nothing of the search, so the config, the results, the
plot and the Pareto code can all read the objectives without importing one another.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

from nas.errors import SearchError


class Objective(NamedTuple):
    name: str
    direction: str  # "maximize" | "minimize"
    label: str      # axis label


#: Every objective a study may use, with its direction.
OBJECTIVES: Mapping[str, Objective] = {
    "score": Objective("score", "maximize", "score (higher is better)"),
    "params": Objective("params", "minimize", "parameters (deploy form)"),
    "gflops": Objective("gflops", "minimize", "GFLOPs (2 x multiply-adds, deploy form)"),
    "latency_ms": Objective("latency_ms", "minimize", "latency (ms, deploy form, batch 1)"),
}
DEFAULT_OBJECTIVES = ("score", "latency_ms")


def parse_objectives(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"score,latency_ms"`` → ``("score", "latency_ms")``; one line naming the valid ones."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if not names:
        raise SearchError(f"no objective given (valid: {', '.join(OBJECTIVES)})")
    for n in names:
        if n not in OBJECTIVES:
            raise SearchError(f"unknown objective {n!r} (valid: {', '.join(OBJECTIVES)})")
    if len(set(names)) != len(names):
        raise SearchError(f"objective listed twice in {','.join(names)!r}")
    return tuple(names)


__all__ = ["DEFAULT_OBJECTIVES", "OBJECTIVES", "Objective", "parse_objectives"]
