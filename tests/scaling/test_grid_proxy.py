"""Grid search scored by real short proxy training (``--fidelity proxy``), API and CLI.

A width-reduced yolov7-tiny (every width × 0.25) at a 64 px base, the three points of
``coefficient_grid(step=0.25)`` (members at 96, 64 and 64 px), one epoch on 16 synthetic images:
a few seconds per grid search on one CPU thread.
"""
from __future__ import annotations

import csv

import optuna
import pytest
import torch
from typer.testing import CliRunner

import nas.train
from cli import app
from nas.data import generate_synthetic
from nas.errors import NasError, ScalingError
from nas.presets import PRESETS
from nas.train import proxy_train
from scaling.compound import scale_member
from scaling.grid import coefficient_grid
from scaling.grid_search import STORAGE_NAME, STUDY_NAME, grid_search

NC = 3
BASE_IMG = 64
#: yolov7-tiny with every width × 0.25 (multiples of 8, at least 8)
BASE = PRESETS["yolov7-tiny"].map_fields(lambda _p, w: max(8, round(w * 0.25 / 8) * 8)).replace(nc=NC)
GRID = coefficient_grid(step=0.25)  # (1.25, 1, 1.25), (1.25, 1.25, 1), (2, 1, 1)
PROXY = dict(fidelity="proxy", proxy_epochs=1, proxy_subset=16)
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy-data")
    return str(generate_synthetic(root / "syn", n_train=16, n_val=8, img=96, seed=0, nc=NC, workers=0))


@pytest.fixture(scope="module")
def searched(tmp_path_factory, data):
    """(result, progress lines, out_dir) of one proxy grid search over GRID."""
    out = tmp_path_factory.mktemp("proxy-grid")
    lines: list[str] = []
    result = grid_search(BASE, BASE_IMG, out_dir=out, grid=GRID, data=data, progress=lines.append,
                         **PROXY)
    return result, lines, out


def _trials(out):
    storage = f"sqlite:///{(out / STORAGE_NAME).resolve()}"
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    return study, {t.user_attrs["key"]: t for t in study.get_trials() if t.state.name == "COMPLETE"}


def test_proxy_score_is_the_members_own_proxy_training_map(searched, data):
    result, lines, out = searched
    assert result.evaluated == 3 and not result.failed and result.proxy == "mAP@0.5:0.95"
    assert [p.coeffs for p in result.points] == GRID
    assert all(0.0 <= p.score <= 1.0 for p in result.points)
    assert result.best.score == max(p.score for p in result.points) > 0
    # the γ = 1.25 member is trained at its own input size, 96 px; a direct proxy_train call with
    # the same settings (1 epoch, 16 images, batch 16, seed 0, 1 thread) gives the same mAP exactly
    member, img = scale_member(BASE, GRID[0], 1.0, BASE_IMG)
    assert img == 96
    direct = proxy_train(member, data, epochs=1, img=img, batch=16, subset=16, seed=0, threads=1)
    assert result.points[0].score == direct.map50_95
    study, trials = _trials(out)
    assert trials["1.25,1,1.25"].user_attrs["img"] == 96
    assert trials["1.25,1,1.25"].user_attrs["map50"] == direct.map50
    assert study.user_attrs["settings"]["proxy_epochs"] == 1
    assert study.user_attrs["settings"]["proxy_subset"] == 16
    assert study.user_attrs["settings"]["batch"] == 16
    assert lines[0].startswith("  score: proxy training, 1 epoch(s) on 16 training images")
    assert len(lines) == 4 and all("mAP@0.5:0.95" in line for line in lines[1:])


