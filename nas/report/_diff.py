"""How a genome differs from the nearest preset (pure functions over :meth:`Genome.leaves`).

Every leaf of a genome (``stages[2].elan.depth``, ``spp.kind``, ``outputs.widths[0]`` ...) is
compared with the same leaf of each preset; the class count and the anchors are left out (a
search sets them from the data, not the architecture). The nearest preset is the one with the
fewest differing leaves (ties: the order of :data:`nas.presets.PRESETS`). A leaf one genome has
and the other lacks (e.g. a longer stem) counts as differing.

Structural leaves (kinds, depths, patterns, strides, activation ...) are listed one by one;
width leaves are summarised by how many differ and the range of their ratios to the preset's,
since a global width multiplier changes all of them at once.
"""
from __future__ import annotations

from typing import Any, Mapping

_IGNORED = ("nc", "anchors")
_MISSING = "—"


def _comparable(genome: Any) -> dict[str, Any]:
    return {path: value for path, value in genome.leaves().items()
            if not any(path == p or path.startswith(p + "[") for p in _IGNORED)}


def genome_diff(genome: Any, preset: Any) -> dict[str, Any]:
    """``{"differ", "fields", "changes", "widths_differ", "width_ratio"}`` of ``genome`` against ``preset``.

    ``changes`` lists the differing structural leaves as ``"path: preset → genome"``;
    ``width_ratio`` is ``[min, max]`` of genome/preset over the width leaves both have (None
    when there are none).
    """
    mine, theirs = _comparable(genome), _comparable(preset)
    widths = set(genome.leaves("width")) | set(preset.leaves("width"))
    paths = list(theirs) + [p for p in mine if p not in theirs]
    changes, widths_differ, ratios = [], 0, []
    for path in paths:
        a, b = theirs.get(path, _MISSING), mine.get(path, _MISSING)
        if path in widths:
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a:
                ratios.append(b / a)
            widths_differ += a != b
        elif a != b:
            changes.append(f"{path}: {a} → {b}")
    differ = len(changes) + widths_differ
    ratio = [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None
    return {"differ": differ, "fields": len(paths), "changes": changes,
            "widths_differ": widths_differ, "width_ratio": ratio}


def nearest_preset(genome: Any, presets: Mapping[str, Any]) -> dict[str, Any] | None:
    """The diff (:func:`genome_diff`) against the preset with the fewest differing leaves, with
    its name under ``"preset"``; None without presets."""
    best = None
    for name, preset in presets.items():
        diff = genome_diff(genome, preset)
        if best is None or diff["differ"] < best["differ"]:
            best = {"preset": name, **diff}
    return best


__all__ = ["genome_diff", "nearest_preset"]
