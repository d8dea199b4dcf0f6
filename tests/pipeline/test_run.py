"""`y7nas run`: the stages end to end (one-shot, tiny sizes), resume after kill -9 without redoing a
finished stage, refusal of settings that finished work depends on, and the pure pieces."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.pipeline import RunConfig, RunError, RunState, best_finalist, family_targets

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BUDGET = 0.03       # GFLOPs at 64 px: about one in seven architectures of the space lies in its band


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import cli; cli.app()", *args]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """16 train / 8 val synthetic images at 64 px, 3 classes."""
    from nas.data import generate_synthetic

    out = tmp_path_factory.mktemp("synth")
    return str(generate_synthetic(out, n_train=16, n_val=8, img=64, seed=0, nc=3, workers=0))


def _run_args(data: str, results: Path, **changed: str) -> list[str]:
    options = {"--space": "yolov7-tiny-cpu", "--data": data, "--study": "r", "--results-dir": str(results),
               "--img": "64", "--activation": "relu", "--supernet-epochs": "2", "--trials": "8",
               "--finalists": "2", "--finalist-epochs": "1", "--max-gflops": str(BUDGET),
               "--family-targets": "1,2", "--threads": "1", "--random-from": "band"}   # the pool path
    options.update(changed)
    return ["run", *[x for pair in options.items() for x in pair]]


def _state(results: Path) -> dict:
    try:
        return json.loads((results / "r" / "run.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    """A one-shot run killed (-9) in its search stage, then re-run to the end: (results dir,
    the re-run's stdout, the supernet file's bytes at the kill)."""
    results = tmp_path_factory.mktemp("runs")
    args = _run_args(tiny_data, results)
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline = time.time() + 400
    db = results / "r" / "study.db"
    while time.time() < deadline and proc.poll() is None:
        if _state(results).get("stages", {}).get("search", {}).get("started") and db.exists():
            time.sleep(1.0)   # into the trials
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = _state(results)["stages"]
    assert killed["supernet"]["done"] and not killed["search"].get("done")
    supernet_bytes = (results / "r" / "supernet.pt").read_bytes()
    rerun = subprocess.run(_cli(*args, "--json"), capture_output=True, env=ENV, timeout=900)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    return results, rerun, supernet_bytes


def test_run_resumes_after_kill_9_and_finishes_every_stage(finished_run):
    results, rerun, supernet_bytes = finished_run
    study = results / "r"
    log = rerun.stderr.decode()
    assert "[1/5] supernet: done earlier" in log          # not retrained after the kill
    assert (study / "supernet.pt").read_bytes() == supernet_bytes
    from nas.supernet import read_checkpoint

    pool = read_checkpoint(study / "supernet.pt")["meta"]["random_pool"]   # random sub-networks from the band
    assert pool is not None and 2 <= pool["size"] <= 16
    stages = json.loads(rerun.stdout.decode())["stages"]
    assert list(stages) == ["supernet", "search", "finalists", "family", "report"]
    assert all(info["done"] for info in stages.values())
    with open(study / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    evaluated = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    import optuna

    budget = optuna.load_study(study_name="r", storage=f"sqlite:///{study / 'study.db'}").user_attrs["y7nas:budget"]
    extra = budget - 8                      # the targeted phase's band draws, queued as extra trials
    assert len(evaluated) == budget and 0 <= extra <= 2     # the exact budget, across the kill
    in_band = [t for t in evaluated if t["gflops"] and 0.85 * BUDGET <= float(t["gflops"]) <= BUDGET]
    assert len(in_band) >= extra
    assert ("architecture(s) queued as extra trials" in log) == (len(in_band) - extra < 2)  # short: filled
    assert all(t["state"] == "FAIL" for t in trials if t not in evaluated)  # the trial killed mid-way
    finalists = json.loads((study / "finalists.json").read_text())
    assert finalists["settings"]["init_from"] == str(study / "supernet.pt")
    assert finalists["settings"]["choice"]["by"] == "band"
    rows = {r["role"]: [x for x in finalists["rows"] if x["role"] == r["role"]] for r in finalists["rows"]}
    assert len(rows["searched"]) == 2 and len(rows["baseline"]) == 1
    hand = rows["baseline"][0]                      # the space's preset, shrunk to the budget
    assert hand["name"].startswith("yolov7-tiny") and "phi=" in hand["name"] and hand["gflops"] <= BUDGET
    assert finalists["rows"][-1] == hand and hand["map50_95"] is not None
    base = stages["family"]["outputs"]["base_trial"]
    best = max((r for r in rows["searched"] if r["map50_95"] is not None), key=lambda r: r["map50_95"])
    assert base == best["number"] and best["gflops"] <= BUDGET
    assert (study / "models" / f"trial_{base}.genome.yaml").is_file()   # a pick off the front too
    side = stages["finalists"]["outputs"]["side_by_side"]                 # --json: side by side
    assert [r["role"] for r in side] == ["searched", "searched", "baseline"]
    assert side[-1]["name"] == hand["name"] and side[-1]["map50_95"] == hand["map50_95"]
    assert stages["finalists"]["outputs"]["verdict"].startswith("the best searched finalist (trial ")
    with open(study / "family" / "family.csv", newline="") as f:
        family = list(csv.DictReader(f))
    assert float(family[0]["phi"]) == 0 and len(family) >= 2
    gflops = [float(m["gflops"]) for m in family]
    assert gflops == sorted(gflops) and gflops[0] == pytest.approx(best["gflops"], rel=0.05)
    assert Path(stages["report"]["outputs"]["report"]).is_file()


def test_the_run_hands_over_the_chosen_model_with_its_trained_weights(finished_run, tiny_data):
    """chosen.yaml is the best finalist's YAML; chosen.pt its fine-tuned weights, which the YAML's
    model loads strictly and which reproduce the finalist's recorded mAP; the hand design keeps its
    weights too; a re-run with --onnx only adds chosen.onnx; `train --init-from chosen.pt` starts there."""
    import torch

    import cli
    from nas.build import build_model
    from nas.data import load_data_config, scan_split
    from nas.evaluate import evaluate, load_weights
    from nas.sources import resolve_model

    results, rerun, _ = finished_run
    study = results / "r"
    stages = json.loads(rerun.stdout.decode())["stages"]
    chosen = stages["family"]["outputs"]["chosen"]
    assert set(chosen) == {"yaml", "genome", "weights"}
    rows = json.loads((study / "finalists.json").read_text())["rows"]
    best = next(r for r in rows if r["number"] == stages["family"]["outputs"]["base_trial"])
    assert best["weights"] == f"models/trial_{best['number']}.pt"
    assert (study / "chosen.yaml").read_bytes() == (study / "models" / f"trial_{best['number']}.yaml").read_bytes()
    assert (study / "chosen.pt").read_bytes() == (study / best["weights"]).read_bytes()
    state = torch.load(study / "chosen.pt", map_location="cpu", weights_only=True)
    assert all(v.device.type == "cpu" for v in state.values())
    net = load_weights(build_model(resolve_model(str(study / "chosen.yaml")).cfg), study / "chosen.pt")
    val = scan_split(load_data_config(tiny_data), "val")
    with torch.no_grad():
        again = evaluate(net.eval(), val, img=64, batch=16)
    assert again.map50_95 == pytest.approx(best["map50_95"], abs=1e-6)
    hand = next(r for r in rows if r["role"] == "baseline")
    assert hand["weights"] == "models/hand_design.pt"
    load_weights(build_model(resolve_model(str(study / "models" / "hand_design.yaml")).cfg),
                 study / hand["weights"])
    code, out, err = _in_process([*_run_args(tiny_data, results)[0:], "--onnx"])
    assert code == 0, err[-2000:]
    assert (study / "chosen.onnx").is_file() and "chosen.onnx" in out + err
    assert "chosen model: chosen.yaml + chosen.pt + chosen.onnx" in " ".join(out.split())
    start = cli._inherited(study / "chosen.pt", resolve_model(str(study / "chosen.yaml")), "cpu")
    assert all(torch.equal(start.state_dict()[k], v) for k, v in state.items())


def _in_process(args: list[str]):
    """The CLI in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.app, args)
    return result.exit_code, result.stdout, result.stderr


