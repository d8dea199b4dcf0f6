"""Write a :class:`~nas.genome.Genome` out as a flat yolov7 cfg, and dump cfgs as YAML.

:func:`expand` returns the dict that YOLOv7's ``models/yolo.py`` would load from a
``cfg/training/*.yaml`` file: ``{nc, depth_multiple, width_multiple, anchors, backbone, head}``
with ``[from, number, module, args]`` rows. It uses only modules YOLOv7 knows (composite blocks
it lacks, such as ``spp3``, are written out as primitives) and writes ``from`` the way upstream
does: ``-1/-2/-3`` for neighbours, absolute indices for long routes. The presets expand to rows
identical to the upstream training cfgs.

:func:`dump_yaml` writes such a dict in yolov7's style (one flow-style row per line, layer
index in a comment). Python ``None`` is written as YAML ``null``: ``yaml.safe_load`` gives
``None`` back, and YOLOv7 (which loads with ``SafeLoader`` and only ``eval``s *string* args)
receives the same ``None`` it would get from evaluating upstream's plain ``None`` scalar.
Writing ``None`` verbatim would load back as the string ``'None'`` and break the round trip.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any

import yaml

from nas.genome import Elan, Genome

#: Module names that YOLOv7's models/yolo.py resolves and that expand may write.
ALLOWED_MODULES = frozenset({
    "Conv", "Concat", "MP", "SP", "SPPCSPC", "SPPF", "SPP", "RepConv", "nn.Upsample",
    "nn.AvgPool2d", "nn.MaxPool2d", "Detect", "IDetect",
})

#: Activation expression written as the 6th Conv arg (``None``: Conv's default SiLU, short rows).
ACTIVATION_EXPR = {"silu": None, "leakyrelu": "nn.LeakyReLU(0.1)", "relu": "nn.ReLU()"}

_SPP_MODULES = {"sppcspc": "SPPCSPC", "sppf": "SPPF", "spp": "SPP"}
_SP_KERNELS = (5, 9, 13)          # yolov7-tiny's written-out SPP-CSP pools
_SPP3_KERNELS = (3, 5, 7)         # spp3: chained average pools
_DETECT_MODULES = {"idetect": "IDetect", "detect": "Detect"}
_OUTPUT_MODULES = {"repconv": "RepConv", "conv": "Conv"}


def elan_concat(depth: int, pattern: str) -> list[int]:
    """Relative ``from`` list of an ELAN concat, the concat row being right after the chain.

    Rows before the concat are: entry A, entry B, chain 1..depth. ``all`` → every chain output
    and both entries (``[-1, ..., -(depth+2)]``); ``every2`` → chain outputs depth, depth-2, ...
    then both entries (depth 4 → ``[-1, -3, -5, -6]``, depth 6 → ``[-1, -3, -5, -7, -8]``).
    """
    if pattern == "all":
        return [-i for i in range(1, depth + 3)]
    return [-(1 + 2 * i) for i in range(depth // 2)] + [-(depth + 1), -(depth + 2)]


class _Rows:
    """Accumulates rows; each ``add`` returns the absolute index of the row it wrote.

    Every row with weights is written under a *slot*: a stable name of its role in the genome
    (``stages.1.elan.chain.2``, ``head.bu.0.down.conv``, ``spp.sppf``, ``outputs.2``), the same
    for every genome that has that role. Weight-free rows (pools, upsampling, concat) have
    ``None``. The weight-sharing supernet (``nas.supernet``) maps weights through these names.
    """

    def __init__(self, activation: str):
        self.rows: list[list[Any]] = []
        self.slots: list[str | None] = []
        self.act = ACTIVATION_EXPR[activation]

    @property
    def last(self) -> int:
        return len(self.rows) - 1

    def add(self, frm: int | list[int], module: str, args: list[Any], slot: str | None = None) -> int:
        self.rows.append([frm, 1, module, args])
        self.slots.append(slot)
        return self.last

    def conv(self, width: int, k: int, s: int = 1, frm: int = -1, module: str = "Conv",
             slot: str | None = None) -> int:
        args: list[Any] = [width, k, s]
        if self.act is not None:
            args += [None, 1, self.act]
        return self.add(frm, module, args, slot)

    def concat(self, frm: list[int]) -> int:
        return self.add(frm, "Concat", [1])


def _elan(r: _Rows, e: Elan, slot: str) -> int:
    r.conv(e.entry, 1, slot=f"{slot}.entry_a")
    r.conv(e.entry, 1, frm=-2, slot=f"{slot}.entry_b")
    for j in range(e.depth):
        r.conv(e.chain, 3, slot=f"{slot}.chain.{j}")
    r.concat(elan_concat(e.depth, e.pattern))
    return r.conv(e.out, 1, slot=f"{slot}.transition")


def _mpc(r: _Rows, width: int, slot: str, lateral: int | None = None) -> int:
    """MP→Conv1x1 ∥ Conv1x1→Conv3x3/s2, concat [-1, -3] (+ lateral feature in the head)."""
    r.add(-1, "MP", [])
    r.conv(width, 1, slot=f"{slot}.pool_conv")
    r.conv(width, 1, frm=-3, slot=f"{slot}.reduce")
    r.conv(width, 3, 2, slot=f"{slot}.strided")
    return r.concat([-1, -3] + ([] if lateral is None else [lateral]))


def _stage_downsample(r: _Rows, kind: str, width: int | None, slot: str) -> None:
    if kind == "conv":
        r.conv(width, 3, 2, slot=f"{slot}.conv")
    elif kind == "mpc":
        _mpc(r, width, f"{slot}.mpc")
    elif kind == "mp":
        r.add(-1, "MP", [])


def _spp(r: _Rows, kind: str, width: int) -> int:
    slot = f"spp.{kind}"
    if kind in _SPP_MODULES:
        return r.add(-1, _SPP_MODULES[kind], [width], slot)
    if kind == "sp":  # yolov7-tiny: CSP split, parallel SP pools, concat, conv, merge, conv
        r.conv(width, 1, slot=f"{slot}.split_a")
        r.conv(width, 1, frm=-2, slot=f"{slot}.split_b")
        for i, k in enumerate(_SP_KERNELS):
            r.add(-1 - i, "SP", [k])
        r.concat([-1, -2, -3, -4])
        r.conv(width, 1, slot=f"{slot}.pooled")
        r.concat([-1, -7])
        return r.conv(width, 1, slot=f"{slot}.merge")
    # spp3: conv, three chained stride-1 average pools, concat conv + pools, conv
    r.conv(width, 1, slot=f"{slot}.reduce")
    for k in _SPP3_KERNELS:
        r.add(-1, "nn.AvgPool2d", [k, 1, k // 2])
    r.concat([-4, -3, -2, -1])
    return r.conv(width, 1, slot=f"{slot}.merge")


def expand(genome: Genome) -> dict:
    """The flat yolov7 cfg dict of ``genome`` (depth/width multiples 1.0)."""
    return expand_with_slots(genome)[0]


def expand_with_slots(genome: Genome) -> tuple[dict, list[str | None]]:
    """:func:`expand` plus each row's slot name (see :class:`_Rows`), one per row."""
    r = _Rows(genome.activation)
    for i, conv in enumerate(genome.stem):
        r.conv(conv.width, 3, conv.stride, slot=f"stem.{i}")
    stage_out = []
    for s, stage in enumerate(genome.stages):
        _stage_downsample(r, stage.down.kind, stage.down.width, f"stages.{s}.down")
        stage_out.append(_elan(r, stage.elan, f"stages.{s}.elan"))
    n_backbone = len(r.rows)

    spp_out = _spp(r, genome.spp.kind, genome.spp.width)
    lateral_out = [spp_out]          # feature each bottom-up level concatenates with: P5, P4
    for i, (level, routed) in enumerate(zip(genome.head.top_down, (stage_out[2], stage_out[1]))):
        r.conv(level.lateral, 1, slot=f"head.td.{i}.lateral")
        r.add(-1, "nn.Upsample", [None, 2, "nearest"])
        r.conv(level.lateral, 1, frm=routed, slot=f"head.td.{i}.route")
        r.concat([-1, -2])
        lateral_out.append(_elan(r, level.elan, f"head.td.{i}.elan"))
    level_out = [lateral_out.pop()]  # P3 output of the top-down path
    for i, (level, lateral) in enumerate(zip(genome.head.bottom_up, reversed(lateral_out))):
        if level.down.kind == "mpc":
            _mpc(r, level.down.width, f"head.bu.{i}.down.mpc", lateral)
        else:
            r.conv(level.down.width, 3, 2, slot=f"head.bu.{i}.down.conv")
            r.concat([-1, lateral])
        level_out.append(_elan(r, level.elan, f"head.bu.{i}.elan"))

    module = _OUTPUT_MODULES[genome.outputs.kind]
    heads = [r.conv(w, 3, 1, frm=src, module=module, slot=f"outputs.{i}")
             for i, (w, src) in enumerate(zip(genome.outputs.widths, level_out))]
    r.add(heads, _DETECT_MODULES[genome.detect], ["nc", "anchors"], "detect")
    cfg = {
        "nc": genome.nc,
        "depth_multiple": 1.0,
        "width_multiple": 1.0,
        "anchors": [list(level) for level in genome.anchors],
        "backbone": r.rows[:n_backbone],
        "head": r.rows[n_backbone:],
    }
    return cfg, r.slots


