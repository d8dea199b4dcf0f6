"""Tests for nas.metrics: pycocotools is the oracle (test-only dependency)."""
from __future__ import annotations

import contextlib
import io
import json
import random

import numpy as np
import pytest
import torch

from nas.errors import NasError
from nas.metrics import (coco_map, detections_to_coco, to_coco_ground_truth, to_coco_predictions,
                         write_coco_json)

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def _oracle(tmp_path, preds, gt):
    pred_path, ann_path = write_coco_json(tmp_path, preds, gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(ann_path)
        coco_dt = coco_gt.loadRes(pred_path)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # area 'all', maxDets 100
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k]
        if (p > -1).any():
            per_class[cat] = float(np.mean(p[p > -1]))
    return ev.stats, per_class


def _scenario(seed, n_img=8, cat_ids=(1, 2, 3, 5, 7), crowd=False):
    rng = random.Random(seed)
    images = [{"id": i, "width": 200, "height": 200} for i in range(1, n_img + 1)]
    anns, preds = [], []
    gt_cats = cat_ids[:-1]  # the last category never has GT
    for im in images:
        img = im["id"]
        if img == n_img:  # an image without GT (false positives only)
            n_gt = 0
        else:
            n_gt = rng.randint(0, 6)
        for _ in range(n_gt):
            x, y = rng.uniform(0, 150), rng.uniform(0, 150)
            w, h = rng.uniform(4, 50), rng.uniform(4, 50)
            cat = rng.choice(gt_cats[:-1])  # gt_cats[-1] has GT only via the duplicate below
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h,
                         "iscrowd": int(crowd and rng.random() < 0.15)})
            for _ in range(rng.randint(0, 3)):  # (duplicate) detections around the GT
                j = [rng.gauss(0, 3) for _ in range(4)]
                score = round(rng.random(), rng.choice([1, 2, 6]))  # some tied scores
                preds.append({"image_id": img, "category_id": cat if rng.random() < 0.9
                              else rng.choice(cat_ids),
                              "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])],
                              "score": score})
        for _ in range(rng.randint(0, 5)):  # false positives
            preds.append({"image_id": img, "category_id": rng.choice(cat_ids),
                          "bbox": [rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(2, 60),
                                   rng.uniform(2, 60)], "score": rng.random()})
    # two identical GT boxes (IoU tie) in image 1 for gt_cats[-1]
    for _ in range(2):
        anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": gt_cats[-1],
                     "bbox": [10.0, 10.0, 30.0, 30.0], "area": 900.0, "iscrowd": 0})
    preds.append({"image_id": 1, "category_id": gt_cats[-1], "bbox": [11.0, 10.0, 30.0, 30.0],
                  "score": 0.5})
    # > 100 detections of one category in image 2, and > 100 over categories (< 100 each) in 3
    for i in range(130):
        preds.append({"image_id": 2, "category_id": cat_ids[0],
                      "bbox": [rng.uniform(0, 150), rng.uniform(0, 150), 20.0, 20.0],
                      "score": rng.random() * 0.5})
    for i in range(160):
        preds.append({"image_id": 3, "category_id": cat_ids[i % 4],
                      "bbox": [rng.uniform(0, 150), rng.uniform(0, 150), 25.0, 25.0],
                      "score": rng.random()})
    rng.shuffle(preds)
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}
    return preds, gt


@pytest.mark.parametrize("seed", range(5))
def test_matches_pycocotools(tmp_path, seed):
    preds, gt = _scenario(seed, crowd=seed >= 3)
    stats, per_class = _oracle(tmp_path, preds, gt)
    res = coco_map(preds, gt)
    assert res.map50_95 == pytest.approx(stats[0], abs=1e-6)
    assert res.map50 == pytest.approx(stats[1], abs=1e-6)
    assert res.map75 == pytest.approx(stats[2], abs=1e-6)
    assert res.mar == pytest.approx(stats[8], abs=1e-6)
    assert res.per_class.keys() == per_class.keys()
    for cat, ap in per_class.items():
        assert res.per_class[cat] == pytest.approx(ap, abs=1e-6)
    assert 7 not in res.per_class  # no GT -> excluded
    assert 0 < res.map50_95 < 1


