"""Torch dataset, collate function and a deterministic loader over a :class:`SplitIndex`.

Determinism: every random draw of sample ``index`` in epoch ``epoch`` comes from
``numpy.random.default_rng([seed, 0, epoch, index])`` and the shuffle order of an epoch from
``default_rng([seed, 1, epoch])`` (a ``subset`` from ``default_rng([seed, 2])``). The sampler yields ``(epoch, index)`` keys, so results do not
depend on worker count, worker seeding or global RNG state.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from nas.data._augment import AugmentConfig, hflip, hsv_jitter, mosaic4
from nas.data._letterbox import Letterbox, boxes_to_letterbox, letterbox_image, yolo_to_xyxy
from nas.data._scan import SplitIndex
from nas.errors import DataError

AUTO_CACHE_BYTES = 512 * 2**20  # cache letterboxed images in RAM when they fit in this
_SAMPLE_STREAM, _SHUFFLE_STREAM, _SUBSET_STREAM = 0, 1, 2


@dataclass(frozen=True)
class ImageMeta:
    """What maps a sample back to its source image.

    ``x_orig = (x - pad[0]) / ratio[0]``, ``y_orig = (y - pad[1]) / ratio[1]``; see
    :func:`nas.data.boxes_from_letterbox`. For a mosaic sample (``mosaic=True``) only ``path``
    (of the first of the four images) is meaningful.
    """

    path: Path
    shape: tuple[int, int]  # original (height, width)
    ratio: tuple[float, float]
    pad: tuple[int, int]
    mosaic: bool = False


Item = tuple[torch.Tensor, torch.Tensor, ImageMeta]


class YoloDataset(Dataset):
    """Letterboxed samples of a split: ``(image 3×img×img float in [0, 1], targets (n, 5)
    cls x1 y1 x2 y2 in letterboxed pixels, ImageMeta)``.

    Args:
        split_index: the scanned split.
        img: side of the square input.
        augment: False, True (default :class:`AugmentConfig`) or an :class:`AugmentConfig`.
        seed: seed of all random draws.
        cache: keep decoded letterboxed images in RAM; None = when they fit in
            ``AUTO_CACHE_BYTES`` (each loader worker holds its own cache).

    Items are addressed by ``index`` (epoch 0) or by ``(epoch, index)``.
    """

    def __init__(self, split_index: SplitIndex, img: int = 640,
                 augment: bool | AugmentConfig = False, seed: int = 0,
                 cache: bool | None = None):
        if img < 8:
            raise DataError(f"image size {img} is too small (need ≥ 8)")
        if seed < 0:
            raise DataError(f"seed must be non-negative, got {seed}")
        self.index = split_index
        self.img = int(img)
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.seed = int(seed)
        if cache is None:
            cache = len(split_index) * self.img * self.img * 3 <= AUTO_CACHE_BYTES
        self._cache: dict[int, tuple[np.ndarray, Letterbox]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: int | tuple[int, int]) -> Item:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        epoch, index = int(epoch), int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} images")
        rng = np.random.default_rng([self.seed, _SAMPLE_STREAM, epoch, index])
        aug = self.augment
        if aug is not None and aug.mosaic > 0 and rng.random() < aug.mosaic:
            others = [int(i) for i in rng.integers(0, len(self), 3)]
            image, targets = mosaic4(self.load, [index, *others], self.img, rng, aug.min_box)
            meta = ImageMeta(self.index.images[index], self.index.shapes[index], (1.0, 1.0),
                             (0, 0), mosaic=True)
        else:
            image, targets, lb = self.letterboxed(index)
            meta = ImageMeta(self.index.images[index], self.index.shapes[index], lb.ratio, lb.pad)
        pixels = image.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)  # C, H, W
        if aug is not None:
            if rng.random() < aug.hflip:
                pixels, targets = hflip(pixels, targets)
            pixels = hsv_jitter(pixels, aug.hsv, rng)
        tensor = torch.from_numpy(np.ascontiguousarray(pixels))
        return tensor, torch.from_numpy(np.ascontiguousarray(targets, np.float32)), meta

    def letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, Letterbox]:
        """Sample ``index`` without augmentation: (uint8 img×img×3, targets (n, 5), letterbox).

        The returned image may be the cached array: copy before writing into it.
        """
        if self._cache is not None and index in self._cache:
            image, lb = self._cache[index]
        else:
            image, lb = self._decode(index)
            if self._cache is not None:
                image.setflags(write=False)
                self._cache[index] = (image, lb)
        rows = self.index.labels[index]
        xyxy = boxes_to_letterbox(yolo_to_xyxy(rows[:, 1:], self.index.shapes[index]), lb)
        (x0, y0), (w, h) = lb.pad, lb.size
        xyxy = np.clip(xyxy, [x0, y0, x0, y0], [x0 + w, y0 + h, x0 + w, y0 + h])
        targets = np.concatenate([rows[:, :1], xyxy], 1).astype(np.float32)
        return image, targets, lb

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
        """Sample ``index`` with the rectangle of real content, as :func:`mosaic4` wants it."""
        image, targets, lb = self.letterboxed(index)
        (x0, y0), (w, h) = lb.pad, lb.size
        return image, targets, (x0, y0, x0 + w, y0 + h)

    def _decode(self, index: int) -> tuple[np.ndarray, Letterbox]:
        path, shape = self.index.images[index], self.index.shapes[index]
        try:
            with Image.open(path) as im:
                im.draft("RGB", (self.img, self.img))  # JPEG: decode at reduced size if ≥ img
                im = ImageOps.exif_transpose(im).convert("RGB")
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"cannot decode image ({' '.join(str(e).split())})",
                            where=str(path)) from None
        return letterbox_image(im, self.img, shape=shape)


def collate(batch: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor, tuple[ImageMeta, ...]]:
    """Stack samples → (images (B, 3, H, W), targets (T, 6) batch_idx cls x1 y1 x2 y2, metas)."""
    images, targets, metas = zip(*batch)
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(targets)]
    return torch.stack(images), torch.cat(rows) if rows else torch.zeros((0, 6)), tuple(metas)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys; each pass over it is the next epoch.

    The order of epoch ``e`` is a permutation drawn from ``default_rng([seed, 1, e])`` (or the
    given order when ``shuffle`` is False). :meth:`set_epoch` jumps to an epoch.
    """

    def __init__(self, indices: Sequence[int], seed: int = 0, shuffle: bool = True):
        self.indices = np.asarray(indices, np.int64)
        self.seed, self.shuffle, self.epoch = int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, _SHUFFLE_STREAM, epoch])
            order = order[rng.permutation(len(order))]
        return iter([(epoch, int(i)) for i in order])


