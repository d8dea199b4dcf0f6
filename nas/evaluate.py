"""Validation: run a detector over a split, map boxes back to the original images, COCO mAP.

:func:`evaluate` letterboxes the split's images to ``img``, runs the model in eval mode, applies
YOLOv7's post-processing (:func:`nas.postprocess.postprocess`: obj > conf, multi-label,
class-aware NMS at ``iou``), maps each box back to original pixels with the letterbox geometry
(``x = (x_lb − pad) / ratio``, clipped to the image) and scores the detections against the split's
labels with :func:`nas.metrics.coco_map` (pycocotools' COCOeval 'bbox', area all, maxDets 100).

Image ids are the image's index in the split, category ids the class index. The ground truth is
built from the label files (normalised ``cx cy w h`` × the original size), not from the
letterboxed targets, so the mAP does not depend on ``img``'s rounding.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nas.build import module_device
from nas.data import SplitIndex, make_loader, subset_indices, yolo_to_xyxy
from nas.errors import NasError
from nas.metrics import coco_map, to_coco_ground_truth, to_coco_predictions, write_coco_json
from nas.postprocess import postprocess

__all__ = ["EvalResult", "evaluate", "ground_truth", "load_weights", "make_eval_loader", "predict"]


@dataclass
class EvalResult:
    """mAP of one evaluation plus what produced it (COCO dicts, for ``--save-json``)."""

    map50: float
    map50_95: float
    images: int
    seconds: float
    predictions: list[dict] = field(repr=False)
    ground_truth: dict = field(repr=False)

    def save_json(self, directory: str | Path) -> tuple[str, str]:
        """Write ``predictions.json`` (COCO results) and ``annotations.json`` (COCO GT)."""
        return write_coco_json(directory, self.predictions, self.ground_truth)


def ground_truth(split: SplitIndex, indices: Sequence[int] | None = None) -> dict:
    """COCO ground-truth dict of ``split`` (or of the images ``indices``), original pixels."""
    indices = range(len(split)) if indices is None else indices
    boxes, labels, sizes = [], [], []
    for i in indices:
        rows = split.labels[i]
        boxes.append(yolo_to_xyxy(rows[:, 1:], split.shapes[i]).astype(np.float64))
        labels.append(rows[:, 0].astype(np.int64))
        sizes.append(split.shapes[i])
    return to_coco_ground_truth(list(indices), boxes, labels, names=list(split.names),
                                image_sizes=sizes)


@torch.no_grad()
def predict(model: nn.Module, loader, conf: float = 0.001, iou: float = 0.65,
            max_det: int = 300, device: torch.device | str | None = None,
            on_batch: Callable[[int, int], None] | None = None
            ) -> tuple[list[int], list[np.ndarray]]:
    """Detections of ``model`` on ``loader``'s images → (dataset indices, per-image (n, 6)
    ``x1 y1 x2 y2 score cls`` arrays in original-image pixels). Images go to ``device``, by
    default the model's own."""
    device = module_device(model) if device is None else device
    was_training = model.training
    model.eval()
    ids: list[int] = []
    dets: list[np.ndarray] = []
    sampler = loader.sampler
    order = [int(i) for i in sampler.indices]
    pos = 0
    try:
        for bi, (images, _targets, metas) in enumerate(loader):
            out = model(images.to(device, non_blocking=True))
            decoded = out[0] if isinstance(out, (tuple, list)) else out
            for det, meta in zip(postprocess(decoded, conf, iou, max_det), metas):
                d = det.cpu().numpy().astype(np.float64)
                h, w = meta.shape
                d[:, [0, 2]] = ((d[:, [0, 2]] - meta.pad[0]) / meta.ratio[0]).clip(0, w)
                d[:, [1, 3]] = ((d[:, [1, 3]] - meta.pad[1]) / meta.ratio[1]).clip(0, h)
                dets.append(d)
                ids.append(order[pos])
                pos += 1
            if on_batch is not None:
                on_batch(bi + 1, len(loader))
    finally:
        model.train(was_training)
    return ids, dets


def evaluate(model: nn.Module, split: SplitIndex, img: int = 640, batch: int = 16,
             conf: float = 0.001, iou: float = 0.65, max_det: int = 300,
             subset: int | Sequence[int] | None = None, seed: int = 0, workers: int = 0,
             device: torch.device | str | None = None, loader=None, gt: dict | None = None,
             on_batch: Callable[[int, int], None] | None = None) -> EvalResult:
    """COCO mAP@0.5 and mAP@0.5:0.95 of ``model`` on ``split`` (see the module docstring).

    Args:
        subset: evaluate only this many images (fixed seeded choice) or these indices.
        device: where the images go (default: the model's device).
        loader / gt: reuse a loader from :func:`make_eval_loader` and its ground truth (for
            repeated evaluation during training).
    """
    if not 0 <= conf < 1 or not 0 < iou <= 1:
        raise NasError(f"conf must lie in [0, 1) and iou in (0, 1], got {conf}, {iou}")
    head = getattr(model, "head", None)
    if head is not None and getattr(head, "nc", split.nc) != split.nc:
        raise NasError(f"the model predicts {head.nc} classes but the data has {split.nc}")
    t0 = time.perf_counter()
    if loader is None:
        loader = make_eval_loader(split, img, batch, subset, seed, workers)
    ids, dets = predict(model, loader, conf, iou, max_det, device, on_batch)
    if gt is None:
        gt = ground_truth(split, [int(i) for i in loader.sampler.indices])
    preds = to_coco_predictions(ids, [d[:, :4] for d in dets], [d[:, 4] for d in dets],
                                [d[:, 5].astype(np.int64) for d in dets])
    result = coco_map(preds, gt)
    return EvalResult(map50=max(result.map50, 0.0), map50_95=max(result.map50_95, 0.0),
                      images=len(ids), seconds=time.perf_counter() - t0, predictions=preds,
                      ground_truth=gt)


def make_eval_loader(split: SplitIndex, img: int, batch: int,
                     subset: int | Sequence[int] | None = None, seed: int = 0, workers: int = 0):
    """A non-augmented, unshuffled loader over ``split`` (or a seeded subset of it)."""
    indices = subset_indices(len(split), subset, seed)
    return make_loader(split, img=img, batch=batch, augment=False, seed=seed, subset=indices,
                       workers=workers, shuffle=False)


def load_weights(model: nn.Module, path: str | Path, model_name: str = "the model") -> nn.Module:
    """Load a plain state dict saved by ``y7nas train`` (``torch.load(weights_only=True)``).

    Raises:
        NasError: a missing file, a file that is not a state dict, or weights that do not fit
            (``weights W do not fit MODEL: 2 missing, 1 unexpected keys, first: …``).
    """
    import pickle

    path = Path(path)
    if not path.is_file():
        raise NasError("no such weights file", where=str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError,
            AttributeError, TypeError, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise NasError(f"not a PyTorch state dict ({first})", where=str(path)) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # {'model': state_dict, ...} checkpoints
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise NasError("not a state dict (expected a mapping of parameter names to tensors)",
                       where=str(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise NasError(f"weights {path} do not fit {model_name}: {len(missing)} missing, "
                       f"{len(unexpected)} unexpected keys, first: {first}")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise NasError(f"weights {path} do not fit {model_name}: {len(wrong)} tensors of the "
                       f"wrong shape, first: {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
    model.load_state_dict(state)
    return model
