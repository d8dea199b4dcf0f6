"""Letterbox geometry against hand-computed cases, both directions, and through the dataset."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nas.data import (YoloDataset, boxes_from_letterbox, boxes_to_letterbox, letterbox_image,
                      letterbox_params, load_data_config, scan_split, yolo_to_xyxy)


def test_wide_image_hand_computed():
    lb = letterbox_params((100, 200), 64)  # h=100, w=200 → scale 0.32 → 64×32, pad top 16
    assert lb.size == (64, 32) and lb.pad == (0, 16)
    assert lb.ratio == pytest.approx((0.32, 0.32))
    box = np.array([[20, 10, 120, 60]], np.float32)
    out = boxes_to_letterbox(box, lb)
    np.testing.assert_allclose(out, [[6.4, 19.2, 38.4, 35.2]], atol=1e-5)
    np.testing.assert_allclose(boxes_from_letterbox(out, lb), box, atol=1e-4)


def test_tall_image_hand_computed():
    lb = letterbox_params((300, 150), 100)  # scale 1/3 → 50×100, pad left 25
    assert lb.size == (50, 100) and lb.pad == (25, 0)
    out = boxes_to_letterbox(np.array([[30, 60, 90, 240]]), lb)
    np.testing.assert_allclose(out, [[35, 20, 55, 80]], atol=1e-5)


def test_rounding_uses_exact_per_axis_ratio():
    lb = letterbox_params((7, 3), 10)  # 3 * 10/7 = 4.29 → 4 px wide: x ratio 4/3, y ratio 10/7
    assert lb.size == (4, 10) and lb.pad == (3, 0)
    full = boxes_to_letterbox(np.array([[0, 0, 3, 7]]), lb)
    np.testing.assert_allclose(full, [[3, 0, 7, 10]], atol=1e-5)  # whole image ↔ content area


def test_letterbox_pixels():
    im = Image.new("RGB", (200, 100), (255, 0, 0))
    canvas, lb = letterbox_image(im, 64)
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert (canvas[:16] == 114).all() and (canvas[48:] == 114).all()
    assert (canvas[16:48] == [255, 0, 0]).all()


def test_dataset_targets_and_meta_map_back(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (200, 100), (0, 0, 255)).save(tmp_path / "images" / "a.png")
    # box x 20..120, y 10..60 in a 200×100 image
    (tmp_path / "labels" / "a.txt").write_text("1 0.35 0.35 0.5 0.5\n")
    y = tmp_path / "d.yaml"
    y.write_text("train: images\nval: images\nnc: 2\n")
    index = scan_split(load_data_config(y), "val")
    image, targets, meta = YoloDataset(index, img=64)[0]
    assert image.shape == (3, 64, 64)
    np.testing.assert_allclose(targets.numpy(), [[1, 6.4, 19.2, 38.4, 35.2]], atol=1e-4)
    assert meta.shape == (100, 200) and meta.pad == (0, 16)
    x1, y1, x2, y2 = targets[0, 1:].tolist()
    back = [(x1 - meta.pad[0]) / meta.ratio[0], (y1 - meta.pad[1]) / meta.ratio[1],
            (x2 - meta.pad[0]) / meta.ratio[0], (y2 - meta.pad[1]) / meta.ratio[1]]
    np.testing.assert_allclose(back, yolo_to_xyxy(index.labels[0][:, 1:], (100, 200))[0],
                               atol=1e-3)
    np.testing.assert_allclose(back, [20, 10, 120, 60], atol=1e-3)


def test_odd_padding_pixels_agree_with_boxes():
    lb = letterbox_params((45, 100), 64)  # 0.64 → 64×28.8 → 29 rows, 35 px of padding: 17 + 18
    assert lb.size == (64, 29) and lb.pad == (0, 17)
    canvas, _ = letterbox_image(Image.new("RGB", (100, 45), (0, 255, 0)), 64)
    rows = np.nonzero((canvas == [0, 255, 0]).all(axis=2).any(axis=1))[0]
    top, bottom = boxes_to_letterbox(np.array([[0, 0, 100, 45]]), lb)[0, [1, 3]]
    assert (rows.min(), rows.max() + 1) == (top, bottom) == (17, 46)
