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


def test_report_values_and_errors():
    model = build_model(parse_cfg(CFG, source="small.yaml"))
    report = profile_report(model, img=64, deploy=True, latency=True, runs=2, warmup=0, threads=1)
    fused_macs = hand_macs(64) - 2 * (8 * 32 * 32 + 16 * 16 * 16 + 8 * 32 * 32)  # BN folded away
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert report["params_deploy"] == report["params"] - 2 * (8 + 16 + 8) + (8 + 16 + 8)  # BN → bias
    assert (report["macs"], report["macs_deploy"]) == (hand_macs(64), fused_macs)
    assert report["gflops"] == pytest.approx(2 * hand_macs(64) / 1e9, abs=1e-4)
    assert 0 <= report["max_abs_diff"] < 1e-4
    lat = report["latency_ms"]
    assert (lat["form"], lat["runs"], lat["warmup"], lat["threads"], lat["img"]) == ("deploy", 2, 0, 1, 64)
    assert 0 < lat["median"] <= lat["p90"]


@pytest.mark.parametrize("kwargs, message", [
    ({"img": 63}, "small.yaml: image size 63 must be a positive multiple of the model's largest stride 4"),
    ({"img": 66}, "image size 66 .* stride 4"),  # head stride is 2, but layer 1 is /4: 66 px would crash
    ({"img": 0}, "image size 0 must be a positive multiple"),
    ({"img": 8192}, "image size 8192 is above the 4096 px supported"),
    ({"device": "tpu:0"}, "unknown device"),
    ({"runs": -1}, "--runs must be an integer ≥ 1, got -1"),   # refused even without latency=True
    ({"batch": 0}, "--batch must be an integer ≥ 1, got 0"),
    ({"warmup": -1}, "--warmup must be an integer ≥ 0, got -1"),
    ({"threads": 0, "latency": True}, "--threads must be an integer ≥ 1, got 0"),
])
def test_report_refuses_bad_options_before_any_work(kwargs, message):
    model = build_model(parse_cfg(CFG, source="small.yaml"))
    with pytest.raises(NasError, match=message):
        profile_report(model, **{"img": 64, **kwargs})
    with pytest.raises(NasError, match="--runs must be an integer ≥ 1, got 0"):
        measure_latency(model, img=64, runs=0)
