"""All 15 upstream YOLOv7 cfgs against REFERENCE.md: params, params after fuse(), GFLOPs.

The cfgs are written by this project's code (``tests/nas/_upstream.py``); their exact parameter
counts are the oracle that they have YOLOv7's structure. GFLOPs describe the same network as the
params (YOLOv7's ``Model()`` summary): for the P6 training cfgs the auxiliary heads are counted,
for deploy cfgs (no auxiliary head) and fused models they are not.

Multiply-adds of convolutions, batch norms and upsampling are exactly proportional to the number
of pixels when the image side is a multiple of the largest stride (checked below), so the cfgs are
counted at a tenth of their reference size and scaled by 100 — the same numbers, in seconds.
"""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nas.build import build_model
from nas.cfg import parse_cfg
from nas.expand import dump_yaml
from nas.fuse import fuse
from nas.profile import count_params, inference_params, profile_model
from tests.nas._upstream import P6_MODELS, UPSTREAM, upstream_cfg

# REFERENCE.md (YOLOv7's Model(cfg), thop, fuse(); nc=80): params, params after fuse(), GFLOPs
REFERENCE = {
    "training/yolov7-tiny": (6_228_762, 6_221_370, 13.86),
    "training/yolov7": (37_622_682, 36_907_898, 106.47),
    "training/yolov7x": (71_347_394, 71_314_746, 190.58),
    "training/yolov7-w6": (82_312_436, 82_277_300, 421.93),
    "training/yolov7-e6": (111_898_292, 111_851_380, 590.94),
    "training/yolov7-d6": (154_709_364, 154_652_532, 809.52),
    "training/yolov7-e6e": (166_408_884, 166_335_860, 920.13),
    "deploy/yolov7-tiny": (6_227_101, 6_219_709, 13.86),
    "deploy/yolov7": (37_620_125, 36_905_341, 106.47),
    "deploy/yolov7x": (71_344_389, 71_311_741, 190.58),
    # GFLOPs only (REFERENCE.md: deploy cfgs have no auxiliary head)
    "deploy/yolov7-w6": (None, None, 361.42),
    "deploy/yolov7-e6": (None, None, 517.16),
    "deploy/yolov7-d6": (None, None, 705.06),
    "deploy/yolov7-e6e": (None, None, 846.35),
    # the layers of deploy/yolov7-tiny with SiLU instead of LeakyReLU; activations cost no
    # multiply-adds, so its count is deploy/yolov7-tiny's
    "deploy/yolov7-tiny-silu": (6_227_101, 6_219_709, 13.86),
}
P6 = {f"training/{n}" for n in P6_MODELS} | {f"deploy/{n}" for n in P6_MODELS}


def reference_img(key: str) -> int:
    return 1280 if key in P6 else 640


def build(key: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(parse_cfg(upstream_cfg(key), source=key))


def gflops_at_reference_size(model: torch.nn.Module, key: str, **kw) -> float:
    probe = reference_img(key) // 10
    return profile_model(model, probe, **kw).gflops * 100


def test_all_fifteen_upstream_cfgs_are_covered():
    assert sorted(UPSTREAM) == sorted(REFERENCE) and len(UPSTREAM) == 15


@pytest.mark.parametrize("key", list(REFERENCE))
def test_upstream_cfg_params_and_gflops_equal_the_reference(key):
    params, fused_params, gflops = REFERENCE[key]
    model = build(key)
    if params is not None:
        assert count_params(model) == params
    assert gflops_at_reference_size(model, key) == pytest.approx(gflops, rel=0.01)
    if key.startswith("training/") and key in P6:  # without the auxiliary heads: the deploy cfg
        deploy_key = key.replace("training/", "deploy/")
        assert gflops_at_reference_size(model, key, aux=False) == pytest.approx(REFERENCE[deploy_key][2], rel=0.01)
        assert inference_params(model) < count_params(model)
    else:
        assert inference_params(model) == count_params(model)
    if fused_params is not None:
        assert count_params(fuse(model, inplace=True)) == fused_params


def test_p6_training_cfg_inference_form_is_the_deploy_cfg():
    """Without its auxiliary heads a P6 training model is the deploy cfg's network (plus the
    IDetect implicit terms); a fused model counts without them unless asked."""
    model, deploy = build("training/yolov7-w6"), build("deploy/yolov7-w6")
    assert profile_model(model, 128, aux=False).macs == profile_model(deploy, 128).macs
    head = model.head
    implicit = sum(count_params(m) for m in (*head.ia, *head.im))
    assert inference_params(model) == count_params(deploy) + implicit
    # the training form includes the auxiliary branch: far more than the rounding of a count
    assert profile_model(model, 128).macs > 1.05 * profile_model(model, 128, aux=False).macs
    fused = fuse(model)  # deploy form: counted as inference runs it, unless asked otherwise
    assert profile_model(fused, 128).macs == profile_model(fused, 128, aux=False).macs
    assert profile_model(fused, 128, aux=True).macs > profile_model(fused, 128).macs


def test_multiply_adds_scale_exactly_with_pixels():
    model = build("training/yolov7-w6")
    for aux in (True, False):
        assert profile_model(model, 256, aux=aux).macs == 4 * profile_model(model, 128, aux=aux).macs


def test_profile_cli_p6_training_cfg_at_1280_says_which_number_is_which(tmp_path):
    """`y7nas profile cfg/training/yolov7-w6.yaml --img 1280`, counted at full size."""
    path = tmp_path / "yolov7-w6.yaml"
    path.write_text(dump_yaml(upstream_cfg("training/yolov7-w6")), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["profile", str(path), "--img", "1280", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["aux_heads"] is True
    assert report["params"] == 82_312_436
    assert report["gflops"] == pytest.approx(421.93, rel=0.01)
    assert report["gflops_inference"] == pytest.approx(361.42, rel=0.01)
    assert report["params_inference"] < report["params"]
    table = runner.invoke(app, ["profile", str(path), "--img", "128"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "GFLOPs (2 x MACs) (training form, incl. auxiliary heads)" in table.output
    assert "GFLOPs (inference: main branch, no auxiliary heads)" in table.output


def test_profile_report_without_auxiliary_heads_has_no_inference_keys():
    result = CliRunner().invoke(app, ["profile", "yolov7-tiny", "--img", "64", "--json"])
    report = json.loads(result.stdout)
    assert report["aux_heads"] is False and "gflops_inference" not in report
