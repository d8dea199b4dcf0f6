"""Tests for nas.postprocess (pure-torch NMS and YOLOv7-style post-processing)."""
from __future__ import annotations

import pytest
import torch

import nas.postprocess as pp
from nas.errors import NasError
from nas.postprocess import batched_nms, nms, postprocess


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ref_nms(boxes, scores, thr, labels=None):
    """Sequential greedy NMS in plain python."""
    boxes, scores = boxes.tolist(), scores.tolist()
    labels = labels.tolist() if labels is not None else [0] * len(boxes)
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # stable
    keep = []
    for i in order:
        if all(labels[k] != labels[i] or _iou(boxes[k], boxes[i]) <= thr for k in keep):
            keep.append(i)
    return keep


def _random_boxes(n, seed, span=200.0, size=40.0):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen) * span
    wh = 2 + torch.rand(n, 2, generator=gen) * size
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=gen), gen


@pytest.mark.parametrize("seed,n,thr", [(0, 50, 0.5), (1, 300, 0.45), (2, 300, 0.65), (3, 7, 0.3)])
def test_nms_matches_bruteforce(seed, n, thr):
    boxes, scores, _ = _random_boxes(n, seed)
    assert nms(boxes, scores, thr).tolist() == _ref_nms(boxes, scores, thr)


def test_nms_across_blocks_and_ties(monkeypatch):
    monkeypatch.setattr(pp, "_BLOCK", 64)  # force many blocks
    boxes, scores, gen = _random_boxes(400, 5, span=120.0)
    scores = (scores * 10).round() / 10  # many equal scores: input order breaks ties
    labels = torch.randint(0, 3, (400,), generator=gen)
    assert nms(boxes, scores, 0.5).tolist() == _ref_nms(boxes, scores, 0.5)
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == _ref_nms(boxes, scores, 0.5, labels)


def test_nms_chain_needs_sequential_semantics():
    # A suppresses B, so C (overlapping B only) survives: not "Fast NMS"
    boxes = torch.tensor([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]


def test_batched_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.5], [1, 1, 11, 11]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [0]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 2]), 0.5).tolist() == [0, 1, 2]


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def _pred_rows(rows):
    return torch.tensor([rows], dtype=torch.float32)


def test_postprocess_scores_boxes_and_multi_label():
    # cx, cy, w, h, obj, cls0, cls1
    pred = _pred_rows([[50, 50, 20, 10, 0.8, 0.9, 0.5],   # two classes above threshold
                       [51, 50, 20, 10, 0.5, 0.8, 0.1],   # same class 0, overlapping -> dropped
                       [10, 10, 4, 4, 0.0005, 1.0, 1.0]])  # objectness below conf_thres
    out = postprocess(pred, conf_thres=0.3, iou_thres=0.5)
    assert len(out) == 1 and out[0].dtype == torch.float32
    got = out[0].tolist()
    assert got[0] == pytest.approx([40, 45, 60, 55, 0.72, 0])
    assert got[1] == pytest.approx([40, 45, 60, 55, 0.4, 1])
    assert len(got) == 2
    single = postprocess(pred, conf_thres=0.3, iou_thres=0.5, multi_label=False)[0].tolist()
    assert len(single) == 1 and single[0] == pytest.approx([40, 45, 60, 55, 0.72, 0])
    agn = postprocess(pred, conf_thres=0.3, iou_thres=0.5, agnostic=True)[0]
    assert agn.shape == (1, 6)
    only1 = postprocess(pred, conf_thres=0.3, iou_thres=0.5, classes=[1])[0]
    assert only1[:, 5].tolist() == [1.0]


def test_postprocess_matches_reference_pipeline_and_max_det():
    gen = torch.Generator().manual_seed(7)
    b, n, nc = 2, 250, 3
    xy = torch.rand(b, n, 2, generator=gen) * 300
    wh = 5 + torch.rand(b, n, 2, generator=gen) * 60
    pred = torch.cat([xy, wh, torch.rand(b, n, 1 + nc, generator=gen)], 2)
    out = postprocess(pred, conf_thres=0.05, iou_thres=0.6, max_det=10_000)
    for i in range(b):
        x = pred[i][pred[i][:, 4] > 0.05]
        sc = x[:, 5:] * x[:, 4:5]
        bx = torch.cat([x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2], 1)
        r, c = (sc > 0.05).nonzero().T
        boxes, scores, labels = bx[r], sc[r, c], c
        keep = _ref_nms(boxes, scores, 0.6, labels)
        assert out[i][:, 4].tolist() == pytest.approx(scores[keep].tolist())
        assert out[i][:, 5].tolist() == labels[keep].float().tolist()
        assert torch.equal(out[i][:, :4], boxes[keep])
    capped = postprocess(pred, conf_thres=0.05, iou_thres=0.6, max_det=5)
    assert [t.shape[0] for t in capped] == [5, 5]
    assert torch.equal(capped[0], out[0][:5])


def test_postprocess_empty_and_half():
    pred = torch.zeros(3, 10, 7)
    assert [t.shape for t in postprocess(pred)] == [(0, 6)] * 3
    pred = _pred_rows([[50, 50, 20, 10, 0.8, 0.9, 0.5]]).half()
    out = postprocess(pred)[0]
    assert out.dtype == torch.float32 and out.shape == (2, 6)


def test_postprocess_rejects_bad_shape():
    with pytest.raises(NasError):
        postprocess(torch.zeros(10, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    boxes, scores, gen = _random_boxes(2000, 9, span=300.0)
    labels = torch.randint(0, 5, (2000,), generator=gen)
    cpu = batched_nms(boxes, scores, labels, 0.5)
    gpu = batched_nms(boxes.cuda(), scores.cuda(), labels.cuda(), 0.5)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    pred = torch.rand(2, 3000, 8, generator=gen)
    pred[..., :2] *= 320
    pred[..., 2:4] *= 60
    out_c = postprocess(pred)
    out_g = postprocess(pred.cuda())
    for c, g in zip(out_c, out_g):
        assert g.device.type == "cuda" and torch.allclose(g.cpu(), c)
    out_h = postprocess(pred.cuda().half())
    assert all(t.dtype == torch.float32 for t in out_h)
