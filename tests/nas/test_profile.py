"""Profiler: multiply-adds against a hand count, silence, latency statistics, per-layer table."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch

from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import NasError
from nas.fuse import fuse
from nas.profile import count_macs, measure_latency, profile_model, profile_report

CFG = {
    "nc": 1, "anchors": 1,
    "backbone": [[-1, 1, "Conv", [8, 3, 2]],          # 0: 64→32 px
                 [-1, 1, "Conv", [16, 3, 2]],         # 1: 32→16
                 [-1, 1, "nn.Upsample", [None, 2, "nearest"]],  # 2: 16→32
                 [[-1, 0], 1, "Concat", [1]]],        # 3: 24 ch @32
    "head": [[-1, 1, "Conv", [8, 1, 1]],              # 4: @32
             [[4], 1, "Detect", ["nc", "anchors"]]],  # 5: stride 2 (only to exercise the count)
}


def hand_macs(img: int = 64) -> int:
    s0, s1 = img // 2, img // 4
    conv0 = 8 * 3 * 9 * s0 * s0
    conv1 = 16 * 8 * 9 * s1 * s1
    conv4 = 8 * 24 * 1 * s0 * s0
    detect = 6 * 8 * s0 * s0                    # 1x1 conv, na·(nc+5) = 6 outputs
    batch_norm = 2 * (8 * s0 * s0 + 16 * s1 * s1 + 8 * s0 * s0)   # eval BN with affine: 2 per element
    upsample = 16 * s0 * s0                    # nearest: one per output element
    return conv0 + conv1 + conv4 + detect + batch_norm + upsample


def test_fvcore_count_matches_a_hand_count_and_is_silent(caplog):
    model = build_model(parse_cfg(CFG))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            macs, by_module = count_macs(model, 64)
    assert macs == hand_macs(64)
    assert not caplog.records
    assert by_module["layers.0"] == 8 * 3 * 9 * 32 * 32 + 2 * 8 * 32 * 32


def test_profile_layers_and_gflops_convention():
    model = build_model(parse_cfg(CFG))
    profile = profile_model(model, 64, layers=True)
    assert profile.gflops == pytest.approx(2 * hand_macs(64) / 1e9)
    assert [layer.module for layer in profile.layers] == ["Conv", "Conv", "nn.Upsample", "Concat", "Conv", "Detect"]
    assert sum(layer.params for layer in profile.layers) == profile.params
    assert profile.layers[2].params == 0 and profile.layers[2].macs == 16 * 32 * 32


def test_fused_model_counts_fewer_macs_without_batch_norm():
    model = build_model(parse_cfg(CFG))
    fused_macs, _ = count_macs(fuse(model), 64)
    assert fused_macs == hand_macs(64) - 2 * (8 * 32 * 32 + 16 * 16 * 16 + 8 * 32 * 32)


def test_latency_statistics_and_restored_state():
    model = build_model(parse_cfg(CFG)).train()
    threads = torch.get_num_threads()
    result = measure_latency(model, img=64, runs=7, warmup=1, threads=1, form="train")
    assert result.runs == 7 and result.threads == 1 and result.device == "cpu"
    assert 0 < result.median <= result.p90
    assert torch.get_num_threads() == threads and model.training


def test_report_keys_and_errors():
    model = build_model(parse_cfg(CFG))
    report = profile_report(model, img=64, deploy=True, latency=True, runs=2, warmup=0)
    assert {"params", "macs", "gflops", "img", "params_deploy", "gflops_deploy", "max_abs_diff",
            "latency_ms"} <= set(report)
    assert report["latency_ms"]["form"] == "deploy"
    with pytest.raises(NasError, match="multiple of the model's largest stride"):
        profile_report(model, img=63)
    with pytest.raises(NasError, match="unknown device"):
        profile_report(model, img=64, device="tpu:0")
    with pytest.raises(NasError, match="runs ≥ 1"):
        measure_latency(model, img=64, runs=0)