def test_matches_pycocotools_from_tensors(tmp_path):
    gen = torch.Generator().manual_seed(0)
    image_ids = [10, 11, 12, 13]
    gt_boxes, gt_labels, boxes, scores, labels = [], [], [], [], []
    for k in range(4):
        n = k + 1
        xy = torch.rand(n, 2, generator=gen) * 100
        wh = 5 + torch.rand(n, 2, generator=gen) * 40
        b = torch.cat([xy, xy + wh], 1)
        lab = torch.randint(0, 3, (n,), generator=gen)
        gt_boxes.append(b)
        gt_labels.append(lab)
        pb = torch.cat([b + torch.randn(n, 4, generator=gen) * 2, torch.rand(3, 4, generator=gen) * 80
                        + torch.tensor([0, 0, 10, 10])])
        boxes.append(pb)
        scores.append(torch.rand(pb.shape[0], generator=gen))
        labels.append(torch.cat([lab, torch.randint(0, 3, (3,), generator=gen)]))
    gt = to_coco_ground_truth(image_ids, gt_boxes, gt_labels, names=["a", "b", "c"],
                              category_ids=[1, 2, 3], image_sizes=[(128, 128)] * 4)
    preds = to_coco_predictions(image_ids, boxes, scores, labels, category_ids=[1, 2, 3])
    stats, _ = _oracle(tmp_path, preds, gt)
    res = coco_map(preds, gt)
    assert res.map50_95 == pytest.approx(stats[0], abs=1e-6)
    assert res.map50 == pytest.approx(stats[1], abs=1e-6)
    dets = [torch.cat([b, s[:, None], l[:, None].float()], 1)
            for b, s, l in zip(boxes, scores, labels)]
    assert detections_to_coco(image_ids, dets, [1, 2, 3]) == preds
    with open(tmp_path / "annotations.json") as fh:
        assert json.load(fh)["annotations"][0]["id"] == 1


def test_max_dets_other_than_100(tmp_path):
    preds, gt = _scenario(11)
    res = coco_map(preds, gt, max_dets=10)
    pred_path, ann_path = write_coco_json(tmp_path, preds, gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(ann_path)
        ev = COCOeval(coco_gt, coco_gt.loadRes(pred_path), "bbox")
        ev.params.maxDets = [1, 5, 10]
        ev.evaluate()
        ev.accumulate()
    p = ev.eval["precision"][:, :, :, 0, -1]
    assert res.map50_95 == pytest.approx(float(np.mean(p[p > -1])), abs=1e-6)


# ---------------------------------------------------------------- hand-computed
def _one(box_gt, box_dt, score=0.9):
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box_gt,
                           "area": box_gt[2] * box_gt[3], "iscrowd": 0}]}
    return [{"image_id": 1, "category_id": 1, "bbox": box_dt, "score": score}], gt


def test_perfect_detection():
    res = coco_map(*_one([0, 0, 10, 10], [0, 0, 10, 10]))
    # precision is tp / (tp + fp + eps) as in pycocotools, hence 1 - 2e-16 rather than 1
    assert res.map50 == pytest.approx(1.0, abs=1e-12)
    assert res.map50_95 == pytest.approx(1.0, abs=1e-12)
    assert res.per_class == {1: pytest.approx(1.0, abs=1e-12)}


def test_partial_iou_detection():
    # IoU 0.625 matches at t = .50, .55, .60 -> 3 of 10 thresholds
    res = coco_map(*_one([0, 0, 10, 10], [0, 0, 10, 6.25]))
    assert res.map50 == pytest.approx(1.0, abs=1e-12)
    assert res.map50_95 == pytest.approx(0.3, abs=1e-12)
    # IoU 0.58 matches at .50, .55 only
    res = coco_map(*_one([0, 0, 10, 10], [0, 0, 10, 5.8]))
    assert res.map50_95 == pytest.approx(0.2, abs=1e-12)
    assert res.map75 == 0.0


