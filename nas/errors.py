"""Exceptions raised by y7nas.

Every error a user can cause ends in one :class:`NasError` whose message is a single line
naming where the problem is (file, layer/row, field) and what is wrong. The CLI prints that
line and exits non-zero; nothing else in the project prints tracebacks for user mistakes.
"""
from __future__ import annotations


class NasError(Exception):
    """Root of every error y7nas raises on bad input or an impossible request."""

    def __init__(self, message: str, *, where: str | None = None):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(NasError):
    """A model cfg (flat yolov7 YAML or genome YAML) is malformed or inconsistent."""

    def __init__(self, message: str, *, source: str | None = None, layer: int | None = None):
        parts = [p for p in (source, None if layer is None else f"layer {layer}") if p]
        self.source, self.layer = source, layer
        super().__init__(message, where=", ".join(parts) or None)


class DataError(NasError):
    """A dataset cannot be used (missing files, nothing valid left after filtering)."""


class SearchError(NasError):
    """A search or study request cannot be carried out (unknown space, storage, study)."""


class ReportError(NasError):
    """A report cannot be written (an unreadable result file, an unusable output path)."""


class ScalingError(NasError):
    """A compound-scaling request is invalid (coefficients, phi list, unrecognised base)."""
