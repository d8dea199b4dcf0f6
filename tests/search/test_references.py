"""The presets on a one-shot study's chart: the supernet scores the space's preset (labelled as a
one-shot score), and a preset that cannot be placed is one line saying why, never silently
dropped."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import app
from nas.presets import PRESETS
from nas.search import SearchConfig
from nas.search._config import REFERENCES_ATTR
from nas.search._plot import pareto_plot_data
from nas.search._runner import _oneshot_preset, reference_points
from search_spaces import get_space

NC = 3
CALIB = 8
LABEL = "yolov7-tiny (relu, one-shot score)"   # the preset is LeakyReLU; the supernet is ReLU


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from nas.data import generate_synthetic

    out = tmp_path_factory.mktemp("synth")
    return str(generate_synthetic(out, n_train=16, n_val=8, img=64, seed=0, nc=NC, workers=0))


@pytest.fixture(scope="module")
def supernet_file(tiny_data, tmp_path_factory):
    from nas.supernet import SupernetConfig, train_supernet

    path = tmp_path_factory.mktemp("sn") / "tiny.pt"
    train_supernet(get_space("yolov7-tiny", nc=NC), tiny_data, path,
                   SupernetConfig(epochs=1, img=64, batch=8, random_subnets=0, calib_images=CALIB, subset=8,
                                  activation="relu"))
    return path


def _config(tmp_path, supernet, data, **kw) -> SearchConfig:
    values = dict(study="os", space="yolov7-tiny", trials=3, nc=NC, fidelity="oneshot", supernet=str(supernet), img=64,
                  data=data, objectives=("params", "score"), oneshot_calib=CALIB, threads=1,
                  results_dir=tmp_path / "results")
    values.update(kw)
    return SearchConfig(**values)


def _study(params_m: tuple[float, ...]):
    """An in-memory one-shot study with COMPLETE trials of these sizes (millions of params)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"])
    for i, p in enumerate(params_m):
        metrics = {"params": int(p * 1e6), "gflops": 0.02 * p, "score": 0.001 * (i + 1)}
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE,
                                                  values=[metrics["params"], metrics["score"]],
                                                  user_attrs={"metrics": metrics}))
    return study


def test_a_one_shot_study_places_the_space_preset_with_its_supernet_score(supernet_file, tiny_data, tmp_path,
                                                                          monkeypatch):
    from nas.supernet import OneShotScorer, load_supernet

    cfg = _config(tmp_path, supernet_file, tiny_data)
    study = _study((2.0, 4.0, 9.0))
    notes: list[str] = []
    refs = reference_points(cfg, study, note=notes.append)
    assert list(refs) == [LABEL]
    metrics = refs[LABEL]
    # the score is the supernet's: the preset (with the supernet's activation) scored as a trial is
    space = get_space("yolov7-tiny", nc=NC)
    genome = PRESETS["yolov7-tiny"].replace(nc=NC, activation="relu")
    expected = OneShotScorer(load_supernet(supernet_file, space).eval(), tiny_data, 64,
                             calib_images=CALIB).score(genome)
    assert metrics["score"] == pytest.approx(expected.map50_95, abs=1e-9)
    assert metrics["map50_95"] == metrics["score"] and metrics["oneshot_s"] > 0
    assert 5.5e6 < metrics["params"] < 6.5e6
    # the two big presets are an order of magnitude off these trials: one line each, said so
    assert len(notes) == 2 and all(n.startswith("note: preset yolov7") for n in notes), notes
    assert "yolov7 not on the chart" in notes[0] and "yolov7x not on the chart" in notes[1]
    assert study.user_attrs[REFERENCES_ATTR] == refs
    # the chart labels it as a one-shot score
    rows = [{"number": t.number, "state": "COMPLETE", **t.user_attrs["metrics"]} for t in study.trials]
    data = pareto_plot_data(rows, ["params", "score"], {LABEL: {**metrics, "score": 0.002}})
    assert [r.name for r in data.references] == [LABEL]
    # cached: a second pass (e.g. `y7nas pareto`) does not score it again
    monkeypatch.setattr("nas.search._runner.Evaluator", None)
    notes.clear()
    assert reference_points(cfg, study, note=notes.append) == refs
    assert all("yolov7-tiny" not in n for n in notes)


def test_a_preset_that_cannot_be_scored_is_one_line_not_dropped_silently(supernet_file, tiny_data, tmp_path):
    # the supernet file is gone (y7nas pareto long after the search)
    cfg = _config(tmp_path, tmp_path / "missing.pt", tiny_data, reference_presets=("yolov7-tiny",))
    notes: list[str] = []
    study = _study((2.0, 4.0, 9.0))
    assert reference_points(cfg, study, note=notes.append) == {}
    assert len(notes) == 1 and notes[0].startswith("warning: preset yolov7-tiny not placed: ")
    assert "supernet file not found" in notes[0] and "\n" not in notes[0]
    assert REFERENCES_ATTR not in study.user_attrs            # not cached: a later pass retries it
    # yolov7 at the size of these trials, but not an architecture of the yolov7-tiny space
    cfg = _config(tmp_path, supernet_file, tiny_data, reference_presets=("yolov7",))
    notes.clear()
    assert reference_points(cfg, _study((20.0, 30.0, 50.0)), note=notes.append) == {}
    assert len(notes) == 1 and notes[0].startswith("warning: preset yolov7 not placed: "), notes


def test_the_label_names_the_activation_only_when_the_supernet_swapped_it():
    leaky = get_space("yolov7-tiny", nc=NC).fixed(activation="leakyrelu")
    preset = PRESETS["yolov7-tiny"].replace(nc=NC)
    assert _oneshot_preset("yolov7-tiny", preset, leaky) == (preset, "yolov7-tiny (one-shot score)")
    genome, label = _oneshot_preset("yolov7-tiny", preset, get_space("yolov7-tiny", nc=NC).fixed(activation="silu"))
    assert genome.activation == "silu" and label == "yolov7-tiny (silu, one-shot score)"
    with pytest.raises(Exception, match="scores activation 'relu' only"):   # SiLU-only SPP
        _oneshot_preset("yolov7", PRESETS["yolov7"].replace(nc=NC),
                        get_space("yolov7", nc=NC).fixed(activation="relu"))


def test_every_preset_of_a_one_shot_search_is_placed_or_explained(supernet_file, tiny_data, tmp_path):
    """A real one-shot search: no preset vanishes from the chart without a line saying why."""
    import optuna

    results = tmp_path / "results"
    result = CliRunner().invoke(app, [str(a) for a in (
        "search", "--space", "yolov7-tiny", "--trials", 3, "--study", "os", "--data", tiny_data,
        "--fidelity", "oneshot", "--supernet", supernet_file, "--oneshot-calib", CALIB, "--objectives",
        "score,params", "--threads", 1, "--results-dir", results)])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="os", storage=f"sqlite:///{results / 'os' / 'study.db'}")
    refs = study.user_attrs.get(REFERENCES_ATTR) or {}
    lines = [line for line in result.stderr.splitlines() if line.startswith(("note: preset", "warning: preset"))]
    for name in ("yolov7-tiny", "yolov7", "yolov7x"):
        placed = [key for key in refs if key.startswith(f"{name} (") and key.endswith("one-shot score)")]
        said = [line for line in lines if line.split()[2] == name]
        assert len(placed) + len(said) == 1, (name, refs, lines)
    assert all(not key.endswith(("yolov7", "yolov7x", "yolov7-tiny")) for key in refs)   # all labelled
    assert (results / "os" / "pareto.png").is_file()
    print(refs.keys(), lines)
