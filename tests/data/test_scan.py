"""scan_split on a hand-built dataset with every kind of bad data YOLOv5 knows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import io

from nas.data import img2label_path, load_data_config, report_scan, scan_reporter, scan_split
from nas.errors import DataError


def _image(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path)


def _label(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def messy(tmp_path) -> Path:
    img, lab = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    _image(img / "a.png")
    _label(lab / "a.txt", "0 0.5 0.5 0.2 0.4\n")
    _image(img / "sub" / "b.jpg", size=(64, 48))
    _label(lab / "sub" / "b.txt", "1 0.25 0.25 0.1 0.1\n\n0 0.75 0.5 0.5 1.0\n")
    _image(img / "bg.bmp")  # no label file → background
    _image(img / "empty.png")
    _label(lab / "empty.txt", "")  # empty label file → background
    _image(img / "dup.png")
    _label(lab / "dup.txt", "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n")  # duplicate: removed, kept
    bad = {
        "cols": "0 0.5 0.5 0.2\n",
        "range": "0 0.5 1.2 0.2 0.2\n",
        "cls": "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.2 0.2\n",
        "negcls": "-1 0.5 0.5 0.2 0.2\n",
        "text": "0 0.5 abc 0.2 0.2\n",
        "zero": "0 0.5 0.5 0.0 0.2\n",
    }
    for name, text in bad.items():
        _image(img / f"{name}.png")
        _label(lab / f"{name}.txt", text)
    (img / "garbage.jpg").write_bytes(b"this is not an image at all" * 10)
    _label(lab / "garbage.txt", "0 0.5 0.5 0.2 0.2\n")
    _label(lab / "orphan.txt", "0 0.5 0.5 0.2 0.2\n")  # label file without its image
    (tmp_path / "images" / "val").mkdir(parents=True)
    _image(tmp_path / "images" / "val" / "v.png")
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [a, b]\n")
    return tmp_path / "data.yaml"


def test_counts_summary_and_log(messy):
    cfg = load_data_config(messy)
    index = scan_split(cfg, "train")
    root = messy.parent
    log = root / "y7nas-scan-train.log"
    assert (index.stats.images, index.stats.backgrounds, index.stats.corrupt,
            index.stats.orphan_labels) == (5, 2, 7, 1)
    assert (index.stats.found, index.stats.missing_labels, index.stats.duplicate_rows) == (12, 1, 1)
    assert dict(index.stats.dropped) == {"class": 2, "coords": 1, "columns": 1, "number": 1, "size": 1,
                                         "unreadable": 1}
    assert index.summary == (
        "train: 12 images found, 5 kept (2 backgrounds, 1 without a label file), 7 corrupt dropped "
        "(class id out of range: 2, coordinates outside [0, 1]: 1, wrong column count: 1, "
        "non-numeric values: 1, zero-size boxes: 1, unreadable image: 1), 1 label file without "
        f"image ignored, 1 duplicate label row removed; details in {log}")
    assert index.log_path == log and "\n" not in index.summary
    lines = log.read_text().splitlines()
    for name in ("cols", "range", "cls", "negcls", "text", "zero"):
        assert sum(f"/{name}.txt line" in line and "dropped" in line for line in lines) == 1, name
    assert any("garbage.jpg: unreadable image" in line for line in lines)
    assert any("orphan.txt: label file without image" in line for line in lines)
    assert any("dup.txt: 1 duplicate row(s) removed" in line for line in lines)
    assert any("bg.bmp: no label file" in line and "background" in line for line in lines)
    assert len(lines) == 10
    assert any("cls.txt line 2: class id 2 outside 0..1" in line for line in lines)
    assert any("cols.txt line 1: 4 columns" in line for line in lines)

    kept = {p.name: i for i, p in enumerate(index.images)}
    assert set(kept) == {"a.png", "b.jpg", "bg.bmp", "empty.png", "dup.png"}
    b = kept["b.jpg"]
    assert index.shapes[b] == (48, 64)
    np.testing.assert_allclose(index.labels[b], [[1, .25, .25, .1, .1], [0, .75, .5, .5, 1.]])
    assert index.labels[kept["bg.bmp"]].shape == (0, 5)
    assert len(index.labels[kept["dup.png"]]) == 1


def test_clean_split_writes_no_log(messy, tmp_path):
    _label(tmp_path / "labels" / "val" / "v.txt", "")  # an empty label file: a clean background
    index = scan_split(load_data_config(messy), "val", log_path=tmp_path / "x.log")
    assert index.summary == "val: 1 image found, 1 kept (1 background), 0 corrupt dropped"
    assert index.log_path is None and not (tmp_path / "x.log").exists()
    assert index.scan.clean and not report_scan(index, io.StringIO())


def test_a_missing_label_file_is_reported_not_dropped(messy, tmp_path):
    index = scan_split(load_data_config(messy), "val")
    assert len(index) == 1 and index.stats.missing_labels == 1 and not index.scan.clean
    assert "1 kept (1 background, 1 without a label file)" in index.summary
    assert "v.png: no label file" in index.log_path.read_text()


def test_scan_split_reports_on_stderr_and_the_reporter_can_be_swapped(messy, capsys):
    cfg = load_data_config(messy)
    index = scan_split(cfg, "train")
    err = capsys.readouterr().err
    assert err == f"{messy}: {index.summary}\n" and f"details in {index.log_path}" in err
    seen = []
    with scan_reporter(seen.append):
        scan_split(cfg, "train")
    with scan_reporter(None):
        scan_split(cfg, "train")
    assert capsys.readouterr().err == ""
    assert [s.text for s in seen] == [index.summary] and seen[0].split == "train"
    stream = io.StringIO()
    assert report_scan(seen[0], stream) and stream.getvalue() == f"{messy}: {index.summary}\n"


def test_list_file_split_and_polygon_rows(tmp_path):
    _image(tmp_path / "data" / "images" / "p.png", size=(100, 50))
    _label(tmp_path / "data" / "labels" / "p.txt", "0 0.1 0.2 0.5 0.2 0.3 0.6\n")
    (tmp_path / "data" / "list.txt").write_text("./images/p.png\nimages/missing.png\n")
    y = tmp_path / "d.yaml"
    y.write_text("path: data\ntrain: list.txt\nval: list.txt\nnames: [x]\n")
    index = scan_split(load_data_config(y), "train", log_path=tmp_path / "logs" / "scan.log")
    assert index.stats.images == 1 and index.stats.corrupt == 1 and index.stats.orphan_labels == 0
    np.testing.assert_allclose(index.labels[0], [[0, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)
    assert "missing.png: image file missing" in (tmp_path / "logs" / "scan.log").read_text()


def test_all_bad_raises(tmp_path):
    _image(tmp_path / "images" / "x.png")
    _label(tmp_path / "labels" / "x.txt", "5 0.5 0.5 0.1 0.1\n")
    (tmp_path / "images" / "y.png").write_bytes(b"\x89PNG garbage")
    y = tmp_path / "data.yaml"
    y.write_text("train: images\nval: images\nnc: 2\n")
    with pytest.raises(DataError) as e:
        scan_split(load_data_config(y), "train")
    msg = str(e.value)
    assert "no valid images left" in msg and "2 images found, 0 kept (0 backgrounds), 2 corrupt dropped" in msg
    assert "\n" not in msg


def test_img2label_path_replaces_last_images_folder():
    p = Path("/d/images/x/images/train/a.b.jpg")
    assert img2label_path(p) == Path("/d/images/x/labels/train/a.b.txt")
    assert img2label_path(Path("/d/flat/a.png")) == Path("/d/flat/a.txt")
