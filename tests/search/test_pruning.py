"""Multi-objective early stopping: the rule by hand, then in real (small) searches."""
from __future__ import annotations

import collections
import json
import math

import pytest

from nas.errors import SearchError
from nas.search import run_search
from nas.search._pruning import Point, PruningRule, TrialMonitor, beats, decide, pruning_summary
from search_spaces import get_space
from tests.search._helpers import SmallSpace, config, load


# ------------------------------------------------------------------------------ the rule
def test_rungs_follow_successive_halving():
    assert PruningRule(eta=3, min_epoch=1).rungs(10) == (1, 3, 9)
    assert PruningRule(eta=2, min_epoch=2).rungs(9) == (2, 4, 8)
    assert PruningRule(eta=3, min_epoch=1).rungs(1) == ()  # a one-epoch trial is never checked
    assert PruningRule(eta=3, min_epoch=5).rungs(5) == ()


@pytest.mark.parametrize("kw, message", [({"eta": 1}, "--prune-eta must be >= 2, got 1"),
                                         ({"min_epoch": 0}, "--prune-min-epoch must be >= 1, got 0")])
def test_bad_rule_settings_are_one_line(kw, message):
    with pytest.raises(SearchError, match=message):
        PruningRule(**kw)


def test_a_peer_beats_only_by_learning_more_at_no_higher_cost():
    me = Point(0.10, {"latency_ms": 5.0, "params": 100})
    names = ("latency_ms", "params")
    assert beats(Point(0.20, {"latency_ms": 5.0, "params": 100}), me, names, 0.002)      # same cost, more mAP
    assert not beats(Point(0.20, {"latency_ms": 5.1, "params": 50}), me, names, 0.002)   # slower
    assert not beats(Point(0.101, {"latency_ms": 1.0, "params": 1}), me, names, 0.002)   # within the margin
    assert not beats(Point(0.10, {"latency_ms": 1.0, "params": 1}), me, names, 0.0)      # cheaper alone never
    assert not beats(Point(0.1105, {"latency_ms": 5.0, "params": 100}), me, names, 0.0005, 0.1)  # < 0.1106
    assert beats(Point(0.1107, {"latency_ms": 5.0, "params": 100}), me, names, 0.0005, 0.1)
    assert beats(Point(0.5, {"latency_ms": 9.0, "params": 100}), me, ("params",), 0.0)  # objectives only


def test_decide_counts_beating_peers_against_ceil_n_over_eta():
    rule = PruningRule(eta=3, min_epoch=1, min_peers=4, margin=0.0, rel_margin=0.0)
    me = Point(0.1, {"gflops": 2.0})
    better_cheaper = [Point(0.3, {"gflops": 1.0})] * 2
    other = [Point(0.05, {"gflops": 1.0}), Point(0.9, {"gflops": 9.0}), Point(0.2, {"gflops": 3.0})]
    d = decide(me, better_cheaper + other, ("gflops",), rule)   # 5 peers: stop at ceil(5/3) = 2
    assert (d.keep, d.beaten_by, d.peers, d.needed) == (False, 2, 5, 2)
    d = decide(me, better_cheaper[:1] + other, ("gflops",), rule)  # 4 peers, 1 beats: keep
    assert (d.keep, d.beaten_by, d.needed) == (True, 1, 2)
    d = decide(me, better_cheaper + other[:1], ("gflops",), rule)  # 3 peers < min_peers: keep
    assert d.keep and d.needed == 0
    # on the partial front (nobody beats it) a trial always goes on, however many peers
    assert decide(Point(1.0, {"gflops": 0.5}), other * 10, ("gflops",), rule).keep


def test_monitor_stops_infeasible_trials_before_training_and_records_everything():
    seen = {}
    monitor = TrialMonitor(("score", "latency_ms"), epochs=5, rule=PruningRule(),
                           limits={"latency_ms": 10.0}, on_costs=lambda c: seen.setdefault("costs", c),
                           on_score=lambda e, s: seen.setdefault("scores", []).append((e, s)))
    assert not monitor.start({"latency_ms": 12.5, "params": 3, "gflops": 1.0, "score": 0.0})
    assert seen["costs"] == {"latency_ms": 12.5, "params": 3.0, "gflops": 1.0}
    assert monitor.stopped.epoch == 0 and "infeasible (latency_ms 12.5 > 10)" in monitor.stopped.reason
    # without a rule (pruning off) the same trial trains and only records
    plain = TrialMonitor(("score", "latency_ms"), epochs=5, rule=None, limits={"latency_ms": 10.0},
                         on_score=lambda e, s: seen.setdefault("plain", []).append(e))
    assert plain.start({"latency_ms": 12.5}) and not any(plain.report(e, 0.1) for e in (1, 2, 3))
    assert seen["plain"] == [1, 2, 3] and plain.stopped is None


def test_pruning_summary_by_hand():
    rows = [
        {"state": "COMPLETE", "duplicate_of": "", "epochs_trained": 5, "train_s": 10.0, "duration_s": 11.0},
        {"state": "COMPLETE", "duplicate_of": "", "epochs_trained": 5, "train_s": 20.0, "duration_s": 21.0},
        {"state": "PRUNED", "duplicate_of": "", "epochs_trained": 1, "train_s": 3.0, "duration_s": 4.0},
        {"state": "PRUNED", "duplicate_of": "", "epochs_trained": "", "train_s": "", "duration_s": 1.0},
        {"state": "COMPLETE", "duplicate_of": 0, "epochs_trained": 5, "train_s": 10.0, "duration_s": 0.1},
        {"state": "FAIL", "duplicate_of": "", "duration_s": 2.0},
    ]
    s = pruning_summary(rows, epochs=5)
    # per-epoch rates 2, 4, 3 → median 3; saved = 4 epochs x 3 s (own rate) + 5 epochs x 3 s (median)
    assert s["saved_s"] == 27.0 and s["spent_s"] == 37.0
    assert (s["trials"], s["pruned"], s["pruned_before_training"]) == (4, 2, 1)
    assert (s["epochs_trained"], s["epochs_full"]) == (11, 20)
    assert s["saved_fraction"] == round(27 / 64, 4)


