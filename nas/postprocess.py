"""Non-maximum suppression and YOLOv7-style post-processing in pure torch (no torchvision).

``nms`` is exact greedy NMS: boxes are visited by decreasing score (stable sort, so equal scores
keep input order) and a box is dropped when its IoU with an already kept box is strictly greater
than ``iou_thres`` (torchvision's rule). It works block by block: each block of the score-sorted
boxes is first cleared against everything kept so far, then resolved internally by iterating the
greedy fixed point ``keep[i] = not any(keep[j] and IoU(j, i) > thr for j < i)``, whose solution is
unique, so the result equals the sequential algorithm while the work stays vectorised.
"""
from __future__ import annotations

import torch

from nas.errors import NasError

__all__ = ["nms", "batched_nms", "postprocess", "xywh2xyxy"]

_BLOCK = 256


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """(..., 4) centre-x, centre-y, width, height -> x1, y1, x2, y2."""
    half = x[..., 2:4] / 2
    return torch.cat([x[..., :2] - half, x[..., :2] + half], dim=-1)


def _over(a: torch.Tensor, b: torch.Tensor, thr: float) -> torch.Tensor:
    """(A, B) bool: IoU(a_i, b_j) > thr (a zero union gives NaN, hence False)."""
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2])
          - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_(min=0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3])
          - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_(min=0)
    inter = iw.mul_(ih)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = (area_a[:, None] + area_b[None, :]).sub_(inter)
    return inter.div_(union) > thr


def _greedy(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor | None,
            iou_thres: float) -> torch.Tensor:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise NasError(f"nms: boxes must be (N, 4), got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if scores.reshape(-1).shape[0] != n or (labels is not None and labels.reshape(-1).shape[0] != n):
        raise NasError("nms: boxes, scores and labels must have the same length")
    device = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    order = torch.sort(scores.reshape(-1), descending=True, stable=True).indices
    if labels is None:
        lab = torch.zeros(n, dtype=torch.int64, device=device)
        perm = order
    else:
        # group by label, keeping the score order inside each label: blocks then hold few
        # labels, and only kept boxes of the block's labels need checking
        lab_o = labels.reshape(-1).to(device=device, dtype=torch.int64)[order]
        grp = torch.sort(lab_o, stable=True).indices
        perm, lab = order[grp], lab_o[grp]
    b = boxes[perm].float()
    kept = torch.zeros(0, dtype=torch.int64, device=device)  # positions in perm order
    for start in range(0, n, _BLOCK):
        end = min(start + _BLOCK, n)
        blk, blab = b[start:end], lab[start:end]
        alive = torch.ones(end - start, dtype=torch.bool, device=device)
        if kept.numel():
            prev = kept[lab[kept] >= blab[0]]  # labels are sorted: earlier ones cannot match
            if prev.numel():
                over = _over(b[prev], blk, iou_thres) & (lab[prev][:, None] == blab[None, :])
                alive = ~over.any(0)
        sup = _over(blk, blk, iou_thres).triu_(diagonal=1)  # sup[i, j]: i may drop j
        sup &= blab[:, None] == blab[None, :]
        sup &= alive[:, None] & alive[None, :]
        keep = alive
        while True:
            new = alive & ~(sup & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        kept = torch.cat([kept, start + keep.nonzero(as_tuple=False).squeeze(1)])
    idx = perm[kept]
    if labels is not None:  # back to global score order (ties by input order)
        rank = torch.empty(n, dtype=torch.int64, device=device)
        rank[order] = torch.arange(n, device=device)
        idx = idx[torch.sort(rank[idx]).indices]
    return idx


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float) -> torch.Tensor:
    """Greedy NMS of (N, 4) xyxy ``boxes``; returns kept indices (int64) by decreasing score."""
    return _greedy(boxes, scores, None, iou_thres)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                iou_thres: float) -> torch.Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same label. Kept indices by score."""
    return _greedy(boxes, scores, labels, iou_thres)


@torch.no_grad()
def postprocess(pred: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.65,
                max_det: int = 300, multi_label: bool = True, agnostic: bool = False,
                classes: list[int] | None = None, max_nms: int = 30000) -> list[torch.Tensor]:
    """YOLOv7 ``non_max_suppression`` on decoded output ``pred`` (B, N, 5 + C).

    Rows are ``[cx, cy, w, h, obj, cls_1..cls_C]`` (probabilities). Rows with ``obj <= conf_thres``
    are dropped; score = obj * cls; with ``multi_label`` (YOLOv7's test.py setting) every class
    with score > conf_thres gives a candidate, otherwise only the best class. At most ``max_nms``
    highest-score candidates enter class-aware NMS (class-agnostic with ``agnostic``), and at most
    ``max_det`` survive. Returns one float32 (n, 6) tensor ``[x1, y1, x2, y2, score, cls]`` per
    image, on ``pred``'s device, rows by decreasing score.
    """
    if pred.dim() != 3 or pred.shape[2] < 6:
        raise NasError(f"postprocess: pred must be (B, N, 5 + C) with C >= 1, "
                       f"got {tuple(pred.shape)}")
    out = []
    for x in pred:
        x = x.float()
        x = x[x[:, 4] > conf_thres]
        empty = torch.zeros((0, 6), dtype=torch.float32, device=pred.device)
        if not x.shape[0]:
            out.append(empty)
            continue
        score = x[:, 5:] * x[:, 4:5]
        box = xywh2xyxy(x[:, :4])
        if multi_label and score.shape[1] > 1:
            i, j = (score > conf_thres).nonzero(as_tuple=False).T
            det = torch.cat([box[i], score[i, j, None], j[:, None].float()], 1)
        else:
            conf, j = score.max(1, keepdim=True)
            det = torch.cat([box, conf, j.float()], 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            det = det[(det[:, 5:6] == torch.tensor(classes, device=det.device,
                                                   dtype=det.dtype)).any(1)]
        if not det.shape[0]:
            out.append(empty)
            continue
        if det.shape[0] > max_nms:
            det = det[torch.sort(det[:, 4], descending=True, stable=True).indices[:max_nms]]
        if agnostic:
            keep = nms(det[:, :4], det[:, 4], iou_thres)
        else:
            keep = batched_nms(det[:, :4], det[:, 4], det[:, 5].long(), iou_thres)
        out.append(det[keep[:max_det]])
    return out
