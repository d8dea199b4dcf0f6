"""The study runner: exact counts, de-duplication, failures, resume after kill -9, workers."""
from __future__ import annotations

import collections
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.errors import SearchError
from nas.search import run_search
from nas.search._results import LOST_REASON, records
from search_spaces import get_space
from tests.search import _helpers
from tests.search._helpers import FourGenomeSpace, SmallSpace, config, load

ROOT = Path(__file__).resolve().parents[2]


def states(study):
    return collections.Counter(t.state.name for t in study.get_trials(deepcopy=False))


def test_duplicates_reuse_the_stored_result(tmp_path):
    _helpers.EVALUATIONS.clear()
    cfg = config(tmp_path, space="four", trials=9, fidelity="test-counting", objectives=("score", "gflops"),
                 sampler="random", seed=3)
    summary = run_search(cfg, FourGenomeSpace())
    study = load(cfg)
    complete = study.get_trials(states=(__import__("optuna").trial.TrialState.COMPLETE,))
    assert summary.complete == 9 and states(study) == {"COMPLETE": 9}
    by_hash = collections.defaultdict(list)
    for t in complete:
        by_hash[t.user_attrs["genome_hash"]].append(t)
    assert len(by_hash) <= 4
    # each architecture was evaluated exactly once ...
    assert sorted(_helpers.EVALUATIONS) == sorted(by_hash)
    for twins in by_hash.values():
        originals = [t for t in twins if "duplicate_of" not in t.user_attrs]
        assert len(originals) == 1
        for t in twins:  # ... and repeats carry its result and point at it
            if t is not originals[0]:
                assert t.user_attrs["duplicate_of"] == originals[0].number
                assert t.values == originals[0].values
                assert t.user_attrs["metrics"] == originals[0].user_attrs["metrics"]
    # pareto.csv lists each architecture once
    with open(cfg.study_dir / "pareto.csv", newline="") as f:
        hashes = [row["genome_hash"] for row in csv.DictReader(f)]
    assert len(hashes) == len(set(hashes)) >= 1 and all(h in by_hash for h in hashes)


def test_failed_trials_are_recorded_and_replaced_exact_count(tmp_path):
    _helpers.FlakyFidelity.calls = 0
    cfg = config(tmp_path, space="small", trials=3, fidelity="test-flaky", objectives=("score", "gflops"),
                 sampler="random")
    summary = run_search(cfg, SmallSpace())
    study = load(cfg)
    counts = states(study)
    assert counts["COMPLETE"] == 3 and summary.complete == 3 and counts["WAITING"] == counts["RUNNING"] == 0
    reasons = sorted(t.user_attrs["fail_reason"] for t in study.trials if t.state.name == "FAIL")
    assert "non-finite score (nan)" in reasons and "synthetic build failure" in reasons
    rows = {r["number"]: r for r in records(study.trials)}
    assert all(rows[t.number]["fail_reason"] for t in study.trials if t.state.name == "FAIL")
    csv = (cfg.study_dir / "trials.csv").read_text()
    assert "synthetic build failure" in csv


def test_resume_after_sigkill_retries_the_lost_trial(tmp_path):
    marker = tmp_path / "stalled"
    env = {**os.environ, "Y7NAS_TEST_STALL_AT": "1", "Y7NAS_TEST_MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.search._run_study", str(tmp_path), "test-stall", "4"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the worker never reached the stalled trial"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)  # mid-trial, no chance to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    cfg = config(tmp_path, space="small", fidelity="test-stall", trials=4, sampler="random", seed=1)
    study = load(cfg)
    before = states(study)
    assert before["COMPLETE"] == 1 and before["RUNNING"] == 1
    lost = next(t for t in study.trials if t.state.name == "RUNNING")
    done_before = {t.number for t in study.trials if t.state.name == "COMPLETE"}

    run_search(cfg, SmallSpace())  # same command again: resumes
    study = load(cfg)
    after = states(study)
    assert after["COMPLETE"] == 4 and after["FAIL"] == 1 and after["RUNNING"] == after["WAITING"] == 0
    failed = next(t for t in study.trials if t.number == lost.number)
    assert failed.state.name == "FAIL"
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == lost.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == lost.params
    # the trials completed before the kill are kept as they were
    assert {t.number for t in study.trials if t.state.name == "COMPLETE"} >= done_before
    rows = {r["number"]: r for r in records(study.trials)}
    assert rows[lost.number]["fail_reason"] == LOST_REASON and rows[retry[0].number]["retry_of"] == lost.number


def test_ctrl_c_marks_the_trial_failed_and_requeues_its_params(tmp_path, monkeypatch):
    marker = tmp_path / "interrupted"
    monkeypatch.setenv("Y7NAS_TEST_STALL_AT", "1")
    monkeypatch.setenv("Y7NAS_TEST_MARKER", str(marker))
    monkeypatch.setenv("Y7NAS_TEST_INTERRUPT", "1")
    _helpers.StallFidelity.calls = 0
    cfg = config(tmp_path, space="small", fidelity="test-stall", trials=3, sampler="random")
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, SmallSpace())
    study = load(cfg)
    interrupted = next(t for t in study.trials if t.state.name == "FAIL")
    assert interrupted.user_attrs["fail_reason"] == "interrupted"
    waiting = [t for t in study.trials if t.state.name == "WAITING" and t.params]
    assert len(waiting) == 1 and waiting[0].params == interrupted.params
    monkeypatch.delenv("Y7NAS_TEST_STALL_AT")
    run_search(cfg, SmallSpace())
    assert states(load(cfg))["COMPLETE"] == 3