def test_proxy_grid_search_resumes_and_refuses_other_proxy_settings(searched, data):
    first, _lines, out = searched
    again = grid_search(BASE, BASE_IMG, out_dir=out, grid=GRID, data=data, **PROXY)
    assert again.evaluated == 0 and again.points == first.points
    for change, message in [(dict(proxy_epochs=2), "proxy_epochs=1, not 2"),
                            (dict(proxy_subset=8), "proxy_subset=16, not 8"),
                            (dict(proxy_subset=None), "proxy_subset=16, not None"),
                            (dict(fidelity="zero-cost"), "fidelity='proxy', not 'zero-cost'")]:
        with pytest.raises(ScalingError, match=f"made with {message}; use another -o folder"):
            grid_search(BASE, BASE_IMG, out_dir=out, grid=GRID, data=data, **{**PROXY, **change})
    assert len(_trials(out)[1]) == 3  # nothing was added by the refused calls


def test_a_training_failure_fails_that_point_only(tmp_path, data, monkeypatch):
    real = nas.train.proxy_train

    def diverge_at_96(model, data_, **kw):
        if kw["img"] == 96:
            raise NasError("non-finite loss at epoch 1")
        return real(model, data_, **kw)

    monkeypatch.setattr(nas.train, "proxy_train", diverge_at_96)
    lines: list[str] = []
    result = grid_search(BASE, BASE_IMG, out_dir=tmp_path, grid=GRID, data=data,
                         progress=lines.append, **PROXY)
    assert result.evaluated == 2 and result.failed == ((GRID[0], "non-finite loss at epoch 1"),)
    assert [p.coeffs for p in result.points] == GRID[1:] and result.best.coeffs in GRID[1:]
    assert lines[1] == f"  [1/3] {GRID[0]}: failed (non-finite loss at epoch 1)"
    study = _trials(tmp_path)[0]
    (bad,) = [t for t in study.get_trials() if t.state.name == "FAIL"]
    assert bad.user_attrs["error"] == "non-finite loss at epoch 1"
    # as for zero-cost failures, a re-run evaluates the failed point again (and only it)
    monkeypatch.setattr(nas.train, "proxy_train", real)
    again = grid_search(BASE, BASE_IMG, out_dir=tmp_path, grid=GRID, data=data, **PROXY)
    assert again.evaluated == 1 and not again.failed and len(again.points) == 3


def test_cli_proxy_grid_search(tmp_path, data, searched):
    base = tmp_path / "tiny.genome.yaml"
    base.write_text(BASE.to_yaml())
    out = tmp_path / "out"
    args = ["scale", str(base), "--grid-search", "--fidelity", "proxy", "--proxy-epochs", "1",
            "--proxy-subset", "16", "--data", data, "--img", str(BASE_IMG), "--grid-step", "0.25",
            "--phi", "0", "--latency-runs", "0", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mAP@0.5:0.95" in result.output
    with (out / "grid.csv").open() as f:
        scores = [float(r["score"]) for r in csv.DictReader(f)]
    # the CLI passes epochs, subset, batch, seed and one thread through: the API's scores
    assert scores == pytest.approx([p.score for p in searched[0].points], rel=1e-5)


def test_cli_bad_proxy_epochs_is_one_error_line(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["scale", "yolov7-tiny", "--grid-search", "--fidelity", "proxy",
                                 "--proxy-epochs", "0", "-o", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == ["error: --proxy-epochs must be an integer >= 1, got 0"]
    assert "Traceback" not in result.output and not out.exists()


def test_zero_cost_score_does_not_depend_on_the_global_rng(data):
    """SynFlow reads the initial weights: they are seeded per point, so the order of the grid or
    a resume cannot change a score."""
    from scaling.grid_search import ScoreOptions, make_scorer

    scorer = make_scorer("zero-cost", ScoreOptions(data=data, seed=0))
    member, img = scale_member(BASE, GRID[0], 1, BASE_IMG)
    scores = []
    for history in (0, 1):
        torch.manual_seed(history)
        scores.append(scorer(member, img))
    assert scores[0] == scores[1] and scores[0] > 0
    assert make_scorer("zero-cost", ScoreOptions(data=data, seed=5))(member, img) != scores[0]
