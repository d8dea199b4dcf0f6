"""ONNX export of a deploy-form detector and ONNX Runtime sessions.

What is exported is what inference runs: the fused model's decoded predictions tensor
``(batch, boxes, 5 + nc)`` (xywh in pixels, objectness, class scores), as YOLOv7's inference
forward returns it first; no NMS. The legacy TorchScript exporter (``dynamo=False``) is used:
torch.export cannot trace the detect head's stride guard, and the legacy graph is the one ONNX
Runtime, OpenVINO and TensorRT users get from YOLOv7's own ``export.py``.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch
from torch import nn

from nas.errors import NasError

__all__ = ["DEFAULT_OPSET", "ONNX_TOLERANCE", "PredictionsOnly", "export_onnx", "onnx_session",
           "onnx_max_abs_difference", "onnx_versions"]

#: Opset written by default (ONNX Runtime 1.14+ and TensorRT 8.6+ read it).
DEFAULT_OPSET = 17
#: Largest max-abs difference accepted between ONNX Runtime's and torch's predictions.
ONNX_TOLERANCE = 1e-4


class PredictionsOnly(nn.Module):
    """``model``'s eval forward, first tensor only (the decoded predictions)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        while isinstance(out, (tuple, list)):
            out = out[0]
        return out


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:  # pragma: no cover - both are installed by make install
        raise NasError("ONNX export needs the onnx and onnxruntime packages (run make install)") from None


def onnx_versions() -> dict[str, str]:
    """Versions of the libraries an ONNX latency depends on."""
    _require_onnx()
    import onnx
    import onnxruntime

    return {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def export_onnx(model: nn.Module, img: int, batch: int = 1, path: str | Path | None = None,
                dynamic_batch: bool = False, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized ONNX of ``model`` (deploy form expected) on a ``batch``×3×img×img input.

    Written to ``path`` too when given. Input ``images``, output ``predictions``; with
    ``dynamic_batch`` the batch dimension of both is symbolic.
    """
    _require_onnx()
    if isinstance(opset, bool) or not isinstance(opset, int) or not 11 <= opset <= 21:
        raise NasError(f"--opset must be an integer from 11 to 21, got {opset!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(batch, 3, img, img, device=device)
    axes = {"images": {0: "batch"}, "predictions": {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about python values in the head
            torch.onnx.export(PredictionsOnly(model), (x,), buffer, opset_version=opset, dynamo=False,
                              input_names=["images"], output_names=["predictions"],
                              dynamic_axes=axes, do_constant_folding=True)
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def onnx_session(data: bytes, threads: int | None = 1, device: str = "cpu"):
    """An ONNX Runtime session of serialized ``data``: the CPU provider with ``threads`` intra-op
    threads (None: ONNX Runtime's default), or the CUDA provider on a ``cuda`` device."""
    _require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise NasError("device cuda asked for ONNX Runtime, but this onnxruntime has no CUDA "
                           "provider (install onnxruntime-gpu)")
        index = torch.device(device).index or 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ort.InferenceSession(data, options, providers=providers)


def onnx_max_abs_difference(model: nn.Module, data: bytes, img: int, batch: int = 1, seed: int = 0) -> float:
    """Max abs difference between ONNX Runtime's predictions of ``data`` and ``model``'s (eval,
    CPU) on a seeded random input."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, img, img, generator=generator)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            reference = PredictionsOnly(model)(x.to(device)).cpu().numpy()
    finally:
        model.train(was_training)
    session = onnx_session(data, threads=None)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    if got.shape != reference.shape:
        raise NasError(f"ONNX output shape {tuple(got.shape)} differs from torch's {tuple(reference.shape)}")
    return float(abs(got - reference).max())