def test_rerun_of_a_finished_run_redoes_nothing(finished_run, tiny_data):
    results, _, _ = finished_run
    before = {p: p.stat().st_mtime_ns for p in (results / "r").rglob("*.csv")}
    code, stdout, stderr = _in_process(_run_args(tiny_data, results))
    assert code == 0, stderr[-2000:]
    assert stdout.count("done earlier") == 5
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_the_report_reproduces_the_run_with_one_command(finished_run):
    """The report's first command is the `y7nas run` line of run.json; running it is the same run
    (every stage done earlier, nothing refused)."""
    import html
    import re
    import shlex

    results, _, _ = finished_run
    page = (results / "r" / "report.html").read_text()
    command = html.unescape(re.search(r"y7nas run [^<\n]*", page).group(0))
    args = shlex.split(command)[1:]
    assert args[:3] == ["run", "--study", "r"] and "--random-subnets" in args and "--max-gflops" in args
    code, stdout, stderr = _in_process(args)
    assert code == 0, stderr[-2000:]
    assert stdout.count("done earlier") == 5


@pytest.mark.parametrize("option,value,key", [("--trials", "9", "trials"),
                                              ("--supernet-epochs", "3", "supernet_epochs"),
                                              ("--family-targets", "1,3", "family_targets")])
