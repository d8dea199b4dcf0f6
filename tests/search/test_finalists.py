"""Finalists: the choice along the front (pure), and proxy training of a real tiny study."""
from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from cli import app
from nas.errors import NasError
from nas.search import run_search, spread_indices, train_finalists
from nas.search._results import genome_of, pareto_rows, records
from tests.search._helpers import SmallSpace, config, load

OBJECTIVES = ("score", "gflops")
runner = CliRunner()


# ------------------------------------------------------------------------------ the choice
@pytest.mark.parametrize("values,top,expected", [
    ([], 4, []),
    ([3.0], 4, [0]),
    ([3.0, 2.0, 1.0], 4, [0, 1, 2]),                         # fewer rows than top: all of them
    ([3.0, 2.0, 1.0, 0.0], 4, [0, 1, 2, 3]),                 # exactly top: all of them
    ([10, 9, 7, 5, 4, 1, 0], 1, [0]),                        # top=1: the best first objective
    ([10, 9, 7, 5, 4, 1, 0], 2, [0, 6]),                     # the two ends
    ([10, 9, 7, 5, 4, 1, 0], 3, [0, 3, 6]),                  # target 5 -> value 5
    ([10, 9, 7, 5, 4, 1, 0], 4, [0, 2, 4, 6]),               # targets 6.67 -> 7, 3.33 -> 4
    ([0, 1, 1, 1, 10], 3, [0, 1, 4]),                        # target 5: ties go to the earlier row
    ([0, 0.1, 0.2, 0.3, 10], 4, [0, 2, 3, 4]),               # 3.33 -> 0.3, then 6.67 -> 0.2 (0.3 taken)
    ([2.0, 2.0, 2.0, 2.0, 2.0], 3, [0, 1, 4]),               # equal values: still both ends
])
def test_spread_indices(values, top, expected):
    assert spread_indices(values, top) == expected


def test_spread_indices_refuses_top_below_one():
    with pytest.raises(ValueError, match="top must be >= 1"):
        spread_indices([1.0, 2.0], 0)


# ------------------------------------------------------------------------------ a real tiny study
@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_data):
    """A finished 6-trial zero-cost search (score vs GFLOPs, 64 px) of the small test space."""
    from nas.data import load_data_config

    tmp = tmp_path_factory.mktemp("finalists")
    cfg = config(tmp, space="small", trials=6, fidelity="zero-cost", objectives=OBJECTIVES, data=tiny_data,
                 zero_cost_batch=4, sampler="random", seed=0)
    run_search(cfg, SmallSpace(nc=load_data_config(tiny_data).nc))
    return cfg


