"""A synthetic YOLO-format dataset of drawn shapes, for demos, tests and quick proxy training.

Shapes (classes, in order): circle, square, triangle, cross, ring, diamond; the first ``nc``
are used. Objects range from tiny (~3% of the image side) to large (~60%) so that the P3, P4
and P5 heads all have work; the background is a smooth colour field with distractor strokes
and pixel noise. Objects may overlap, but a new object is placed only where it leaves every
earlier object at least ``MIN_VISIBLE`` visible (and itself, after clipping to the frame), so
every drawn object has a label. Boxes are the exact pixel extent of what is visible.

A second *style* (``alt``) changes what a detector has to learn, for confirming on data that
no default was tuned on: the last shapes instead of the first (cross, ring, diamond for 3
classes), a textured background (stripes and checks of random pitch, angle and contrast, with
shape-like distractor blobs) instead of the smooth field with strokes, and objects in another
size profile when asked (``medium``).

Output is PNG (lossless, no metadata, see :mod:`nas.data._png`): the same arguments give the
same bytes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from nas.data._png import write_png
from nas.errors import DataError

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
DEFAULT_NC = 5
GENERATOR_VERSION = 1
# (lowest, highest side as a fraction of the image, probability): small / medium / large
SIZE_BINS = ((0.03, 0.05, 0.35), (0.05, 0.15, 0.35), (0.15, 0.60, 0.30))
#: object size profiles: ``all`` (tiny to large, the default) or ``large`` only (15-60 % of the
#: side: a set a small detector learns within minutes on a CPU, for demos)
SIZE_PROFILES = {"all": SIZE_BINS, "large": ((0.15, 0.60, 1.0),), "medium": ((0.08, 0.35, 1.0),)}
#: drawing styles: ``default`` (the first ``nc`` shapes on a smooth field with strokes) and
#: ``alt`` (the last ``nc`` shapes on stripes and checks with blob distractors)
STYLES = ("default", "alt")
ASPECT_RANGE = (0.7, 1.4)
MAX_OBJECTS = 7
MIN_VISIBLE = 0.4  # fraction of an object's pixels that must stay visible
BACKGROUND_PROB = 0.04  # share of images with no object at all
PLAIN_BACKGROUND = (32, 32, 32)
NOISE = 6  # amplitude of the uniform pixel grain


def shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """Boolean (h, w) mask of ``shape`` drawn to fill a w × h box (PIL, no anti-aliasing)."""
    m = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(m)
    x1, y1 = w - 1, h - 1
    if shape == "circle":
        d.ellipse((0, 0, x1, y1), fill=1)
    elif shape == "square":
        d.rectangle((0, 0, x1, y1), fill=1)
    elif shape == "triangle":
        d.polygon([(x1 / 2, 0), (x1, y1), (0, y1)], fill=1)
    elif shape == "cross":
        tx, ty = max(1, round(w * 0.3)), max(1, round(h * 0.3))
        d.rectangle(((w - tx) // 2, 0, (w - tx) // 2 + tx - 1, y1), fill=1)
        d.rectangle((0, (h - ty) // 2, x1, (h - ty) // 2 + ty - 1), fill=1)
    elif shape == "ring":
        d.ellipse((0, 0, x1, y1), outline=1, width=max(1, round(min(w, h) * 0.18)))
    elif shape == "diamond":
        d.polygon([(x1 / 2, 0), (x1, y1 / 2), (x1 / 2, y1), (0, y1 / 2)], fill=1)
    else:
        raise DataError(f"unknown synthetic shape {shape!r}")
    return np.asarray(m, dtype=bool)


def class_shapes(nc: int, style: str = "default") -> tuple[str, ...]:
    """The shape of each class: the first ``nc`` of :data:`SHAPES`, the last ``nc`` for ``alt``."""
    return SHAPES[:nc] if style == "default" else SHAPES[len(SHAPES) - nc:]


def render_sample(rng: np.random.Generator, img: int, nc: int = DEFAULT_NC, *,
                  plain: bool = False, max_objects: int = MAX_OBJECTS,
                  min_objects: int = 0, sizes: str = "all", style: str = "default"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image → (uint8 (img, img, 3), int (n, 5) ``cls x1 y1 x2 y2`` pixel edges).

    ``plain`` gives a flat :data:`PLAIN_BACKGROUND` without strokes or noise (for checking
    that boxes are tight); ``min_objects`` ≥ 1 suppresses background-only images; ``sizes``
    names a :data:`SIZE_PROFILES` entry, ``style`` a :data:`STYLES` entry.
    """
    canvas = _plain(img) if plain else (_clutter if style == "default" else _texture)(rng, img)
    n = 0 if rng.random() < BACKGROUND_PROB and min_objects == 0 else \
        int(rng.integers(max(1, min_objects), max_objects + 1))
    owner, classes, spots = _place_objects(rng, img, nc, n, SIZE_PROFILES[sizes], class_shapes(nc, style))
    if classes:
        palette = np.stack([_object_color(rng) for _ in classes])
        shown = owner >= 0
        canvas[shown] = palette[owner[shown]]
    boxes = [(c, *_visible_box(owner, k, spot)) for k, (c, spot) in enumerate(zip(classes, spots))]
    if not plain:  # sensor-like grain in 2×2 blocks (cheaper to encode than per-pixel noise)
        g = (img + 1) // 2
        noise = rng.integers(-NOISE, NOISE + 1, (g, g, 3), dtype=np.int16)
        noise = noise.repeat(2, 0).repeat(2, 1)[:img, :img]
        canvas = np.clip(canvas.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    return canvas, np.array(boxes, np.int64).reshape(-1, 5)


def _place_objects(rng: np.random.Generator, img: int, nc: int, n: int, bins=SIZE_BINS,
                   shapes: tuple[str, ...] = SHAPES) -> tuple[np.ndarray, list[int], list[tuple[int, int, int, int]]]:
    """Try to place ``n`` objects (10 proposals each) → (owner map, classes, rectangles).

    ``owner[y, x]`` is the index of the object visible at that pixel, -1 for background.
    """
    owner = np.full((img, img), -1, np.int16)
    visible: list[int] = []
    full: list[int] = []
    classes, spots = [], []
    for _ in range(n):
        for _attempt in range(10):
            cls, x0, y0, mask = _propose(rng, img, nc, bins, shapes)
            spot = _place(owner, visible, full, len(classes), x0, y0, mask)
            if spot:
                classes.append(cls)
                spots.append(spot)
                break
    return owner, classes, spots


def _propose(rng: np.random.Generator, img: int, nc: int, bins=SIZE_BINS, shapes: tuple[str, ...] = SHAPES
             ) -> tuple[int, int, int, np.ndarray]:
    cls = int(rng.integers(nc))
    lo, hi, _ = bins[rng.choice(len(bins), p=[b[2] for b in bins])]
    side = np.exp(rng.uniform(np.log(lo), np.log(hi))) * img
    aspect = np.exp(rng.uniform(*np.log(ASPECT_RANGE)))
    w, h = max(4, round(side * aspect ** 0.5)), max(4, round(side / aspect ** 0.5))
    cx, cy = rng.uniform(0, img, 2)
    return cls, round(cx - w / 2), round(cy - h / 2), shape_mask(shapes[cls], w, h)


def _place(owner: np.ndarray, visible: list[int], full: list[int], k: int,
           x0: int, y0: int, mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Paint object ``k`` into ``owner`` if everything stays ≥ MIN_VISIBLE visible.

    Returns the clipped rectangle (x0, y0, x1, y1) it was painted in, or None.
    """
    img = owner.shape[0]
    h, w = mask.shape
    bx0, by0, bx1, by1 = max(x0, 0), max(y0, 0), min(x0 + w, img), min(y0 + h, img)
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return None
    local = mask[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
    total, inside = int(mask.sum()), int(local.sum())
    if inside < MIN_VISIBLE * total:
        return None
    region = owner[by0:by1, bx0:bx1]
    lost = np.bincount(region[local].astype(np.int64) + 1, minlength=k + 1)[1:]
    if any(v - l < MIN_VISIBLE * f for v, l, f in zip(visible, lost, full)):
        return None
    region[local] = k
    for j, l in enumerate(lost):
        visible[j] -= int(l)
    visible.append(inside)
    full.append(total)
    return bx0, by0, bx1, by1


def _visible_box(owner: np.ndarray, k: int, spot: tuple[int, int, int, int]) -> tuple[int, ...]:
    """Tight x1 y1 x2 y2 (pixel edges) of the pixels object ``k`` still shows."""
    x0, y0, x1, y1 = spot
    ys, xs = np.nonzero(owner[y0:y1, x0:x1] == k)
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1


def _plain(img: int) -> np.ndarray:
    return np.broadcast_to(np.array(PLAIN_BACKGROUND, np.uint8), (img, img, 3)).copy()


def _clutter(rng: np.random.Generator, img: int) -> np.ndarray:
    """Smooth low-saturation colour field + finer blotches + distractor strokes (uint8)."""
    base = rng.uniform(60, 200)
    coarse = base + rng.uniform(-50, 50, (4, 4, 1)) + rng.uniform(-20, 20, (4, 4, 3))
    fine = rng.uniform(-15, 15, (16, 16, 3))
    field = np.asarray(_upsample(_upsample(coarse, 16) + fine, img))
    im = Image.fromarray(field, "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 13))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        width = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            pts = rng.uniform(-0.1, 1.1, (int(rng.integers(2, 5)), 2)) * img
            d.line([tuple(p) for p in pts.tolist()], fill=color, width=width)
        else:
            cx, cy, r = rng.uniform(0, img), rng.uniform(0, img), rng.uniform(0.05, 0.4) * img
            start = float(rng.uniform(0, 360))
            d.arc((cx - r, cy - r, cx + r, cy + r), start, start + float(rng.uniform(30, 200)),
                  fill=color, width=width)
    return np.array(im)


def _texture(rng: np.random.Generator, img: int) -> np.ndarray:
    """Stripes or checks of random pitch, angle and contrast over a flat colour, plus filled
    blobs (ellipses and polygons in object-like colours) as distractors (uint8)."""
    yy, xx = np.mgrid[0:img, 0:img].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    pitch = rng.uniform(0.04, 0.2) * img
    u = (xx * np.cos(angle) + yy * np.sin(angle)) / pitch
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / pitch
    wave = np.sin(2 * np.pi * u) if rng.random() < 0.5 else np.sign(np.sin(np.pi * u) * np.sin(np.pi * v))
    base = rng.uniform(50, 200, 3)
    field = base + rng.uniform(10, 45) * wave[..., None] * rng.uniform(0.6, 1.0, 3)
    im = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(1, 5))):
        color = tuple(int(c) for c in _object_color(rng) // 2 + 40)
        cx, cy = rng.uniform(0, img, 2)
        r = rng.uniform(0.03, 0.15) * img
        if rng.random() < 0.5:
            d.ellipse((cx - r, cy - r * rng.uniform(0.3, 1.0), cx + r, cy + r), fill=color)
        else:
            pts = (np.array([cx, cy]) + rng.uniform(-r, r, (int(rng.integers(4, 7)), 2))).tolist()
            d.polygon([tuple(p) for p in pts], fill=color)
    return np.array(im)


def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a small (g, g, 3) grid of 0..255 values → (size, size, 3) uint8."""
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB")
    return np.asarray(small.resize((size, size), Image.Resampling.BILINEAR))


def _object_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 256), rng.integers(140, 256), rng.integers(90, 256)]]],
                   np.uint8)
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))[0, 0]


