"""Letterboxing: fit an image into an ``img × img`` square keeping its aspect, pad with gray.

The geometry is a pure value (:class:`Letterbox`) so boxes can be mapped both ways without the
pixels: ``x_lb = x * ratio[0] + pad[0]`` and back ``x = (x_lb - pad[0]) / ratio[0]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How an (h, w) image sits in an ``img × img`` canvas.

    Attributes:
        ratio: (x, y) scale from original to letterboxed pixels (equal up to rounding).
        pad: (left, top) offset of the resized image inside the canvas, whole pixels.
        size: (width, height) of the resized image.
        img: the canvas side.
    """

    ratio: tuple[float, float]
    pad: tuple[int, int]
    size: tuple[int, int]
    img: int


def letterbox_params(shape: tuple[int, int], img: int) -> Letterbox:
    """The letterbox of an image of ``shape`` = (height, width) into ``img × img``."""
    h, w = shape
    r = img / max(h, w)
    nw, nh = max(1, min(img, round(w * r))), max(1, min(img, round(h * r)))
    return Letterbox(ratio=(nw / w, nh / h), pad=((img - nw) // 2, (img - nh) // 2),
                     size=(nw, nh), img=img)


def letterbox_image(image: Image.Image, img: int,
                    shape: tuple[int, int] | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize and pad a PIL image → (uint8 RGB array img×img×3, its :class:`Letterbox`).

    ``shape`` is the (height, width) the letterbox is computed for, when ``image`` is already a
    reduced decode of it (PIL's JPEG draft mode); default: the image's own size.
    """
    lb = letterbox_params(shape or (image.height, image.width), img)
    if image.size != lb.size:
        image = image.resize(lb.size, Image.Resampling.BILINEAR)
    canvas = np.full((img, img, 3), PAD_VALUE, np.uint8)
    (x, y), (nw, nh) = lb.pad, lb.size
    canvas[y:y + nh, x:x + nw] = np.asarray(image.convert("RGB"))
    return canvas, lb


def boxes_to_letterbox(xyxy: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map (n, 4) x1 y1 x2 y2 boxes from original to letterboxed pixels."""
    scale = np.array([lb.ratio[0], lb.ratio[1]] * 2, np.float64)
    offset = np.array([lb.pad[0], lb.pad[1]] * 2, np.float64)
    return (np.asarray(xyxy, np.float64) * scale + offset).astype(np.float32)


def boxes_from_letterbox(xyxy: np.ndarray, lb: Letterbox, clip: bool = True) -> np.ndarray:
    """Map (n, 4) boxes from letterboxed back to original pixels (optionally clipped)."""
    scale = np.array([lb.ratio[0], lb.ratio[1]] * 2, np.float64)
    offset = np.array([lb.pad[0], lb.pad[1]] * 2, np.float64)
    out = (np.asarray(xyxy, np.float64) - offset) / scale
    if clip:
        w, h = lb.size[0] / lb.ratio[0], lb.size[1] / lb.ratio[1]
        out = np.clip(out, 0, [w, h, w, h])
    return out.astype(np.float32)


def yolo_to_xyxy(rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n, 4) normalised ``cx cy w h`` → (n, 4) x1 y1 x2 y2 pixels of an image of (h, w)."""
    h, w = shape
    rows = np.asarray(rows, np.float64).reshape(-1, 4)
    cx, cy, bw, bh = rows[:, 0] * w, rows[:, 1] * h, rows[:, 2] * w, rows[:, 3] * h
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1).astype(np.float32)
