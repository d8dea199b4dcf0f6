"""Pareto dominance, 2-D hypervolume and the front of result rows (pure functions, no Optuna)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from nas.search._objectives import OBJECTIVES


def _signed(point: Sequence[float], directions: Sequence[str]) -> list[float]:
    """Values turned into 'smaller is better' for every objective."""
    return [-v if d == "maximize" else v for v, d in zip(point, directions)]


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """``a`` is no worse than ``b`` in every objective and strictly better in at least one."""
    sa, sb = _signed(a, directions), _signed(b, directions)
    return all(x <= y for x, y in zip(sa, sb)) and any(x < y for x, y in zip(sa, sb))


def pareto_front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (equal points are all kept), in input order.

    Sort-and-sweep: after sorting by the signed objectives a point can only be dominated by an
    earlier one, so each point is compared against the front found so far.
    """
    for d in directions:
        if d not in ("minimize", "maximize"):
            raise ValueError(f"direction must be 'minimize' or 'maximize', got {d!r}")
    signed = [_signed(p, directions) for p in points]
    order = sorted(range(len(points)), key=lambda i: signed[i])
    front: list[int] = []
    for i in order:
        if not any(_dominates_signed(signed[j], signed[i]) for j in front):
            front.append(i)
    return sorted(front)


def _dominates_signed(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float],
                   directions: Sequence[str]) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (2 objectives).

    Points that do not dominate the reference point add nothing.
    """
    if len(directions) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives")
    ref = _signed(reference, directions)
    pts = [_signed(p, directions) for p in points]
    pts = sorted(p for p in pts if p[0] < ref[0] and p[1] < ref[1])
    area, best_y = 0.0, ref[1]
    for x, y in pts:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return area


def is_candidate(row: Mapping[str, Any], objectives: Sequence[str]) -> bool:
    """A result row (``nas.search._results.trial_record``) that may enter the front: COMPLETE,
    feasible, not a duplicate and with finite values for every objective."""
    if row["state"] != "COMPLETE" or row.get("feasible") is False or row.get("duplicate_of") != "":
        return False
    return all(isinstance(row.get(o), (int, float)) and math.isfinite(row[o]) for o in objectives)


def pareto_rows(rows: Sequence[Mapping[str, Any]], objectives: Sequence[str]) -> list[Mapping[str, Any]]:
    """The non-dominated candidate rows (see :func:`is_candidate`), sorted by the first objective."""
    candidates = [r for r in rows if is_candidate(r, objectives)]
    directions = [OBJECTIVES[o].direction for o in objectives]
    idx = pareto_front([[r[o] for o in objectives] for r in candidates], directions)
    front = [candidates[i] for i in idx]
    first = objectives[0]
    front.sort(key=lambda r: (-r[first] if OBJECTIVES[first].direction == "maximize" else r[first],
                              r["number"]))
    return front


__all__ = ["dominates", "hypervolume_2d", "is_candidate", "pareto_front", "pareto_rows"]