def test_finalists_are_front_members_trained_deterministically(study, tiny_data):
    from nas.train import proxy_train

    lines = []
    result = train_finalists("t", study.results_dir, top=2, epochs=1, subset=8, img=64, threads=1,
                             progress=lines.append)
    trials = {t.number: t for t in load(study).trials}
    front = pareto_rows(records(trials.values()), OBJECTIVES)
    numbers = [r["number"] for r in front]
    chosen = [r["number"] for r in result.rows]
    assert chosen == [numbers[i] for i in spread_indices([r["score"] for r in front], 2)]
    assert len(chosen) == min(2, len(front)) and chosen[0] == numbers[0] and chosen[-1] == numbers[-1]
    assert result.front_size == len(front) and result.map_objectives == ("map50_95", "gflops")
    assert result.settings == {"top": 2, "epochs": 1, "img": 64, "subset": 8, "data": tiny_data, "seed": 0,
                               "threads": 1, "device": "cpu", "init_from": None, "lr": None,
                               "choice": {"by": "front"}, "baseline": None, "baseline_spec": None}
    by_number = {r["number"]: r for r in front}
    for row in result.rows:
        assert row["fail_reason"] == "" and row["train_s"] > 0
        assert 0.0 <= row["map50"] <= 1.0 and 0.0 <= row["map50_95"] <= 1.0
        assert row["genome_hash"] == by_number[row["number"]]["genome_hash"]
        assert row["score"] == by_number[row["number"]]["score"]
    assert any(r["on_map_front"] for r in result.rows)
    assert len(lines) == 2 * len(chosen) and lines[-1].startswith(f"finalist {len(chosen)}/{len(chosen)}: ")

    # the same settings, trained directly: the same mAP (proxy training is deterministic)
    direct = proxy_train(genome_of(trials[chosen[-1]]), tiny_data, epochs=1, img=64, subset=8, seed=0, threads=1)
    assert (direct.map50, direct.map50_95) == (result.rows[-1]["map50"], result.rows[-1]["map50_95"])

    with open(result.csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    assert result.csv_path == study.study_dir / "finalists.csv"
    assert [int(r["number"]) for r in table] == chosen
    assert list(table[0])[:6] == ["role", "name", "number", "genome_hash", "score", "gflops"]
    assert {r["role"] for r in table} == {"searched"} and all(r["init"] == "scratch" for r in table)
    saved = json.loads(result.json_path.read_text())
    assert saved["settings"] == result.settings and [r["number"] for r in saved["rows"]] == chosen


def test_failed_finalist_is_recorded_and_others_go_on(study, monkeypatch):
    import nas.train
    from nas.train import ProxyResult

    calls = []

    def fake(genome, data, **kw):
        calls.append(kw)
        if len(calls) == 1:
            raise NasError("non-finite loss at epoch 1")
        return ProxyResult(map50=0.5, map50_95=0.25, epoch_maps=(0.25,), seconds=1.5, pruned=False)

    monkeypatch.setattr(nas.train, "proxy_train", fake)
    result = train_finalists("t", study.results_dir, top=3)
    n = len(result.rows)
    assert n == min(3, result.front_size) and len(calls) == n
    # defaults: the study's img, data and seed; 5 epochs on 256 images, one thread
    # (validated once, after the last epoch)
    assert calls[0] == dict(epochs=5, img=64, subset=256, seed=0, threads=1, device="cpu", val_interval=5)
    first, *rest = result.rows
    assert first["fail_reason"] == "non-finite loss at epoch 1" and first["map50_95"] is None
    assert not first["on_map_front"]
    assert all(r["fail_reason"] == "" and r["map50_95"] == 0.25 for r in rest)
    # equal mAP: the front on (mAP, GFLOPs) is the cheapest of the trained ones
    if rest:
        cheapest = min(r["gflops"] for r in rest)
        assert [r["on_map_front"] for r in rest] == [r["gflops"] == cheapest for r in rest]
    (row,) = [r for r in csv.DictReader(open(result.csv_path, newline="")) if r["fail_reason"]]
    assert row["map50"] == "" and row["on_map_front"] == "False"


@pytest.mark.parametrize("error", [
    __import__("torch").OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    MemoryError(),
])
def test_a_finalist_out_of_memory_fails_alone(study, monkeypatch, error):
    import nas.train
    from nas.train import ProxyResult

    calls = []

    def fake(genome, data, **kw):
        calls.append(kw)
        if len(calls) == 1:
            raise error
        return ProxyResult(map50=0.5, map50_95=0.25, epoch_maps=(0.25,), seconds=1.5, pruned=False)

    monkeypatch.setattr(nas.train, "proxy_train", fake)
    result = train_finalists("t", study.results_dir, top=3)
    first, *rest = result.rows
    assert first["fail_reason"].startswith("out of memory") and first["map50_95"] is None
    assert len(calls) == len(result.rows) and all(r["map50_95"] == 0.25 for r in rest)


def test_a_finalist_bug_is_not_swallowed(study, monkeypatch):
    import nas.train

    def fake(genome, data, **kw):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(nas.train, "proxy_train", fake)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train_finalists("t", study.results_dir, top=1)


# ------------------------------------------------------------------------------ CLI
def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("args,message", [
    (("--top", 0), "--top must be >= 1, got 0"),
    (("--epochs", 0), "--epochs must be >= 1, got 0"),
    (("--img", 100), "--img must be a positive multiple of 32"),
    (("--study", "nope"), "no study database at"),
])
def test_cli_bad_input_is_one_line(study, args, message):
    options = {"--study": "t", "--results-dir": study.results_dir, **dict(zip(args[::2], args[1::2]))}
    result = run("finalists", *[x for kv in options.items() for x in kv])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1


def test_cli_study_without_complete_trial(tmp_path):
    from nas.search import open_storage, open_study

    cfg = config(tmp_path, study="empty")
    open_study(cfg, open_storage(cfg.storage_url), create=True)  # tickets queued, nothing run
    result = run("finalists", "--study", "empty", "--results-dir", cfg.results_dir)
    assert result.exit_code == 1, result.output
    assert "study 'empty' has no COMPLETE feasible trial yet" in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1


def test_cli_prints_the_table_and_the_file(study):
    result = run("finalists", "--study", "t", "--results-dir", study.results_dir, "--top", 1, "--epochs", 1,
                 "--subset", 8, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "finalist 1/1: trial" in result.output and "mAP" in result.output
    assert "finalists.csv" in result.output and (study.study_dir / "finalists.csv").is_file()