def _check_params(n_train: int, n_val: int, img: int, seed: int, nc: int) -> None:
    if not (isinstance(n_train, int) and isinstance(n_val, int) and n_train >= 1 and n_val >= 1):
        raise DataError(f"synthetic: n_train and n_val must be ≥ 1, got {n_train}, {n_val}")
    if not isinstance(img, int) or img < 32:
        raise DataError(f"synthetic: img must be an integer ≥ 32, got {img!r}")
    if not isinstance(seed, int) or seed < 0:
        raise DataError(f"synthetic: seed must be a non-negative integer, got {seed!r}")
    if not isinstance(nc, int) or not 1 <= nc <= len(SHAPES):
        raise DataError(f"synthetic: nc must be in 1..{len(SHAPES)}, got {nc!r}")


def generate_synthetic(out_dir: str | Path, n_train: int = 512, n_val: int = 128,
                       img: int = 256, seed: int = 0, nc: int = DEFAULT_NC,
                       workers: int | None = None, sizes: str = "all", style: str = "default") -> Path:
    """Write a YOLO-format dataset to ``out_dir`` and return its ``data.yaml``.

    Layout: ``images/{train,val}/NNNNNN.png``, ``labels/{train,val}/NNNNNN.txt`` (an empty file
    for a background image), ``data.yaml`` (written last; splits relative to its folder).
    Sample ``i`` of split ``s`` (0 train, 1 val) uses ``default_rng([seed, s, i])``, so the
    output does not depend on ``workers`` (processes; default: up to 8 CPUs for large sets).
    """
    _check_params(n_train, n_val, img, seed, nc)
    _check_sizes(sizes, style)
    out = Path(out_dir)
    tasks = []
    for split_id, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        tasks += [(split_id, i) for i in range(n)]
    write = functools.partial(_write_sample, out, seed, img, nc, sizes, style)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(tasks) >= 256 else 0
    if workers > 1 and "fork" in mp.get_all_start_methods():
        # fork: children only run numpy/PIL code and need no re-import of the caller's modules
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            list(pool.map(write, tasks, chunksize=16))
    else:
        for task in tasks:
            write(task)
    header = (f"# y7nas synthetic shapes (generator v{GENERATOR_VERSION}): seed {seed}, "
              f"{n_train} train / {n_val} val images at {img} px"
              + ("" if sizes == "all" else f", {sizes} objects only")
              + ("" if style == "default" else f", {style} style") + "\n")
    body = {"train": "images/train", "val": "images/val", "nc": nc, "names": list(class_shapes(nc, style))}
    data_yaml = out / "data.yaml"
    data_yaml.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return data_yaml


