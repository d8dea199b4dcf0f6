"""Training loop, proxy training, optimizer groups, schedule, EMA and evaluation."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from nas.data import load_data_config, scan_split
from nas.errors import NasError
from nas.evaluate import evaluate, ground_truth
from nas.train import (ModelEMA, Schedule, TrainConfig, build_optimizer, param_groups,
                       prepare_model, proxy_train, train, unique_run_dir)
from tests.train.conftest import NC, tiny_cfg, tiny_genome, tiny_model

FAST = dict(img=64, batch=8, val_subset=4, augment=True)


def test_param_groups_follow_yolov7():
    model = tiny_model()
    other, decay, bias = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 4 for p in decay) and all(names[id(p)].endswith(".weight") for p in decay)
    assert all(names[id(p)].endswith(".bias") for p in bias)
    assert any("implicit" in names[id(p)] for p in other)  # IDetect's ImplicitA/M: no decay
    assert len(other) + len(decay) + len(bias) == len(list(model.parameters()))


def test_schedule_warmup_then_cosine():
    model = tiny_model()
    opt = build_optimizer(model, "sgd", 0.01, 0.937, 5e-4)
    sched = Schedule(opt, total_iters=100, warmup_iters=10, lr=0.01, lrf=0.01, momentum=0.937,
                     warmup_momentum=0.8, warmup_bias_lr=0.1)
    sched.step(0)
    assert opt.param_groups[2]["lr"] == pytest.approx(0.1)  # biases start high
    assert opt.param_groups[1]["lr"] == 0.0 and opt.param_groups[1]["momentum"] == 0.8
    sched.step(10)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * sched.factor(10))
    assert opt.param_groups[1]["momentum"] == 0.937
    assert sched.factor(100) == pytest.approx(0.01) and sched.factor(50) == pytest.approx(0.505)
    assert opt.param_groups[1]["weight_decay"] == 5e-4 and opt.param_groups[2]["weight_decay"] == 0


def test_ema_follows_yolov7_ramp():
    model = tiny_model()
    ema = ModelEMA(model)
    w = dict(model.named_parameters())["layers.0.conv.weight"]
    start = w.detach().clone()
    with torch.no_grad():
        w.add_(1.0)
    ema.update()
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    got = ema.module.state_dict()["layers.0.conv.weight"]
    torch.testing.assert_close(got, start * d + (start + 1.0) * (1 - d))


def test_same_seed_gives_identical_weights(tiny_data):
    cfg = TrainConfig(epochs=1, subset=16, val_interval=0, **{**FAST, "batch": 8})
    a = train(tiny_cfg(), tiny_data, cfg).model.state_dict()
    b = train(tiny_cfg(), tiny_data, cfg).model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = train(tiny_cfg(), tiny_data, dataclasses.replace(cfg, seed=1)).model.state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_non_finite_loss_raises(tiny_data):
    model = tiny_model()
    with torch.no_grad():
        model.layers[0].conv.weight.fill_(math.nan)
    with pytest.raises(NasError, match="non-finite loss at epoch 1"):
        train(model, tiny_data, TrainConfig(epochs=1, subset=8, val_interval=0, **FAST))


def test_proxy_train_reports_and_prunes(tiny_data):
    calls = []

    def report(epoch, value):
        calls.append((epoch, value))
        return epoch == 1

    res = proxy_train(tiny_genome(), tiny_data, epochs=3, img=64, batch=8, subset=8,
                      report=report, val_subset=4)
    assert res.pruned and len(res.epoch_maps) == 1 == len(calls)
    assert calls[0] == (1, res.epoch_maps[0]) and 0.0 <= res.map50_95 <= res.map50 <= 1.0
    assert res.seconds > 0


def test_model_nc_is_set_from_data_and_fixed_module_nc_is_refused(tiny_data):
    net, cfg = prepare_model(tiny_genome(nc=80), nc=NC)
    assert net.head.nc == NC and cfg.nc == NC
    with pytest.raises(NasError, match="predicts 80 classes but the data has 3"):
        prepare_model(tiny_model(nc=80), nc=NC)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(NasError, match="multiple of 32"):
        TrainConfig(img=100)
    with pytest.raises(NasError, match="unknown optimizer"):
        TrainConfig(optimizer="lion")


def test_unique_run_dir_increments(tmp_path):
    base = tmp_path / "run"
    assert unique_run_dir(base) == base
    (base / "weights").mkdir(parents=True)
    assert unique_run_dir(base) == tmp_path / "run2"
    (tmp_path / "run2" / "x").mkdir(parents=True)
    assert unique_run_dir(base) == tmp_path / "run3"


class _Oracle(torch.nn.Module):
    """Stands in for a detector: replays jittered ground-truth boxes (letterboxed) in order."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)
        self.head = type("H", (), {"nc": NC})()

    def forward(self, images):
        return self.outputs.pop(0), None