def subset_indices(n: int, subset: int | Sequence[int] | None, seed: int) -> list[int]:
    """Indices a loader uses: all, a fixed seeded random ``subset`` of that many, or the given."""
    if subset is None:
        return list(range(n))
    if isinstance(subset, int):
        if subset <= 0:
            raise DataError(f"subset must be positive, got {subset}")
        if subset >= n:
            return list(range(n))
        chosen = np.random.default_rng([seed, _SUBSET_STREAM]).choice(n, subset, replace=False)
        return sorted(int(i) for i in chosen)
    out = [int(i) for i in subset]
    if any(not 0 <= i < n for i in out):
        raise DataError(f"subset indices must lie in 0..{n - 1}")
    return out


def make_loader(split_index: SplitIndex, img: int = 640, batch: int = 16,
                augment: bool | AugmentConfig = False, seed: int = 0,
                subset: int | Sequence[int] | None = None, workers: int = 0,
                shuffle: bool | None = None, cache: bool | None = None) -> DataLoader:
    """A DataLoader of :func:`collate` batches over ``split_index``.

    Args:
        img, augment, seed, cache: as :class:`YoloDataset`.
        batch: batch size (the last batch may be smaller).
        subset: use only this many images (a fixed seeded random choice) or these indices.
        workers: loader worker processes (persistent, so RAM caches survive epochs).
        shuffle: reshuffle each epoch; default: when augmenting.

    Iterating the loader again gives the next epoch; ``loader.sampler.set_epoch(e)`` jumps.
    """
    if batch < 1:
        raise DataError(f"batch size must be ≥ 1, got {batch}")
    dataset = YoloDataset(split_index, img, augment, seed, cache)
    indices = subset_indices(len(dataset), subset, seed)
    sampler = EpochSampler(indices, seed, bool(augment) if shuffle is None else shuffle)
    return DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=collate,
                      num_workers=workers, persistent_workers=workers > 0)


def first_batch(split_index: SplitIndex, img: int, batch: int, seed: int = 0) -> torch.Tensor:
    """The images ``(B, 3, img, img)`` of one deterministic, un-augmented batch of at most
    ``batch`` images (a fixed seeded subset) — what the zero-cost proxies score on."""
    n = min(batch, len(split_index))
    loader = make_loader(split_index, img=img, batch=n, subset=n, seed=seed, shuffle=False)
    return next(iter(loader))[0]
