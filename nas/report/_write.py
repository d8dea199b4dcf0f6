"""``write_report``: gather the study, render the page, write it atomically."""
from __future__ import annotations

from pathlib import Path

from nas.errors import ReportError
from nas.report._gather import gather
from nas.report._html import render_html
from nas.search._files import write_atomically

#: the report refuses to grow past this (it is meant to open instantly, a few MB at most)
MAX_BYTES = 8 * 1024 * 1024


def write_report(study: str, results_dir: Path | str = "results", out: Path | None = None,
                 storage: str | None = None) -> Path:
    """Write the study's self-contained HTML report; returns its path.

    Default path: ``<results_dir>/<study>/report.html``. Links to model files are relative to
    the page, so the report and the results folder can be moved together.

    Raises:
        SearchError: no such study (or storage).
        ReportError: an unreadable result file, or an output path that cannot be written.
    """
    results_dir = Path(results_dir)
    path = Path(out) if out is not None else results_dir / study / "report.html"
    if path.is_dir():
        raise ReportError(f"{path}: is a folder; give a file name for the report (-o FILE)")
    data = gather(study, results_dir, path.parent, storage)
    html = render_html(data).encode("utf-8")
    if len(html) > MAX_BYTES:
        raise ReportError(f"report of study {study!r} would be {len(html) / 2**20:.1f} MiB "
                          f"(limit {MAX_BYTES // 2**20} MiB)")
    try:
        write_atomically(path, html)
    except OSError as exc:
        raise ReportError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


__all__ = ["MAX_BYTES", "write_report"]
