"""`--latency-device`: where latency is timed, apart from `--device` (where candidates are trained
and scored). Recorded on the study (a resume or worker timing elsewhere is refused), followed by
`y7nas run`'s stage dependencies, scale's members and the reproduce lines; and ONNX Runtime's
timed call: host arrays on the CPU, I/O binding on CUDA."""
from __future__ import annotations

import csv

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nas.build import build_model
from nas.cfg import parse_cfg
from nas.errors import SearchError
from nas.expand import expand
from nas.fuse import fuse
from nas.latency import LatencyMeter, SessionRunner, export_onnx, onnx_session
from nas.pipeline import STAGES, RunConfig, RunError, RunState
from nas.presets import PRESETS
from nas.report._data import reproduce_commands, run_command
from nas.search import SearchConfig
from scaling.compound import scale_genome
from scaling.family import ScaleRequest, _measurer

runner = CliRunner()
IMG = 64
SMALL = scale_genome(PRESETS["yolov7-tiny"], 1.0, 0.25)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _search_cfg(**changed) -> SearchConfig:
    values = dict(study="s", space="yolov7-tiny-cpu", trials=2, objectives=("gflops", "latency_ms"),
                  fidelity="flops", img=IMG)
    values.update(changed)
    return SearchConfig(**values)


# ------------------------------------------------------------------------------ the study
def test_the_latency_device_defaults_to_the_device_and_is_what_the_meter_times_on():
    assert _search_cfg().latency_device == "cpu"
    assert _search_cfg(device="cuda").latency_device == "cuda"
    cfg = _search_cfg(device="cuda", latency_device="cpu")
    assert cfg.device == "cuda" and cfg.latency_meter().device == "cpu"
    attrs = cfg.study_attrs()
    assert attrs["device"] == "cpu" and attrs["latency"]["device"] == "cpu"
    # read back (a worker): it times latency where the study did
    back = SearchConfig.from_study_attrs("s", attrs, 2)
    assert back.latency_device == "cpu" and back.latency_meter().record(IMG) == attrs["latency"]
    # a worker's own --device scores elsewhere and still times where the study did
    local = SearchConfig.from_study_attrs("s", attrs, 2, device="cuda:1")
    assert local.device == "cuda:1" and local.latency_meter().device == "cpu"
    # nothing timed: no latency device recorded
    assert _search_cfg(objectives=("gflops",), latency_device="cuda").study_attrs()["device"] is None


def test_a_study_refuses_another_latency_device_but_not_another_scoring_device():
    stored = _search_cfg(device="cuda", latency_device="cpu").study_attrs()
    _search_cfg(device="cpu").check_against(stored)       # scored elsewhere, timed on the same device
    _search_cfg(device="cuda:1", latency_device="cpu").check_against(stored)
    with pytest.raises(SearchError) as info:
        _search_cfg(device="cuda").check_against(stored)  # the latency device follows --device
    message = str(info.value)
    assert "\n" not in message
    assert "study 's' was created with latency.device='cpu', this run measures latency.device='cuda'" in message


def test_search_with_latency_device_cpu_end_to_end_and_resume_or_worker_elsewhere_refused(tmp_path):
    results = tmp_path / "results"
    base = ("search", "--space", "yolov7-tiny-cpu", "--trials", 2, "--study", "ld", "--objectives",
            "gflops,latency_ms", "--fidelity", "flops", "--img", IMG, "--threads", 1, "--results-dir", results,
            "--device", "cpu")
    result = run(*base, "--latency-device", "cpu")
    assert result.exit_code == 0, result.output
    study_dir = results / "ld"
    with open(study_dir / "trials.csv", newline="") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 2 and all(float(r["latency_ms"]) > 0 for r in trials)
    url = f"sqlite:///{(study_dir / 'study.db').resolve()}"
    study = optuna.load_study(study_name="ld", storage=url)
    stored = study.user_attrs["y7nas:config"]
    assert stored["device"] == "cpu" and stored["latency"]["device"] == "cpu"
    result = run("worker", "--study", "ld", "--storage", url, "--device", "cpu", "--latency-device", "cpu")
    assert result.exit_code == 0, result.output          # the study's own settings: joins (nothing left)

    # the same study as if created on a GPU for a GPU deployment: a resume or a worker timing on
    # this CPU is refused in one line before any trial
    gpu = {**stored, "device": "cuda", "latency": {**stored["latency"], "device": "cuda"}}
    study.set_user_attr("y7nas:config", gpu)
    for result in (run(*base, "--trials", 3, "--latency-device", "cpu"),
                   run("worker", "--study", "ld", "--storage", url, "--device", "cpu", "--latency-device", "cpu")):
        assert result.exit_code == 1, result.output
        assert "study 'ld' was created with latency.device='cuda', this run measures latency.device='cpu'" \
            in result.output
        assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert len(optuna.load_study(study_name="ld", storage=url).trials) == 2


# ------------------------------------------------------------------------------ y7nas run
def _run_cfg(tmp_path, **changed) -> RunConfig:
    values = dict(study="r", space="yolov7-tiny-cpu", data="data.yaml", results_dir=tmp_path, img=64,
                  fidelity="proxy", max_latency=5.0)
    values.update(changed)
    return RunConfig(**values)