# ------------------------------------------------------------------------------ in a search
def _beaten(trial, epoch, peers, names, margin):
    """Independent re-count of the rule from the stored attributes (hand-written, no nas code)."""
    mine, costs = trial.user_attrs["intermediate"][str(epoch)], trial.user_attrs["costs"]
    at = [p for p in peers if str(epoch) in p.user_attrs.get("intermediate", {})]
    wins = [p for p in at if p.user_attrs["intermediate"][str(epoch)] > mine * 1.1 + margin
            and all(p.user_attrs["costs"][n] <= costs[n] for n in names)]
    return len(wins), len(at)


def test_search_prunes_trials_that_cheaper_peers_out_learn(tmp_path):
    cfg = config(tmp_path, space="small", trials=14, fidelity="test-epochs", objectives=("score", "params"),
                 sampler="random", proxy_epochs=9, seed=1)
    summary = run_search(cfg, SmallSpace())
    study = load(cfg)
    trials = sorted(study.trials, key=lambda t: t.number)
    counts = collections.Counter(t.state.name for t in trials)
    assert counts["COMPLETE"] + counts["PRUNED"] == 14 and counts["PRUNED"] >= 1
    assert summary.pruned == counts["PRUNED"] and summary.complete == counts["COMPLETE"]
    rungs = (1, 3)
    for t in trials:
        if "duplicate_of" in t.user_attrs:
            continue
        earlier = [p for p in trials if p.number < t.number and "duplicate_of" not in p.user_attrs]
        history = t.user_attrs["intermediate"]
        if t.state.name == "PRUNED":
            epoch = t.user_attrs["pruned"]["epoch"]
            assert epoch in rungs and max(map(int, history)) == epoch == t.user_attrs["metrics"]["epochs_trained"]
            won, n = _beaten(t, epoch, earlier, ("params",), 0.0005)
            assert n >= 4 and won >= math.ceil(n / 3), (t.number, won, n)
        else:
            assert sorted(map(int, history)) == list(range(1, 10))
            for epoch in rungs:
                won, n = _beaten(t, epoch, earlier, ("params",), 0.0005)
                assert n < 4 or won < math.ceil(n / 3), (t.number, epoch, won, n)
    front = {r["number"] for r in summary.front}
    assert front and all(trials[n].state.name == "COMPLETE" for n in front)
    saved = json.loads((cfg.study_dir / "pruning.json").read_text())
    stopped = [t for t in trials if t.state.name == "PRUNED" and "duplicate_of" not in t.user_attrs]
    assert saved["pruned"] == len(stopped) and saved["saved_s"] > 0 and saved["enabled"]
    csv_text = (cfg.study_dir / "trials.csv").read_text()
    assert "PRUNED" in csv_text and "learned more at no higher cost" in csv_text
    run_search(cfg, SmallSpace())  # the budget counts pruned trials: nothing more to run
    assert len(load(cfg).trials) == 14


def test_single_objective_pruning_reports_to_optuna(tmp_path):
    cfg = config(tmp_path, space="small", trials=10, fidelity="test-epochs", objectives=("score",),
                 sampler="random", proxy_epochs=3, seed=4)
    run_search(cfg, SmallSpace())
    trials = load(cfg).trials
    pruned = [t for t in trials if t.state.name == "PRUNED" and "duplicate_of" not in t.user_attrs]
    assert pruned and all(t.intermediate_values == {1: t.user_attrs["intermediate"]["1"]} for t in pruned)
    assert all(len(t.intermediate_values) == 3 for t in trials if t.state.name == "COMPLETE"
               and "duplicate_of" not in t.user_attrs)


def test_no_prune_trains_every_trial(tmp_path):
    cfg = config(tmp_path, space="small", trials=10, fidelity="test-epochs", objectives=("score", "params"),
                 sampler="random", proxy_epochs=3, seed=1, prune=False)
    summary = run_search(cfg, SmallSpace())
    assert summary.complete == 10 and summary.pruned == 0 and not summary.pruning["enabled"]


def test_real_proxy_search_skips_infeasible_candidates_and_trains_the_rest(tmp_path, tiny_data):
    pytest.importorskip("nas.train")
    space = get_space("yolov7-tiny", nc=5)
    cfg = config(tmp_path, trials=3, fidelity="proxy", objectives=("score", "gflops"), data=tiny_data,
                 proxy_epochs=2, proxy_subset=8, proxy_img=64, img=96, sampler="random", seed=5,
                 max_gflops=0.05)
    summary = run_search(cfg, space)
    trials = load(cfg).trials
    for t in trials:
        m = t.user_attrs["metrics"]
        if m["gflops"] > 0.05:
            assert t.state.name == "PRUNED" and t.user_attrs["pruned"]["epoch"] == 0
            assert "infeasible (gflops" in t.user_attrs["pruned"]["reason"] and "train_s" not in m
        else:
            assert t.state.name == "COMPLETE" and m["epochs_trained"] == 2 and 0 <= m["score"] <= 1
    assert summary.complete + summary.pruned == 3
    assert {t.state.name for t in trials} == {"PRUNED", "COMPLETE"}, [t.user_attrs["metrics"]["gflops"] for t in trials]
