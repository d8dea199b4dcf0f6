"""Detection loss for YOLOv7 anchor heads with SimOTA label assignment.

What it computes, per batch (``outputs`` = the head's training-mode list of raw
``(bs, na, ny, nx, no)`` tensors, ``targets`` = ``(T, 6)`` rows ``batch_idx, cls, x1, y1, x2, y2``
in input pixels):

* **Priors.** Every (level, anchor, cell) is a prior; its point is the cell centre
  ``(x + 0.5, y + 0.5) · stride`` in pixels. Boxes are decoded as YOLOv7 does:
  ``xy = (σ·2 − 0.5 + cell) · stride``, ``wh = (σ·2)² · anchor`` (anchors in pixels).
* **Assignment.** For each image, :func:`nas.assign.simota` runs over *all* priors of all levels
  (candidates inside a GT box or within ``center_radius · stride`` of its centre, cost =
  class BCE on ``√(cls·obj)`` + 3·IoU cost, dynamic-k). This replaces YOLOv7's YOLOv5-style
  candidate pre-selection (centre cell + 2 neighbours, anchor ratio < 4) in ComputeLossOTA.
* **Box loss**: ``1 − CIoU`` (or GIoU / IoU) of each positive's decoded box with its GT,
  averaged over all positives of the batch and multiplied by ``nl``. YOLOv7 sums per-level
  means, which equals this when every level has positives (its assigner gives each GT positives
  on every level); SimOTA moves positives between levels, and per-level means would then give
  the few positives of a sparsely used level tens of times the weight of the others.
* **Objectness**: BCE-with-logits over every prior; target = the positive's box-loss IoU
  (CIoU by default), detached and clamped at 0 (YOLOv7's ``gr = 1``), 0 elsewhere; averaged per
  level and weighted by the level balance (``[4.0, 1.0, 0.4]`` for 3 levels, YOLOv7's values).
* **Class**: BCE-with-logits of the positives against one-hot labels, averaged over
  ``positives × nc`` and multiplied by ``nl`` (as for the box loss); skipped when ``nc == 1``
  (as YOLOv7 does).
* **Gains** (YOLOv7 ``hyp.scratch.p5`` values, scaled like YOLOv7's train.py):
  ``box · 3/nl``, ``cls · nc/80 · 3/nl``, ``obj · (img/640)² · 3/nl``; the returned total is
  ``(box + obj + cls) · bs`` like YOLOv7's ``ComputeLoss``.
* **IAuxDetect** heads return main + auxiliary levels in training mode; only the ``nl`` main
  outputs enter the loss (the auxiliary convs get no gradient; YOLOv7's lead-guided aux loss is
  not reproduced).

The assignment loops over images (SimOTA is per image); everything else is vectorised over all
priors of the batch. Non-finite head outputs short-circuit to a NaN loss so the caller can stop
with a clear error instead of feeding NaN boxes to the assigner.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.assign import simota
from nas.errors import NasError

__all__ = ["LossHyp", "DetectionLoss", "PriorGrid", "bbox_iou", "default_balance"]

_EPS = 1e-7
IOU_KINDS = ("ciou", "giou", "iou")


def default_balance(nl: int) -> tuple[float, ...]:
    """YOLOv7's per-level objectness weights: ``[4.0, 1.0, 0.4]`` for 3 levels."""
    if nl == 3:
        return (4.0, 1.0, 0.4)
    base = (4.0, 1.0, 0.25, 0.06, 0.02)
    if nl > len(base):
        return base + (0.02,) * (nl - len(base))
    return base[:nl]


@dataclass(frozen=True)
class LossHyp:
    """Loss settings. Gains are YOLOv7 ``hyp.scratch.p5`` values before the nl/nc/img scaling.

    Attributes:
        box, obj, cls: loss gains.
        balance: per-level objectness weights (None: :func:`default_balance`).
        iou: box-loss IoU kind, ``ciou`` (YOLOv7's), ``giou`` or ``iou``.
        center_radius, topk: SimOTA settings (YOLOX defaults).
        label_smoothing: ε of YOLOv7's ``smooth_BCE`` (targets 1 − ε/2 and ε/2).
    """

    box: float = 0.05
    obj: float = 0.7
    cls: float = 0.3
    balance: tuple[float, ...] | None = None
    iou: str = "ciou"
    center_radius: float = 2.5
    topk: int = 10
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.iou not in IOU_KINDS:
            raise NasError(f"loss: iou must be one of {', '.join(IOU_KINDS)}, got {self.iou!r}")
        if min(self.box, self.obj, self.cls) < 0:
            raise NasError("loss: gains must be non-negative")


