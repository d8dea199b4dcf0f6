"""COCO-style box mAP computed without pycocotools.

``coco_map`` reproduces ``COCOeval(gt, gt.loadRes(predictions), 'bbox')`` followed by
``evaluate(); accumulate()`` for the area range 'all' and a single ``maxDets``:

* images are ``ground_truth['images']`` and categories ``ground_truth['categories']`` (sorted,
  unique); annotations of other images or categories are dropped, and so are predictions of
  categories the ground truth does not list (a prediction on an unknown image is an error, as it is
  for ``loadRes``);
* per image and category, detections are ordered by score with a stable sort and the first
  ``max_dets`` are kept (the limit is per image *per category*, as in ``evaluateImg``);
* IoU is computed on xywh boxes without +1, from the boxes themselves (``maskUtils.iou``); a crowd
  GT uses the detection's area as the union;
* a GT is ignored when it is a crowd or its ``area`` field lies outside [0, 1e10]; greedy matching
  per IoU threshold goes by detection score, prefers non-ignored GTs, takes the highest-IoU
  available GT (the last one among equals) with ``IoU >= min(t, 1 - 1e-10)``; crowd GTs may be
  matched repeatedly; a detection matched to an ignored GT, or unmatched with an area outside the
  range, is ignored;
* precision is made monotone and sampled at 101 recall points; a category with no non-ignored GT
  gets -1 and is left out of every mean; mAP is the mean of all remaining precision samples.

One deliberate difference: pycocotools counts a detection matched to a GT annotation whose ``id``
is 0 as a false positive (it stores the GT id as the match flag). Here matching never depends on
annotation ids; ``to_coco_ground_truth`` numbers annotations from 1 so both agree.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nas.errors import NasError

__all__ = [
    "MapResult", "coco_map", "default_iou_thresholds", "to_coco_predictions",
    "detections_to_coco", "to_coco_ground_truth", "write_coco_json",
]

_AREA_ALL = (0.0, 1e5 ** 2)
_REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def default_iou_thresholds() -> np.ndarray:
    """0.50:0.05:0.95 built exactly as pycocotools builds it."""
    return np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


@dataclass
class MapResult:
    """Result of :func:`coco_map`. Means are -1.0 when no category has a ground-truth box.

    ``map50``/``map75`` are NaN when that threshold is not among ``iou_thresholds``.
    ``per_class``/``per_class_ap50`` map category id -> AP for the categories that have at least
    one non-ignored GT box. ``precision`` is the (T, 101, K) table (-1 = no GT), K over
    ``category_ids``; ``recall`` is (T, K).
    """

    map50: float
    map50_95: float
    map75: float
    mar: float
    per_class: dict[Any, float]
    per_class_ap50: dict[Any, float]
    iou_thresholds: tuple[float, ...]
    category_ids: tuple[Any, ...]
    max_dets: int
    precision: np.ndarray = field(repr=False)
    recall: np.ndarray = field(repr=False)


# ------------------------------------------------------------------------------- input parsing
def _get(d: Mapping, key: str, where: str):
    try:
        return d[key]
    except (KeyError, TypeError):
        raise NasError(f"missing field '{key}'", where=where) from None


def _bbox(value, where: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise NasError(f"bbox must be 4 numbers [x, y, w, h], got {value!r}", where=where) from None
    return x, y, w, h


def _parse_gt(ground_truth: Mapping):
    images = _get(ground_truth, "images", "ground truth")
    cats = _get(ground_truth, "categories", "ground truth")
    anns = _get(ground_truth, "annotations", "ground truth")
    img_ids = sorted({_get(im, "id", f"ground truth images[{i}]") for i, im in enumerate(images)})
    cat_ids = sorted({_get(c, "id", f"ground truth categories[{i}]") for i, c in enumerate(cats)})
    img_set, cat_set = set(img_ids), set(cat_ids)
    gts: dict[tuple, list] = {}
    for i, a in enumerate(anns):
        where = f"ground truth annotations[{i}]"
        img, cat = _get(a, "image_id", where), _get(a, "category_id", where)
        if img not in img_set or cat not in cat_set:
            continue
        box = _bbox(_get(a, "bbox", where), where)
        area = float(a["area"]) if "area" in a else box[2] * box[3]
        crowd = bool(a.get("iscrowd", 0))
        gts.setdefault((img, cat), []).append((box, area, crowd))
    return img_ids, cat_ids, gts


def _parse_dt(predictions: Iterable[Mapping], img_set: set, cat_set: set):
    dts: dict[tuple, list] = {}
    for i, d in enumerate(predictions):
        where = f"predictions[{i}]"
        img, cat = _get(d, "image_id", where), _get(d, "category_id", where)
        if img not in img_set:
            raise NasError(f"image_id {img!r} is not in the ground truth images", where=where)
        box = _bbox(_get(d, "bbox", where), where)
        score = float(_get(d, "score", where))
        if cat not in cat_set:
            continue
        dts.setdefault((img, cat), []).append((box, box[2] * box[3], score))
    return dts


# ------------------------------------------------------------------------------- evaluation
def _iou_matrix(dt_boxes: np.ndarray, gt_boxes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU of xywh boxes, as maskUtils.iou (bbIou) computes it, in float64."""
    d = dt_boxes[:, None, :]
    g = gt_boxes[None, :, :]
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    da = d[..., 2] * d[..., 3]
    ga = g[..., 2] * g[..., 3]
    inter = w * h
    union = np.where(crowd[None, :], da, da + ga - inter)
    ok = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, inter / np.where(ok, union, 1.0), 0.0)
    return out


