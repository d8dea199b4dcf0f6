"""`y7nas train`, `y7nas val` and `y7nas data synth`, run in-process with CliRunner."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cli import app
from nas.cfg import parse_cfg
from tests.train.conftest import tiny_genome

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """One tiny CLI training run: (run dir, genome file, data yaml, JSON summary)."""
    root = tmp_path_factory.mktemp("cli")
    genome = root / "tiny.genome.yaml"
    genome.write_text(tiny_genome(nc=80).to_yaml())
    run_dir = root / "run"
    result = run("train", genome, "--data", tiny_data, "--epochs", 2, "--img", 64, "--batch", 8,
                 "-o", run_dir, "--json", "--threads", 1)
    assert result.exit_code == 0, result.output
    return run_dir, genome, tiny_data, json.loads(result.stdout.strip().splitlines()[-1])


def test_train_writes_weights_cfg_and_results(trained):
    run_dir, _genome, _data, summary = trained
    assert set(summary) >= {"map50", "map50_95", "epochs", "seconds", "images_per_second"}
    assert summary["epochs"] == 2 and summary["images_per_second"] > 0
    state = torch.load(run_dir / "weights" / "last.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    cfg = parse_cfg(yaml.safe_load((run_dir / "model.yaml").read_text()))
    assert cfg.nc == 3  # the data's classes replace the genome's 80
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[-1]["map50_95"]) == pytest.approx(summary["map50_95"], abs=1e-5)


def test_train_plain_output_and_run_dir_increment(trained):
    run_dir, genome, data, _ = trained
    result = run("train", genome, "--data", data, "--epochs", 1, "--img", 64, "--batch", 8,
                 "-o", run_dir, "--threads", 1)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "mAP@0.5" in result.output
    new = run_dir.with_name(run_dir.name + "2")
    assert str(new) in result.output.replace("\n", "")
    assert (new / "weights" / "last.pt").is_file()


def test_val_matches_pycocotools(trained, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    run_dir, _genome, data, _ = trained
    result = run("val", run_dir / "model.yaml", "--weights", run_dir / "weights" / "last.pt",
                 "--data", data, "--img", 64, "--save-json", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    gt = COCO(str(tmp_path / "annotations.json"))
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert preds, "an untrained model still gives low-score boxes at conf 0.001"
    ev = COCOeval(gt, gt.loadRes(preds), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert summary["map50_95"] == pytest.approx(max(ev.stats[0], 0), abs=1e-3)
    assert summary["map50"] == pytest.approx(max(ev.stats[1], 0), abs=1e-3)


def test_val_rejects_bad_weights_in_one_line(trained, tmp_path):
    run_dir, genome, data, _ = trained
    model_yaml = run_dir / "model.yaml"
    state = torch.load(run_dir / "weights" / "last.pt", weights_only=True)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for i, (k, v) in enumerate(state.items()) if i % 2}, partial)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    cases = [(partial, "do not fit"), (garbage, "not a PyTorch state dict"),
             (listing, "not a state dict"), (tmp_path / "missing.pt", "no such weights file")]
    for weights, message in cases:
        result = run("val", model_yaml, "--weights", weights, "--data", data, "--img", 64)
        assert result.exit_code == 1
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.output
    # weights of another width do not fit either
    other = tmp_path / "wide.genome.yaml"
    other.write_text(tiny_genome(nc=3, scale=0.5).to_yaml())
    result = run("val", other, "--weights", run_dir / "weights" / "last.pt", "--data", data,
                 "--img", 64)
    assert result.exit_code == 1 and "wrong shape" in result.output


def test_data_synth(tmp_path):
    result = run("data", "synth", "-o", tmp_path / "ds", "--n-train", 3, "--n-val", 2,
                 "--img", 48, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "ds" / "data.yaml") in result.output.replace("\n", "")
    assert "3 train / 2 val" in result.output
    assert len(list((tmp_path / "ds" / "images" / "train").iterdir())) == 3
    bad = run("data", "synth", "-o", tmp_path / "x", "--img", 8)
    assert bad.exit_code == 1 and "img must be" in bad.output


def test_train_bad_inputs_are_one_line(tiny_data, tmp_path):
    result = run("train", "no-such-model", "--data", tiny_data, "-o", tmp_path / "r")
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    result = run("train", "yolov7-tiny", "--data", tmp_path / "nope.yaml", "-o", tmp_path / "r")
    assert result.exit_code == 1 and "data YAML not found" in result.output
    result = run("train", "yolov7-tiny", "--data", tiny_data, "--img", 100, "-o", tmp_path / "r")
    assert result.exit_code == 1 and "multiple of 32" in result.output
    assert not (tmp_path / "r").exists()