def _open(cfg: RunConfig) -> RunState:
    return RunState.open(cfg.study_dir / "run.json", cfg.settings(), [(s.name, s.depends_of(cfg)) for s in STAGES])


def test_run_stages_depend_on_the_latency_device_not_the_training_device(tmp_path):
    cfg = _run_cfg(tmp_path, device="cuda", latency_device="cpu")
    assert cfg.latency_device == "cpu" and _run_cfg(tmp_path, device="cuda").latency_device == "cuda"
    stages = {s.name: set(s.depends_of(cfg)) for s in STAGES}
    assert "latency_device" in stages["search"] and "latency_device" in stages["family"]
    assert not any("device" in keys for keys in stages.values())
    # the run's search and family time latency on the latency device
    from nas.pipeline import search_config

    assert search_config(cfg).latency_meter().device == "cpu" and search_config(cfg).device == "cuda"

    cfg.study_dir.mkdir(parents=True)
    state = _open(cfg)
    state.finish("search", 1.0, {})
    state.start("family")
    # trained elsewhere, timed on the same device: continued
    assert _open(_run_cfg(tmp_path, device="cpu", latency_device="cpu")).done("search")
    # timed elsewhere: refused in one line
    with pytest.raises(RunError) as info:
        _open(_run_cfg(tmp_path, device="cuda", latency_device="cuda"))
    assert "already finished stage search with latency_device=\"cpu\"" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_run_json_without_the_latency_device_is_continued(tmp_path):
    """run.json written before --latency-device: it is taken as given (it was the device)."""
    cfg = _run_cfg(tmp_path)
    cfg.study_dir.mkdir(parents=True)
    state = _open(cfg)
    state.finish("search", 1.0, {})
    del state.settings["latency_device"]
    state.save()
    assert _open(cfg).done("search")


def test_the_reproduce_lines_name_the_latency_device():
    attrs = _search_cfg(device="cuda", latency_device="cuda:1").study_attrs()
    assert "--latency-device cuda:1" in reproduce_commands("s", attrs, 2)[0]
    assert "--latency-device" not in reproduce_commands("s", _search_cfg().study_attrs(), 2)[0]
    settings = _run_cfg("results", device="cuda", latency_device="cpu").settings()
    assert "--latency-device cpu" in run_command("r", settings)
    assert "--latency-device" not in run_command("r", _run_cfg("results").settings())


# ------------------------------------------------------------------------------ y7nas scale
def test_scale_times_members_on_the_latency_device():
    assert _measurer(ScaleRequest(base="yolov7-tiny", device="cuda", latency_device="cpu")).meter.device == "cpu"
    assert _measurer(ScaleRequest(base="yolov7-tiny", device="cuda")).meter.device == "cuda"


def test_scale_cli_takes_the_latency_device(tmp_path):
    path = tmp_path / "tiny.genome.yaml"
    path.write_text(SMALL.to_yaml())
    result = run("scale", path, "--phi", "0", "--img", IMG, "-o", tmp_path / "fam", "--latency-runs", 1,
                 "--threads", 1, "--device", "cpu", "--latency-device", "cpu")
    assert result.exit_code == 0, result.output
    result = run("scale", path, "--phi", "0", "--img", IMG, "-o", tmp_path / "bad", "--latency-device", "tpu")
    assert result.exit_code == 1 and "unknown device 'tpu'" in result.output
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------ ONNX Runtime
@pytest.fixture(scope="module")
def small_onnx():
    torch.manual_seed(0)
    model = fuse(build_model(parse_cfg(expand(SMALL), source="tiny-w025"))).eval()
    return model, export_onnx(model, IMG)


def _feed(session):
    x = np.random.default_rng(0).random((1, 3, IMG, IMG), dtype=np.float32)
    return {session.get_inputs()[0].name: x}


def test_the_cpu_runner_is_the_run_call_on_host_arrays(small_onnx):
    session = onnx_session(small_onnx[1], threads=1, device="cpu")
    feed = _feed(session)
    timed = SessionRunner(session, feed, "cpu")
    assert timed.binding is None
    timed()
    timed.sync()
    np.testing.assert_array_equal(timed.outputs()[0], session.run(None, feed)[0])


def _cuda_provider_absent() -> bool:
    import onnxruntime

    return not torch.cuda.is_available() or "CUDAExecutionProvider" not in onnxruntime.get_available_providers()


@pytest.mark.skipif(_cuda_provider_absent(), reason="onnxruntime CUDA provider absent (or no CUDA device): "
                                                    "the I/O-bound CUDA timing needs onnxruntime-gpu and a GPU")
def test_the_cuda_runner_binds_input_and_outputs_on_the_device(small_onnx):
    model, data = small_onnx
    session = onnx_session(data, device="cuda")
    feed = _feed(session)
    timed = SessionRunner(session, feed, "cuda")
    assert timed.binding is not None
    got = timed.outputs()[0]
    assert all(value.device_name() == "cuda" for value in timed.binding.get_outputs())
    expected = onnx_session(data, threads=1, device="cpu").run(None, feed)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    result = LatencyMeter("onnxruntime", device="cuda", runs=5, warmup=2).result(model, IMG)
    assert result.median > 0 and result.device.startswith("cuda")