def _evaluate_img(gt: list, dt: list, thrs: np.ndarray, max_dets: int):
    """Match one image/category. Returns (scores (D,), matched (T,D), dt_ignore (T,D), gt_ignore)."""
    lo, hi = _AREA_ALL
    gt_ig_raw = [1 if (crowd or area < lo or area > hi) else 0 for (_, area, crowd) in gt]
    gt_order = np.argsort(np.array(gt_ig_raw, dtype=np.int64), kind="mergesort")
    gt = [gt[i] for i in gt_order]
    gt_ig = [gt_ig_raw[i] for i in gt_order]
    crowd = [c for (_, _, c) in gt]
    dt_order = np.argsort(np.array([-s for (_, _, s) in dt], dtype=np.float64), kind="mergesort")
    dt = [dt[i] for i in dt_order[:max_dets]]

    n_t, n_d, n_g = len(thrs), len(dt), len(gt)
    matched = np.zeros((n_t, n_d), dtype=bool)
    dt_ig = np.zeros((n_t, n_d), dtype=bool)
    if n_d and n_g:
        ious = _iou_matrix(np.array([b for (b, _, _) in dt], dtype=np.float64),
                           np.array([b for (b, _, _) in gt], dtype=np.float64),
                           np.array(crowd, dtype=bool)).tolist()
        for ti, t in enumerate(thrs.tolist()):
            gt_used = [False] * n_g
            for di in range(n_d):
                best = min(t, 1 - 1e-10)
                m = -1
                row = ious[di]
                for gi in range(n_g):
                    if gt_used[gi] and not crowd[gi]:
                        continue
                    if m > -1 and gt_ig[m] == 0 and gt_ig[gi] == 1:
                        break
                    if row[gi] < best:
                        continue
                    best = row[gi]
                    m = gi
                if m == -1:
                    continue
                dt_ig[ti, di] = bool(gt_ig[m])
                matched[ti, di] = True
                gt_used[m] = True
    out_of_range = np.array([area < lo or area > hi for (_, area, _) in dt], dtype=bool)
    dt_ig |= (~matched) & out_of_range[None, :]
    scores = np.array([s for (_, _, s) in dt], dtype=np.float64)
    return scores, matched, dt_ig, np.array(gt_ig, dtype=np.int64)


