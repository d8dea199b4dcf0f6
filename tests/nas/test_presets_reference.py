"""Presets against the reference numbers measured with YOLOv7's own code (REFERENCE.md)."""
from __future__ import annotations

import pytest
import torch

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.expand import expand
from nas.fuse import fuse
from nas.presets import PRESETS
from nas.profile import count_params, max_abs_difference, profile_model

# name: (params, params after fuse(), GFLOPs@640) — REFERENCE.md, training cfgs, nc=80
REFERENCE = {
    "yolov7-tiny": (6_228_762, 6_221_370, 13.86),
    "yolov7": (37_622_682, 36_907_898, 106.47),
    "yolov7x": (71_347_394, 71_314_746, 190.58),
}


@pytest.fixture(scope="module", params=list(REFERENCE))
def preset(request):
    torch.manual_seed(0)
    name = request.param
    return name, build_model(parse_cfg(expand(PRESETS[name]), source=name))


def test_preset_parameter_counts_equal_the_reference(preset):
    name, model = preset
    assert count_params(model) == REFERENCE[name][0]


def test_preset_gflops_within_one_percent_of_the_reference(preset):
    name, model = preset
    gflops = profile_model(model, 640).gflops
    assert gflops == pytest.approx(REFERENCE[name][2], rel=0.01)


def test_fused_preset_counts_equal_the_reference(preset):
    name, model = preset
    assert count_params(fuse(model)) == REFERENCE[name][1]


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics so that folding them is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)


@pytest.mark.parametrize("name, img", [("yolov7-tiny", 320), ("yolov7", 640)])
def test_fused_preset_outputs_equal_the_eval_mode_original(name, img):
    torch.manual_seed(1)
    model = build_model(parse_cfg(expand(PRESETS[name]), source=name))
    randomise_batch_norm(model)
    for m in model.modules():  # non-trivial implicit terms as after training
        if type(m).__name__ in ("ImplicitA", "ImplicitM"):
            m.implicit.data.add_(torch.randn_like(m.implicit) * 0.05)
    fused = fuse(model)
    assert max_abs_difference(model, fused, img) <= 1e-3
    kinds = {type(m).__name__ for m in fused.modules()}
    assert "BatchNorm2d" not in kinds
    repconvs = [m for m in fused.modules() if type(m).__name__ == "RepConv"]
    assert len(repconvs) == (3 if name == "yolov7" else 0)
    assert all(m.rbr_dense is None and m.rbr_reparam is not None for m in repconvs)
