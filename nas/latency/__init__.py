"""Deployment latency: ONNX export, latency backends (torch / ONNX Runtime) and, later, latency
tables that predict a model's latency from per-layer timings (see docs/LATENCY.md)."""
from nas.latency._backends import (DEFAULT_BACKEND, LATENCY_BACKENDS, LatencyBackend, get_backend,
                                   time_calls, time_session)
from nas.latency._meter import LatencyMeter
from nas.latency._onnx import (DEFAULT_OPSET, ONNX_RTOL, ONNX_TOLERANCE, OnnxExport, PredictionsOnly, SessionRunner,
                               check_onnx, export_onnx, onnx_max_abs_difference, onnx_session, onnx_versions,
                               write_onnx)

__all__ = ["DEFAULT_BACKEND", "DEFAULT_OPSET", "LATENCY_BACKENDS", "LatencyBackend", "LatencyMeter", "ONNX_RTOL",
           "ONNX_TOLERANCE", "OnnxExport", "PredictionsOnly", "SessionRunner", "check_onnx", "export_onnx", "get_backend",
           "onnx_max_abs_difference", "onnx_session", "onnx_versions", "time_calls", "time_session",
           "write_onnx"]