def coco_map(predictions: Iterable[Mapping], ground_truths: Mapping,
             iou_thresholds: Sequence[float] | np.ndarray | None = None,
             max_dets: int = 100) -> MapResult:
    """COCO 'bbox' mAP of ``predictions`` against ``ground_truths`` (see the module docstring).

    ``predictions``: list of ``{image_id, category_id, bbox: [x, y, w, h], score}``;
    ``ground_truths``: COCO dict ``{images, annotations, categories}``.
    """
    thrs = (default_iou_thresholds() if iou_thresholds is None
            else np.asarray(iou_thresholds, dtype=np.float64).reshape(-1))
    if thrs.size == 0:
        raise NasError("iou_thresholds must not be empty", where="coco_map")
    if max_dets < 1:
        raise NasError(f"max_dets must be >= 1, got {max_dets}", where="coco_map")
    img_ids, cat_ids, gts = _parse_gt(ground_truths)
    dts = _parse_dt(predictions, set(img_ids), set(cat_ids))

    n_t, n_r, n_k = len(thrs), len(_REC_THRS), len(cat_ids)
    precision = -np.ones((n_t, n_r, n_k))
    recall = -np.ones((n_t, n_k))
    for k, cat in enumerate(cat_ids):
        evals = []
        for img in img_ids:
            gt, dt = gts.get((img, cat), []), dts.get((img, cat), [])
            if gt or dt:
                evals.append(_evaluate_img(gt, dt, thrs, max_dets))
        if not evals:
            continue
        scores = np.concatenate([e[0] for e in evals])
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([e[1] for e in evals], axis=1)[:, order]
        dt_ig = np.concatenate([e[2] for e in evals], axis=1)[:, order]
        gt_ig = np.concatenate([e[3] for e in evals])
        npig = int(np.count_nonzero(gt_ig == 0))
        if npig == 0:
            continue
        tps = matched & ~dt_ig
        fps = ~matched & ~dt_ig
        tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
        fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
        for t in range(n_t):
            tp, fp = tp_sum[t], fp_sum[t]
            nd = len(tp)
            rc = tp / npig
            pr = tp / (fp + tp + np.spacing(1))
            recall[t, k] = rc[-1] if nd else 0.0
            if nd:
                pr = np.maximum.accumulate(pr[::-1])[::-1]
            idx = np.searchsorted(rc, _REC_THRS, side="left")
            q = np.zeros(n_r)
            valid = idx < nd
            q[valid] = pr[idx[valid]]
            precision[t, :, k] = q

    def mean_valid(a: np.ndarray) -> float:
        v = a[a > -1]
        return float(np.mean(v)) if v.size else -1.0

    def at(thr: float) -> float:
        hit = np.nonzero(np.isclose(thrs, thr, rtol=0.0, atol=1e-12))[0]
        return mean_valid(precision[hit]) if hit.size else math.nan

    per_class, per_class50 = {}, {}
    hit50 = np.nonzero(np.isclose(thrs, 0.5, rtol=0.0, atol=1e-12))[0]
    for k, cat in enumerate(cat_ids):
        if precision[0, 0, k] > -1:
            per_class[cat] = float(np.mean(precision[:, :, k]))
            per_class50[cat] = float(np.mean(precision[hit50, :, k])) if hit50.size else math.nan
    return MapResult(map50=at(0.5), map50_95=mean_valid(precision), map75=at(0.75),
                     mar=mean_valid(recall), per_class=per_class, per_class_ap50=per_class50,
                     iou_thresholds=tuple(float(t) for t in thrs), category_ids=tuple(cat_ids),
                     max_dets=int(max_dets), precision=precision, recall=recall)


