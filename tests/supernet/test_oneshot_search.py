"""A small one-shot search end to end: supernet file → search → finalists fine-tuned from their
inherited weights, and every refusal of a supernet that does not fit, in one line."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cli import app
from nas.data import generate_synthetic, load_data_config, scan_split
from nas.evaluate import evaluate
from nas.expand import dump_yaml, expand
from nas.genome import Genome
from nas.search._storage import open_storage
from nas.supernet import (OneShotScorer, SupernetConfig, extract, inherited_model, load_supernet,
                          recalibrate_bn, train_supernet)
from search_spaces import get_space

runner = CliRunner()
CALIB = 8


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def supernet_file(tiny_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("sn") / "tiny.pt"
    train_supernet(get_space("yolov7-tiny", nc=3), tiny_data, path,
                   SupernetConfig(epochs=1, img=64, batch=8, random_subnets=0, calib_images=CALIB,
                                  activation="relu"))
    return path


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_oneshot_search_scores_with_inherited_weights(supernet_file, tiny_data, tmp_path):
    results = tmp_path / "results"
    result = run("search", "--space", "yolov7-tiny", "--trials", 4, "--study", "os", "--data", tiny_data,
                 "--fidelity", "oneshot", "--supernet", supernet_file, "--oneshot-calib", CALIB,
                 "--threads", 1, "--results-dir", results)
    assert result.exit_code == 0, result.output
    rows = _rows(results / "os" / "trials.csv")
    assert len(rows) == 4 and all(r["state"] == "COMPLETE" for r in rows)
    assert {r["param:activation"] for r in rows} == {"relu"}           # fixed to the supernet's
    for r in rows:
        assert float(r["score"]) == float(r["map50_95"]) and float(r["oneshot_s"]) > 0
        assert float(r["duration_s"]) >= float(r["oneshot_s"])
    # the score is exactly: extract, re-estimate BatchNorm on the calibration images, val mAP
    space = get_space("yolov7-tiny", nc=3)
    net = load_supernet(supernet_file, space).eval()
    scorer = OneShotScorer(net, tiny_data, 64, calib_images=CALIB)
    models = results / "os" / "models"          # written for the front's trials
    first = next(r for r in rows if (models / f"trial_{r['number']}.genome.yaml").exists())
    genome = Genome.from_yaml((models / f"trial_{first['number']}.genome.yaml").read_text())
    model = recalibrate_bn(extract(net, genome), scorer.calib).eval()
    data = load_data_config(tiny_data)
    again = evaluate(model, scan_split(data, "val"), img=64)
    assert again.map50_95 == pytest.approx(float(first["score"]), rel=1e-5)   # trials.csv: 6 digits
    attrs = open_storage(f"sqlite:///{results / 'os' / 'study.db'}").storage
    study = __import__("optuna").load_study(study_name="os", storage=attrs)
    config = study.user_attrs["y7nas:config"]
    assert config["fidelity"] == "oneshot" and len(config["supernet_sha"]) == 16 and config["img"] == 64

    # finalists start from their inherited weights
    fin = run("finalists", "--study", "os", "--results-dir", results, "--top", 1, "--epochs", 1, "--subset", 8)
    assert fin.exit_code == 0, fin.output
    settings = json.loads((results / "os" / "finalists.json").read_text())["settings"]
    assert settings["init_from"] == str(supernet_file) and settings["lr"] == 0.001


def test_supernets_that_do_not_fit_are_refused_before_any_trial(supernet_file, tiny_data, tmp_path):
    results = tmp_path / "results"
    base = ("search", "--trials", 2, "--data", tiny_data, "--fidelity", "oneshot", "--threads", 1,
            "--results-dir", results)
    other_nc = generate_synthetic(tmp_path / "nc4", n_train=4, n_val=2, img=64, nc=4, workers=0)
    bad_file = tmp_path / "bad.pt"
    bad_file.write_bytes(b"junk")
    cases = [
        (("--space", "yolov7-tiny", "--study", "a", "--supernet", supernet_file, "--img", 96), "img is 64"),
        (("--space", "yolov7", "--study", "b", "--supernet", supernet_file), "space is 'yolov7-tiny'"),
        (("--space", "yolov7-tiny", "--study", "c", "--supernet", tmp_path / "missing.pt"), "not found"),
        (("--space", "yolov7-tiny", "--study", "d", "--supernet", bad_file), "not a y7nas supernet file"),
        (("--space", "yolov7-tiny", "--study", "e"), "needs --supernet"),
    ]
    for args, message in cases:
        result = run(*base, *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
    result = run("search", "--trials", 2, "--data", other_nc, "--fidelity", "oneshot", "--threads", 1,
                 "--results-dir", results, "--space", "yolov7-tiny", "--study", "f", "--supernet", supernet_file)
    assert result.exit_code == 1 and "nc is 3" in result.output.replace("\n", " ")
    assert not results.exists() or not any((results / s / "study.db").exists() for s in "abcdef")


def test_train_init_from_starts_at_the_inherited_weights(supernet_file, tiny_data, tmp_path):
    space = get_space("yolov7-tiny", nc=3)
    net = load_supernet(supernet_file, space)
    genome = Genome.from_dict({**yaml.safe_load(run("preset", "yolov7-tiny", "--genome").output),
                               "activation": "relu", "nc": 3})
    model = inherited_model(supernet_file, genome, space)
    for key, value in extract(net, genome).state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    flat = tmp_path / "m.yaml"
    flat.write_text(dump_yaml(expand(genome)))           # a flat YAML: its genome is recognised
    result = run("train", flat, "--data", tiny_data, "--epochs", 1, "--img", 64, "--batch", 8,
                 "--init-from", supernet_file, "-o", tmp_path / "run", "--threads", 1, "--json")
    assert result.exit_code == 0, result.output
    wrong = run("train", "yolov7", "--data", tiny_data, "--epochs", 1, "--img", 64,
                "--init-from", supernet_file, "-o", tmp_path / "run2")
    assert wrong.exit_code == 1 and "error:" in wrong.output and "Traceback" not in wrong.output
