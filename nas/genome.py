"""The Genome: one frozen, hashable, YAML-serialisable description of a YOLOv7-P5-family detector.

A genome is what the search samples, what the scaler transforms and what gets de-duplicated. It
describes the network at the level of design decisions (ELAN chain length and widths, downsample
kind, SPP kind, head widths, activation, detect head); :func:`nas.expand.expand` writes it out as
a flat yolov7 cfg.

Layout (P5 family, strides 8/16/32)::

    stem            3x3 convs (width, stride), e.g. yolov7: 32/s1 64/s2 64/s1 128/s2
    stages[0..3]    P2..P5: a downsample (none | conv | mpc | mp) then an ELAN block
    spp             sppcspc | sppf | spp | spp3 | sp, with its output width
    head.top_down   P4 then P3: lateral 1x1 width (before nn.Upsample and on the routed
                    backbone feature) and an ELAN block
    head.bottom_up  P4 then P5: a downsample (mpc | conv) and an ELAN block
    outputs         the 3x3 output convs per level (repconv | conv) and their widths
    detect, nc, anchors

All nested values are frozen dataclasses and tuples, so genomes are hashable and compare by
value. Every field that is a channel width carries ``metadata={"role": "width"}`` and every chain
length ``{"role": "depth"}``; :meth:`Genome.map_fields` uses these tags so scalers need not know
the layout. Construction validates the whole tree and raises one
:class:`~nas.errors.ConfigError` whose message names the offending key
(e.g. ``stages[2].elan.depth``).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import types
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

import yaml

from nas.cfg import brief, safe_load_yaml
from nas.errors import ConfigError

ACTIVATIONS = ("silu", "leakyrelu", "relu")
DETECT_KINDS = ("idetect", "detect")
STAGE_DOWNSAMPLES = ("none", "conv", "mpc", "mp")
HEAD_DOWNSAMPLES = ("mpc", "conv")
ELAN_PATTERNS = ("every2", "all")
SPP_KINDS = ("sppcspc", "sppf", "spp", "spp3", "sp")
OUTPUT_KINDS = ("repconv", "conv")
#: SPP kinds that are single YOLOv7 modules with a built-in SiLU (no activation argument).
SILU_ONLY_SPP = ("sppcspc", "sppf", "spp")
#: Downsample kinds that have a conv (and so a width); the others must leave width unset.
WIDTHLESS_DOWNSAMPLES = ("none", "mp")

N_STAGES, N_TOP_DOWN, N_BOTTOM_UP, N_LEVELS = 4, 2, 2, 3
P2_STRIDE = 4
#: Sanity bounds that keep a hand-edited or scaled genome from expanding into a model nobody
#: can build (yolov7x has chains of 6 and a stem of 4).
MAX_ELAN_DEPTH = 64
MAX_STEM = 16

_WIDTH = {"role": "width"}
_DEPTH = {"role": "depth"}


@dataclass(frozen=True)
class StemConv:
    """One 3x3 stem conv."""

    width: int = field(metadata=_WIDTH)
    stride: int


@dataclass(frozen=True)
class Downsample:
    """How a stage (or bottom-up head level) halves the resolution.

    ``none``: nothing (only the first backbone stage). ``conv``: strided 3x3 Conv.
    ``mpc``: MPC block — MP→Conv1x1 ∥ Conv1x1→Conv3x3/s2, each branch ``width`` wide (in the head
    also concatenated with the lateral feature). ``mp``: MaxPool only (yolov7-tiny backbone).
    ``width`` is ``None`` for ``none`` and ``mp``.
    """

    kind: str
    width: int | None = field(default=None, metadata=_WIDTH)


@dataclass(frozen=True)
class Elan:
    """An ELAN block: two 1x1 entry convs, a chain of ``depth`` 3x3 convs, concat, 1x1 transition.

    ``pattern`` ``every2`` concatenates every second chain output (counting back from the last)
    plus both entries (ELAN; needs an even depth); ``all`` concatenates every chain output plus
    both entries (ELAN-H). ``entry``/``chain``/``out`` are the widths of the entry convs, the
    chain convs and the transition conv.
    """

    depth: int = field(metadata=_DEPTH)
    pattern: str
    entry: int = field(metadata=_WIDTH)
    chain: int = field(metadata=_WIDTH)
    out: int = field(metadata=_WIDTH)


@dataclass(frozen=True)
class Stage:
    """A backbone stage: downsample then ELAN."""

    down: Downsample
    elan: Elan


@dataclass(frozen=True)
class Spp:
    """The spatial-pyramid block that opens the head, with its output width."""

    kind: str
    width: int = field(metadata=_WIDTH)


@dataclass(frozen=True)
class TopDown:
    """A top-down (FPN) head level: lateral 1x1 reduce + upsample + routed 1x1, then ELAN."""

    lateral: int = field(metadata=_WIDTH)
    elan: Elan


@dataclass(frozen=True)
class BottomUp:
    """A bottom-up (PAN) head level: downsample, concat with the lateral feature, then ELAN."""

    down: Downsample
    elan: Elan


@dataclass(frozen=True)
class Head:
    """PAN head: ``top_down`` for P4 then P3, ``bottom_up`` for P4 then P5."""

    top_down: tuple[TopDown, ...]
    bottom_up: tuple[BottomUp, ...]


@dataclass(frozen=True)
class Outputs:
    """The 3x3 output convs feeding the detect head, for P3, P4, P5."""

    kind: str
    widths: tuple[int, ...] = field(metadata=_WIDTH)


@dataclass(frozen=True)
class Genome:
    """A complete YOLOv7-P5-family detector description (see the module docstring)."""

    activation: str
    stem: tuple[StemConv, ...]
    stages: tuple[Stage, ...]
    spp: Spp
    head: Head
    outputs: Outputs
    detect: str
    nc: int
    anchors: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        _check_types(Genome, self, "")
        _check_semantics(self)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain dict/list form (``None`` widths left out), the inverse of :meth:`from_dict`."""
        return _encode(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> "Genome":
        """Decode and validate; any problem is one :class:`ConfigError` naming key and source."""
        try:
            return _decode(cls, data, "")
        except ConfigError as exc:
            if exc.source is not None or source is None:
                raise
            raise ConfigError(str(exc), source=source) from None

    def to_yaml(self, header: str | None = None) -> str:
        """Readable YAML (small mappings and number lists in flow style)."""
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=100)
        if header:
            body = "".join(f"# {line}\n" for line in header.splitlines()) + body
        return body

    @classmethod
    def from_yaml(cls, text: str, *, source: str | None = None) -> "Genome":
        """Parse genome YAML with ``yaml.safe_load``; errors name the key and ``source``."""
        return cls.from_dict(safe_load_yaml(text, source), source=source)

    def canonical(self) -> str:
        """Canonical JSON (sorted keys, no spaces): equal genomes give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def genome_hash(self, length: int = 12) -> str:
        """Short hex sha256 of :meth:`canonical` (``length`` hex digits)."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:length]

    # -- editing -------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "Genome":
        """``dataclasses.replace`` on the top level (validates the result)."""
        return dataclasses.replace(self, **changes)

    def get(self, path: str) -> Any:
        """The value at ``path``, e.g. ``"stages[2].elan.depth"`` or ``"outputs.widths.0"``."""
        obj: Any = self
        for key in _parse_path(path):
            try:
                obj = obj[key] if isinstance(key, int) else getattr(obj, key)
            except (AttributeError, IndexError, TypeError):
                raise ConfigError(f"no such genome path '{path}'") from None
        return obj

    def replace_at(self, path: str, value: Any) -> "Genome":
        """A new genome with the value at ``path`` replaced (validated)."""
        self.get(path)  # raises on a bad path
        return _replace_path(self, _parse_path(path), value)

    def leaves(self, role: str | None = None) -> dict[str, Any]:
        """``{path: value}`` for every leaf value (or only those tagged ``role``).

        Roles are ``"width"`` (channel widths) and ``"depth"`` (ELAN chain lengths). Unset
        (``None``) widths are left out.
        """
        out: dict[str, Any] = {}

        def visit(path: str, leaf_role: str | None, value: Any) -> None:
            if role is None or leaf_role == role:
                out[path] = value

        _walk(self, "", None, visit)
        return out

    def map_fields(self, fn: Callable[[str, int], int], role: str = "width") -> "Genome":
        """Apply ``fn(path, value)`` to every field tagged ``role``; returns a validated genome.

        Tuple fields (``outputs.widths``) are mapped element by element; ``None`` widths are
        skipped. A typical width scaler: ``g.map_fields(lambda _p, w: round8(w * 1.25))``.
        """
        return _map(self, "", None, role, fn)