# ------------------------------------------------------------------------------- converters
def _rows(x) -> list:
    """Tensor / ndarray / sequence -> nested python lists of float64-converted numbers."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).tolist()
    if isinstance(x, np.ndarray):
        return (x.astype(np.float64) if x.dtype.kind == "f" else x).tolist()
    return list(x)


def _scalar_id(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def _xywh(box, where: str) -> list[float]:
    if len(box) != 4:
        raise NasError(f"box must have 4 coordinates, got {len(box)}", where=where)
    x1, y1, x2, y2 = (float(c) for c in box)
    return [x1, y1, x2 - x1, y2 - y1]


def _category(label, category_ids, where: str):
    label = int(label)
    if category_ids is None:
        return label
    if not 0 <= label < len(category_ids):
        raise NasError(f"class index {label} has no category id "
                       f"({len(category_ids)} given)", where=where)
    return _scalar_id(category_ids[label])


def to_coco_predictions(image_ids: Sequence, boxes_xyxy: Sequence, scores: Sequence,
                        labels: Sequence, category_ids: Sequence | None = None) -> list[dict]:
    """Per-image (n_i, 4) xyxy boxes, (n_i,) scores and (n_i,) class indices -> COCO results list.

    ``category_ids[label]`` gives the COCO category id of a class index (identity when None).
    """
    if not (len(image_ids) == len(boxes_xyxy) == len(scores) == len(labels)):
        raise NasError("image_ids, boxes_xyxy, scores and labels must have one entry per image",
                       where="to_coco_predictions")
    out = []
    for img, b, s, l in zip(image_ids, boxes_xyxy, scores, labels):
        img = _scalar_id(img)
        b, s, l = _rows(b), _rows(s), _rows(l)
        where = f"to_coco_predictions image {img!r}"
        if not len(b) == len(s) == len(l):
            raise NasError("boxes, scores and labels differ in length", where=where)
        for box, score, label in zip(b, s, l):
            out.append({"image_id": img, "category_id": _category(label, category_ids, where),
                        "bbox": _xywh(box, where), "score": float(score)})
    return out


def detections_to_coco(image_ids: Sequence, detections: Sequence,
                       category_ids: Sequence | None = None) -> list[dict]:
    """Per-image (n, 6) ``[x1, y1, x2, y2, score, cls]`` tensors (``postprocess`` output) -> list."""
    boxes, scores, labels = [], [], []
    for det in detections:
        rows = _rows(det)
        boxes.append([r[:4] for r in rows])
        scores.append([r[4] for r in rows])
        labels.append([int(r[5]) for r in rows])
    return to_coco_predictions(image_ids, boxes, scores, labels, category_ids)


def to_coco_ground_truth(image_ids: Sequence, boxes_xyxy: Sequence, labels: Sequence,
                         num_classes: int | None = None, names: Sequence[str] | None = None,
                         category_ids: Sequence | None = None,
                         image_sizes: Sequence[tuple[int, int]] | None = None) -> dict:
    """Per-image (n_i, 4) xyxy GT boxes and (n_i,) class indices -> COCO ground-truth dict.

    Categories come from ``names`` (preferred), else ``num_classes``, else the largest label + 1;
    ``category_ids[i]`` is the COCO id of class ``i`` (identity when None). ``image_sizes`` gives
    (height, width) per image. Annotation ids start at 1 (pycocotools treats id 0 as unmatched);
    ``area`` is w * h and ``iscrowd`` 0.
    """
    if not len(image_ids) == len(boxes_xyxy) == len(labels):
        raise NasError("image_ids, boxes_xyxy and labels must have one entry per image",
                       where="to_coco_ground_truth")
    if image_sizes is not None and len(image_sizes) != len(image_ids):
        raise NasError("image_sizes must have one (height, width) per image",
                       where="to_coco_ground_truth")
    images, anns = [], []
    max_label = -1
    for i, (img, b, l) in enumerate(zip(image_ids, boxes_xyxy, labels)):
        img = _scalar_id(img)
        entry = {"id": img}
        if image_sizes is not None:
            h, w = image_sizes[i]
            entry.update(height=int(h), width=int(w))
        images.append(entry)
        b, l = _rows(b), _rows(l)
        where = f"to_coco_ground_truth image {img!r}"
        if len(b) != len(l):
            raise NasError("boxes and labels differ in length", where=where)
        for box, label in zip(b, l):
            xywh = _xywh(box, where)
            max_label = max(max_label, int(label))
            anns.append({"id": len(anns) + 1, "image_id": img,
                         "category_id": _category(label, category_ids, where), "bbox": xywh,
                         "area": xywh[2] * xywh[3], "iscrowd": 0})
    if names is not None:
        n_cls = len(names)
    elif num_classes is not None:
        n_cls = int(num_classes)
    elif category_ids is not None:
        n_cls = len(category_ids)
    else:
        n_cls = max_label + 1
    if max_label >= n_cls:
        raise NasError(f"label {max_label} out of range for {n_cls} classes",
                       where="to_coco_ground_truth")
    cats = []
    for c in range(n_cls):
        cid = _scalar_id(category_ids[c]) if category_ids is not None else c
        cats.append({"id": cid, "name": str(names[c]) if names is not None else str(cid)})
    return {"images": images, "annotations": anns, "categories": cats}


def write_coco_json(directory: str | os.PathLike, predictions: list[dict],
                    ground_truth: Mapping) -> tuple[str, str]:
    """Write ``predictions.json`` and ``annotations.json`` into ``directory`` (created if needed).

    Returns the two paths (predictions, annotations). Non-finite numbers are refused.
    """
    os.makedirs(directory, exist_ok=True)
    pred_path = os.path.join(os.fspath(directory), "predictions.json")
    ann_path = os.path.join(os.fspath(directory), "annotations.json")
    for path, obj in ((pred_path, predictions), (ann_path, ground_truth)):
        try:
            text = json.dumps(obj, allow_nan=False)
        except ValueError:
            raise NasError("contains NaN or infinite numbers", where=path) from None
        except TypeError as exc:
            raise NasError(f"not JSON-serialisable: {exc}", where=path) from None
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    return pred_path, ann_path
