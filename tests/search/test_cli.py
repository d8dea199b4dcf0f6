"""The search commands through typer's CliRunner (in-process)."""
from __future__ import annotations

import csv

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from nas.build import build_model
from nas.cfg import parse_cfg
from nas.genome import Genome

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_spaces_lists_every_space_and_dimension():
    result = run("spaces")
    assert result.exit_code == 0, result.output
    for text in ("yolov7-tiny", "yolov7", "p3.down", "bu_p5.down", "spp_plain", "td_p3.pattern", "outputs",
                 "conv, mpc, mp", "sppcspc, sppf, spp, spp3, sp", "0.25 .. 1.0 step 0.125", "2 .. 8 step 2"):
        assert text in result.output


def test_search_pareto_export_end_to_end(tmp_path):
    results = tmp_path / "results"
    common = ("--results-dir", results)
    result = run("search", "--space", "yolov7-tiny", "--trials", 3, "--study", "cli", "--objectives", "gflops,params",
                 "--fidelity", "flops", "--img", 64, "--seed", 0, "--threads", 1, *common)
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output and "[3/3]" in result.output  # plain progress lines off a terminal
    study_dir = results / "cli"
    trials = rows(study_dir / "trials.csv")
    assert [r["state"] for r in trials] == ["COMPLETE"] * 3
    assert {"param:width", "param:p3.down", "genome_hash", "feasible", "duration_s", "fail_reason"} <= set(trials[0])
    front = rows(study_dir / "pareto.csv")
    assert front and (study_dir / "pareto.png").stat().st_size > 1000
    for r in front:
        flat = study_dir / "models" / f"trial_{r['number']}.yaml"
        assert build_model(parse_cfg(yaml.safe_load(flat.read_text()), source=str(flat)))
        assert Genome.from_yaml((study_dir / "models" / f"trial_{r['number']}.genome.yaml").read_text())

    (study_dir / "pareto.csv").unlink()
    result = run("pareto", "--study", "cli", *common)
    assert result.exit_code == 0, result.output
    assert rows(study_dir / "pareto.csv") == front

    out = tmp_path / "exported.yaml"
    result = run("export", "--study", "cli", "--trial", 1, "-o", out, *common)
    assert result.exit_code == 0, result.output
    genome = Genome.from_yaml((tmp_path / "exported.genome.yaml").read_text())
    assert genome.genome_hash() == trials[1]["genome_hash"]
    assert build_model(parse_cfg(yaml.safe_load(out.read_text()), source="exported"))

    # a worker joining the finished study reads everything from the study and stops at once
    url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    result = run("worker", "--study", "cli", "--storage", url, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert len(rows(study_dir / "trials.csv")) == 3

    # re-running the same command resumes: nothing new, exact count kept
    result = run("search", "--space", "yolov7-tiny", "--trials", 3, "--study", "cli", "--objectives", "gflops,params",
                 "--fidelity", "flops", "--img", 64, "--threads", 1, *common)
    assert result.exit_code == 0, result.output
    assert len(rows(study_dir / "trials.csv")) == 3
    # ... and a different space is refused in one line
    result = run("search", "--space", "yolov7", "--trials", 3, "--study", "cli", "--objectives", "gflops,params",
                 "--fidelity", "flops", "--img", 64, *common)
    assert result.exit_code == 1 and "was created with space='yolov7-tiny'" in result.output


def test_zero_cost_search_records_every_proxy(tmp_path, tiny_data):
    result = run("search", "--space", "yolov7-tiny", "--trials", 2, "--study", "zc", "--img", 64, "--data", tiny_data,
                 "--results-dir", tmp_path, "--threads", 1, "--max-latency", 10000)
    assert result.exit_code == 0, result.output
    trials = rows(tmp_path / "zc" / "trials.csv")
    assert len(trials) == 2
    for r in trials:
        assert r["state"] == "COMPLETE" and r["feasible"] == "True"
        assert float(r["score"]) == float(r["naswot"])
        assert float(r["synflow"]) and float(r["zen"]) and float(r["latency_ms"]) > 0 and int(r["params"]) > 0


def test_proxy_search_reports_pruned_trials_and_time_saved(tmp_path, tiny_data):
    # a GFLOPs limit no candidate meets: every trial is stopped before training (PRUNED, epoch 0)
    result = run("search", "--space", "yolov7-tiny", "--trials", 2, "--study", "px", "--img", 64, "--data", tiny_data,
                 "--results-dir", tmp_path, "--fidelity", "proxy", "--objectives", "score,gflops",
                 "--max-gflops", 0.0001, "--proxy-epochs", 2, "--proxy-subset", 8)
    assert result.exit_code == 0, result.output
    assert "2/2 trials evaluated (2 stopped early)" in result.output
    assert "pruning: 2 of 2 trials stopped early (2 infeasible, not trained), 0 of 4 epochs trained" in result.output
    trials = rows(tmp_path / "px" / "trials.csv")
    assert [(r["state"], r["pruned_at"]) for r in trials] == [("PRUNED", "0")] * 2
    assert all("infeasible (gflops" in r["pruned_reason"] and r["score"] == "" for r in trials)


@pytest.mark.parametrize("args,message", [
    (("--space", "nope"), "unknown search space 'nope' (known: yolov7-tiny, yolov7-tiny-cpu, yolov7)"),
    (("--objectives", "score,speed"), "unknown objective 'speed' (valid: score, params, gflops, latency_ms)"),
    (("--sampler", "cmaes"), "unknown sampler 'cmaes' (valid: nsga2, tpe, random)"),
    (("--fidelity", "full"), "unknown fidelity 'full' (valid:"),
    (("--fidelity", "flops"), "objective 'score' needs a fidelity that scores architectures"),
    (("--img", "100"), "--img must be a positive multiple of 32"),
    (("--max-params", "-1"), "--max-params must be > 0"),
    (("--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"), "cannot open storage postgresql+psycopg://u:***@"),
    (("--fidelity", "proxy", "--proxy-epochs", "0"), "--proxy-epochs must be >= 1, got 0"),
    (("--fidelity", "proxy", "--proxy-subset", "0"), "--proxy-subset must be >= 1, got 0"),
    (("--fidelity", "proxy", "--proxy-img", "100"), "--proxy-img must be a positive multiple of 32 (the largest stride), got 100"),
    (("--fidelity", "proxy", "--prune-eta", "1"), "--prune-eta must be >= 2, got 1"),
    (("--fidelity", "proxy", "--prune-min-epoch", "0"), "--prune-min-epoch must be >= 1, got 0"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    base = {"--space": "yolov7-tiny", "--trials": "2", "--study": "bad", "--results-dir": str(tmp_path),
            "--img": "64", "--data": "/nonexistent/data.yaml"}
    if "--storage" in args or "--img" in args or "--max-params" in args:
        base["--fidelity"] = "flops"
        base["--objectives"] = "gflops"
    base.update(dict(zip(args[::2], args[1::2])))
    result = run("search", *[x for kv in base.items() for x in kv])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1


def test_worker_and_pareto_on_missing_study_are_one_line(tmp_path):
    from nas.search import open_storage

    result = run("pareto", "--study", "ghost", "--results-dir", tmp_path)
    assert result.exit_code == 1 and "no study database at" in result.output
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = run("worker", "--study", "ghost", "--storage", url)
    assert result.exit_code == 1 and "no study database at" in result.output
    assert not (tmp_path / "x.db").exists()  # nothing created on the way
    open_storage(url)  # an existing database without that study
    result = run("worker", "--study", "ghost", "--storage", url)
    assert result.exit_code == 1 and "no study 'ghost' in sqlite:///" in result.output
    result = run("export", "--study", "ghost", "--trial", 0, "--results-dir", tmp_path)
    assert result.exit_code == 1 and "no study database at" in result.output
