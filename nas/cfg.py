"""Reading yolov7-format model cfgs (``[from, number, module, args]`` rows) safely.

:func:`load_cfg` / :func:`parse_cfg` turn a YAML file or dict into a validated, immutable
:class:`ModelCfg`. This layer checks structure only (top-level keys, row shape, route indices);
the meaning of each module's arguments is checked by the registry when the model is built. Every
problem is a :class:`~nas.errors.ConfigError` naming the file and the layer.
"""
from __future__ import annotations

import math
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.errors import ConfigError

REQUIRED_KEYS = ("nc", "anchors", "backbone", "head")
OPTIONAL_KEYS = ("depth_multiple", "width_multiple", "ch")
#: Most rows a cfg may have (YOLOv7's largest upstream cfg, yolov7-e6e, has 262).
MAX_LAYERS = 4096
#: Largest model file read (upstream cfgs are a few kB; this refuses /dev/zero-like inputs early).
MAX_FILE_BYTES = 4 * 1024 * 1024


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting user input in one-line errors."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    return parse_cfg(read_yaml_mapping(read_model_text(path), str(path)), source=str(path))


def read_model_text(path: str | Path) -> str:
    """The text of a model file (flat cfg or genome YAML): a regular UTF-8 text file of at most
    :data:`MAX_FILE_BYTES`. Directories, devices, FIFOs, binary and oversized files are refused
    with a :class:`ConfigError` naming the file, before anything is parsed."""
    source = str(path)
    try:
        info = Path(path).stat()
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ConfigError(f"cannot read model file: {kind}", source=source)
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"model file is {info.st_size:,} bytes; at most {MAX_FILE_BYTES:,} are read "
                              "(is this really a model YAML?)", source=source)
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read model file ({exc.strerror or exc})", source=source) from None
    if b"\0" in data:
        raise ConfigError("not a text file (it contains NUL bytes)", source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start})",
                          source=source) from None


def read_yaml_mapping(text: str, source: str) -> dict:
    """``yaml.safe_load`` a document that must be a mapping; errors name the line."""
    data = safe_load_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError("expected a YAML mapping at the top level", source=source)
    return data


def safe_load_yaml(text: str, source: str | None) -> Any:
    """``yaml.safe_load`` with every YAML error turned into one ConfigError naming the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control codes)
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        raise ConfigError(f"malformed YAML: control character U+{code:04X} at offset {exc.position} is "
                          "not allowed", source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"malformed YAML{where}: {problem}", source=source) from None
    return data


def parse_cfg(data: dict, source: str = "<cfg>") -> ModelCfg:
    """Validate the structure of a cfg dict and resolve every route to absolute indices."""
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError(f"missing top-level key(s): {', '.join(missing)}", source=source)
    unknown = [str(k) for k in data if k not in REQUIRED_KEYS + OPTIONAL_KEYS]
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(unknown)} (known: "
                          f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})", source=source)
    ch = data.get("ch", 3)
    if ch != 3 or isinstance(ch, bool):
        raise ConfigError(f"ch (input channels) must be 3, got {brief(ch)}: y7nas builds RGB detectors",
                          source=source)
    nc = data["nc"]
    if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
        raise ConfigError(f"nc must be a positive integer, got {brief(nc)}", source=source)
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
    if len(sections[0]) + len(sections[1]) > MAX_LAYERS:
        raise ConfigError(f"the cfg has {len(sections[0]) + len(sections[1]):,} layers; at most "
                          f"{MAX_LAYERS:,} are supported", source=source)
    rows = tuple(_row(i, r, source) for i, r in enumerate(sections[0] + sections[1]))
    if not rows:
        raise ConfigError("the cfg has no layers", source=source)
    return ModelCfg(source, nc, depth, width, anchors, rows, len(sections[0]), data)


def _multiple(data: dict, key: str, source: str) -> float:
    value = data.get(key, 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{key} must be a positive finite number, got {brief(value)}", source=source)
    return float(value)


def _anchors(anchors: Any, source: str) -> Any:
    try:
        return check_anchors(anchors)
    except ValueError as exc:
        raise ConfigError(str(exc), source=source) from None


def check_anchors(anchors: Any) -> Any:
    """``anchors`` as YOLOv7 writes them: anchors per level (a positive int) or one
    ``w,h, w,h, ...`` list of positive finite numbers per level, all levels the same length.
    :class:`ValueError` otherwise (the caller adds file and layer)."""
    if isinstance(anchors, int) and not isinstance(anchors, bool) and anchors > 0:
        return anchors
    if not isinstance(anchors, list) or not anchors:
        raise ValueError("anchors must be a positive int or a list of per-level (w,h, w,h, ...) lists")
    lengths = set()
    for level, values in enumerate(anchors):
        ok = isinstance(values, list) and values and len(values) % 2 == 0 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf for v in values)
        if not ok:
            raise ValueError(f"anchors level {level} must be an even-length list of positive numbers")
        lengths.add(len(values))
    if len(lengths) != 1:
        raise ValueError("every anchors level must have the same number of anchors")
    return anchors


def _row(index: int, row: Any, source: str) -> Row:
    if not isinstance(row, list) or len(row) != 4:
        raise ConfigError(f"a row must be [from, number, module, args], got {brief(row)}", source=source,
                          layer=index)
    written_from, number, module, args = row
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ConfigError(f"number must be a positive integer, got {brief(number)}", source=source,
                          layer=index)
    if not isinstance(module, str) or not module:
        raise ConfigError(f"module must be a name, got {brief(module)}", source=source, layer=index)
    if args is None:
        args = []
    if not isinstance(args, list):
        raise ConfigError(f"args must be a list, got {brief(args)}", source=source, layer=index)
    refs = written_from if isinstance(written_from, list) else [written_from]
    if not refs:
        raise ConfigError("'from' is an empty list", source=source, layer=index)
    sources = tuple(_resolve(index, ref, source) for ref in refs)
    return Row(index, sources, written_from, number, module, tuple(args))


def _resolve(index: int, ref: Any, source: str) -> int:
    """Absolute index of a route; −1 on layer 0 means the network input."""
    if isinstance(ref, bool) or not isinstance(ref, int):
        raise ConfigError(f"'from' entries must be integers, got {brief(ref)}", source=source, layer=index)
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