def test_two_workers_share_one_study_without_duplicate_or_lost_trials(tmp_path, monkeypatch):
    (tmp_path / "barrier").mkdir()
    monkeypatch.setenv("Y7NAS_TEST_BARRIER", f"{tmp_path / 'barrier'}:2")  # both workers take a trial
    cfg = config(tmp_path, space="small", trials=6, workers=2, threads=2, sampler="random")
    summary = run_search(cfg, SmallSpace())
    study = load(cfg)
    counts = states(study)
    assert counts == {"COMPLETE": 6} and summary.complete == 6
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) == 6
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both processes ran trials
    assert len((cfg.study_dir / "trials.csv").read_text().splitlines()) == 7


def test_seed_makes_a_run_repeatable(tmp_path):
    params = []
    for run in ("a", "b"):
        cfg = config(tmp_path / run, space="small", trials=3, sampler="nsga2", seed=11)
        run_search(cfg, SmallSpace(), write=False)
        params.append([t.params for t in sorted(load(cfg).trials, key=lambda t: t.number)])
    assert params[0] == params[1] and len({str(p) for p in params[0]}) > 1


def test_resume_extends_and_refuses_mismatches(tmp_path):
    cfg = config(tmp_path, space="small", trials=2, sampler="random")
    run_search(cfg, SmallSpace())
    run_search(cfg, SmallSpace())  # already done: nothing new
    assert states(load(cfg)) == {"COMPLETE": 2}
    run_search(cfg.replace(trials=3), SmallSpace())
    assert states(load(cfg)) == {"COMPLETE": 3}
    with pytest.raises(SearchError, match="budget of 3 trials"):
        run_search(cfg.replace(trials=2), SmallSpace())
    with pytest.raises(SearchError, match=r"created with objectives=gflops,params, this run asks for "
                                          r"objectives=params,gflops"):
        run_search(cfg.replace(trials=3, objectives=("params", "gflops")), SmallSpace())
    with pytest.raises(SearchError, match="created with space='small'"):
        run_search(cfg.replace(trials=3, space="yolov7"), get_space("yolov7"))
    with pytest.raises(SearchError, match="created with space_signature="):
        run_search(cfg.replace(trials=3), SmallSpace(nc=3))  # same name, other dimensions
    with pytest.raises(SearchError, match="created with img=64"):
        run_search(cfg.replace(trials=3, img=96), SmallSpace())


def test_constraints_mark_infeasible_trials_and_keep_them(tmp_path):
    cfg = config(tmp_path, space="small", trials=5, max_gflops=0.008, sampler="nsga2", seed=2)
    run_search(cfg, SmallSpace())
    study = load(cfg)
    rows = records(study.trials)
    assert any(r["feasible"] for r in rows) and not all(r["feasible"] for r in rows)
    assert len(rows) == 5 and all(r["state"] == "COMPLETE" for r in rows)
    for t, r in zip(sorted(study.trials, key=lambda t: t.number), rows):
        assert r["feasible"] == (t.user_attrs["metrics"]["gflops"] <= 0.008)
        assert t.constraints == pytest.approx({"gflops": t.user_attrs["metrics"]["gflops"] - 0.008})
    with open(cfg.study_dir / "pareto.csv", newline="") as f:
        front = [row["number"] for row in csv.DictReader(f)]
    feasible = {str(r["number"]) for r in rows if r["feasible"]}
    assert set(front) <= feasible


