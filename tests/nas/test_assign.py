"""Tests for nas.assign (SimOTA)."""
from __future__ import annotations

import math

import pytest
import torch

from nas.assign import box_iou, candidate_mask, simota
from nas.errors import NasError


def T(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


# ---------------------------------------------------------------- hand-computed single GT
# GT [30,30,50,50] (area 400, centre (40,40)). With stride 8 the centre region is
# (20,60)^2; with stride 2 it is (35,45)^2.
GT1 = [[30.0, 30.0, 50.0, 50.0]]
POINTS1 = [[40, 40], [45, 45], [55, 40], [100, 100], [32, 32]]
STRIDES1 = [8, 8, 8, 8, 2]


def test_candidate_mask_in_box_vs_centre_only():
    cand, both = candidate_mask(T(POINTS1), T(STRIDES1), T(GT1))
    # p0,p1: box & centre; p2: centre only; p3: nothing; p4: box only (radius 5 at stride 2)
    assert cand.tolist() == [True, True, True, False, True]
    assert both.tolist() == [[True, True, False, False, False]]


def test_candidate_mask_strict_borders():
    # prior exactly on the box edge and exactly on the centre-radius edge: not a candidate
    cand, _ = candidate_mask(T([[30, 40], [60, 40]]), T([1, 8]), T(GT1))
    assert cand.tolist() == [False, False]


def _uniform_cls(n, c=2):
    return torch.full((n, c), 0.5), torch.ones(n)


def test_single_gt_penalty_and_dynamic_k():
    # IoUs with the GT: p0 0.9, p1 0.8, p2 0.95 (centre only -> penalised), p3 not candidate, p4 0.25
    boxes = T([[30, 30, 50, 48], [30, 30, 50, 46], [30, 30, 50, 49], [90, 90, 110, 110],
               [30, 30, 40, 40]])
    cls, obj = _uniform_cls(5)
    # top-4 IoUs sum 0.95+0.9+0.8+0.25 = 2.9 -> k = 2; p2 is skipped for its 1e5 penalty
    g, iou = simota(boxes, cls, obj, T(POINTS1), T(STRIDES1), T(GT1), torch.tensor([1]))
    assert g.dtype == torch.int64 and g.tolist() == [0, 0, -1, -1, -1]
    assert iou.tolist() == pytest.approx([0.9, 0.8, 0.0, 0.0, 0.0], abs=1e-6)


def test_dynamic_k_from_three_ious():
    # three in-box-and-centre candidates with IoUs 0.9, 0.8, 0.5 -> int(2.2) = 2 priors
    boxes = T([[30, 30, 50, 48], [30, 30, 50, 46], [30, 30, 50, 40]])
    cls, obj = _uniform_cls(3)
    pts = T([[40, 40], [41, 41], [39, 39]])
    g, iou = simota(boxes, cls, obj, pts, T([8, 8, 8]), T(GT1), torch.tensor([0]))
    assert g.tolist() == [0, 0, -1]
    assert iou.tolist() == pytest.approx([0.9, 0.8, 0.0], abs=1e-6)
    # topk=1: int(0.9) = 0 -> clamped to 1
    g, _ = simota(boxes, cls, obj, pts, T([8, 8, 8]), T(GT1), torch.tensor([0]), topk=1)
    assert g.tolist() == [0, -1, -1]


def test_k_larger_than_inside_priors_takes_penalised_ones():
    # IoUs p0 .95, p1 .9, p2 .9 (centre only), p4 .5 (box only): sum 3.25 -> k = 3
    boxes = T([[30, 30, 50, 49], [30, 30, 50, 48], [30, 30, 50, 48], [90, 90, 110, 110],
               [30, 30, 50, 40]])
    cls, obj = _uniform_cls(5)
    g, iou = simota(boxes, cls, obj, T(POINTS1), T(STRIDES1), T(GT1), torch.tensor([0]))
    # third pick among penalised p2 (1e5 + 3*-log .9) and p4 (1e5 + 3*-log .5): p2
    assert g.tolist() == [0, 0, 0, -1, -1]
    assert iou.tolist() == pytest.approx([0.95, 0.9, 0.9, 0.0, 0.0], abs=1e-6)


def test_class_cost_breaks_equal_iou():
    boxes = T([[30, 30, 50, 40], [30, 30, 50, 40]])  # both IoU 0.5 -> k = 1
    pts = T([[40, 40], [41, 41]])
    cls = T([[0.1, 0.9], [0.9, 0.1]])
    obj = T([1.0, 1.0])
    g, _ = simota(boxes, cls, obj, pts, T([8, 8]), T(GT1), torch.tensor([1]))
    assert g.tolist() == [0, -1]
    g, _ = simota(boxes, cls, obj, pts, T([8, 8]), T(GT1), torch.tensor([0]))
    assert g.tolist() == [-1, 0]


# ---------------------------------------------------------------- conflict resolution
def test_conflict_goes_to_lower_cost_gt():
    gts = T([[0, 0, 40, 40], [20, 0, 60, 40]])  # A (label 0), B (label 1)
    pts = T([[30, 20], [50, 20]])  # p0 inside box+centre of A and B; p1 of B only
    strides = T([8, 8])
    boxes = T([[5, 0, 45, 40], [50, 0, 60, 40]])
    cls = torch.full((2, 2), 0.5)
    obj = torch.ones(2)
    # IoU(A,p0) = 1400/1800, IoU(B,p0) = 1000/2200, IoU(B,p1) = 400/1600, IoU(A,p1) = 0
    iou_a0, iou_b0, iou_b1 = 1400 / 1800, 1000 / 2200, 400 / 1600
    p = math.sqrt(0.5)
    c = -math.log(p) - math.log(1 - p)  # same class cost for every pair
    cost_a0 = c + 3 * -math.log(iou_a0 + 1e-8)
    cost_b0 = c + 3 * -math.log(iou_b0 + 1e-8)
    cost_b1 = c + 3 * -math.log(iou_b1 + 1e-8)
    # k_A = int(.78) -> 1, k_B = int(.45 + .25) -> 1; both pick p0, A is cheaper
    assert cost_b0 < cost_b1 and cost_a0 < cost_b0
    g, iou = simota(boxes, cls, obj, pts, strides, gts, torch.tensor([0, 1]))
    assert g.tolist() == [0, -1]
    assert iou.tolist() == pytest.approx([iou_a0, 0.0], abs=1e-6)

    # Make A's class cost for p0 huge: p0 predicts class 1 only -> conflict goes to B
    cls2 = T([[0.01, 0.99], [0.5, 0.5]])
    pa = math.sqrt(0.01 * 1.0)
    pb = math.sqrt(0.99)
    cost_a0 = -math.log(pa) - math.log(1 - pb) + 3 * -math.log(iou_a0)
    cost_b0 = -math.log(1 - pa) - math.log(pb) + 3 * -math.log(iou_b0)
    assert cost_b0 < cost_a0
    g, iou = simota(boxes, cls2, obj, pts, strides, gts, torch.tensor([0, 1]))
    assert g.tolist() == [1, -1]
    assert iou.tolist() == pytest.approx([iou_b0, 0.0], abs=1e-6)


# ---------------------------------------------------------------- degenerate inputs
def test_no_gt_all_background():
    g, iou = simota(torch.rand(7, 4), torch.rand(7, 3), torch.rand(7), torch.rand(7, 2),
                    torch.full((7,), 8.0), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert g.tolist() == [-1] * 7 and iou.tolist() == [0.0] * 7
    assert g.dtype == torch.int64 and iou.dtype == torch.float32


def test_no_candidates_all_background():
    g, iou = simota(T([[0, 0, 5, 5]] * 2), torch.full((2, 2), 0.5), torch.ones(2),
                    T([[300, 300], [400, 10]]), T([8, 8]), T(GT1), torch.tensor([0]))
    assert g.tolist() == [-1, -1] and iou.tolist() == [0.0, 0.0]


def test_bad_label_raises():
    with pytest.raises(NasError):
        simota(T([[30, 30, 50, 50]]), torch.full((1, 2), 0.5), torch.ones(1), T([[40, 40]]),
               T([8]), T(GT1), torch.tensor([2]))


def test_box_iou_basic():
    a = T([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = T([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    got = box_iou(a, b)
    assert got.flatten().tolist() == pytest.approx([50 / 150, 0.0, 0.0, 0.0, 0.0, 0.0])


# ---------------------------------------------------------------- brute-force reference
def _ref_simota(boxes, cls, obj, pts, strides, gts, labels, radius=2.5, topk=10, stats=None):
    """Plain-python SimOTA over (g, p) pairs, float64 arithmetic."""
    boxes, cls, obj = boxes.tolist(), cls.tolist(), obj.tolist()
    pts, strides, gts, labels = pts.tolist(), strides.tolist(), gts.tolist(), labels.tolist()
    n, m, nc = len(boxes), len(gts), len(cls[0])

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    def clog(x):
        return max(math.log(x), -100.0) if x > 0 else -100.0

    in_box = [[False] * n for _ in range(m)]
    in_ctr = [[False] * n for _ in range(m)]
    for g in range(m):
        x1, y1, x2, y2 = gts[g]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        for p in range(n):
            px, py = pts[p]
            r = strides[p] * radius
            in_box[g][p] = x1 < px < x2 and y1 < py < y2
            in_ctr[g][p] = cx - r < px < cx + r and cy - r < py < cy + r
    cands = [p for p in range(n) if any(in_box[g][p] or in_ctr[g][p] for g in range(m))]
    out_g, out_iou = [-1] * n, [0.0] * n
    if not cands:
        return out_g, out_iou
    ious = {}
    cost = {}
    for g in range(m):
        for p in cands:
            ious[g, p] = iou(gts[g], boxes[p])
            q = [math.sqrt(cls[p][c] * obj[p]) for c in range(nc)]
            bce = 0.0
            for c in range(nc):
                y = 1.0 if c == labels[g] else 0.0
                bce += -(y * clog(q[c]) + (1 - y) * clog(1 - q[c]))
            cost[g, p] = (bce + 3.0 * -math.log(ious[g, p] + 1e-8)
                          + (0.0 if in_box[g][p] and in_ctr[g][p] else 1e5))
    chosen = {p: [] for p in cands}
    for g in range(m):
        top = sorted((ious[g, p] for p in cands), reverse=True)[:min(topk, len(cands))]
        k = max(1, int(sum(top)))
        ranked = sorted(cands, key=lambda p: (cost[g, p], p))
        for p in ranked[:k]:
            chosen[p].append(g)
    for p in cands:
        if len(chosen[p]) == 1:
            out_g[p] = chosen[p][0]
        elif len(chosen[p]) > 1:
            out_g[p] = min(range(m), key=lambda g: (cost[g, p], g))
            if stats is not None:
                stats["conflicts"] = stats.get("conflicts", 0) + 1
        if out_g[p] >= 0:
            out_iou[p] = ious[out_g[p], p]
    return out_g, out_iou


def _random_case(seed, img=96, strides=(8, 16, 32), nc=4, max_gt=6):
    gen = torch.Generator().manual_seed(seed)
    pts, st = [], []
    for s in strides:
        n = img // s
        ys, xs = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
        pts.append(torch.stack([(xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s], 1))
        st.append(torch.full((n * n,), float(s)))
    pts, st = torch.cat(pts).float(), torch.cat(st)
    n = pts.shape[0]
    m = int(torch.randint(1, max_gt + 1, (1,), generator=gen))
    c = torch.rand(m, 2, generator=gen) * img
    wh = 4 + torch.rand(m, 2, generator=gen) * img / 2
    gts = torch.cat([c - wh / 2, c + wh / 2], 1)
    labels = torch.randint(0, nc, (m,), generator=gen)
    # predictions: boxes around each prior, some near a GT
    pwh = 4 + torch.rand(n, 2, generator=gen) * img / 2
    off = (torch.rand(n, 2, generator=gen) - 0.5) * 8
    boxes = torch.cat([pts + off - pwh / 2, pts + off + pwh / 2], 1)
    cls = torch.rand(n, nc, generator=gen)
    obj = torch.rand(n, generator=gen)
    return boxes, cls, obj, pts, st, gts, labels


@pytest.mark.parametrize("seed", range(12))
def test_matches_bruteforce_reference(seed):
    case = _random_case(seed)
    g, iou = simota(*case)
    ref_g, ref_iou = _ref_simota(*case)
    assert g.tolist() == ref_g
    assert iou.tolist() == pytest.approx(ref_iou, abs=1e-5)
    assert (g >= 0).any()


def test_bruteforce_reference_with_many_conflicts():
    conflicts = 0
    for seed in range(6):
        case = _random_case(100 + seed, img=64, max_gt=12)
        stats = {}
        g, iou = simota(*case)
        ref_g, ref_iou = _ref_simota(*case, stats=stats)
        assert g.tolist() == ref_g
        assert iou.tolist() == pytest.approx(ref_iou, abs=1e-5)
        conflicts += stats.get("conflicts", 0)
    assert conflicts > 0  # the scenario really exercises conflict resolution


def test_float16_inputs_computed_in_float32():
    case = _random_case(3)
    half = [t.half() if t.is_floating_point() else t for t in case]
    g, iou = simota(*half)
    g32, iou32 = simota(*[t.float() if t.is_floating_point() else t for t in half])
    assert torch.equal(g, g32) and torch.equal(iou, iou32)
    assert iou.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    for seed in range(4):
        case = _random_case(seed)
        g, iou = simota(*case)
        gc, iouc = simota(*[t.cuda() for t in case])
        assert gc.device.type == "cuda"
        assert torch.equal(gc.cpu(), g)
        assert torch.allclose(iouc.cpu(), iou, atol=1e-6)
        hc, _ = simota(*[(t.half() if t.is_floating_point() else t).cuda() for t in case])
        assert hc.device.type == "cuda"


def test_no_grad_even_with_grad_inputs():
    case = list(_random_case(1))
    case[0].requires_grad_(True)
    case[1].requires_grad_(True)
    _, iou = simota(*case)
    assert not iou.requires_grad
