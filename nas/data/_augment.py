"""Training augmentations on letterboxed uint8 images and pixel ``cls x1 y1 x2 y2`` targets.

Each function takes an explicit ``numpy.random.Generator``; none touches global RNG state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from nas.data._letterbox import PAD_VALUE


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings (YOLOv5 defaults for the HSV gains).

    Attributes:
        hflip: probability of a horizontal flip.
        hsv: (hue, saturation, value) gains; each is scaled by a uniform draw in [1-g, 1+g].
        mosaic: probability of a 4-image mosaic (0 = off).
        min_box: boxes narrower or shorter than this many pixels after a mosaic crop are dropped.
    """

    hflip: float = 0.5
    hsv: tuple[float, float, float] = (0.015, 0.7, 0.4)
    mosaic: float = 0.0
    min_box: float = 2.0


def hflip(image: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a (C, H, W) image and its (n, 5) ``cls x1 y1 x2 y2`` targets left-right."""
    w = image.shape[-1]
    out = targets.copy()
    out[:, 1], out[:, 3] = w - targets[:, 3], w - targets[:, 1]
    return image[..., ::-1], out


def hsv_jitter(image: np.ndarray, gains: tuple[float, float, float],
               rng: np.random.Generator) -> np.ndarray:
    """Random hue / saturation / value change of a float (3, H, W) RGB image in [0, 1].

    Draws ``d = uniform(-1, 1, 3) * gains`` (YOLOv5's augment_hsv draw) and applies, without an
    HSV round trip: a hue rotation by ``d[0] * 360°`` about the gray axis, saturation scaled by
    ``1 + d[1]`` (exactly HSV's S, keeping V), value scaled by ``1 + d[2]``; then clips.
    """
    if not any(gains):
        return image
    dh, ds, dv = rng.uniform(-1, 1, 3) * np.asarray(gains, np.float64)
    out = image.astype(np.float32, copy=True)
    if dh:
        m = _hue_rotation(dh * 2 * np.pi)
        out = np.stack([m[c, 0] * out[0] + m[c, 1] * out[1] + m[c, 2] * out[2] for c in range(3)])
    if ds:
        v = np.maximum(np.maximum(out[0], out[1]), out[2])
        out = v - np.float32(1 + ds) * (v - out)
    if dv:
        out *= np.float32(1 + dv)
    return np.clip(out, 0.0, 1.0, out=out)


def _hue_rotation(theta: float) -> np.ndarray:
    """3×3 matrix rotating RGB colours by ``theta`` about the (1, 1, 1) gray axis."""
    c, s = np.cos(theta), np.sin(theta)
    k = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / np.sqrt(3)
    return (c * np.eye(3) + (1 - c) / 3 * np.ones((3, 3)) + s * k).astype(np.float32)


Sample = tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]
"""(letterboxed image, targets in its pixels, content rectangle x0 y0 x1 y1 in the canvas)."""


def mosaic4(load: Callable[[int], Sample], indices: list[int], img: int,
            rng: np.random.Generator, min_box: float = 2.0,
            min_area_kept: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """YOLOv5-style 4-image mosaic cropped back to ``img × img``.

    The four images (their letterboxed content, longest side ``img``) are placed around a
    random centre of a ``2img × 2img`` canvas — top-left, top-right, bottom-left,
    bottom-right — and the central ``img × img`` window is kept. Boxes are shifted, clipped
    to the window, and dropped when thinner than ``min_box`` pixels or left with less than
    ``min_area_kept`` of their area.
    """
    big = np.full((2 * img, 2 * img, 3), PAD_VALUE, np.uint8)
    xc, yc = (int(v) for v in rng.uniform(img * 0.5, img * 1.5, 2))
    all_targets = []
    for k, index in enumerate(indices):
        image, targets, (cx0, cy0, cx1, cy1) = load(index)
        content = image[cy0:cy1, cx0:cx1]
        h, w = content.shape[:2]
        x0 = xc - w if k in (0, 2) else xc
        y0 = yc - h if k in (0, 1) else yc
        # clip the placement to the big canvas
        bx0, by0, bx1, by1 = max(x0, 0), max(y0, 0), min(x0 + w, 2 * img), min(y0 + h, 2 * img)
        big[by0:by1, bx0:bx1] = content[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
        t = targets.copy()
        t[:, [1, 3]] += x0 - cx0
        t[:, [2, 4]] += y0 - cy0
        all_targets.append(t)
    off = img // 2
    out = big[off:off + img, off:off + img].copy()
    t = np.concatenate(all_targets) if all_targets else np.zeros((0, 5), np.float32)
    t[:, 1:] -= off
    area0 = (t[:, 3] - t[:, 1]) * (t[:, 4] - t[:, 2])
    t[:, 1:] = np.clip(t[:, 1:], 0, img)
    w, h = t[:, 3] - t[:, 1], t[:, 4] - t[:, 2]
    keep = (w >= min_box) & (h >= min_box) & (w * h >= min_area_kept * area0)
    return out, t[keep].astype(np.float32)
