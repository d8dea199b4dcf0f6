"""load_data_config: YOLOv5/v7 data YAMLs and their error lines."""
from __future__ import annotations

from pathlib import Path

import pytest

from nas.data import load_data_config
from nas.errors import DataError


def _dataset(tmp_path: Path, text: str) -> Path:
    """Split folders, a list file, and a data.yaml holding ``text``."""
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "val.txt").write_text("./images/val/a.png\n")
    p = tmp_path / "data.yaml"
    p.write_text(text)
    return p


def test_list_names_and_relative_splits(tmp_path):
    cfg = load_data_config(_dataset(tmp_path, "train: images/train\nval: val.txt\nnames: [a, b]\n"))
    assert cfg.root == tmp_path.resolve()
    assert cfg.train == ((tmp_path / "images" / "train").resolve(),)
    assert cfg.val == ((tmp_path / "val.txt").resolve(),)
    assert (cfg.nc, cfg.names) == (2, ("a", "b"))


def test_dict_names_path_root_and_lists(tmp_path):
    sub = tmp_path / "ds"
    text = ("path: ds\ntrain: [images/train, images/val]\nval: images/val\n"
            "nc: 3\nnames: {0: x, 2: z, 1: y}\n")
    _dataset(sub, "")
    y = tmp_path / "data.yaml"
    y.write_text(text)
    cfg = load_data_config(y)
    assert cfg.root == sub.resolve()
    assert len(cfg.train) == 2 and cfg.names == ("x", "y", "z") and cfg.nc == 3


def test_nc_without_names(tmp_path):
    cfg = load_data_config(_dataset(tmp_path, "train: images/train\nval: images/val\nnc: 2\n"))
    assert cfg.names == ("class0", "class1")


@pytest.mark.parametrize("text, message", [
    ("val: images/val\nnames: [a]\n", "missing key(s): train"),
    ("train: images/train\nval: images/val\n", "missing key(s): names (or nc)"),
    ("train: images/train\nval: images/val\nnc: 3\nnames: [a, b]\n",
     "nc is 3 but names lists 2 classes"),
    ("train: images/train\nval: images/val\nnc: 0\n", "nc: expected a positive integer"),
    ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "dict keys must be"),
    ("train: images/nope\nval: images/val\nnames: [a]\n", "does not exist"),
    ("train: [images/train\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_errors_are_one_line(tmp_path, text, message):
    path = _dataset(tmp_path, text)
    with pytest.raises(DataError) as e:
        load_data_config(path)
    assert message in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="data YAML not found"):
        load_data_config(tmp_path / "nope.yaml")


def test_yolov7_style_entries_relative_to_the_working_directory(tmp_path, monkeypatch):
    """YOLOv7's data/coco.yaml writes `train: ./coco/train2017.txt`, relative to the folder
    train.py runs from, with the YAML in data/: accepted from that folder, refused elsewhere."""
    _dataset(tmp_path / "coco", "")
    (tmp_path / "data").mkdir()
    y = tmp_path / "data" / "coco.yaml"
    y.write_text("train: ./coco/images/train\nval: ./coco/val.txt\nnames: [a]\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_data_config(y)
    assert cfg.train == ((tmp_path / "coco" / "images" / "train").resolve(),)
    assert cfg.val == ((tmp_path / "coco" / "val.txt").resolve(),)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=r"\./coco/images/train does not exist \(neither \S*/data/coco/images/train "
                                        r"nor \S*/elsewhere/coco/images/train\)"):
        load_data_config(y)


def test_the_yaml_folder_wins_over_the_working_directory(tmp_path, monkeypatch):
    _dataset(tmp_path / "here", "")
    _dataset(tmp_path / "there", "")
    y = tmp_path / "here" / "data.yaml"
    y.write_text("train: images/train\nval: images/val\nnames: [a]\n")
    monkeypatch.chdir(tmp_path / "there")
    assert load_data_config(y).train == ((tmp_path / "here" / "images" / "train").resolve(),)
    y.write_text("path: .\ntrain: images/nope\nval: images/val\nnames: [a]\n")   # a root: no fallback
    with pytest.raises(DataError, match="does not exist") as err:
        load_data_config(y)
    assert "neither" not in str(err.value)
