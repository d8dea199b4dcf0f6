"""`y7nas run` refuses a changed setting whenever *any* started stage depends on it, for every
fidelity: a proxy or zero-cost run has no supernet stage, yet its search was measured at its image
size, on its data, with its seed. Crafted run.json states (cheap), plus one real zero-cost run
stopped after its search."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.pipeline import STAGES, RunConfig, RunError, RunHooks, RunState, run_pipeline

FIDELITIES = ("oneshot", "proxy", "zero-cost")


def _cfg(tmp_path: Path, fidelity: str, **changed) -> RunConfig:
    values = dict(study="r", space="yolov7-tiny-cpu", data="data.yaml", results_dir=tmp_path, img=64,
                  fidelity=fidelity, max_gflops=0.06)
    values.update(changed)
    return RunConfig(**values)


def _depends(cfg: RunConfig):
    return [(s.name, s.depends_of(cfg)) for s in STAGES]


def _open(cfg: RunConfig) -> RunState:
    return RunState.open(cfg.study_dir / "run.json", cfg.settings(), _depends(cfg))


def _state(cfg: RunConfig, done: tuple[str, ...] = (), started: tuple[str, ...] = ()) -> RunState:
    """A run.json of ``cfg`` with stages ``done`` finished and ``started`` started."""
    cfg.study_dir.mkdir(parents=True, exist_ok=True)
    state = _open(cfg)
    state.save()
    for name in done:
        state.finish(name, 1.0, {})
    for name in started:
        state.start(name)
    return state


def _ran(fidelity: str) -> tuple[str, ...]:
    return ("supernet", "search") if fidelity == "oneshot" else ("search",)


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("option,value", [("img", 96), ("data", "other.yaml"), ("seed", 1)])
def test_a_finished_search_pins_img_data_and_seed(tmp_path, fidelity, option, value):
    cfg = _cfg(tmp_path, fidelity)
    _state(cfg, done=_ran(fidelity))
    before = (cfg.study_dir / "run.json").read_bytes()
    first = "supernet" if fidelity == "oneshot" else "search"   # the first started stage that uses it
    with pytest.raises(RunError) as info:
        _open(_cfg(tmp_path, fidelity, **{option: value}))
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert f"already finished stage {first} with {option}=" in message
    assert f"asks for {option}={json.dumps(value)}" in message
    assert (cfg.study_dir / "run.json").read_bytes() == before


@pytest.mark.parametrize("fidelity", FIDELITIES)
@pytest.mark.parametrize("option,value", [("img", 96), ("data", "other.yaml"), ("seed", 1)])
def test_a_started_search_pins_img_data_and_seed(tmp_path, fidelity, option, value):
    """Killed in the search (its storage already holds trials measured with the old settings)."""
    cfg = _cfg(tmp_path, fidelity)
    _state(cfg, done=_ran(fidelity)[:-1], started=("search",))
    expected = "finished stage supernet" if fidelity == "oneshot" else "started stage search"
    with pytest.raises(RunError, match=f"already {expected} with {option}="):
        _open(_cfg(tmp_path, fidelity, **{option: value}))


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_the_same_settings_are_accepted_and_unstarted_stages_stay_free(tmp_path, fidelity):
    cfg = _cfg(tmp_path, fidelity)
    _state(cfg, done=_ran(fidelity))
    state = _open(cfg)                                           # the same command, same device
    assert all(state.done(name) for name in _ran(fidelity))
    state = _open(_cfg(tmp_path, fidelity, family_targets=(1.0, 3.0), finalist_epochs=9))
    assert state.settings["finalist_epochs"] == 9                # only unstarted stages use them


def test_nothing_started_pins_nothing(tmp_path):
    cfg = _cfg(tmp_path, "proxy")
    _state(cfg)
    assert _open(_cfg(tmp_path, "proxy", img=96, data="other.yaml", seed=3)).settings["img"] == 96


@pytest.mark.parametrize("fidelity", FIDELITIES)
def test_finalists_and_family_depend_on_what_they_train_and_measure(tmp_path, fidelity):
    cfg = _cfg(tmp_path, fidelity)
    stages = {s.name: set(s.depends_of(cfg)) for s in STAGES}
    assert {"space", "data", "img", "seed", "fidelity"} <= stages["finalists"]
    assert {"img", "latency_device", "latency_backend", "latency_threads", "latency_table", "latency_runs",
            "max_latency", "max_gflops", "max_params", "family_targets"} <= stages["family"]
    assert "latency_device" not in stages["finalists"] | stages["supernet"]
    assert not any("device" in keys for keys in stages.values())   # where it trains: no stage's result
    with_table = {s.name: set(s.depends_of(_cfg(tmp_path, fidelity, latency_table="t.json"))) for s in STAGES}
    assert "latency_device" not in with_table["family"] | with_table["search"]   # the table's device is its own


def test_the_latency_device_is_pinned_only_by_stages_that_time_latency(tmp_path):
    # a GFLOPs-only search does not time latency: a new device is free until the family times it
    # (--device alone moves the latency device too: it defaults to --device)
    cfg = _cfg(tmp_path, "zero-cost", objectives=("score", "gflops"))
    _state(cfg, done=("search", "finalists"))
    assert _open(_cfg(tmp_path, "zero-cost", objectives=("score", "gflops"), device="cuda")).done("finalists")
    _state(cfg, done=("search", "finalists"), started=("family",))
    with pytest.raises(RunError, match="already started stage family with latency_device=\"cpu\""):
        _open(_cfg(tmp_path, "zero-cost", objectives=("score", "gflops"), device="cuda"))
    # a search that timed latency pins it from the start
    timed = _cfg(tmp_path / "t", "proxy")
    _state(timed, started=("search",))
    with pytest.raises(RunError, match="already started stage search with latency_device=\"cpu\""):
        _open(_cfg(tmp_path / "t", "proxy", device="cuda:0"))
    assert _open(timed).settings["latency_device"] == "cpu"


def test_a_run_json_without_the_device_is_continued(tmp_path):
    """run.json files written before the device was recorded: the device is taken as given."""
    cfg = _cfg(tmp_path, "proxy")
    state = _state(cfg, done=("search",))
    del state.settings["device"]
    state.save()
    state = _open(cfg)
    assert state.done("search") and state.settings["device"] == "cpu"
    with pytest.raises(RunError, match="stage search with img="):
        _open(_cfg(tmp_path, "proxy", img=96))


# ------------------------------------------------------------------------------ a real run
class _Stop(Exception):
    pass


def _stop_before(stage: str, lines: list | None = None):
    def line(text: str) -> None:
        if lines is not None:
            lines.append(text)
        if text.endswith(f"] {stage} ..."):
            raise _Stop(text)
    return RunHooks(line=line)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """16 train / 8 val synthetic images at 64 px, 3 classes."""
    from nas.data import generate_synthetic

    out = tmp_path_factory.mktemp("synth")
    return str(generate_synthetic(out, n_train=16, n_val=8, img=64, seed=0, nc=3, workers=0))


def test_a_zero_cost_run_refuses_a_new_img_data_or_seed_after_its_search(tiny_data, tmp_path):
    """The bug: a zero-cost run's img/data/seed first belong to the supernet stage, which never
    starts, so they were free to change after the search had finished."""
    import shutil

    from typer.testing import CliRunner

    import cli

    args = dict(study="z", space="yolov7-tiny-cpu", data=tiny_data, results_dir=tmp_path / "results", img=64,
                fidelity="zero-cost", objectives=("score", "gflops"), max_gflops=0.06, trials=2, threads=1)
    with pytest.raises(_Stop):
        run_pipeline(RunConfig(**args), _stop_before("finalists"))
    run_json = tmp_path / "results" / "z" / "run.json"
    state = json.loads(run_json.read_text())
    assert state["stages"]["search"]["done"] and "finalists" not in state["stages"]
    before = run_json.read_bytes()
    other = tmp_path / "other"
    shutil.copytree(Path(tiny_data).parent, other)
    other_data = str(other / Path(tiny_data).name)
    for key, value in (("img", 96), ("data", other_data), ("seed", 1)):
        with pytest.raises(RunError, match=f"already finished stage search with {key}="):
            run_pipeline(RunConfig(**{**args, key: value}))
    assert run_json.read_bytes() == before
    cli_args = ["run", "--study", "z", "--space", "yolov7-tiny-cpu", "--data", tiny_data,
                "--results-dir", str(tmp_path / "results"), "--img", "96", "--fidelity", "zero-cost",
                "--objectives", "score,gflops", "--max-gflops", "0.06", "--trials", "2", "--threads", "1"]
    result = CliRunner().invoke(cli.app, cli_args)
    assert result.exit_code == 1
    err = result.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "stage search with img=64" in err and "img=96" in err
    assert run_json.read_bytes() == before
    # the same settings continue where the run stopped (finalists next)
    lines: list[str] = []
    with pytest.raises(_Stop):
        run_pipeline(RunConfig(**args), _stop_before("finalists", lines))
    assert lines[0].startswith("[1/4] search: done earlier")


def test_a_supernet_trained_on_the_band_pins_the_budget_and_one_on_the_space_does_not(tmp_path):
    band = _cfg(tmp_path / "b", "oneshot", random_from="band")
    _state(band, done=("supernet",))
    with pytest.raises(RunError, match="already finished stage supernet with max_gflops=0.06"):
        _open(_cfg(tmp_path / "b", "oneshot", random_from="band", max_gflops=0.05))
    with pytest.raises(RunError, match="already finished stage supernet with band="):
        _open(_cfg(tmp_path / "b", "oneshot", random_from="band", band=(0.9, 1.0)))
    space = _cfg(tmp_path / "s", "oneshot")                          # --random-from space (default)
    _state(space, done=("supernet",))
    assert _open(_cfg(tmp_path / "s", "oneshot", max_gflops=0.05)).done("supernet")
    latency = {s.name: set(s.depends_of(_cfg(tmp_path, "oneshot", max_gflops=None, max_latency=5.0,
                                             random_from="band"))) for s in STAGES}
    assert {"max_latency", "latency_backend", "latency_device"} <= latency["supernet"]   # the pool was timed
