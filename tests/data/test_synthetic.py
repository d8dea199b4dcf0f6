"""The synthetic shapes dataset: reproducible bytes, exact labels, a spread of object sizes."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from nas.data import SHAPES, generate_synthetic, load_data_config, scan_split, synthetic_dataset
from nas.data._synthetic import PLAIN_BACKGROUND, render_sample, shape_mask, synthetic_cache_root
from nas.errors import DataError

SMALL = dict(n_train=6, n_val=2, img=64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _files(generate_synthetic(tmp_path / "a", seed=3, **SMALL).parent)
    b = _files(generate_synthetic(tmp_path / "b", seed=3, workers=2, **SMALL).parent)
    c = _files(generate_synthetic(tmp_path / "c", seed=4, **SMALL).parent)
    assert len(a) == 2 * (6 + 2) + 1 and a == b
    pngs = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in pngs)


def test_data_yaml_loads_and_scans_clean(tmp_path):
    cfg = load_data_config(generate_synthetic(tmp_path, nc=4, **SMALL))
    assert cfg.nc == 4 and cfg.names == SHAPES[:4]
    for split, n in (("train", 6), ("val", 2)):
        index = scan_split(cfg, split)
        assert index.stats.images == n and index.stats.corrupt == 0 and index.log_path is None
        for rows in index.labels:
            assert ((rows[:, 0] >= 0) & (rows[:, 0] < 4)).all()
            # boxes are whole pixels: edges land on integers
            x1 = (rows[:, 1] - rows[:, 3] / 2) * 64
            np.testing.assert_allclose(x1, np.round(x1), atol=1e-3)


@pytest.mark.parametrize("cls", range(len(SHAPES)))
def test_single_object_box_is_tight(cls):
    for s in range(8):
        rng = np.random.default_rng([cls, s])
        # re-draw until the one object is of class ``cls`` (keeps the generator's own sampling)
        for _ in range(200):
            image, boxes = render_sample(rng, 96, nc=len(SHAPES), plain=True, max_objects=1,
                                         min_objects=1)
            if boxes[0, 0] == cls:
                break
        fg = (image != PLAIN_BACKGROUND).any(axis=2)
        ys, xs = np.nonzero(fg)
        assert boxes.shape == (1, 5)
        assert list(boxes[0, 1:]) == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_overlapping_objects_keep_tight_visible_boxes():
    overlaps = 0
    for s in range(30):
        image, boxes = render_sample(np.random.default_rng(s), 128, plain=True, min_objects=5)
        fg = (image != PLAIN_BACKGROUND).any(axis=2)
        covered = np.zeros_like(fg)
        for _, x1, y1, x2, y2 in boxes:
            covered[y1:y2, x1:x2] = True
            inner = fg[y1:y2, x1:x2]  # every edge row/column of a tight box holds a pixel
            assert inner[0].any() and inner[-1].any() and inner[:, 0].any() and inner[:, -1].any()
        assert not (fg & ~covered).any()  # no unlabelled object pixels
        b = boxes[:, 1:]
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                overlaps += (min(b[i, 2], b[j, 2]) > max(b[i, 0], b[j, 0])
                             and min(b[i, 3], b[j, 3]) > max(b[i, 1], b[j, 1]))
    assert overlaps > 5


def test_sizes_span_small_medium_large():
    img, areas = 256, []
    for s in range(60):
        _, boxes = render_sample(np.random.default_rng([7, s]), img)
        areas += [(x2 - x1) * (y2 - y1) for _, x1, y1, x2, y2 in boxes]
    areas = np.array(areas)
    k = (img / 640) ** 2  # COCO's 32² / 96² thresholds at 640 px, scaled to this image
    small, large = areas < 32 ** 2 * k, areas >= 96 ** 2 * k
    fractions = small.mean(), (~small & ~large).mean(), large.mean()
    assert len(areas) > 150 and min(fractions) > 0.15, fractions
    assert areas.max() > (0.4 * img) ** 2 and areas.min() < (0.05 * img) ** 2


def test_shape_masks_fill_their_box():
    for name in SHAPES:
        m = shape_mask(name, 9, 13)
        assert m.shape == (13, 9)
        assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()


def test_cache_generates_once_and_atomically(tmp_path):
    results: list[Path] = []
    def worker() -> None:
        results.append(synthetic_dataset(tmp_path, **SMALL))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0].parent.name.startswith("synthetic-")
    assert [p.name for p in tmp_path.iterdir()] == [results[0].parent.name]  # no temp dirs left
    stamp = results[0].stat().st_mtime_ns
    assert synthetic_dataset(tmp_path, **SMALL) == results[0]
    assert results[0].stat().st_mtime_ns == stamp
    assert synthetic_dataset(tmp_path, seed=1, **SMALL) != results[0]
    assert scan_split(load_data_config(results[0]), "train").stats.images == 6


def test_cache_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("Y7NAS_CACHE", str(tmp_path / "c"))
    assert synthetic_cache_root() == tmp_path / "c"
    monkeypatch.delenv("Y7NAS_CACHE")
    assert synthetic_cache_root() == Path.home() / ".cache" / "y7nas"


@pytest.mark.parametrize("kw", [dict(nc=0), dict(nc=7), dict(img=16), dict(n_train=0),
                                dict(seed=-1)])
def test_bad_parameters(tmp_path, kw):
    with pytest.raises(DataError, match="synthetic"):
        generate_synthetic(tmp_path, **{**SMALL, **kw})


def test_data_synthetic_word_uses_the_cache(monkeypatch, tmp_path):
    from nas.data import _synthetic

    real = _synthetic.synthetic_dataset
    monkeypatch.setattr(_synthetic, "synthetic_dataset",
                        lambda cache_dir=None: real(cache_dir, **SMALL))
    cfg = load_data_config("synthetic", cache_dir=tmp_path)
    assert cfg.root.parent == tmp_path.resolve() and cfg.nc == 5


def test_png_writer_round_trips_through_pil(tmp_path):
    from PIL import Image

    from nas.data._png import write_png

    rng = np.random.default_rng(0)
    for shape in ((1, 1, 3), (7, 5, 3), (64, 48, 3)):
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        write_png(tmp_path / "x.png", arr)
        with Image.open(tmp_path / "x.png") as im:
            im.verify()
        with Image.open(tmp_path / "x.png") as im:
            assert im.format == "PNG" and im.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(im), arr)


def test_large_profile_draws_only_large_objects(tmp_path):
    """``sizes='large'`` (the learnable demo set): every object spans 15-60 % of the side (its
    visible box may be clipped by the frame or occluded down to 40 %); the default has tiny ones."""
    import numpy as np

    from nas.data import generate_synthetic
    from nas.errors import DataError

    def sides(sizes):
        out = generate_synthetic(tmp_path / sizes, n_train=24, n_val=2, img=128, seed=1, nc=3,
                                 workers=0, sizes=sizes).parent
        rows = [line.split() for f in sorted((out / "labels" / "train").glob("*.txt"))
                for line in f.read_text().splitlines()]
        return np.array([max(float(r[3]), float(r[4])) for r in rows])

    large, default = sides("large"), sides("all")
    assert len(large) >= 24 and np.median(large) > 0.25 and (large < 0.06).sum() == 0
    assert (default < 0.06).sum() > 0
    with pytest.raises(DataError, match="sizes must be one of all, large, medium"):
        generate_synthetic(tmp_path / "bad", n_train=1, n_val=1, img=64, sizes="huge")


def test_synthetic_large_is_a_data_source(tmp_path, monkeypatch):
    from nas.data import load_data_config

    monkeypatch.setenv("Y7NAS_CACHE", str(tmp_path))
    cfg = load_data_config("synthetic-large")
    assert cfg.nc == 3 and "large objects only" in cfg.source.read_text()


def test_the_alt_style_is_other_data_with_tight_boxes(tmp_path, monkeypatch):
    """``synthetic-alt``, the confirmation set: the last three shapes (named so in data.yaml), a
    textured background unlike the default's, medium objects (8-35 % of the side, up to 42 % along the longer edge of an elongated one), and every
    drawn object still labelled with a tight box (plain background, single objects)."""
    import numpy as np
    import yaml

    from nas.data import generate_synthetic, load_data_config
    from nas.data._synthetic import class_shapes, render_sample
    from nas.errors import DataError

    monkeypatch.setenv("Y7NAS_CACHE", str(tmp_path / "cache"))
    cfg = load_data_config("synthetic-alt")
    assert cfg.nc == 3 and list(cfg.names) == ["cross", "ring", "diamond"] == list(class_shapes(3, "alt"))
    assert "medium objects only, alt style" in cfg.source.read_text()
    assert load_data_config("synthetic-large").source.parent != cfg.source.parent
    rows = [line.split() for f in sorted((cfg.source.parent / "labels" / "train").glob("*.txt"))[:40]
            for line in f.read_text().splitlines()]
    sides = np.array([max(float(r[3]), float(r[4])) for r in rows])
    assert len(sides) >= 40 and (sides <= 0.42).all() and np.median(sides) > 0.08 and (sides < 0.03).sum() == 0
    for seed in range(6):       # one object on a plain background: the box is exactly its pixels
        image, boxes = render_sample(np.random.default_rng(seed), 96, 3, plain=True, max_objects=1,
                                     min_objects=1, sizes="medium", style="alt")
        ys, xs = np.nonzero((image != image[0, 0]).any(-1))
        assert boxes.tolist() == [[boxes[0, 0], xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    alt, default = (render_sample(np.random.default_rng(0), 128, 3, style=s)[0] for s in ("alt", "default"))
    assert not np.array_equal(alt, default)
    data = yaml.safe_load((generate_synthetic(tmp_path / "a", n_train=2, n_val=1, img=64, nc=2, workers=0,
                                              style="alt")).read_text())
    assert data["names"] == ["ring", "diamond"]
    with pytest.raises(DataError, match="style must be one of default, alt"):
        generate_synthetic(tmp_path / "bad", n_train=1, n_val=1, img=64, style="noir")