def _check_sizes(sizes: str, style: str = "default") -> None:
    if sizes not in SIZE_PROFILES:
        raise DataError(f"synthetic: sizes must be one of {', '.join(SIZE_PROFILES)}, got {sizes!r}")
    if style not in STYLES:
        raise DataError(f"synthetic: style must be one of {', '.join(STYLES)}, got {style!r}")


def _write_sample(out: Path, seed: int, img: int, nc: int, sizes: str, style: str, task: tuple[int, int]) -> None:
    split_id, i = task
    split = ("train", "val")[split_id]
    image, boxes = render_sample(np.random.default_rng([seed, split_id, i]), img, nc, sizes=sizes, style=style)
    write_png(out / "images" / split / f"{i:06d}.png", image)
    (out / "labels" / split / f"{i:06d}.txt").write_text(_label_text(boxes, img))


def _label_text(boxes: np.ndarray, img: int) -> str:
    lines = []
    for cls, x1, y1, x2, y2 in boxes.tolist():
        lines.append(f"{cls} {(x1 + x2) / 2 / img:.6f} {(y1 + y2) / 2 / img:.6f} "
                     f"{(x2 - x1) / img:.6f} {(y2 - y1) / img:.6f}\n")
    return "".join(lines)


def synthetic_cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$Y7NAS_CACHE``, else ``~/.cache/y7nas``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("Y7NAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "y7nas"


def synthetic_dataset(cache_dir: str | Path | None = None, *, n_train: int = 512,
                      n_val: int = 128, img: int = 256, seed: int = 0,
                      nc: int = DEFAULT_NC, sizes: str = "all", style: str = "default") -> Path:
    """The data.yaml of the synthetic dataset with these parameters, generated once and cached.

    The folder is ``<cache root>/synthetic-<hash of the parameters>``; it is generated in a
    temporary sibling folder and renamed into place, so concurrent callers never see a partial
    dataset (the loser of a race discards its copy).
    """
    _check_params(n_train, n_val, img, seed, nc)
    _check_sizes(sizes, style)
    params = dict(n_train=n_train, n_val=n_val, img=img, seed=seed, nc=nc,
                  version=GENERATOR_VERSION)
    if sizes != "all":             # the default's cache key is unchanged
        params["sizes"] = sizes
    if style != "default":
        params["style"] = style
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = synthetic_cache_root(cache_dir)
    final = root / f"synthetic-{key}"
    if (final / "data.yaml").is_file():
        return final / "data.yaml"
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    except OSError as e:
        raise DataError(f"cannot create the synthetic dataset cache ({e.strerror})",
                        where=str(root)) from None
    try:
        generate_synthetic(tmp, n_train, n_val, img, seed, nc, sizes=sizes, style=style)
        os.rename(tmp, final)
    except OSError:
        if not (final / "data.yaml").is_file():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "data.yaml"
