"""CLI commands of the model core (presets, preset, profile), run in-process with CliRunner."""
from __future__ import annotations

import json

import pytest
import torch
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


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit status 1 through typer.Exit (no escaped exception), exactly one `error:` line."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


TINY_ROWS = "nc: 80\nanchors: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [16, 3, 2]]\n"


@pytest.mark.parametrize("content, expected", [
    ("nc: 80\nanchors: 3\nbackbone: [[-1, 1, Nope, [16]]]\nhead: []\n",
     ("layer 0: unknown module 'Nope' (known: Conv, RepConv",)),
    (TINY_ROWS + "head: [[-1, 1, \"__import__('os').system('touch PWNED')\", []]]\n", ("layer 2: unknown module",)),
    (TINY_ROWS + "head: [[-1, 1, Conv, [16, 3, 1, null, 1, \"__import__('os').system('touch PWNED')\"]]]\n",
     ("layer 2: argument 'act'",)),
    ("nc: 80\nbackbone: [[\n", ("malformed YAML at line",)),
    ("", ("expected a YAML mapping",)),
    ("activation: silu\n", ("missing key",)),
    (PRESETS["yolov7-tiny"].to_yaml().replace("activation: leakyrelu",
                                              "activation: \"__import__('os').system('touch PWNED')\""),
     ("'activation' unknown value",)),
    (TINY_ROWS + "head: [[5, 1, Conv, [16]]]\n", ("layer 2: 'from' 5 points forward",)),
    (TINY_ROWS + "head: [[-9, 1, Conv, [16]]]\n", ("layer 2: 'from' -9 is out of range",)),
    (TINY_ROWS + "head: [[-1, 1, Conv, [0]]]\n", ("layer 2: argument 'c2': must be ≥ 1, got 0",)),
    (TINY_ROWS + "head: [[-1, 1, Conv, [16, 3, 1, null, 1, true, 7]]]\n", ("layer 2: Conv takes at most 6",)),
    (TINY_ROWS + "head: [[[-1, 0], 1, Concat, [1]]]\n", ("layer 2: Concat of mismatched spatial sizes",)),
    (TINY_ROWS + "head: [[-1, 1, Conv, [8, 1, 1]], [[-1, -2], 1, Shortcut, [0]]]\n",
     ("layer 3: Shortcut adds inputs of unequal channels [8, 16]",)),
    ("nc: 80\nanchors: [[1, 2, 3]]\nbackbone: [[-1, 1, Conv, [8]]]\nhead: []\n", ("anchors level 0",)),
    (TINY_ROWS.replace("anchors: 3", "anchors: [[1, 2], [3, 4], [5, 6]]")
     + "head: [[[0, 1], 1, Detect, [nc, anchors]]]\n", ("layer 2: Detect has 2 inputs but 3 anchor levels",)),
    (TINY_ROWS.replace("nc: 80", "nc: 1000000000") + "head: [[[0, 1, 1], 1, Detect, [nc, anchors]]]\n",
     ("layer 2: Detect would have", "parameters")),
    ("nc: 80\nanchors: 3\nbackbone: [" + "[-1, 1, Conv, [8]], " * 5000 + "]\nhead: []\n",
     ("the cfg has 5,000 layers",)),
])
def test_profile_bad_model_file_one_line_no_traceback(tmp_path, monkeypatch, content, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert_one_error_line(run("profile", str(path), "--img", "64"), str(path), *expected)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: p.write_bytes(bytes(range(256)) * 4)])
def test_profile_directory_or_binary_file(tmp_path, make):
    path = tmp_path / "model.yaml"
    make(path)
    assert_one_error_line(run("profile", str(path)), f"{path}: ")


def test_error_text_in_square_brackets_is_printed_verbatim(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY_ROWS + "head: [[-1, 1, Conv]]\n")
    assert_one_error_line(run("profile", str(path)), "a row must be [from, number, module, args]")


@pytest.mark.parametrize("args, expected", [
    (["--img", "100"], "preset yolov7-tiny: image size 100 must be a positive multiple of the model's largest "
                       "stride 32"),
    (["--img", "8192"], "above the 4096 px supported"),
    (["--runs", "-1"], "--runs must be an integer ≥ 1, got -1"),
    (["--latency", "--threads", "0"], "--threads must be an integer ≥ 1, got 0"),
    (["--batch", "0"], "--batch must be an integer ≥ 1"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_profile_bad_options(args, expected):
    assert_one_error_line(run("profile", "yolov7-tiny", *args), expected)


def test_profile_unknown_model_and_cuda():
    assert_one_error_line(run("profile", "no-such-model.yaml"), "no-such-model.yaml: not a preset")
    result = run("profile", "yolov7-tiny", "--img", "64", "--device", "cuda")
    if torch.cuda.is_available():
        assert result.exit_code == 0, result.output
    else:
        assert_one_error_line(result, "CUDA is not available")


def test_preset_output_to_a_folder_is_one_line_and_leaves_nothing(tmp_path):
    result = run("preset", "yolov7-tiny", "-o", str(tmp_path))
    assert result.exit_code == 1 and "is a folder" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value,text", [(0.0064, "0.0064"), (0.00921, "0.00921"), (0.0213, "0.0213"),
                                        (0.071, "0.071"), (13.86, "13.9"), (106.47, "106"), (421.93, "422"),
                                        (1234.0, "1,234"), (0.0, "0")])
def test_table_numbers_keep_three_significant_digits(value, text):
    from cli import num

    assert num(value) == text