def test_evaluate_maps_boxes_back_and_matches_pycocotools(tiny_data, tmp_path):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    split = scan_split(load_data_config(tiny_data), "val")
    img, rng = 64, np.random.default_rng(0)
    from nas.data import letterbox_params, yolo_to_xyxy
    rows = []
    for i in range(len(split)):
        lb = letterbox_params(split.shapes[i], img)
        gt = yolo_to_xyxy(split.labels[i][:, 1:], split.shapes[i])
        preds = []
        for (x1, y1, x2, y2), c in zip(gt, split.labels[i][:, 0]):
            for _ in range(2):  # a good and a jittered copy, plus a wrong-class one
                j = rng.normal(0, 0.08, 4) * [x2 - x1, y2 - y1, x2 - x1, y2 - y1]
                bx = np.array([x1, y1, x2, y2]) + j
                bx = bx * np.array([*lb.ratio, *lb.ratio]) + np.array([*lb.pad, *lb.pad])
                cls = np.zeros(NC)
                cls[int(c)] = rng.uniform(0.5, 1)
                cls[(int(c) + 1) % NC] = rng.uniform(0, 0.5)
                preds.append([(bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2, bx[2] - bx[0],
                              bx[3] - bx[1], rng.uniform(0.3, 1), *cls])
        rows.append(torch.tensor(preds, dtype=torch.float32).reshape(-1, 5 + NC))
    outs = [torch.nn.utils.rnn.pad_sequence(rows[k:k + 3], batch_first=True)
            for k in range(0, len(rows), 3)]
    result = evaluate(_Oracle(outs), split, img=img, batch=3)
    assert result.images == len(split) and result.map50 > 0.5
    pred_path, ann_path = result.save_json(tmp_path)
    gt = COCO(ann_path)
    ev = COCOeval(gt, gt.loadRes(pred_path), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert result.map50_95 == pytest.approx(ev.stats[0], abs=1e-3)
    assert result.map50 == pytest.approx(ev.stats[1], abs=1e-3)
    assert ground_truth(split)["images"][0]["height"] == split.shapes[0][0]


def _group_names(model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in group} for group in param_groups(model)]


def test_param_groups_of_a_preset_and_of_a_supernet_by_what_each_tensor_is():
    from nas.build import build_model
    from nas.cfg import parse_cfg
    from nas.expand import expand
    from nas.presets import PRESETS
    from nas.supernet import Supernet
    from search_spaces import get_space

    preset = build_model(parse_cfg(expand(PRESETS["yolov7-tiny"].replace(nc=3)), source="preset"))
    other, decay, bias = _group_names(preset)
    convs = [m for m in preset.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in preset.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # yolov7-tiny: 58 convolutions (55 Conv blocks + 3 detect outputs), 55 BatchNorms, 6 implicits
    assert (len(convs), len(bns)) == (58, 55)
    assert (len(other), len(decay), len(bias)) == (55 + 6, 58, 55 + 3)

    net = Supernet(get_space("yolov7-tiny-cpu", nc=3), "silu")
    other, decay, bias = _group_names(net)      # tensors named "stem/0/conv/weight": no '.' suffix
    shapes = dict((n, p.shape) for n, p in net.named_parameters())
    # the oracle: a conv kernel is 4-D (YOLOR implicits are (1, C, 1, 1) and never decay)
    kernels = {n for n, s in shapes.items() if len(s) == 4 and "implicit" not in n}
    assert decay == kernels and len(decay) > 100
    assert bias == {n for n in shapes if n.endswith("/bias")}
    assert other == set(shapes) - kernels - bias
    assert {n for n in other if "implicit" in n} and all(len(shapes[n]) == 1 or "implicit" in n for n in other)
    opt = build_optimizer(net, "adamw", 0.01, 0.937, 5e-4)
    assert opt.param_groups[1]["weight_decay"] == 5e-4 and len(opt.param_groups[1]["params"]) == len(decay)
