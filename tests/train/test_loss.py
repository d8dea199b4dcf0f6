"""The SimOTA detection loss: exact values on a hand-built case, and learning on one image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nas.assign import box_iou
from nas.errors import NasError
from nas.loss import DetectionLoss, LossHyp, PriorGrid, bbox_iou
from nas.postprocess import postprocess
from tests.train.conftest import NC, tiny_model

IMG = 128
GT = (20.0, 30.0, 100.0, 110.0)  # x1 y1 x2 y2, class 1


def _zero_head(model):
    """Raw outputs all 0: every prior predicts its anchor at its cell centre, σ = 0.5."""
    with torch.no_grad():
        for conv in model.head.m:
            conv.weight.zero_()
            conv.bias.zero_()
    return model


def _expected_positives(model) -> int:
    """SimOTA's positive count for one GT, computed independently with numpy."""
    head = model.head
    ious = []
    x1, y1, x2, y2 = GT
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    for i, s in enumerate(head.stride.tolist()):
        n = IMG // int(s)
        for aw, ah in head.anchor_grid[i].reshape(-1, 2).tolist():
            for gy in range(n):
                for gx in range(n):
                    px, py = (gx + 0.5) * s, (gy + 0.5) * s
                    inside = x1 < px < x2 and y1 < py < y2
                    near = abs(px - cx) < 2.5 * s and abs(py - cy) < 2.5 * s
                    if not (inside or near):
                        continue
                    bx1, by1, bx2, by2 = px - aw / 2, py - ah / 2, px + aw / 2, py + ah / 2
                    iw = max(0.0, min(x2, bx2) - max(x1, bx1))
                    ih = max(0.0, min(y2, by2) - max(y1, by1))
                    inter = iw * ih
                    ious.append(inter / ((x2 - x1) * (y2 - y1) + aw * ah - inter))
    top = sorted(ious, reverse=True)[:10]
    return max(1, int(sum(top)))


def test_bbox_iou_hand_computed():
    a = torch.tensor([[1.0, 1.0, 2.0, 2.0]])  # xyxy (0,0,2,2)
    b = torch.tensor([[2.0, 1.0, 2.0, 2.0]])  # xyxy (1,0,3,2)
    assert bbox_iou(a, b, "iou").item() == pytest.approx(1 / 3, abs=1e-6)
    assert bbox_iou(a, b, "giou").item() == pytest.approx(1 / 3, abs=1e-6)
    assert bbox_iou(a, b, "ciou").item() == pytest.approx(1 / 3 - 1 / 13, abs=1e-6)
    far = torch.tensor([[11.0, 1.0, 2.0, 2.0]])
    assert bbox_iou(a, far, "giou").item() == pytest.approx(0 - (12 * 2 - 8) / 24, abs=1e-6)
    assert bbox_iou(a, a, "ciou").item() == pytest.approx(1.0, abs=1e-6)


def test_prior_grid_order_matches_head_flattening():
    model = tiny_model().train()
    outs = model(torch.zeros(1, 3, IMG, 64))  # non-square: ny != nx
    grid = PriorGrid.build([(o.shape[2], o.shape[3]) for o in outs], model.head.stride,
                           model.head.anchor_grid)
    model.eval()
    decoded = model(torch.zeros(1, 3, IMG, 64))[0][0]
    loss = DetectionLoss(model.head, IMG)
    raw = torch.cat([o.reshape(1, -1, model.head.no) for o in outs], 1)[0]
    torch.testing.assert_close(loss.decode(raw.detach(), grid), decoded[:, :4].detach(),
                               rtol=1e-5, atol=1e-4)
    assert grid.bounds[-1] == decoded.shape[0]


