"""Early stopping for multi-objective, multi-fidelity searches (the ``proxy`` fidelity).

Optuna's pruners compare one intermediate value per trial, so they refuse multi-objective
studies. Here only the *score* of a trial is partial while it trains; its cost objectives
(params, GFLOPs, latency of the deploy form) are exact before the first epoch. That makes a
dominance test at equal fidelity possible:

Rungs
    Epochs ``min_epoch · eta^k`` below the number of proxy epochs (``min_epoch=1, eta=3``:
    epochs 1, 3, 9, ...), as in successive halving / ASHA (Li et al. 2020) and its
    multi-objective form MO-ASHA (Schmucker et al. 2021).
Peers
    Every other trial that reached the same rung (finished, stopped or still running), its
    point being (score after that many epochs, exact costs). Duplicates and infeasible trials
    are left out.
Rule
    A peer *beats* the trial when its partial score is higher by more than the tie margin
    (``margin + rel_margin · score``: 0.0005 + 10 % by default, about the epoch-to-epoch jitter
    of a short proxy training's mAP) and none of its cost objectives is worse (no more params,
    GFLOPs, latency). With ``n >= min_peers`` peers
    at the rung, the trial stops when at least ``ceil(n / eta)`` of them beat it: a trial that
    that many cheaper-or-equal architectures out-learn is unlikely to reach the Pareto front.
    Costs alone never stop a trial (a peer must learn more), and a trial on the partial front is
    never stopped. With ``score`` as the only objective this is successive halving's rule with
    a tie margin.
Infeasible trials
    A trial whose exact costs break a constraint (``--max-latency`` ...) can never enter the
    front, whatever it learns; it is stopped before training (``epoch 0``).

Stopped trials are recorded PRUNED and count toward the trial budget (they were sampled and
evaluated, at lower fidelity). :func:`pruning_summary` estimates the training time saved.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from nas.errors import SearchError
from nas.search._files import is_number

#: cost objectives (exact before training) and their directions
COST_OBJECTIVES = ("params", "gflops", "latency_ms")


@dataclass(frozen=True)
class PruningRule:
    """The stopping rule's settings (see the module docstring)."""

    eta: int = 3
    min_epoch: int = 1
    min_peers: int = 4
    margin: float = 0.0005
    rel_margin: float = 0.1
    stop_infeasible: bool = True

    def __post_init__(self) -> None:
        if self.eta < 2:
            raise SearchError(f"--prune-eta must be >= 2, got {self.eta}")
        if self.min_epoch < 1:
            raise SearchError(f"--prune-min-epoch must be >= 1, got {self.min_epoch}")
        if self.min_peers < 1:
            raise SearchError(f"pruning needs min_peers >= 1, got {self.min_peers}")
        if not (self.margin >= 0 and self.rel_margin >= 0):
            raise SearchError(f"pruning margins must be >= 0, got {self.margin} and {self.rel_margin}")

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """Epochs at which a trial is checked: ``min_epoch · eta^k < epochs``."""
        out, rung = [], self.min_epoch
        while rung < epochs:
            out.append(rung)
            rung *= self.eta
        return tuple(out)


class Point(NamedTuple):
    """A trial at a rung: its partial score and its exact costs."""

    score: float
    costs: Mapping[str, float]


class Decision(NamedTuple):
    keep: bool
    beaten_by: int   # peers that beat the trial
    peers: int       # peers at the rung
    needed: int      # beaten_by needed to stop (0: too few peers)

    @property
    def reason(self) -> str:
        return (f"{self.beaten_by} of {self.peers} peers at this epoch learned more at no higher "
                f"cost (stop at {self.needed})")


def beats(peer: Point, trial: Point, cost_names: Sequence[str], margin: float, rel_margin: float = 0.0) -> bool:
    """``peer`` scores more than ``margin + rel_margin·|trial score|`` higher, no cost objective worse."""
    return (peer.score > trial.score + margin + rel_margin * abs(trial.score)
            and all(peer.costs[c] <= trial.costs[c] for c in cost_names))


def decide(trial: Point, peers: Sequence[Point], cost_names: Sequence[str], rule: PruningRule) -> Decision:
    """Whether ``trial`` goes on past a rung (pure; see the module docstring)."""
    n = len(peers)
    if n < rule.min_peers:
        return Decision(True, 0, n, 0)
    beaten_by = sum(beats(p, trial, cost_names, rule.margin, rule.rel_margin) for p in peers)
    needed = math.ceil(n / rule.eta)
    return Decision(beaten_by < needed, beaten_by, n, needed)


def violations(costs: Mapping[str, float], limits: Mapping[str, float]) -> list[str]:
    """``["latency_ms 12.3 > 10"]``: the constraints ``costs`` break (limits in metric units)."""
    return [f"{metric} {costs[metric]:.4g} > {limit:.4g}" for metric, limit in limits.items()
            if metric in costs and costs[metric] > limit]


@dataclass
class Stopped:
    epoch: int        # epochs trained when stopped (0: before training)
    reason: str


