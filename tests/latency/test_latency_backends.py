"""Latency backends behind one LatencyMeter: the contract over every backend, and
`--latency-backend` on profile, search (recorded on the study, mismatches refused), worker and scale."""
from __future__ import annotations

import csv
import json

import onnx
import optuna
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import NasError
from nas.expand import expand
from nas.fuse import fuse
from nas.latency import LATENCY_BACKENDS, LatencyMeter, get_backend
from nas.presets import PRESETS
from scaling.compound import scale_genome

runner = CliRunner()
IMG = 64


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


SMALL = scale_genome(PRESETS["yolov7-tiny"], 1.0, 0.25)  # yolov7-tiny at width 0.25


@pytest.fixture(scope="module")
def small_deploy():
    torch.manual_seed(0)
    return fuse(build_model(parse_cfg(expand(SMALL), source="tiny-w025"))).eval()


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-w025.genome.yaml"
    path.write_text(SMALL.to_yaml())
    return path


@pytest.mark.parametrize("backend", sorted(LATENCY_BACKENDS))
def test_every_backend_measures_a_positive_repeatable_latency_and_records_it(backend, small_deploy):
    meter = LatencyMeter(backend=backend, threads=1, runs=5, warmup=2)
    meter.check()
    first, second = meter.measure(small_deploy, IMG), meter.measure(small_deploy, IMG)
    assert first > 0 and second > 0
    assert max(first, second) / min(first, second) < 10  # same model, same settings: same order
    record = meter.record(IMG)
    assert record == {"backend": backend, "device": "cpu", "threads": 1, "img": IMG,
                      "versions": get_backend(backend).versions()}
    assert record["versions"]["torch"] == torch.__version__.split("+")[0]
    json.dumps(record)  # a study stores it as JSON
    full = meter.result(small_deploy, IMG)
    assert full.runs == 5 and full.warmup == 2 and full.threads == 1 and full.form == "deploy"
    assert 0 < full.median <= full.p90 * 1.0001


def test_onnxruntime_record_names_the_onnx_libraries():
    import onnxruntime

    versions = LatencyMeter("onnxruntime").record(IMG)["versions"]
    assert versions["onnx"] == onnx.__version__ and versions["onnxruntime"] == onnxruntime.__version__


@pytest.mark.parametrize("meter,message", [
    (LatencyMeter(backend="tvm"), "unknown latency backend 'tvm' (valid: torch, onnxruntime)"),
    (LatencyMeter(runs=0), "--runs must be an integer ≥ 1, got 0"),
    (LatencyMeter(warmup=-1), "--warmup must be an integer ≥ 0, got -1"),
    (LatencyMeter(threads=0), "--threads must be an integer ≥ 1, got 0"),
    (LatencyMeter(device="tpu"), "unknown device 'tpu'"),
    (LatencyMeter(table="/nonexistent/table.json"), "latency table /nonexistent/table.json: cannot read"),
])
def test_check_refuses_in_one_line(meter, message):
    with pytest.raises(NasError) as info:
        meter.check()
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with CUDA may have the provider")
def test_onnxruntime_without_its_cuda_provider_is_refused_before_any_model():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    backend = get_backend("onnxruntime")
    backend.check_available("cpu")
    with pytest.raises(NasError) as info:
        backend.check_available("cuda:1")
    assert "device cuda:1 asked for ONNX Runtime, but this onnxruntime has no CUDA provider" in str(info.value)
    assert "\n" not in str(info.value)


def test_profile_times_with_onnxruntime(small_file):
    result = run("profile", small_file, "--img", IMG, "--deploy", "--latency", "--runs", 3, "--warmup", 1,
                 "--threads", 1, "--latency-backend", "onnxruntime", "--json")
    assert result.exit_code == 0, result.output
    lat = json.loads(result.output)["latency_ms"]
    assert lat["backend"] == "onnxruntime" and lat["threads"] == 1 and lat["runs"] == 3
    assert lat["form"] == "deploy" and lat["median"] > 0
    result = run("profile", "yolov7-tiny", "--latency", "--latency-backend", "tvm")
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "unknown latency backend 'tvm'" in result.output


def test_search_records_the_backend_and_refuses_other_latency_settings(tmp_path):
    results = tmp_path / "results"
    base = ("search", "--space", "yolov7-tiny-cpu", "--trials", 2, "--study", "ort", "--objectives",
            "gflops,latency_ms", "--fidelity", "flops", "--img", IMG, "--threads", 1, "--results-dir", results)
    result = run(*base, "--latency-backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    study_dir = results / "ort"
    assert all(float(r["latency_ms"]) > 0 for r in rows(study_dir / "trials.csv"))
    url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    stored = optuna.load_study(study_name="ort", storage=url).user_attrs["y7nas:config"]
    assert stored["latency"] == {"backend": "onnxruntime", "device": "cpu", "threads": 1, "img": IMG,
                                 "versions": get_backend("onnxruntime").versions()}

    # re-running with another backend or latency thread count is refused in one line
    for extra, text in ((("--latency-backend", "torch"), "latency.backend='onnxruntime', this run measures "
                         "latency.backend='torch'"),
                        (("--latency-backend", "onnxruntime", "--latency-threads", 2),
                         "latency.threads=1, this run measures latency.threads=2")):
        result = run(*base, *extra)
        assert result.exit_code == 1, result.output
        assert "study 'ort' was created with " + text in result.output
        assert result.output.count("error:") == 1 and "Traceback" not in result.output
    # --threads (scoring) is a local setting: changing it is not a different study
    assert run(*base, "--latency-backend", "onnxruntime", "--threads", 2).exit_code == 0

    # a worker takes the study's latency settings; asking for others is refused
    result = run("worker", "--study", "ort", "--storage", url, "--latency-threads", 3)
    assert result.exit_code == 1 and "latency.threads=1, this run measures latency.threads=3" in result.output
    result = run("worker", "--study", "ort", "--storage", url, "--latency-backend", "torch")
    assert result.exit_code == 1 and "latency.backend='onnxruntime'" in result.output
    result = run("worker", "--study", "ort", "--storage", url)
    assert result.exit_code == 0, result.output

    # export --onnx writes the checked deploy form next to the YAMLs, at the study's --img
    result = run("export", "--study", "ort", "--trial", 1, "--results-dir", results, "--onnx")
    assert result.exit_code == 0, result.output
    models = study_dir / "models"
    assert (models / "trial_1.yaml").is_file() and (models / "trial_1.genome.yaml").is_file()
    proto = onnx.load(str(models / "trial_1.onnx"))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, IMG, IMG]
    assert "max abs difference" in result.output


def test_scale_times_members_with_onnxruntime(small_file, tmp_path):
    result = run("scale", small_file, "--phi", "0,1", "--img", IMG, "-o", tmp_path / "fam", "--latency-runs", 2,
                 "--threads", 1, "--latency-backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert all(float(r["latency_ms"]) > 0 for r in rows(tmp_path / "fam" / "family.csv"))
    result = run("scale", "yolov7-tiny", "--phi", "0", "--img", IMG, "-o", tmp_path / "bad", "--latency-backend", "x")
    assert result.exit_code == 1 and "unknown latency backend 'x'" in result.output
    assert not (tmp_path / "bad").exists()
