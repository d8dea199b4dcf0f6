"""SimOTA label assignment (YOLOX, 2022 release) as a standalone function.

Everything here runs without gradients, on whatever device the inputs live on, and computes
in float32 whatever the input dtype (float16 inputs are up-cast first).

Rules (see docs in ``simota``):

* candidates: priors whose centre lies strictly inside some GT box, or strictly within
  ``center_radius * stride`` of some GT centre (union over GTs);
* ``in_box_and_center[g, p]``: prior ``p`` satisfies both conditions for GT ``g``;
* ``cost[g, p] = sum_c BCE(sqrt(cls_p * obj_p), onehot(label_g)) + 3 * -log(IoU + 1e-8)
  + 1e5 * (not in_box_and_center[g, p])`` over candidate priors only;
* ``dynamic_k[g] = max(1, int(sum of the top min(topk, #candidates) IoUs of g))``;
* each GT takes its ``dynamic_k`` cheapest candidates (ties: lower prior index first);
* a prior taken by several GTs is given to the GT with the lowest cost for it, the minimum being
  taken over all GTs as YOLOX does (ties: lower GT index).
"""
from __future__ import annotations

import torch

from nas.errors import NasError

__all__ = ["box_iou", "candidate_mask", "simota"]

_IOU_COST_WEIGHT = 3.0
_OUTSIDE_PENALTY = 1e5
_LOG_EPS = 1e-8


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: ``a`` (M, 4), ``b`` (N, 4) -> (M, N).

    Areas are ``(x2 - x1) * (y2 - y1)`` (no +1); overlap is clamped at zero. A pair whose union is
    zero (two empty boxes) gets IoU 0. Computed in the promoted dtype of the inputs; differentiable.
    """
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise NasError(f"box_iou expects (*, 4) boxes, got {tuple(a.shape)} and {tuple(b.shape)}")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = (torch.minimum(a[:, None, 2], b[None, :, 2])
          - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_(min=0)
    ih = (torch.minimum(a[:, None, 3], b[None, :, 3])
          - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_(min=0)
    inter = iw * ih
    union = area_a[:, None] + area_b[None, :] - inter
    # an empty union has an empty intersection: clamping gives 0 / tiny = 0, with finite grads
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def candidate_mask(points: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor,
                   center_radius: float = 2.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometric pre-selection of SimOTA.

    ``points`` (N, 2) prior centres in pixels, ``strides`` (N,), ``gt_boxes`` (M, 4) xyxy pixels.
    Returns ``(candidates, in_box_and_center)``: ``candidates`` (N,) bool, true where the prior's
    centre is strictly inside any GT box or strictly within ``center_radius * stride`` (a square
    half-side) of any GT centre; ``in_box_and_center`` (M, N) bool, both conditions for that GT.
    """
    n, m = points.shape[0], gt_boxes.shape[0]
    if m == 0 or n == 0:
        return (torch.zeros(n, dtype=torch.bool, device=points.device),
                torch.zeros(m, n, dtype=torch.bool, device=points.device))
    px = points[:, 0].float()[None, :]
    py = points[:, 1].float()[None, :]
    gt = gt_boxes.float()
    x1, y1, x2, y2 = (gt[:, i:i + 1] for i in range(4))
    in_box = (px - x1 > 0) & (py - y1 > 0) & (x2 - px > 0) & (y2 - py > 0)
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    r = strides.to(device=points.device, dtype=torch.float32)[None, :] * center_radius
    in_center = (px - (cx - r) > 0) & (py - (cy - r) > 0) & ((cx + r) - px > 0) & ((cy + r) - py > 0)
    candidates = in_box.any(0) | in_center.any(0)
    return candidates, in_box & in_center


def _check_inputs(pred_boxes, pred_cls, pred_obj, points, strides, gt_boxes, gt_labels):
    n = pred_boxes.shape[0]
    if pred_boxes.dim() != 2 or pred_boxes.shape[1] != 4:
        raise NasError(f"simota: pred_boxes must be (N, 4), got {tuple(pred_boxes.shape)}")
    if pred_cls.dim() != 2 or pred_cls.shape[0] != n:
        raise NasError(f"simota: pred_cls must be (N, C) with N={n}, got {tuple(pred_cls.shape)}")
    if pred_obj.reshape(-1).shape[0] != n:
        raise NasError(f"simota: pred_obj must have N={n} entries, got {tuple(pred_obj.shape)}")
    if points.shape != (n, 2):
        raise NasError(f"simota: points must be (N, 2) with N={n}, got {tuple(points.shape)}")
    if strides.reshape(-1).shape[0] != n:
        raise NasError(f"simota: strides must have N={n} entries, got {tuple(strides.shape)}")
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4:
        raise NasError(f"simota: gt_boxes must be (M, 4), got {tuple(gt_boxes.shape)}")
    if gt_labels.reshape(-1).shape[0] != gt_boxes.shape[0]:
        raise NasError(f"simota: gt_labels must have M={gt_boxes.shape[0]} entries, "
                       f"got {tuple(gt_labels.shape)}")
    if gt_labels.numel():
        lo, hi = int(gt_labels.min()), int(gt_labels.max())
        if lo < 0 or hi >= pred_cls.shape[1]:
            raise NasError(f"simota: gt_labels must lie in [0, {pred_cls.shape[1] - 1}], "
                           f"got range [{lo}, {hi}]")


