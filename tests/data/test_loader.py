"""YoloDataset / collate / make_loader: shapes, batch indices, determinism, augmentation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas.data import (AugmentConfig, YoloDataset, collate, generate_synthetic, hsv_jitter,
                      load_data_config, make_loader, scan_split)

NO_COLOR = AugmentConfig(hflip=0.0, hsv=(0.0, 0.0, 0.0))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return scan_split(load_data_config(generate_synthetic(root, n_train=12, n_val=2, img=64)),
                      "train")


def _batches(loader, epochs=1):
    return [b for _ in range(epochs) for b in loader]


def test_batch_shapes_and_batch_index(synth):
    loader = make_loader(synth, img=64, batch=5, augment=False)
    batches = _batches(loader)
    assert [len(b[0]) for b in batches] == [5, 5, 2]
    ds = YoloDataset(synth, img=64)
    for k, (images, targets, metas) in enumerate(batches):
        assert images.shape[1:] == (3, 64, 64) and images.dtype == torch.float32
        assert 0 <= images.min() and images.max() <= 1
        assert targets.shape[1] == 6 and len(metas) == len(images)
        for b in range(len(images)):
            i = 5 * k + b  # no shuffling without augmentation
            image, t, meta = ds[i]
            assert meta.path == synth.images[i] == metas[b].path
            torch.testing.assert_close(images[b], image)
            torch.testing.assert_close(targets[targets[:, 0] == b, 1:], t)


def test_collate_empty_targets():
    image = torch.zeros(3, 8, 8)
    _, targets, _ = collate([(image, torch.zeros(0, 5), None), (image, torch.zeros(0, 5), None)])
    assert targets.shape == (0, 6)


def test_deterministic_for_a_seed(synth):
    def run(seed):
        return _batches(make_loader(synth, img=64, batch=4, augment=True, seed=seed), epochs=2)

    a, b, c = run(0), run(0), run(1)
    for x, y in zip(a, b):
        torch.testing.assert_close(x[0], y[0])
        torch.testing.assert_close(x[1], y[1])
    paths = [[m.path for m in batch[2]] for batch in a]
    assert paths[:3] != paths[3:]  # a new order each epoch
    assert sorted(sum(paths[:3], [])) == sorted(synth.images)
    assert any(not torch.equal(x[0], z[0]) for x, z in zip(a, c))
    # an item depends on (epoch, index) only, not on what was loaded before it
    ds = YoloDataset(synth, img=64, augment=True, seed=0, cache=False)
    first = ds[(1, 3)][0]
    ds[(0, 5)]
    torch.testing.assert_close(ds[(1, 3)][0], first)


def test_subset_is_fixed_across_epochs(synth):
    loader = make_loader(synth, img=64, batch=3, augment=True, subset=4, seed=2)
    e0, e1 = ({m.path for b in loader for m in b[2]} for _ in range(2))
    assert len(e0) == 4 and e0 == e1


def test_cache_does_not_change_items(synth):
    a, b = YoloDataset(synth, 64, cache=True), YoloDataset(synth, 64, cache=False)
    for i in range(3):
        a[i]
        torch.testing.assert_close(a[i][0], b[i][0])


@pytest.fixture
def marked(tmp_path) -> Path:
    """A 120×80 gray image with a red block at x 10..40, y 20..50 and its label."""
    arr = np.full((80, 120, 3), 90, np.uint8)
    arr[20:50, 10:40] = (255, 0, 0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(arr).save(tmp_path / "images" / "m.png")
    (tmp_path / "labels" / "m.txt").write_text(f"0 {25 / 120} {35 / 80} {30 / 120} {30 / 80}\n")
    (tmp_path / "d.yaml").write_text("train: images\nval: images\nnames: [red]\n")
    return tmp_path / "d.yaml"


def test_flip_moves_boxes_with_pixels(marked):
    index = scan_split(load_data_config(marked), "train")
    plain, t0, _ = YoloDataset(index, img=96)[0]
    flipped, t1, _ = YoloDataset(index, img=96, augment=AugmentConfig(hflip=1.0, hsv=(0, 0, 0)))[0]
    torch.testing.assert_close(flipped, plain.flip(-1))
    expected = [96 - t0[0, 3], t0[0, 2], 96 - t0[0, 1], t0[0, 4]]
    np.testing.assert_allclose(t1[0, 1:].numpy(), expected)
    for image, t in ((plain, t0), (flipped, t1)):
        red = (image[0] > 0.9) & (image[1] < 0.1)
        ys, xs = torch.nonzero(red, as_tuple=True)
        x1, y1, x2, y2 = t[0, 1:].tolist()
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
        assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1


def test_hsv_jitter():
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 0.6, (3, 8, 8)).astype(np.float32)
    assert hsv_jitter(image, (0, 0, 0), rng) is image
    brighter = hsv_jitter(image, (0, 0, 0.5), np.random.default_rng(1))  # draw: +0.x value gain
    ratio = brighter / image
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)  # one gain for all pixels
    gray = np.full((3, 4, 4), 0.5, np.float32)  # hue and saturation leave gray alone
    np.testing.assert_allclose(hsv_jitter(gray, (0.5, 0.9, 0), rng), gray, atol=1e-6)


def test_mosaic_boxes_match_pixels(tmp_path):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for c, color in enumerate(colors):  # each image is one object filling the frame
        Image.new("RGB", (60 + 10 * c, 50), color).save(tmp_path / "images" / f"{c}.png")
        (tmp_path / "labels" / f"{c}.txt").write_text(f"{c} 0.5 0.5 1 1\n")
    (tmp_path / "d.yaml").write_text("train: images\nval: images\nnc: 4\n")
    index = scan_split(load_data_config(tmp_path / "d.yaml"), "train")
    ds = YoloDataset(index, img=64, augment=AugmentConfig(hflip=0, hsv=(0, 0, 0), mosaic=1.0))
    for i in range(8):
        image, targets, meta = ds[(0, i % 4)]
        assert image.shape == (3, 64, 64) and meta.mosaic and len(targets)
        for cls, x1, y1, x2, y2 in targets.tolist():
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
            patch = image[:, int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1]
            expected = torch.tensor(colors[int(cls)], dtype=torch.float32)[:, None, None] / 255
            torch.testing.assert_close(patch, expected.expand_as(patch), atol=0.02, rtol=0)
