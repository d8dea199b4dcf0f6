"""CLI commands of the model core (presets, preset, profile), run in-process with CliRunner."""
from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from cli import app
from nas.cfg import parse_cfg
from nas.genome import Genome
from nas.presets import PRESETS

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_presets_lists_all_with_exact_param_counts():
    result = run("presets")
    assert result.exit_code == 0, result.output
    for name, count in [("yolov7-tiny", "6,228,762"), ("yolov7", "37,622,682"), ("yolov7x", "71,347,394")]:
        assert name in result.output and count in result.output


def test_preset_to_stdout_is_a_loadable_flat_cfg():
    result = run("preset", "yolov7")
    assert result.exit_code == 0
    cfg = parse_cfg(yaml.safe_load(result.stdout), source="stdout")
    assert len(cfg.rows) == 106 and cfg.rows[-1].module == "IDetect"


def test_preset_to_file_and_genome(tmp_path):
    out = tmp_path / "tiny.yaml"
    assert run("preset", "yolov7-tiny", "-o", str(out)).exit_code == 0
    assert parse_cfg(yaml.safe_load(out.read_text())).rows[0].module == "Conv"
    genome_file = tmp_path / "tiny.genome.yaml"
    assert run("preset", "yolov7-tiny", "--genome", "-o", str(genome_file)).exit_code == 0
    assert Genome.from_yaml(genome_file.read_text()) == PRESETS["yolov7-tiny"]


def test_unknown_preset_lists_the_known_ones(tmp_path):
    out = tmp_path / "x.yaml"
    result = run("preset", "yolov9", "-o", str(out))
    assert result.exit_code != 0
    assert "yolov7-tiny" in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_profile_json_with_deploy_and_latency():
    result = run("profile", "yolov7-tiny", "--img", "160", "--deploy", "--latency", "--runs", "2",
                 "--warmup", "1", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["params"] == 6_228_762 and report["params_deploy"] == 6_221_370
    assert report["img"] == 160
    assert report["gflops"] == pytest.approx(2 * report["macs"] / 1e9, abs=1e-4)
    assert report["gflops"] == pytest.approx(13.86 * (160 / 640) ** 2, rel=0.02)  # FLOPs scale with pixels
    assert report["max_abs_diff"] < 1e-3
    assert report["latency_ms"]["runs"] == 2 and report["latency_ms"]["form"] == "deploy"
    assert 0 < report["latency_ms"]["median"] <= report["latency_ms"]["p90"] * 1.0001


def test_profile_accepts_flat_yaml_and_genome_yaml(tmp_path):
    flat, genome = tmp_path / "m.yaml", tmp_path / "m.genome.yaml"
    run("preset", "yolov7-tiny", "-o", str(flat))
    run("preset", "yolov7-tiny", "--genome", "-o", str(genome))
    reports = [json.loads(run("profile", str(p), "--img", "64", "--json").stdout) for p in (flat, genome)]
    assert reports[0]["params"] == reports[1]["params"] == 6_228_762


def test_profile_table_and_layers():
    result = run("profile", "yolov7-tiny", "--img", "64", "--layers")
    assert result.exit_code == 0
    assert "GFLOPs (2 x MACs)" in result.output and "IDetect" in result.output


@pytest.mark.parametrize("content, expected", [
    ("nc: 80\nanchors: 3\nbackbone: [[-1, 1, Nope, [16]]]\nhead: []\n", "layer 0: unknown module 'Nope'"),
    ("nc: 80\nanchors: 3\nbackbone: [[-1, 1, Conv, [16, 3, 2]]]\nhead: [[-1, 1, \"__import__('os').system('echo hi')\", []]]\n",
     "layer 1: unknown module"),
    ("nc: 80\nbackbone: [[\n", "malformed YAML"),
    ("activation: silu\n", "missing key"),
])
def test_profile_bad_model_file_one_line_no_traceback(tmp_path, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run("profile", str(path), "--img", "64")
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.output


def test_profile_bad_options():
    assert "multiple of the model's largest stride 32" in run("profile", "yolov7-tiny", "--img", "100").output
    assert "CUDA is not available" in run("profile", "yolov7-tiny", "--img", "64", "--device", "cuda").output or \
        run("profile", "yolov7-tiny", "--img", "64", "--device", "cuda").exit_code == 0
    assert "not a preset" in run("profile", "no-such-model.yaml").output