def test_hand_built_case_positives_and_exact_losses():
    model = _zero_head(tiny_model())
    model.train()
    loss_fn = DetectionLoss(model.head, IMG)
    targets = torch.tensor([[0, 1, *GT]])
    loss, items = loss_fn(model(torch.rand(1, 3, IMG, IMG)), targets)
    assert loss_fn.last_positives == _expected_positives(model) > 1
    # zero logits: every BCE term is ln 2 whatever the target
    nl = 3
    obj = (4.0 + 1.0 + 0.4) * math.log(2) * 0.7 * (IMG / 640) ** 2 * 3 / nl
    assert items[1].item() == pytest.approx(obj, rel=1e-5)
    levels = loss_fn.grid([(IMG // 8, IMG // 8), (IMG // 16, IMG // 16), (IMG // 32, IMG // 32)],
                          torch.device("cpu"))
    assert levels.bounds[-1] == 3 * (16 * 16 + 8 * 8 + 4 * 4)
    # box: mean 1 - CIoU of the positives (anchors at cell centres) × nl × 0.05 × 3/nl
    assert 0 < items[0].item() < 0.05 * 3 * 2
    cls = math.log(2) * nl * 0.3 * NC / 80 * 3 / nl  # mean over positives × classes, × nl
    assert items[2].item() == pytest.approx(cls, rel=1e-5)
    assert loss.item() == pytest.approx(items[3].item() * 1, rel=1e-6)  # × batch size 1
    assert items[3].item() == pytest.approx(items[:3].sum().item(), rel=1e-6)


def test_no_targets_gives_objectness_only_and_gradients():
    model = tiny_model().train()
    loss_fn = DetectionLoss(model.head, IMG)
    loss, items = loss_fn(model(torch.rand(2, 3, IMG, IMG)), torch.zeros(0, 6))
    assert items[0] == 0 and items[2] == 0 and items[1] > 0
    loss.backward()
    assert model.head.m[0].bias.grad is not None
    assert loss_fn.last_positives == 0


def test_non_finite_outputs_give_nan_loss_and_bad_hyp_is_refused():
    model = tiny_model().train()
    loss_fn = DetectionLoss(model.head, IMG)
    outs = [o * math.nan for o in model(torch.rand(1, 3, IMG, IMG))]
    loss, _ = loss_fn(outs, torch.tensor([[0, 1, *GT]]))
    assert math.isnan(loss.item())
    with pytest.raises(NasError, match="iou must be one of"):
        LossHyp(iou="diou")


def test_overfits_one_image():
    torch.manual_seed(0)
    model = tiny_model(seed=0).train()
    image = torch.rand(1, 3, IMG, IMG) * 0.2
    image[:, :, 40:90, 30:70] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
    targets = torch.tensor([[0, 1, 30.0, 40.0, 70.0, 90.0]])
    loss_fn = DetectionLoss(model.head, IMG)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    losses = []
    for _ in range(30):  # noqa: B007
        loss, items = loss_fn(model(image), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(items[3].item())
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    # BatchNorm running statistics lag 30 steps of training: take them from this image
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    with torch.no_grad():
        model(image)
        model.eval()
        det = postprocess(model(image)[0], conf_thres=0.1, iou_thres=0.65)[0]
    assert len(det) >= 1
    assert int(det[0, 5]) == 1
    assert box_iou(det[:1, :4], targets[:, 2:]).item() > 0.5


def test_iauxdetect_uses_main_outputs_only():
    from nas.blocks._detect import IAuxDetect

    anchors = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
    head = IAuxDetect(NC, anchors, [8, 16, 32, 8, 16, 32])
    head.set_stride([8, 16, 32])
    feats = [torch.randn(1, c, IMG // s, IMG // s) for c, s in zip([8, 16, 32] * 2, [8, 16, 32] * 2)]
    head.train()
    outs = head(feats)
    assert len(outs) == 6
    loss_fn = DetectionLoss(head, IMG)
    targets = torch.tensor([[0, 2, *GT]])
    loss, _ = loss_fn(outs, targets)
    main_only, _ = loss_fn(outs[:3], targets)
    assert loss.item() == pytest.approx(main_only.item())
    loss.backward()
    assert all(conv.weight.grad is None for conv in head.m2)
    assert all(conv.weight.grad is not None for conv in head.m)