class TrialMonitor:
    """Watches one trial: records its costs and per-epoch scores, and decides when it stops.

    Args:
        objectives: the study's objectives (pruning needs ``score`` among them).
        epochs: the proxy epochs of a full trial.
        rule: the :class:`PruningRule`, or None to only record.
        limits: constraint limits in metric units (``SearchConfig.constraints``).
        peers_at: ``peers_at(epoch) -> [Point]`` of the other trials at that epoch.
        on_costs: called with the exact costs before training (the runner stores them).
        on_score: called with ``(epoch, score)`` after every epoch (the runner stores it).
    """

    def __init__(self, objectives: Sequence[str], epochs: int, rule: PruningRule | None = None,
                 limits: Mapping[str, float] | None = None,
                 peers_at: Callable[[int], Sequence[Point]] = lambda epoch: (),
                 on_costs: Callable[[dict], None] = lambda costs: None,
                 on_score: Callable[[int, float], None] = lambda epoch, score: None):
        self.cost_names = tuple(o for o in objectives if o in COST_OBJECTIVES)
        self.rule = rule if "score" in objectives else None
        self.rungs = set(rule.rungs(epochs)) if self.rule else set()
        self.limits = dict(limits or {})
        self.peers_at, self.on_costs, self.on_score = peers_at, on_costs, on_score
        self.costs: dict[str, float] = {}
        self.stopped: Stopped | None = None

    def start(self, costs: Mapping[str, float]) -> bool:
        """Record the exact costs; False when the trial should not train at all."""
        self.costs = {k: float(v) for k, v in costs.items() if k in COST_OBJECTIVES}
        self.on_costs(dict(self.costs))
        broken = violations(self.costs, self.limits)
        if self.rule is not None and self.rule.stop_infeasible and broken:
            self.stopped = Stopped(0, "infeasible (" + ", ".join(broken) + "): not trained")
            return False
        return True

    def report(self, epoch: int, score: float) -> bool:
        """Record the score after ``epoch``; True when the trial should stop now."""
        epoch, score = int(epoch), float(score)
        self.on_score(epoch, score)
        if epoch not in self.rungs:
            return False
        decision = decide(Point(score, self.costs), list(self.peers_at(epoch)), self.cost_names, self.rule)
        if decision.keep:
            return False
        self.stopped = Stopped(epoch, decision.reason)
        return True


def peer_points(trials: Sequence[Any], epoch: int, exclude: int, limits: Mapping[str, float]) -> list[Point]:
    """Points at ``epoch`` of the trials (Optuna FrozenTrials) other than number ``exclude``.

    A trial counts when it recorded its costs and its score after ``epoch`` epochs, is not a
    duplicate and meets the constraints.
    """
    out = []
    key = str(int(epoch))
    for t in trials:
        attrs = t.user_attrs
        if t.number == exclude or "duplicate_of" in attrs:
            continue
        costs, history = attrs.get("costs"), attrs.get("intermediate") or {}
        if not costs or key not in history or violations(costs, limits):
            continue
        out.append(Point(float(history[key]), costs))
    return out


def pruning_summary(rows: Sequence[Mapping[str, Any]], epochs: int) -> dict[str, Any]:
    """How much training pruning saved (estimated), from trials.csv rows.

    A trial stopped after ``e`` of ``epochs`` epochs saves ``epochs - e`` times its own seconds
    per epoch (``train_s / e``); one stopped before training saves ``epochs`` times the median
    seconds per epoch of the trained trials. Duplicates (not trained) are left out. ``spent_s``
    is the wall time of the evaluated trials; ``saved_fraction = saved / (spent + saved)``.
    """
    evaluated = [r for r in rows if r.get("state") in ("COMPLETE", "PRUNED") and r.get("duplicate_of") in ("", None)]
    per_epoch = [float(r["train_s"]) / int(r["epochs_trained"]) for r in evaluated
                 if is_number(r.get("train_s")) and is_number(r.get("epochs_trained")) and int(r["epochs_trained"]) > 0]
    typical = statistics.median(per_epoch) if per_epoch else 0.0
    saved = 0.0
    stopped = [r for r in evaluated if r["state"] == "PRUNED"]
    for r in stopped:
        done = int(r["epochs_trained"]) if is_number(r.get("epochs_trained")) else 0
        rate = float(r["train_s"]) / done if done > 0 and is_number(r.get("train_s")) else typical
        saved += max(0, epochs - done) * rate
    spent = sum(float(r["duration_s"]) for r in evaluated if is_number(r.get("duration_s")))
    trained = sum(int(r["epochs_trained"]) for r in evaluated if is_number(r.get("epochs_trained")))
    return {
        "trials": len(evaluated), "pruned": len(stopped),
        "pruned_before_training": sum(1 for r in stopped if not is_number(r.get("epochs_trained"))
                                      or int(r["epochs_trained"]) == 0),
        "epochs_per_trial": epochs, "epochs_trained": trained, "epochs_full": epochs * len(evaluated),
        "spent_s": round(spent, 1), "saved_s": round(saved, 1),
        "saved_fraction": round(saved / (spent + saved), 4) if spent + saved > 0 else 0.0,
    }


__all__ = ["COST_OBJECTIVES", "Decision", "Point", "PruningRule", "Stopped", "TrialMonitor", "beats",
           "decide", "peer_points", "pruning_summary", "violations"]
