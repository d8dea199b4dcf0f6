"""Commands that read data say on stderr what the scan dropped or ignored, naming the details file;
for a clean dataset they say nothing (CliRunner, in-process).

The bad dataset is the project's synthetic one with labels and images broken on purpose: in the
train split 3 label files with a class id out of range, 2 with a coordinate > 1, 2 with short
rows, 2 images without a label file and 2 unreadable images; in the val split one of each of the
first and fourth kind.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from nas.data import generate_synthetic
from tests.train.conftest import tiny_genome

runner = CliRunner()
NC = 3
TRAIN_COUNTS = ("class id out of range: 3", "coordinates outside [0, 1]: 2", "wrong column count: 2",
                "2 without a label file", "unreadable image: 2", "9 corrupt dropped", "16 images found")
VAL_COUNTS = ("class id out of range: 1", "1 without a label file", "1 corrupt dropped", "8 images found")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _append(path: Path, row: str) -> None:
    path.write_text(path.read_text() + row + "\n")


def break_split(root: Path, split: str, plan: dict[str, int]) -> None:
    images = sorted((root / "images" / split).glob("*.png"))
    labels = root / "labels" / split
    i = 0
    for kind, n in plan.items():
        for image in images[i:i + n]:
            label = labels / f"{image.stem}.txt"
            if kind == "class":
                _append(label, f"{NC + 4} 0.5 0.5 0.2 0.2")
            elif kind == "coords":
                _append(label, "0 0.5 1.5 0.2 0.2")
            elif kind == "short":
                _append(label, "0 0.5 0.5")
            elif kind == "no-label":
                label.unlink()
            elif kind == "unreadable":
                image.write_bytes(b"not an image at all " * 8)
        i += n


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    data = generate_synthetic(root, n_train=16, n_val=8, img=64, seed=0, nc=NC, workers=0)
    break_split(root, "train", {"class": 3, "coords": 2, "short": 2, "no-label": 2, "unreadable": 2})
    break_split(root, "val", {"class": 1, "no-label": 1})
    return data


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("clean"), n_train=16, n_val=8, img=64, seed=1, nc=NC,
                              workers=0)


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.genome.yaml"
    path.write_text(tiny_genome(nc=NC).to_yaml())
    return path


def scan_lines(stderr: str, data: Path) -> dict[str, str]:
    """split → the scan line printed for it (``<data.yaml>: <split>: …``)."""
    found = {}
    for line in stderr.splitlines():
        m = re.match(rf"{re.escape(str(data))}: (train|val): ", line)
        if m:
            assert m.group(1) not in found, f"{m.group(1)} reported twice"
            found[m.group(1)] = line
    return found


def assert_reported(line: str, counts, details: Path) -> None:
    for count in counts:
        assert count in line, (count, line)
    assert line.endswith(f"details in {details}") and details.is_file()


@pytest.fixture(scope="module")
def trained_on_bad(bad_data, genome, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run") / "r"
    result = run("train", genome, "--data", bad_data, "--epochs", 1, "--img", 64, "--batch", 8,
                 "--threads", 1, "-o", run_dir)
    assert result.exit_code == 0, result.output
    return result, run_dir


def test_train_names_every_count_and_the_details_file_of_each_split(bad_data, trained_on_bad):
    result, _run_dir = trained_on_bad
    lines = scan_lines(result.stderr, bad_data)
    assert set(lines) == {"train", "val"}
    root = bad_data.parent
    assert_reported(lines["train"], TRAIN_COUNTS, root / "y7nas-scan-train.log")
    assert_reported(lines["val"], VAL_COUNTS, root / "y7nas-scan-val.log")
    assert "7 kept" in lines["train"] and "7 kept" in lines["val"]
    details = (root / "y7nas-scan-train.log").read_text()
    assert details.count("class id 7 outside 0..2") == 3 and details.count("no label file") == 2
    assert "y7nas-scan" not in result.stdout  # stdout stays the command's own output


def test_val_reports_the_val_split(bad_data, genome, trained_on_bad):
    _result, run_dir = trained_on_bad
    result = run("val", genome, "--weights", run_dir / "weights" / "last.pt", "--data", bad_data,
                 "--img", 64, "--json")
    assert result.exit_code == 0, result.output
    lines = scan_lines(result.stderr, bad_data)
    assert set(lines) == {"val"}
    assert_reported(lines["val"], VAL_COUNTS, bad_data.parent / "y7nas-scan-val.log")


def test_search_and_finalists_report_the_splits_they_read(bad_data, tmp_path):
    result = run("search", "--space", "yolov7-tiny", "--trials", 1, "--study", "s", "--img", 64,
                 "--data", bad_data, "--results-dir", tmp_path, "--threads", 1, "--objectives", "score,params")
    assert result.exit_code == 0, result.output
    lines = scan_lines(result.stderr, bad_data)
    assert set(lines) == {"val"}  # zero-cost scoring reads one val batch
    assert_reported(lines["val"], VAL_COUNTS, bad_data.parent / "y7nas-scan-val.log")

    result = run("finalists", "--study", "s", "--results-dir", tmp_path, "--top", 1, "--epochs", 1,
                 "--subset", 8, "--img", 64, "--threads", 1)
    assert result.exit_code == 0, result.output
    lines = scan_lines(result.stderr, bad_data)
    assert set(lines) == {"train", "val"}
    assert_reported(lines["train"], TRAIN_COUNTS, bad_data.parent / "y7nas-scan-train.log")


def test_a_clean_dataset_prints_no_scan_line(clean_data, genome, tmp_path):
    result = run("train", genome, "--data", clean_data, "--epochs", 1, "--img", 64, "--batch", 8,
                 "--threads", 1, "-o", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert scan_lines(result.stderr, clean_data) == {}
    assert "found" not in result.stderr and "details in" not in result.stderr
    assert not list(clean_data.parent.glob("y7nas-scan-*.log"))