# -- YAML writing --------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(\([\w.+\- ]*\))?")
_TOP_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


def _scalar(value: Any, plain: bool = False) -> str:
    """One YAML scalar that ``yaml.safe_load`` reads back as ``value``.

    Strings are written plain when ``plain`` (module names) or when they look like a Python name
    or expression yolov7 evaluates (``nc``, ``nn.LeakyReLU(0.1)``); other strings are quoted,
    as upstream quotes ``'nearest'``.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        return text if _loads(text) == value else f"{value:.17e}"
    if isinstance(value, str):
        looks_like_expr = value in ("nc", "anchors") or "." in value or "(" in value
        if (plain or looks_like_expr) and _PLAIN.fullmatch(value) and _loads(value) == value:
            return value
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a cfg scalar")


@functools.lru_cache(maxsize=1024)
def _loads(text: str) -> Any:
    """What ``yaml.safe_load`` makes of one flow scalar (cached: the same few strings recur)."""
    try:
        return yaml.safe_load(f"[{text}]")[0]
    except yaml.YAMLError:
        return object()


def _flow(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def _row(row: list[Any]) -> str:
    frm, number, module, args = row
    return f"[{_flow(frm)}, {_flow(number)}, {_scalar(module, plain=True)}, {_flow(args)}]"


def dump_yaml(cfg: dict, header: str | None = None) -> str:
    """yolov7-style YAML for a flat cfg dict; ``yaml.safe_load`` of the text equals ``cfg``."""
    lines = [f"# {line}".rstrip() for line in (header or "").splitlines()]
    for key in [k for k in _TOP_KEYS if k in cfg] + [k for k in cfg if k not in _TOP_KEYS]:
        value = cfg[key]
        if key == "anchors" and isinstance(value, list):
            lines.append("anchors:")
            lines += [f"  - {_flow(level)}  # P{3 + i}" for i, level in enumerate(value)]
        elif key in ("backbone", "head"):
            start = 0 if key == "backbone" else len(cfg.get("backbone", []))
            lines.append(f"{key}:" if value else f"{key}: []")
            lines += [f"  - {_row(row)}  # {start + i}" for i, row in enumerate(value)]
        else:
            lines.append(f"{_scalar(key, plain=True)}: {_flow(value)}")
    return "\n".join(lines) + "\n"
