"""Result files and cells: atomic writes, CSV text, number cells.

Imports nothing of the search (the results, the plot, pruning and finalists all write with it).
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence


def is_number(value: Any) -> bool:
    """A finite int or float cell (not a bool, not the empty cell of a missing value)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def format_cell(value: Any) -> Any:
    """A CSV cell: floats to 6 significant digits (``nan``/``inf`` as words), others as they are."""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return value


def csv_text(rows: Sequence[Mapping[str, Any]], header: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: format_cell(row.get(k, "")) for k in header})
    return buf.getvalue()


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write via a temporary sibling and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)


__all__ = ["csv_text", "format_cell", "is_number", "write_atomically"]
