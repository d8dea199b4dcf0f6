"""Choosing under a budget: the candidates in a band just below it, ranked by an estimator.

A budget (``--max-latency``, ``--max-gflops`` or ``--max-params``) asks for the best detector
that fits it. The Pareto front answers another question (every trade-off), and a score whose top
is flat picks among the front's cheap end by noise. So with a budget the finalists come from the
*band*: feasible, evaluated candidates whose cost on the budget's own metric lies in
``[lo, hi] × budget`` (default 0.85–1.0), ranked by an estimator (:data:`ESTIMATORS`). When the
band holds fewer than the finalists asked for, the rest come from just below it, the costliest
first. Every function here is pure over the rows of :func:`nas.search._results.records`, so
``y7nas run``, ``y7nas finalists`` and the benchmarks make the same choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from nas.errors import SearchError
from nas.search._pareto import is_candidate

#: default band: cost between 85 % and 100 % of the budget
DEFAULT_BAND = (0.85, 1.0)
#: the metric of each budget option, its CLI name and its unit as printed
BUDGET_METRICS = {"latency_ms": ("--max-latency", "ms"), "gflops": ("--max-gflops", "GFLOPs"),
                  "params": ("--max-params", "params")}


@dataclass(frozen=True)
class Budget:
    """A cost limit: ``metric`` (latency_ms, gflops or params, in the metric's own unit) ≤ ``limit``."""

    metric: str
    limit: float

    def __post_init__(self) -> None:
        if self.metric not in BUDGET_METRICS:
            raise SearchError(f"unknown budget metric {self.metric!r} (valid: {', '.join(BUDGET_METRICS)})")
        if not (isinstance(self.limit, (int, float)) and math.isfinite(self.limit) and self.limit > 0):
            raise SearchError(f"a budget must be a positive number, got {self.limit!r}")

    def bounds(self, band: tuple[float, float]) -> tuple[float, float]:
        return band[0] * self.limit, band[1] * self.limit

    def describe(self, band: tuple[float, float] | None = None) -> str:
        unit = BUDGET_METRICS[self.metric][1]
        text = f"{self.metric} <= {self.limit:.4g} {unit}"
        if band is not None:
            lo, hi = self.bounds(band)
            text += f" (band {lo:.4g}-{hi:.4g})"
        return text


def budget_of(constraints: Mapping[str, float]) -> Budget | None:
    """The budget among a study's constraints (``{metric: limit}``); None without one. A study
    has at most one (``y7nas run`` refuses two)."""
    found = [Budget(m, float(v)) for m, v in constraints.items() if m in BUDGET_METRICS]
    return found[0] if found else None


def parse_band(text: str | Sequence[float]) -> tuple[float, float]:
    """``"0.85,1.0"`` → (0.85, 1.0): two fractions of the budget with 0 < lo < hi ≤ 1."""
    try:
        parts = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise SearchError(f"--band must be two numbers LO,HI (fractions of the budget), got {text!r}") from None
    if len(parts) != 2 or not all(math.isfinite(x) for x in parts) or not 0 < parts[0] < parts[1] <= 1:
        raise SearchError(f"--band must be LO,HI with 0 < LO < HI <= 1 (fractions of the budget), got {text!r}")
    return parts[0], parts[1]


def _fits(row: Mapping[str, Any], budget: Budget) -> bool:
    value = row.get(budget.metric)
    return isinstance(value, (int, float)) and math.isfinite(value) and value <= budget.limit


def band_rows(rows: Sequence[Mapping[str, Any]], budget: Budget, band: tuple[float, float] = DEFAULT_BAND,
              needs: Sequence[str] = ("score",)) -> list[Mapping[str, Any]]:
    """Evaluated, feasible, non-duplicate rows whose ``budget.metric`` lies in the band (and that
    have every metric in ``needs``), in trial order."""
    lo, hi = budget.bounds(band)
    return [r for r in rows if is_candidate(r, (*needs, budget.metric)) and lo <= r[budget.metric] <= hi]


# ------------------------------------------------------------------------------ estimators
@dataclass(frozen=True)
class Estimator:
    """Ranks candidates of about equal cost: ``keys(rows)`` gives one number per row, higher is
    better."""

    name: str
    description: str
    keys: Callable[[Sequence[Mapping[str, Any]]], list[float]]
    needs: tuple[str, ...]


def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks, 1 = lowest (ties share the mean of their ranks)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _column(name: str) -> Callable[[Sequence[Mapping[str, Any]]], list[float]]:
    return lambda rows: [float(r[name]) for r in rows]


def _rank_mean(*names: str) -> Callable[[Sequence[Mapping[str, Any]]], list[float]]:
    def keys(rows):
        per = [_ranks([float(r[n]) for r in rows]) for n in names]
        return [sum(p[i] for p in per) / len(per) for i in range(len(rows))]
    return keys


#: name → estimator (``--estimator``)
ESTIMATORS: dict[str, Estimator] = {e.name: e for e in (
    Estimator("score", "the search's score (one-shot or proxy mAP, or NASWOT)", _column("score"), ("score",)),
    Estimator("params", "more parameters first (the size baseline)", _column("params"), ("params",)),
    Estimator("score+params", "mean of the score's and the parameter count's ranks",
              _rank_mean("score", "params"), ("score", "params")),
)}
#: the default (see docs/SUPERNET.md, "Choosing in the band", for the measurement behind it)
DEFAULT_ESTIMATOR = "score"


def get_estimator(name: str) -> Estimator:
    if name not in ESTIMATORS:
        raise SearchError(f"unknown estimator {name!r} (valid: {', '.join(ESTIMATORS)})")
    return ESTIMATORS[name]


def rank_rows(rows: Sequence[Mapping[str, Any]], estimator: str = DEFAULT_ESTIMATOR) -> list[Mapping[str, Any]]:
    """``rows`` best first by ``estimator`` (ties: the lower trial number first)."""
    keys = get_estimator(estimator).keys(rows)
    order = sorted(range(len(rows)), key=lambda i: (-keys[i], rows[i]["number"]))
    return [rows[i] for i in order]


def choose_in_band(rows: Sequence[Mapping[str, Any]], budget: Budget, top: int,
                   band: tuple[float, float] = DEFAULT_BAND, estimator: str = DEFAULT_ESTIMATOR
                   ) -> list[Mapping[str, Any]]:
    """Up to ``top`` candidates: the band's best by ``estimator``; when the band holds fewer, the
    feasible candidates just below it, costliest first (closest to the budget)."""
    if top < 1:
        raise SearchError(f"the number of finalists must be >= 1, got {top}")
    needs = get_estimator(estimator).needs
    inside = band_rows(rows, budget, band, needs)
    chosen = rank_rows(inside, estimator)[:top]
    if len(chosen) < top:
        taken = {r["number"] for r in chosen}
        below = [r for r in rows if r["number"] not in taken and is_candidate(r, (*needs, budget.metric))
                 and _fits(r, budget)]
        below.sort(key=lambda r: (-r[budget.metric], r["number"]))
        chosen += below[:top - len(chosen)]
    return chosen


__all__ = ["BUDGET_METRICS", "Budget", "DEFAULT_BAND", "DEFAULT_ESTIMATOR", "ESTIMATORS", "Estimator", "band_rows",
           "budget_of", "choose_in_band", "get_estimator", "parse_band", "rank_rows"]
