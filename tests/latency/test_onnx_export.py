"""`y7nas onnx`: the deploy form exported to ONNX, run in ONNX Runtime and compared with torch."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from cli import app
from nas.build import build_model
from nas.errors import NasError
from nas.expand import dump_yaml, expand
from nas.fuse import fuse
from nas.latency import ONNX_RTOL, ONNX_TOLERANCE, PredictionsOnly, check_onnx, export_onnx, onnx_session
from nas.presets import PRESETS
from nas.sources import resolve_model
from scaling.compound import scale_genome

runner = CliRunner()
IMG = 64


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def torch_predictions(spec: str, x: torch.Tensor) -> np.ndarray:
    """The deploy form's predictions as YOLOv7's inference forward returns them (first output)."""
    torch.manual_seed(0)
    model = fuse(build_model(resolve_model(spec).cfg)).eval()
    with torch.inference_mode():
        return PredictionsOnly(model)(x).numpy()


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= ONNX_TOLERANCE + ONNX_RTOL * np.abs(want))
    scores = np.abs(got[..., 4:] - want[..., 4:])  # objectness and class scores: absolute 1e-4
    assert scores.max() <= ONNX_TOLERANCE


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A flat YAML (yolov7-tiny at width 0.25) and a genome YAML (yolov7 at width 0.25: RepConv
    and IDetect implicits, which fuse() folds, reach the export)."""
    folder = tmp_path_factory.mktemp("models")
    tiny = scale_genome(PRESETS["yolov7-tiny"], 1.0, 0.25)
    flat = folder / "tiny-w025.yaml"
    flat.write_text(dump_yaml(expand(tiny)))
    genome = folder / "v7-w025.genome.yaml"
    genome.write_text(scale_genome(PRESETS["yolov7"], 1.0, 0.25).to_yaml())
    return {"flat": flat, "genome": genome}


@pytest.mark.parametrize("kind", ["preset", "flat", "genome"])
def test_onnx_file_reproduces_torch_deploy_predictions(kind, model_files, tmp_path):
    spec = "yolov7-tiny" if kind == "preset" else str(model_files[kind])
    out = tmp_path / "model.onnx"
    torch.manual_seed(0)  # the command builds the model with torch's global generator
    result = run("onnx", spec, "-o", out, "--img", IMG)
    assert result.exit_code == 0, result.output
    assert "ONNX Runtime vs torch max abs difference" in result.output
    printed = float(result.output.split("max abs difference ")[1].split()[0])

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["predictions"]
    assert proto.opset_import[0].version == 17

    x = torch.rand(1, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    want = torch_predictions(spec, x)
    session = onnx_session(out.read_bytes(), threads=1)
    got = session.run(None, {"images": x.numpy()})[0]
    nc = 80
    assert got.shape == (1, 3 * (IMG // 8) ** 2 + 3 * (IMG // 16) ** 2 + 3 * (IMG // 32) ** 2, 5 + nc)
    assert_close(got, want)
    assert printed <= ONNX_TOLERANCE + ONNX_RTOL * np.abs(want).max()


def test_dynamic_batch_file_runs_at_batch_2(model_files, tmp_path):
    out = tmp_path / "dyn.onnx"
    torch.manual_seed(0)
    result = run("onnx", model_files["genome"], "-o", out, "--img", IMG, "--dynamic-batch", "--opset", 13)
    assert result.exit_code == 0, result.output
    assert "dynamic batch" in result.output and "opset 13" in result.output
    session = onnx_session(out.read_bytes(), threads=1)
    x = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(2))
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape[0] == 2
    want = torch_predictions(str(model_files["genome"]), x)
    assert_close(got, want)
    alone = session.run(None, {"images": x[1:].numpy()})[0]  # the same file at batch 1
    assert alone.shape[0] == 1 and np.allclose(alone[0], got[1], rtol=1e-6, atol=1e-5)


def test_fixed_batch_file_refuses_another_batch(model_files, tmp_path):
    out = tmp_path / "fixed.onnx"
    assert run("onnx", model_files["flat"], "-o", out, "--img", IMG).exit_code == 0
    session = onnx_session(out.read_bytes(), threads=1)
    with pytest.raises(Exception, match="invalid dimensions for input: images"):
        session.run(None, {"images": np.zeros((2, 3, IMG, IMG), np.float32)})


def test_a_wrong_export_is_caught_by_the_check(model_files):
    """check_onnx compares against the model it is given: another model's file fails in one line."""
    torch.manual_seed(0)
    a = fuse(build_model(resolve_model(str(model_files["flat"])).cfg)).eval()
    b = fuse(build_model(resolve_model(str(model_files["flat"])).cfg)).eval()  # other random weights
    data = export_onnx(a, IMG)
    assert check_onnx(a, data, IMG) <= 1e-3
    with pytest.raises(NasError, match=r"ONNX Runtime's predictions differ from torch's by .* allowed 0.0001"):
        check_onnx(b, data, IMG)


@pytest.mark.parametrize("args,message", [
    (("--opset", 9), "--opset must be an integer from 11 to 21, got 9"),
    (("--opset", 22), "--opset must be an integer from 11 to 21, got 22"),
    (("--img", 100), "image size 100 must be a positive multiple of the model's largest stride 32"),
    (("--img", 0), "image size 0 must be a positive multiple"),
    (("--batch", 0), "--batch must be an integer ≥ 1, got 0"),
])
def test_bad_options_are_one_line_and_write_nothing(model_files, tmp_path, args, message):
    out = tmp_path / "bad.onnx"
    result = run("onnx", model_files["flat"], "-o", out, *args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_model_and_folder_output_are_one_line(model_files, tmp_path):
    result = run("onnx", "yolov9", "-o", tmp_path / "x.onnx")
    assert result.exit_code == 1 and "yolov9: not a preset" in result.output
    result = run("onnx", model_files["flat"], "-o", tmp_path, "--img", IMG)
    assert result.exit_code == 1 and "is a folder; give a file name for the ONNX output" in result.output
    assert result.output.count("error:") == 1