def test_journal_storage_and_latency_objective(tmp_path):
    cfg = config(tmp_path, space="small", trials=2, storage=f"journal:{tmp_path / 'j.log'}",
                 objectives=("latency_ms", "params"), sampler="tpe")
    summary = run_search(cfg, SmallSpace())
    assert summary.complete == 2 and all(r["latency_ms"] > 0 for r in summary.front)


def test_unreachable_storage_is_one_line(tmp_path):
    cfg = config(tmp_path, storage="postgresql+psycopg://u:secret@127.0.0.1:1/nodb")
    with pytest.raises(SearchError) as info:
        run_search(cfg, get_space("yolov7-tiny"))
    message = str(info.value)
    assert message.startswith("cannot open storage postgresql+psycopg://u:***@127.0.0.1:1/nodb")
    assert "\n" not in message and "secret" not in message


def test_proxy_fidelity_is_refused_without_training(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nas.train" else real(name, *a))
    cfg = config(tmp_path, fidelity="proxy", objectives=("score", "gflops"))
    with pytest.raises(SearchError, match="fidelity 'proxy' needs proxy training"):
        run_search(cfg, get_space("yolov7-tiny"))
    assert not (cfg.study_dir / "study.db").exists()


def test_journal_storage_fails_and_retries_stale_trials_once(tmp_path):
    import optuna

    from nas.search import open_storage
    from nas.search._storage import HEARTBEAT_ATTR

    store = open_storage(f"journal:{tmp_path / 'j.log'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=store.storage, directions=["minimize"])
    alive, dead = study.ask(), study.ask()
    for t in (alive, dead):
        t.suggest_int("x", 0, 99)
    store.beat(study, alive._trial_id)
    study._storage.set_trial_system_attr(dead._trial_id, HEARTBEAT_ATTR, time.time() - 60)
    store.fail_stale(study)
    store.fail_stale(study)  # idempotent: the dead trial is replaced once
    by_state = collections.defaultdict(list)
    for t in study.get_trials(deepcopy=False):
        by_state[t.state.name].append(t)
    assert [t.number for t in by_state["FAIL"]] == [dead.number]
    assert [t.number for t in by_state["RUNNING"]] == [alive.number]
    (retry,) = by_state["WAITING"]
    assert retry.params == dead.params and retry.system_attrs["failed_trial"] == dead.number


def test_proxy_training_fidelity_end_to_end(tmp_path, tiny_data):
    pytest.importorskip("nas.train", reason="proxy training (nas.train) is not in this checkout")
    cfg = config(tmp_path, trials=1, fidelity="proxy", objectives=("score", "gflops"), data=tiny_data,
                 proxy_epochs=1, proxy_subset=8)
    summary = run_search(cfg, get_space("yolov7-tiny", nc=5))
    (row,) = summary.front
    assert row["score"] == row["map50_95"] >= 0 and row["train_s"] > 0
    trial = load(cfg).trials[0]
    assert set(trial.user_attrs["intermediate"]) == {"1"}  # one epoch reported


def test_initial_weights_do_not_depend_on_what_the_process_ran_before(tmp_path):
    """Zero-cost proxies and proxy training start from the built weights: seeded per trial, so a
    trial's metrics are the same after a resume, in another worker or after a pruned neighbour."""
    import torch

    from nas.search import Evaluator

    space = SmallSpace()
    cfg = config(tmp_path, space="small", fidelity="test-weights", objectives=("score", "gflops"), seed=3)
    genome = space.decode({"width": 0.25, "outputs": "conv", "p5.depth": 2, "activation": "relu"})
    evaluator = Evaluator(cfg.replace(space_signature=space.signature()), threads=1)
    scores = []
    for history in (0, 1):
        torch.manual_seed(history)  # a different global RNG state before each evaluation
        scores.append(evaluator.measure(genome)["score"])
    assert scores[0] == scores[1] != 0
    other = Evaluator(cfg.replace(seed=4, space_signature=space.signature()), threads=1).measure(genome)
    assert other["score"] != scores[0]  # the study seed does select the initialisation
