"""Reading yolov7-format model cfgs (``[from, number, module, args]`` rows) safely.

:func:`load_cfg` / :func:`parse_cfg` turn a YAML file or dict into a validated, immutable
:class:`ModelCfg`. This layer checks structure only (top-level keys, row shape, route indices);
the meaning of each module's arguments is checked by the registry when the model is built. Every
problem is a :class:`~nas.errors.ConfigError` naming the file and the layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError

REQUIRED_KEYS = ("nc", "anchors", "backbone", "head")
OPTIONAL_KEYS = ("depth_multiple", "width_multiple", "ch")


@dataclass(frozen=True)
class Row:
    """One layer row. ``sources`` holds absolute layer indices (−1 for the network input)."""

    index: int
    sources: tuple[int, ...]
    written_from: Any
    number: int
    module: str
    args: tuple

    @property
    def multi_input(self) -> bool:
        return isinstance(self.written_from, list)


@dataclass(frozen=True)
class ModelCfg:
    """A validated flat yolov7 cfg; ``raw`` is the dict as read (for writing it back)."""

    source: str
    nc: int
    depth_multiple: float
    width_multiple: float
    anchors: Any
    rows: tuple[Row, ...]
    n_backbone: int
    raw: dict

    @property
    def anchors_per_level(self) -> int:
        if isinstance(self.anchors, int):
            return self.anchors
        return len(self.anchors[0]) // 2

    @property
    def outputs_per_level(self) -> int:
        """Detect output width ``na·(nc+5)``: the one width that width_multiple never scales."""
        return self.anchors_per_level * (self.nc + 5)


def load_cfg(path: str | Path) -> ModelCfg:
    """Read and validate a yolov7-format cfg file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read model file ({exc.strerror or exc})", source=str(path)) from None
    return parse_cfg(read_yaml_mapping(text, str(path)), source=str(path))


def read_yaml_mapping(text: str, source: str) -> dict:
    """``yaml.safe_load`` a document that must be a mapping; errors name the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"malformed YAML{where}: {problem}", source=source) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a YAML mapping at the top level", source=source)
    return data


def parse_cfg(data: dict, source: str = "<cfg>") -> ModelCfg:
    """Validate the structure of a cfg dict and resolve every route to absolute indices."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(f"missing top-level key(s): {', '.join(missing)}", source=source)
    nc = data["nc"]
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ConfigError(f"nc must be a positive integer, got {nc!r}", source=source)
    depth = _multiple(data, "depth_multiple", source)
    width = _multiple(data, "width_multiple", source)
    anchors = _anchors(data["anchors"], source)
    sections = []
    for key in ("backbone", "head"):
        section = data[key]
        if not isinstance(section, list) or not section and key == "backbone":
            raise ConfigError(f"'{key}' must be a non-empty list of [from, number, module, args] rows",
                              source=source)
        sections.append(section)
    rows = tuple(_row(i, r, source) for i, r in enumerate(sections[0] + sections[1]))
    if not rows:
        raise ConfigError("the cfg has no layers", source=source)
    return ModelCfg(source, nc, depth, width, anchors, rows, len(sections[0]), data)


def _multiple(data: dict, key: str, source: str) -> float:
    value = data.get(key, 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{key} must be a positive number, got {value!r}", source=source)
    return float(value)


def _anchors(anchors: Any, source: str) -> Any:
    if isinstance(anchors, int) and not isinstance(anchors, bool) and anchors > 0:
        return anchors
    if not isinstance(anchors, list) or not anchors:
        raise ConfigError("anchors must be a positive int or a list of per-level [w,h, w,h, ...] lists",
                          source=source)
    lengths = set()
    for level, values in enumerate(anchors):
        ok = isinstance(values, list) and values and len(values) % 2 == 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values)
        if not ok:
            raise ConfigError(f"anchors level {level} must be an even-length list of positive numbers",
                              source=source)
        lengths.add(len(values))
    if len(lengths) != 1:
        raise ConfigError("every anchors level must have the same number of anchors", source=source)
    return anchors


def _row(index: int, row: Any, source: str) -> Row:
    if not isinstance(row, list) or len(row) != 4:
        raise ConfigError("a row must be [from, number, module, args]", source=source, layer=index)
    written_from, number, module, args = row
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ConfigError(f"number must be a positive integer, got {number!r}", source=source, layer=index)
    if not isinstance(module, str) or not module:
        raise ConfigError(f"module must be a name, got {module!r}", source=source, layer=index)
    if args is None:
        args = []
    if not isinstance(args, list):
        raise ConfigError(f"args must be a list, got {args!r}", source=source, layer=index)
    refs = written_from if isinstance(written_from, list) else [written_from]
    if not refs:
        raise ConfigError("'from' is an empty list", source=source, layer=index)
    sources = tuple(_resolve(index, ref, source) for ref in refs)
    return Row(index, sources, written_from, number, module, tuple(args))


def _resolve(index: int, ref: Any, source: str) -> int:
    """Absolute index of a route; −1 on layer 0 means the network input."""
    if isinstance(ref, bool) or not isinstance(ref, int):
        raise ConfigError(f"'from' entries must be integers, got {ref!r}", source=source, layer=index)
    if index == 0:
        if ref != -1:
            raise ConfigError("layer 0 must take the input (from -1)", source=source, layer=index)
        return -1
    absolute = index + ref if ref < 0 else ref
    if ref >= index:
        raise ConfigError(f"'from' {ref} points forward (layers may only use earlier layers)",
                          source=source, layer=index)
    if absolute < 0:
        raise ConfigError(f"'from' {ref} is out of range (before layer 0)", source=source, layer=index)
    return absolute