# -- generic helpers over the dataclass tree ---------------------------------------------

def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _parse_path(path: str) -> list[str | int]:
    tokens = re.findall(r"[A-Za-z_]\w*|\d+", path)
    if not tokens or re.sub(r"[A-Za-z_]\w*|\d+|[.\[\]]", "", path):
        raise ConfigError(f"no such genome path '{path}'")
    return [int(t) if t.isdigit() else t for t in tokens]


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a genome dataclass (cached: the annotations are strings)."""
    return get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _describe(tp: Any) -> str:
    if is_dataclass(tp):
        return "a mapping"
    if get_origin(tp) is tuple:
        return "a list"
    return {int: "an integer", str: "a string"}.get(tp, str(tp))


def _encode(obj: Any) -> Any:
    if is_dataclass(obj):
        out = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            if value is None and f.default is None:
                continue
            out[f.name] = _encode(value)
        return out
    if isinstance(obj, tuple):
        return [_encode(v) for v in obj]
    return obj


def _decode(tp: Any, value: Any, path: str) -> Any:
    optional, tp = _is_optional(tp)
    if value is None and optional:
        return None
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"'{path or 'genome'}' must be a mapping, got {brief(value)}")
        hints = _hints(tp)
        names = [f.name for f in fields(tp)]
        for key in value:
            if key not in names:
                raise ConfigError(
                    f"unknown key '{_join(path, str(key))}' (expected: {', '.join(names)})")
        kwargs = {}
        for f in fields(tp):
            if f.name not in value:
                if f.default is dataclasses.MISSING:
                    raise ConfigError(f"missing key '{_join(path, f.name)}'")
                continue
            kwargs[f.name] = _decode(hints[f.name], value[f.name], _join(path, f.name))
        return tp(**kwargs)
    if get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {brief(value)}")
        (item,) = [a for a in get_args(tp) if a is not Ellipsis]
        return tuple(_decode(item, v, _join(path, i)) for i, v in enumerate(value))
    _check_scalar(tp, value, path)
    return value


def _check_scalar(tp: Any, value: Any, path: str) -> None:
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"'{path}' must be {_describe(tp)}, got {brief(value)}")


def _check_types(tp: Any, value: Any, path: str) -> None:
    """Check a constructed tree against its type hints (tuples, not lists; ints, not bools)."""
    optional, tp = _is_optional(tp)
    if value is None and optional:
        return
    if is_dataclass(tp):
        if not isinstance(value, tp):
            raise ConfigError(f"'{path}' must be a {tp.__name__}, got {brief(value)}")
        hints = _hints(tp)
        for f in fields(tp):
            _check_types(hints[f.name], getattr(value, f.name), _join(path, f.name))
    elif get_origin(tp) is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"'{path}' must be a tuple, got {brief(value)}")
        (item,) = [a for a in get_args(tp) if a is not Ellipsis]
        for i, v in enumerate(value):
            _check_types(item, v, _join(path, i))
    else:
        _check_scalar(tp, value, path)


def _walk(obj: Any, path: str, role: str | None, visit: Callable[[str, str | None, Any], None]):
    if is_dataclass(obj):
        for f in fields(obj):
            _walk(getattr(obj, f.name), _join(path, f.name), f.metadata.get("role"), visit)
    elif isinstance(obj, tuple):
        for i, v in enumerate(obj):
            _walk(v, _join(path, i), role, visit)
    elif obj is not None:
        visit(path, role, obj)


def _map(obj: Any, path: str, role: str | None, want: str, fn: Callable[[str, int], int]) -> Any:
    if is_dataclass(obj):
        changes = {f.name: _map(getattr(obj, f.name), _join(path, f.name), f.metadata.get("role"),
                                want, fn) for f in fields(obj)}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, tuple):
        return tuple(_map(v, _join(path, i), role, want, fn) for i, v in enumerate(obj))
    if obj is not None and role == want:
        return fn(path, obj)
    return obj


def _replace_path(obj: Any, keys: list[str | int], value: Any) -> Any:
    if not keys:
        return value
    key, rest = keys[0], keys[1:]
    if isinstance(key, int):
        items = list(obj)
        items[key] = _replace_path(items[key], rest, value)
        return tuple(items)
    return dataclasses.replace(obj, **{key: _replace_path(getattr(obj, key), rest, value)})


# -- semantic validation ------------------------------------------------------------------

def _require(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"'{path}' {message}")


def _check_kind(value: str, allowed: tuple[str, ...], path: str) -> None:
    _require(value in allowed, path,
             f"unknown value {brief(value)} (expected one of: {', '.join(allowed)})")


def _check_width(value: int, path: str) -> None:
    _require(value > 0, path, f"must be a positive width, got {value}")


def _check_elan(elan: Elan, path: str) -> None:
    _check_kind(elan.pattern, ELAN_PATTERNS, _join(path, "pattern"))
    _require(1 <= elan.depth <= MAX_ELAN_DEPTH, _join(path, "depth"),
             f"must be 1 to {MAX_ELAN_DEPTH}, got {elan.depth}")
    _require(elan.pattern != "every2" or elan.depth % 2 == 0, _join(path, "depth"),
             f"must be even for pattern 'every2', got {elan.depth}")
    for name in ("entry", "chain", "out"):
        _check_width(getattr(elan, name), _join(path, name))


def _check_downsample(down: Downsample, allowed: tuple[str, ...], path: str) -> None:
    _check_kind(down.kind, allowed, _join(path, "kind"))
    wpath = _join(path, "width")
    if down.kind in WIDTHLESS_DOWNSAMPLES:
        _require(down.width is None, wpath, f"must be unset (null) for kind '{down.kind}'")
    else:
        _require(down.width is not None, wpath, f"is required for kind '{down.kind}'")
        _check_width(down.width, wpath)


def _check_count(items: tuple, n: int, path: str) -> None:
    _require(len(items) == n, path, f"must have exactly {n} entries, got {len(items)}")


def _check_semantics(g: Genome) -> None:
    _check_kind(g.activation, ACTIVATIONS, "activation")
    _check_kind(g.detect, DETECT_KINDS, "detect")
    _require(g.nc >= 1, "nc", f"must be >= 1, got {g.nc}")
    _check_count(g.anchors, N_LEVELS, "anchors")
    for i, level in enumerate(g.anchors):
        path = _join("anchors", i)
        _require(len(level) >= 2 and len(level) % 2 == 0, path, "must hold w,h pairs")
        _require(len(level) == len(g.anchors[0]), path, "must have as many anchors as level 0")
        _require(all(a > 0 for a in level), path, "must be positive")

    _require(1 <= len(g.stem) <= MAX_STEM, "stem", f"must have 1 to {MAX_STEM} convs, got {len(g.stem)}")
    for i, conv in enumerate(g.stem):
        _check_width(conv.width, _join(_join("stem", i), "width"))
        _require(conv.stride in (1, 2), _join(_join("stem", i), "stride"),
                 f"must be 1 or 2, got {conv.stride}")

    _check_count(g.stages, N_STAGES, "stages")
    for i, stage in enumerate(g.stages):
        path = _join("stages", i)
        _check_downsample(stage.down, STAGE_DOWNSAMPLES, _join(path, "down"))
        _require(i == 0 or stage.down.kind != "none", _join(path, "down.kind"),
                 "may be 'none' only for stages[0] (P3-P5 must each halve the resolution)")
        _check_elan(stage.elan, _join(path, "elan"))
    stride = 1
    for conv in g.stem:
        stride *= conv.stride
    stride *= 1 if g.stages[0].down.kind == "none" else 2
    _require(stride == P2_STRIDE, "stem", f"strides (with stages[0].down) must reach P2 stride "
             f"{P2_STRIDE}, got {stride}")

    _check_kind(g.spp.kind, SPP_KINDS, "spp.kind")
    _check_width(g.spp.width, "spp.width")
    _require(g.spp.kind not in SILU_ONLY_SPP or g.activation == "silu", "spp.kind",
             f"{g.spp.kind!r} is a YOLOv7 module with built-in SiLU; with activation "
             f"{g.activation!r} use 'sp' or 'spp3'")

    _check_count(g.head.top_down, N_TOP_DOWN, "head.top_down")
    for i, level in enumerate(g.head.top_down):
        path = _join("head.top_down", i)
        _check_width(level.lateral, _join(path, "lateral"))
        _check_elan(level.elan, _join(path, "elan"))
    _check_count(g.head.bottom_up, N_BOTTOM_UP, "head.bottom_up")
    for i, level in enumerate(g.head.bottom_up):
        path = _join("head.bottom_up", i)
        _check_downsample(level.down, HEAD_DOWNSAMPLES, _join(path, "down"))
        _check_elan(level.elan, _join(path, "elan"))

    _check_kind(g.outputs.kind, OUTPUT_KINDS, "outputs.kind")
    _check_count(g.outputs.widths, N_LEVELS, "outputs.widths")
    for i, width in enumerate(g.outputs.widths):
        _check_width(width, _join("outputs.widths", i))