@torch.no_grad()
def simota(pred_boxes: torch.Tensor, pred_cls: torch.Tensor, pred_obj: torch.Tensor,
           points: torch.Tensor, strides: torch.Tensor, gt_boxes: torch.Tensor,
           gt_labels: torch.Tensor, center_radius: float = 2.5,
           topk: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign priors of one image to ground-truth boxes with SimOTA.

    Args:
        pred_boxes: (N, 4) predicted boxes, xyxy pixels.
        pred_cls: (N, C) class probabilities (after sigmoid).
        pred_obj: (N,) objectness probabilities (after sigmoid).
        points: (N, 2) prior centres in pixels.
        strides: (N,) stride of each prior.
        gt_boxes: (M, 4) xyxy pixels.
        gt_labels: (M,) class indices.

    Returns:
        ``assigned_gt`` (N,) int64, index of the matched GT or -1 for background, and
        ``assigned_iou`` (N,) float32, IoU of the prior's predicted box with that GT (0 for
        background). Both on the inputs' device.
    """
    _check_inputs(pred_boxes, pred_cls, pred_obj, points, strides, gt_boxes, gt_labels)
    if topk < 1:
        raise NasError(f"simota: topk must be >= 1, got {topk}")
    device = pred_boxes.device
    n, m = pred_boxes.shape[0], gt_boxes.shape[0]
    assigned_gt = torch.full((n,), -1, dtype=torch.int64, device=device)
    assigned_iou = torch.zeros(n, dtype=torch.float32, device=device)
    if m == 0 or n == 0:
        return assigned_gt, assigned_iou

    gt = gt_boxes.to(device=device, dtype=torch.float32)
    labels = gt_labels.to(device=device, dtype=torch.int64).reshape(-1)
    cand, in_both = candidate_mask(points.to(device), strides.to(device).reshape(-1), gt,
                                   center_radius)
    cand_idx = cand.nonzero(as_tuple=False).squeeze(1)
    nc = cand_idx.numel()
    if nc == 0:
        return assigned_gt, assigned_iou

    boxes = pred_boxes[cand_idx].float()
    ious = box_iou(gt, boxes)  # (M, nc)
    in_both = in_both[:, cand_idx]

    # Sum over classes of BCE(p, onehot(label)) with logs clamped at -100 like torch's BCE:
    # sum_c -log(1 - p_c) + [-log(p_l) + log(1 - p_l)] for the GT's label l.
    p = (pred_cls[cand_idx].float() * pred_obj.reshape(-1)[cand_idx].float()[:, None]).sqrt()
    neg_log_p = -torch.log(p).clamp(min=-100.0)
    neg_log_1mp = -torch.log(1.0 - p).clamp(min=-100.0)
    cls_cost = neg_log_1mp.sum(1)[None, :] + (neg_log_p - neg_log_1mp)[:, labels].T  # (M, nc)
    cost = (cls_cost + _IOU_COST_WEIGHT * -torch.log(ious + _LOG_EPS)
            + _OUTSIDE_PENALTY * (~in_both).float())

    k_top = min(topk, nc)
    top_ious = torch.topk(ious, k_top, dim=1).values
    dynamic_k = top_ious.sum(1).to(torch.int64).clamp(min=1)  # int() truncation, then >= 1

    order = torch.sort(cost, dim=1, stable=True).indices  # cheapest first, ties by index
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(nc, device=device).expand(m, nc).contiguous())
    matching = rank < dynamic_k[:, None]  # (M, nc)

    taken = matching.sum(0)
    multi = taken > 1
    if bool(multi.any()):
        best = cost[:, multi].argmin(0)  # first minimum over all GTs
        fix = torch.zeros(m, int(multi.sum()), dtype=torch.bool, device=device)
        fix[best, torch.arange(fix.shape[1], device=device)] = True
        matching[:, multi] = fix

    fg = matching.any(0)
    gt_of = matching.to(torch.uint8).argmax(0)
    fg_idx = cand_idx[fg]
    assigned_gt[fg_idx] = gt_of[fg]
    assigned_iou[fg_idx] = ious[gt_of[fg], fg.nonzero(as_tuple=False).squeeze(1)]
    return assigned_gt, assigned_iou