def test_changed_setting_of_a_finished_stage_is_refused(finished_run, tiny_data, option, value, key):
    results, _, _ = finished_run
    state = (results / "r" / "run.json").read_bytes()
    code, _, err = _in_process(_run_args(tiny_data, results, **{option: value}))
    assert code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error:") and f"{key}=" in err and "already finished stage" in err
    assert (results / "r" / "run.json").read_bytes() == state


# ------------------------------------------------------------------------------ pure pieces
def test_state_accepts_a_change_only_later_unstarted_stages_depend_on(tmp_path):
    depends = [("search", ("trials",)), ("family", ("family_targets",))]
    path = tmp_path / "run.json"
    state = RunState.open(path, {"trials": 5, "family_targets": [1, 2]}, depends)
    state.finish("search", 1.0, {})
    state = RunState.open(path, {"trials": 5, "family_targets": [1, 3]}, depends)  # family not started
    assert state.done("search") and state.settings["family_targets"] == [1, 3]
    with pytest.raises(RunError, match="already finished stage search with trials=5"):
        RunState.open(path, {"trials": 6, "family_targets": [1, 3]}, depends)
    state.start("family")
    with pytest.raises(RunError, match="already started stage family"):
        RunState.open(path, {"trials": 5, "family_targets": [2]}, depends)


def test_state_refuses_a_file_that_is_not_a_run(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("[1, 2]")
    with pytest.raises(RunError, match="not a y7nas run state"):
        RunState.open(path, {}, [])


def test_run_refuses_a_folder_of_other_results(tmp_path):
    from nas.pipeline import run_pipeline

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "trials.csv").write_text("number\n")
    with pytest.raises(RunError, match="not a y7nas run"):
        run_pipeline(RunConfig(study="x", space="yolov7-tiny", results_dir=tmp_path, fidelity="flops",
                               objectives=("gflops", "latency_ms")))
    assert not (tmp_path / "x" / "run.json").exists()


@pytest.mark.parametrize("bad,match", [(dict(space="yolov7-tiny-gpu"), "unknown search space"),
                                       (dict(activation="gelu"), "activation must be one of"),
                                       (dict(latency_backend="tensorrt"), "unknown latency backend"),
                                       (dict(data="missing.yaml"), "missing.yaml")])
def test_bad_input_is_refused_before_any_stage_starts(tmp_path, bad, match):
    """A typo must not pin a run's settings: nothing is written, and the corrected command is free."""
    from nas.errors import NasError
    from nas.pipeline import run_pipeline

    settings = dict(study="t", space="yolov7-tiny-cpu", results_dir=tmp_path, img=64, activation="relu")
    with pytest.raises(NasError, match=match):
        run_pipeline(RunConfig(**{**settings, **bad}))
    assert not (tmp_path / "t").exists()


def test_best_finalist_is_the_highest_map_within_the_budget():
    rows = [{"number": 1, "map50_95": 0.30, "latency_ms": 12.0},
            {"number": 2, "map50_95": 0.25, "latency_ms": 9.0},
            {"number": 3, "map50_95": None, "latency_ms": 5.0},      # failed to train
            {"number": 4, "map50_95": 0.20, "latency_ms": 4.0}]
    assert best_finalist(rows, {"latency_ms": 10.0})["number"] == 2
    assert best_finalist(rows, {})["number"] == 1
    with pytest.raises(RunError, match="no trained finalist"):
        best_finalist(rows, {"latency_ms": 3.0})


def test_family_targets_are_multiples_of_the_budget_or_of_the_model():
    cfg = RunConfig(study="s", space="yolov7-tiny", max_latency=10.0, family_targets=(1, 2, 4))
    assert family_targets(cfg, base_gflops=3.0) == ("latency", (10.0, 20.0, 40.0))
    cfg = RunConfig(study="s", space="yolov7-tiny", max_gflops=5.0, family_targets=(0.5, 2))
    assert family_targets(cfg, base_gflops=3.0) == ("gflops", (2.5, 10.0))
    cfg = RunConfig(study="s", space="yolov7-tiny", max_params=2.0, family_targets=(2, 4))
    assert family_targets(cfg, base_gflops=3.0) == ("gflops", (6.0, 12.0))


@pytest.mark.parametrize("bad,match", [(dict(trials=0), "--trials"), (dict(family_targets=(1, -2)), "--family-targets"),
                                       (dict(max_latency=5.0, max_gflops=2.0), "one budget"),
                                       (dict(band="1,0.5"), "--band must be LO,HI"),
                                       (dict(estimator="luck"), "unknown estimator"),
                                       (dict(baseline=" "), "--baseline must be")])
def test_bad_run_settings_are_one_line(bad, match):
    from nas.errors import NasError

    with pytest.raises(NasError, match=match):
        RunConfig(study="s", space="yolov7-tiny", **bad)