def test_half_recall_and_false_positive_first():
    preds, gt = _one([0, 0, 10, 10], [0, 0, 10, 10])
    gt["annotations"].append({"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10],
                              "area": 100, "iscrowd": 0})
    # recall reaches 0.5 with precision 1: recall points 0, .01, ..., .50 -> 51 of 101
    assert coco_map(preds, gt).map50 == pytest.approx(51 / 101, abs=1e-12)
    # a higher-scored false positive before the true positive, one GT: precision 0.5 everywhere
    preds, gt = _one([0, 0, 10, 10], [0, 0, 10, 10], score=0.8)
    preds.append({"image_id": 1, "category_id": 1, "bbox": [70, 70, 5, 5], "score": 0.9})
    assert coco_map(preds, gt).map50 == pytest.approx(0.5, abs=1e-12)


def test_no_ground_truth_gives_minus_one_and_empty_predictions():
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}], "annotations": []}
    res = coco_map([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}], gt)
    assert res.map50 == -1.0 and res.map50_95 == -1.0 and res.per_class == {}
    _, gt = _one([0, 0, 10, 10], [0, 0, 10, 10])
    assert coco_map([], gt).map50_95 == 0.0


def test_unknown_image_is_an_error():
    preds, gt = _one([0, 0, 10, 10], [0, 0, 10, 10])
    preds[0]["image_id"] = 99
    with pytest.raises(NasError, match="image_id 99"):
        coco_map(preds, gt)


def test_write_coco_json_refuses_nan(tmp_path):
    preds, gt = _one([0, 0, 10, 10], [0, 0, 10, 10], score=float("nan"))
    with pytest.raises(NasError):
        write_coco_json(tmp_path, preds, gt)


def test_iou_tie_and_per_image_truncation_match_pycocotools(tmp_path):
    def ann(i, img, box):
        return {"id": i, "image_id": img, "category_id": 1, "bbox": box,
                "area": box[2] * box[3], "iscrowd": 0}

    # image 1: d1 has the same IoU with A and B and takes the later GT (B), so d2 gets A at 0.82
    anns = [ann(1, 1, [0, 0, 10, 10]), ann(2, 1, [2, 0, 10, 10])]
    preds = [{"image_id": 1, "category_id": 1, "bbox": [1, 0, 10, 10], "score": 0.9},
             {"image_id": 1, "category_id": 1, "bbox": [-1, 0, 10, 10], "score": 0.8}]
    # image 2: 120 confident false positives push the true positives past max_dets=100
    for i in range(3):
        anns.append(ann(3 + i, 2, [100 + 30 * i, 100, 20, 20]))
        preds.append({"image_id": 2, "category_id": 1, "bbox": [100 + 30 * i, 100, 20, 20],
                      "score": 0.3})
    for i in range(120):
        preds.append({"image_id": 2, "category_id": 1, "bbox": [0, 50 + i, 5, 5],
                      "score": 0.5 + i / 1000})
    # image 3: many categories, fewer than 100 detections each -> none is dropped
    for c in range(2, 6):
        anns.append({**ann(10 + c, 3, [10, 10, 30, 30]), "category_id": c})
        for i in range(40):
            preds.append({"image_id": 3, "category_id": c, "bbox": [0, 100 + i, 5, 5],
                          "score": 0.6})
        preds.append({"image_id": 3, "category_id": c, "bbox": [10, 10, 30, 30], "score": 0.1})
    gt = {"images": [{"id": 1}, {"id": 2}, {"id": 3}], "annotations": anns,
          "categories": [{"id": c, "name": str(c)} for c in range(1, 6)]}
    stats, per_class = _oracle(tmp_path, preds, gt)
    res = coco_map(preds, gt)
    assert res.map50_95 == pytest.approx(stats[0], abs=1e-6)
    assert res.map50 == pytest.approx(stats[1], abs=1e-6)
    for cat, ap in per_class.items():
        assert res.per_class[cat] == pytest.approx(ap, abs=1e-6)
    assert res.per_class[2] > 0  # the 41st detection per category still counts