def bbox_iou(a: torch.Tensor, b: torch.Tensor, kind: str = "ciou") -> torch.Tensor:
    """Element-wise IoU of paired xywh boxes ``a``, ``b`` (n, 4) → (n,); ``kind`` ciou/giou/iou.

    Follows YOLOv7's ``bbox_iou`` (eps 1e-7; CIoU's α is computed without gradient).
    """
    ax1, ay1 = a[:, 0] - a[:, 2] / 2, a[:, 1] - a[:, 3] / 2
    ax2, ay2 = a[:, 0] + a[:, 2] / 2, a[:, 1] + a[:, 3] / 2
    bx1, by1 = b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2
    bx2, by2 = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    inter = ((torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(0)
             * (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(0))
    w1, h1 = ax2 - ax1, ay2 - ay1 + _EPS
    w2, h2 = bx2 - bx1, by2 - by1 + _EPS
    union = w1 * h1 + w2 * h2 - inter + _EPS
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.maximum(ax2, bx2) - torch.minimum(ax1, bx1)
    ch = torch.maximum(ay2, by2) - torch.minimum(ay1, by1)
    if kind == "giou":
        c_area = cw * ch + _EPS
        return iou - (c_area - union) / c_area
    c2 = cw ** 2 + ch ** 2 + _EPS
    rho2 = ((bx1 + bx2 - ax1 - ax2) ** 2 + (by1 + by2 - ay1 - ay2) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + _EPS))
    return iou - (rho2 / c2 + v * alpha)


@dataclass(frozen=True)
class PriorGrid:
    """Geometry of every prior of a head at one input size, in the flattened order
    ``level → anchor → row → column`` (the order of ``out.view(bs, -1, no)`` concatenated).

    Attributes:
        cells: (N, 2) cell index (x, y); ``points = (cells + 0.5) · strides``.
        points: (N, 2) cell centres in pixels.
        strides: (N,) stride in pixels.
        anchors: (N, 2) anchor (w, h) in pixels.
        level: (N,) level index.
        bounds: start offset of each level in N, plus N at the end.
    """

    cells: torch.Tensor
    points: torch.Tensor
    strides: torch.Tensor
    anchors: torch.Tensor
    level: torch.Tensor
    bounds: tuple[int, ...] = field(default=())

    @staticmethod
    def build(shapes: Sequence[tuple[int, int]], strides: torch.Tensor,
              anchor_grid: torch.Tensor) -> "PriorGrid":
        """``shapes`` (ny, nx) per level, ``strides`` (nl,), ``anchor_grid`` (nl, 1, na, 1, 1, 2)."""
        cells, st, anc, lvl, bounds = [], [], [], [], [0]
        for i, (ny, nx) in enumerate(shapes):
            a = anchor_grid[i].reshape(-1, 2).float().cpu()
            na = a.shape[0]
            yv, xv = torch.meshgrid(torch.arange(ny, dtype=torch.float32),
                                    torch.arange(nx, dtype=torch.float32), indexing="ij")
            grid = torch.stack((xv, yv), -1).reshape(1, -1, 2).expand(na, -1, -1).reshape(-1, 2)
            n = grid.shape[0]
            cells.append(grid)
            st.append(torch.full((n,), float(strides[i])))
            anc.append(a[:, None, :].expand(na, ny * nx, 2).reshape(-1, 2))
            lvl.append(torch.full((n,), i, dtype=torch.int64))
            bounds.append(bounds[-1] + n)
        cells_t, st_t = torch.cat(cells), torch.cat(st)
        return PriorGrid(cells_t, (cells_t + 0.5) * st_t[:, None], st_t, torch.cat(anc),
                         torch.cat(lvl), tuple(bounds))

    def to(self, device: torch.device) -> "PriorGrid":
        return PriorGrid(self.cells.to(device), self.points.to(device), self.strides.to(device),
                         self.anchors.to(device), self.level.to(device), self.bounds)


class DetectionLoss:
    """YOLOv7-style loss with SimOTA assignment (see the module docstring).

    Args:
        head: the model's Detect / IDetect / IAuxDetect (strides and anchors must be set).
        img: training input size (scales the objectness gain by ``(img/640)²``).
        hyp: loss settings.

    Calling it with ``(outputs, targets)`` returns ``(loss, items)``: ``loss`` a scalar tensor
    ``(box + obj + cls) · bs`` for backward, ``items`` a detached (4,) tensor
    ``[box, obj, cls, total]`` (per-image scale, for logging). :meth:`last_positives` is the
    number of positives assigned in the latest call.
    """

    def __init__(self, head: nn.Module, img: int, hyp: LossHyp | None = None):
        hyp = hyp or LossHyp()
        if not hasattr(head, "anchor_grid") or not bool((head.stride > 0).all()):
            raise NasError("loss: the detect head has no strides set")
        self.hyp = hyp
        self.nl, self.na, self.nc, self.no = head.nl, head.na, head.nc, head.no
        self.stride = head.stride.detach().clone().float().cpu()
        self.anchor_grid = head.anchor_grid.detach().clone().float().cpu()
        balance = hyp.balance if hyp.balance is not None else default_balance(self.nl)
        if len(balance) != self.nl:
            raise NasError(f"loss: balance has {len(balance)} entries for {self.nl} levels")
        self.balance = tuple(float(b) for b in balance)
        scale = 3.0 / self.nl
        self.gain_box = hyp.box * scale
        self.gain_cls = hyp.cls * self.nc / 80.0 * scale
        self.gain_obj = hyp.obj * (img / 640.0) ** 2 * scale
        eps = hyp.label_smoothing
        self.cp, self.cn = 1.0 - 0.5 * eps, 0.5 * eps
        self._grids: dict[tuple, PriorGrid] = {}
        self.last_positives = 0

    def grid(self, shapes: Sequence[tuple[int, int]], device: torch.device) -> PriorGrid:
        key = (tuple(shapes), str(device))
        if key not in self._grids:
            self._grids[key] = PriorGrid.build(shapes, self.stride, self.anchor_grid).to(device)
        return self._grids[key]

    def decode(self, raw: torch.Tensor, grid: PriorGrid, index: torch.Tensor | None = None
               ) -> torch.Tensor:
        """xywh pixels of raw box outputs ``raw`` (..., ≥4) at priors ``index`` (all if None)."""
        cells = grid.cells if index is None else grid.cells[index]
        strides = grid.strides if index is None else grid.strides[index]
        anchors = grid.anchors if index is None else grid.anchors[index]
        s = raw[..., :4].sigmoid()
        xy = (s[..., :2] * 2.0 - 0.5 + cells) * strides[..., None]
        wh = (s[..., 2:4] * 2.0) ** 2 * anchors
        return torch.cat((xy, wh), -1)

    def __call__(self, outputs: Sequence[torch.Tensor], targets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        levels = list(outputs)[:self.nl]  # IAuxDetect: main outputs only
        if len(levels) != self.nl:
            raise NasError(f"loss: expected {self.nl} output levels, got {len(levels)}")
        bs, device = levels[0].shape[0], levels[0].device
        grid = self.grid([(p.shape[2], p.shape[3]) for p in levels], device)
        pred = torch.cat([p.reshape(bs, -1, self.no) for p in levels], 1).float()  # (bs, N, no)
        if not bool(torch.isfinite(pred.detach()).all()):
            nan = pred.sum() * math.nan
            return nan, torch.full((4,), math.nan, device=device)

        b_idx, p_idx, g_idx = self._assign(pred.detach(), grid, targets.to(device))
        self.last_positives = int(b_idx.numel())
        pos = pred[b_idx, p_idx]  # (P, no)
        tgt = targets.to(device)[g_idx]

        tobj = torch.zeros(pred.shape[:2], device=device, dtype=pred.dtype)
        lbox = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        if b_idx.numel():
            pbox = self.decode(pos, grid, p_idx)
            gt = tgt[:, 2:6]
            tbox = torch.cat(((gt[:, :2] + gt[:, 2:]) / 2, gt[:, 2:] - gt[:, :2]), 1)
            iou = bbox_iou(pbox, tbox, self.hyp.iou)
            lbox = (1.0 - iou).mean() * self.nl
            tobj[b_idx, p_idx] = iou.detach().clamp(0).to(tobj.dtype)
            if self.nc > 1:
                t = torch.full_like(pos[:, 5:], self.cn)
                t[torch.arange(t.shape[0], device=device), tgt[:, 1].long()] = self.cp
                lcls = F.binary_cross_entropy_with_logits(pos[:, 5:], t) * self.nl

        obj_bce = F.binary_cross_entropy_with_logits(pred[..., 4], tobj, reduction="none")
        lobj = sum(obj_bce[:, s:e].mean() * w for s, e, w in
                   zip(grid.bounds[:-1], grid.bounds[1:], self.balance))
        lbox, lobj, lcls = lbox * self.gain_box, lobj * self.gain_obj, lcls * self.gain_cls
        total = lbox + lobj + lcls
        items = torch.stack((lbox, lobj, lcls, total)).detach()
        return total * bs, items

    @torch.no_grad()
    def _assign(self, pred: torch.Tensor, grid: PriorGrid, targets: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SimOTA per image → (batch index, prior index, target row) of every positive."""
        device = pred.device
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        if targets.shape[0] == 0:
            return empty, empty, empty
        sig = pred[..., 4:].sigmoid()
        xywh = self.decode(pred, grid)
        xyxy = torch.cat((xywh[..., :2] - xywh[..., 2:] / 2, xywh[..., :2] + xywh[..., 2:] / 2), -1)
        order = torch.argsort(targets[:, 0], stable=True)
        img_of = targets[order, 0].long()
        counts = torch.bincount(img_of, minlength=pred.shape[0]).tolist()
        bs_out, p_out, g_out = [], [], []
        start = 0
        for b, n in enumerate(counts):
            if n == 0:
                continue
            rows = order[start:start + n]
            start += n
            gt = targets[rows]
            assigned, _ = simota(xyxy[b], sig[b, :, 1:], sig[b, :, 0], grid.points, grid.strides,
                                 gt[:, 2:6], gt[:, 1].long(), self.hyp.center_radius, self.hyp.topk)
            fg = (assigned >= 0).nonzero(as_tuple=False).squeeze(1)
            if fg.numel():
                bs_out.append(torch.full_like(fg, b))
                p_out.append(fg)
                g_out.append(rows[assigned[fg]])
        if not p_out:
            return empty, empty, empty
        return torch.cat(bs_out), torch.cat(p_out), torch.cat(g_out)
