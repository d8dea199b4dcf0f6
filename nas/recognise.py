"""Recover a :class:`~nas.genome.Genome` from a flat yolov7-format cfg (the inverse of expand).

:func:`recognise` walks the rows of a parsed :class:`~nas.cfg.ModelCfg` with a small cursor,
one method per structure, in the order :func:`nas.expand.expand` writes them::

    stem            Conv 3x3 rows chained from the input
    4 stages        downsample (none | MP | MPC-B | Conv 3x3 s2), then an ELAN block
    spp             SPPCSPC / SPPF / SPP row, or the written-out ``sp`` (tiny) / ``spp3`` forms
    2 top-down      lateral Conv 1x1, nn.Upsample, Conv 1x1 on the routed backbone output,
                    Concat, ELAN (routes: backbone P4 then P3 stage outputs)
    2 bottom-up     MPC-N (concat with the lateral feature) or Conv 3x3 s2 + Concat, ELAN
    outputs         three RepConv | Conv 3x3 rows on the P3, P4, P5 features
    detect          IDetect | Detect over the three output rows

Every check compares *resolved absolute* routes (``Row.sources``), so a cfg written with
relative or absolute ``from`` values is recognised the same way. Where a row breaks the
pattern, one :class:`~nas.errors.ConfigError` names the file, the layer and what was expected.

Widths follow YOLOv7's ``parse_model``: with ``width_multiple`` ≠ 1 a conv width ``c`` becomes
``ceil(c·gw/8)·8`` (except the detect output width ``na·(nc+5)``), so the genome describes the
network YOLOv7 builds. With ``width_multiple`` = 1 widths are taken as written, which keeps
``expand(recognise(cfg))`` row-identical (the builder rounds both the same way). A row with
``number`` > 1 is refused: expand never writes one and no genome field expresses a repeat.

One layout is ambiguous: a 3x3 stride-2 conv straight after the stem is either the last stem
conv or a ``conv`` downsample of ``stages[0]``. It is read as a stem conv (the canonical form,
as in the yolov7 preset); both genomes expand to the same rows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from nas.cfg import ModelCfg, Row, load_cfg
from nas.errors import ConfigError
from nas.expand import elan_concat
from nas.genome import (
    ELAN_PATTERNS, N_LEVELS, BottomUp, Downsample, Elan, Genome, Head, Outputs, Spp, Stage,
    StemConv, TopDown,
)

__all__ = ["recognise", "recognise_file"]

#: Written-out SPP forms, as nas.expand writes them.
_SP_KERNELS = (5, 9, 13)
_SPP3_KERNELS = (3, 5, 7)
_SPP_MODULES = {"SPPCSPC": "sppcspc", "SPPF": "sppf", "SPP": "spp"}
_OUTPUT_KINDS = {"RepConv": "repconv", "Conv": "conv"}
_DETECT_KINDS = {"IDetect": "idetect", "Detect": "detect"}
#: Default kernel size when a Conv-like row omits it (YOLOv7 signatures).
_DEFAULT_K = {"Conv": 1, "RepConv": 3}
_CONV_ARGS = "[width, k, s, p, g, act]"
#: Argument defaults of the parameter-free rows (MP(k=2), SP(k=3, s=1)); trailing defaults
#: written out or left off mean the same layer.
_POOL_DEFAULTS = {"MP": (2,), "SP": (3, 1)}
#: Names YOLOv7 evaluates that YAML reads as strings.
_SYMBOLS = {"None": None, "True": True, "False": False}

_BOOL = r"(?:inplace=)?(?:True|False)"
_ACTIVATIONS = (
    ("silu", re.compile(rf"nn\.SiLU\(({_BOOL})?\)")),
    ("relu", re.compile(rf"nn\.ReLU\(({_BOOL})?\)")),
    ("leakyrelu", re.compile(rf"nn\.LeakyReLU\((?:negative_slope=)?([-+0-9.eE]+)(?:,{_BOOL})?\)")),
)


def recognise_file(path: str | Path) -> Genome:
    """Load a yolov7-format cfg file and recognise its genome."""
    return recognise(load_cfg(path))


def recognise(cfg: ModelCfg) -> Genome:
    """The genome whose expansion builds the same network as ``cfg``; ConfigError otherwise."""
    m = _Matcher(cfg)
    m.check_globals()
    stem = m.stem()
    stages, stage_out = [], []
    for level in range(4):
        down = m.stage_downsample(level)
        elan, out = m.elan(m.pos - 1, f"backbone stage P{level + 2}")
        stages.append(Stage(down, elan))
        stage_out.append(out)

    spp, x = m.spp(stage_out[3])
    laterals = [x]                      # features the bottom-up levels concatenate: P5, P4
    top_down = []
    for name, routed in (("P4", stage_out[2]), ("P3", stage_out[1])):
        level, x = m.top_down(x, routed, name)
        top_down.append(level)
        laterals.append(x)
    level_out = [laterals.pop()]        # P3 output of the top-down path
    bottom_up = []
    for name, lateral in zip(("P4", "P5"), reversed(laterals)):
        level, x = m.bottom_up(x, lateral, name)
        bottom_up.append(level)
        level_out.append(x)

    outputs, heads = m.outputs(level_out)
    detect = m.detect(heads)
    m.finish()
    try:
        return Genome(activation=m.activation, stem=stem, stages=tuple(stages), spp=spp,
                      head=Head(tuple(top_down), tuple(bottom_up)), outputs=outputs,
                      detect=detect, nc=cfg.nc, anchors=m.anchors())
    except ConfigError as exc:
        raise ConfigError(f"the recognised structure is not a valid genome: {exc}",
                          source=cfg.source) from None


# -- row helpers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Conv:
    """A Conv-like row's meaning: width (after width_multiple), kernel, stride, activation."""

    width: int
    k: int
    s: int
    activation: str


def _args(row: Row) -> list[Any]:
    """Row args with the plain names YAML leaves as strings (upstream writes ``None``) resolved."""
    return [_SYMBOLS.get(a, a) if isinstance(a, str) else a for a in row.args]


def _without_defaults(module: str, args: list[Any]) -> list[Any]:
    """``args`` with trailing values equal to the module's defaults dropped (``MP [2]`` → ``[]``)."""
    defaults, args = _POOL_DEFAULTS.get(module, ()), list(args)
    while args and len(args) <= len(defaults) and args[-1] == defaults[len(args) - 1]:
        args.pop()
    return args


def _kernel(k: int, s: int | None) -> str:
    return f"{k}×{k}" + ("" if s in (1, None) else f" stride {s}")


def _loose_ks(row: Row) -> tuple[Any, Any]:
    """Kernel and stride of a Conv-like row as written (defaults filled, nothing validated)."""
    args = _args(row)
    k = _DEFAULT_K.get(row.module, 1) if len(args) < 2 else args[1]
    s = 1 if len(args) < 3 else args[2]
    return k, s


def _sources(sources: tuple[int, ...]) -> str:
    if len(sources) == 1:
        return "the input" if sources[0] == -1 else f"layer {sources[0]}"
    return f"layers {list(sources)}"


def _describe(row: Row) -> str:
    """Short human description of a row, e.g. ``Conv 3×3 stride 2 from layer 15``."""
    if row.module in _DEFAULT_K:
        what = f"{row.module} {_kernel(*_loose_ks(row))}"
    elif row.module == "Concat":
        return f"Concat of {_sources(row.sources)}"
    else:
        what = row.module + (str(_args(row)) if row.args else "")
        what = what if len(what) <= 80 else what[:77] + "..."  # user text quoted in one line
    return f"{what} from {_sources(row.sources)}"


def _activation_name(act: Any) -> str | None:
    """Genome activation of a Conv ``act`` argument (True = YOLOv7's default SiLU)."""
    if act is True:
        return "silu"
    if not isinstance(act, str):
        return None
    text = act.replace(" ", "")
    for name, pattern in _ACTIVATIONS:
        match = pattern.fullmatch(text)
        if match and name == "leakyrelu":
            try:
                return name if float(match.group(1)) == 0.1 else None
            except ValueError:
                return None
        if match:
            return name
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the matcher --------------------------------------------------------------------------------

class _Matcher:
    """A cursor over the rows; each structure method consumes its rows and returns what it saw."""

    def __init__(self, cfg: ModelCfg):
        self.cfg = cfg
        self.rows = cfg.rows
        self.pos = 0
        self.activation: str | None = None
        self._activation_layer = -1

    # -- primitives --------------------------------------------------------------------------
    def fail(self, layer: int | None, message: str) -> NoReturn:
        raise ConfigError(message, source=self.cfg.source, layer=layer)

    def peek(self, offset: int = 0) -> Row | None:
        i = self.pos + offset
        return self.rows[i] if i < len(self.rows) else None

    def take(self, expected: str) -> Row:
        row = self.peek()
        if row is None:
            self.fail(None, f"the cfg ends after layer {len(self.rows) - 1}, expected {expected}")
        self.pos += 1
        return row

    def mismatch(self, row: Row, expected: str) -> NoReturn:
        self.fail(row.index, f"expected {expected}, found {_describe(row)}")

    def looks_like_conv(self, row: Row | None, k: int, s: int | None, src: int,
                        module: str = "Conv") -> bool:
        """Shape test used to choose between alternatives (nothing validated, nothing taken)."""
        if row is None or row.module != module or row.sources != (src,):
            return False
        rk, rs = _loose_ks(row)
        return rk == k and (s is None or rs == s)

    def conv(self, what: str, k: int, s: int | None, src: int, module: str = "Conv") -> _Conv:
        """Take a ``module`` k×k (stride ``s``; None = any) row reading ``src``."""
        expected = f"{what} ({module} {_kernel(k, s)} from {_sources((src,))})"
        row = self.take(expected)
        if not self.looks_like_conv(row, k, s, src, module):
            self.mismatch(row, expected)
        conv = self.conv_args(row)
        self.note_activation(row, conv.activation)
        return conv

    def conv_args(self, row: Row) -> _Conv:
        args = _args(row)
        if not 1 <= len(args) <= 6:
            self.fail(row.index, f"{row.module} takes {_CONV_ARGS}, got {args}")
        c2, k, s, p, g, act = args + [_DEFAULT_K[row.module], 1, None, 1, True][len(args) - 1:]
        for name, value in (("width", c2), ("kernel", k), ("stride", s), ("groups", g)):
            if not _is_int(value) or value < 1:
                self.fail(row.index, f"{row.module} {name} must be a positive integer, got {value!r}")
        if p is not None and p != k // 2:
            self.fail(row.index, f"{row.module} padding {p!r} is not the default k//2; "
                                 "a genome has only 'same' padding")
        if g != 1:
            self.fail(row.index, f"{row.module} groups {g} ≠ 1; a genome has no grouped convs")
        activation = _activation_name(act)
        if activation is None:
            self.fail(row.index, f"{row.module} activation {act!r} is not one a genome has "
                                 "(True/nn.SiLU(), nn.LeakyReLU(0.1), nn.ReLU())")
        return _Conv(self.width(c2), k, s, activation)

    def width(self, c2: int) -> int:
        """YOLOv7's width gain, applied only when width_multiple ≠ 1 (see the module doc)."""
        gw = self.cfg.width_multiple
        if gw == 1.0 or c2 == self.cfg.outputs_per_level:
            return c2
        return math.ceil(c2 * gw / 8) * 8

    def note_activation(self, row: Row, activation: str) -> None:
        if self.activation is None:
            self.activation, self._activation_layer = activation, row.index
        elif activation != self.activation:
            self.fail(row.index, f"{row.module} uses {activation} but layer "
                                 f"{self._activation_layer} uses {self.activation}; "
                                 "a genome has one activation for every layer")

    def concat(self, what: str, sources: list[int]) -> int:
        expected = f"{what} (Concat of {_sources(tuple(sources))})"
        row = self.take(expected)
        if row.module != "Concat" or row.sources != tuple(sources):
            self.mismatch(row, expected)
        if _args(row) not in ([], [1]):
            self.fail(row.index, f"Concat dimension {_args(row)} ≠ [1]")
        return row.index

    def plain(self, what: str, module: str, src: int, args: list[Any]) -> int:
        """Take a parameter-free row (MP, SP, nn.Upsample, nn.AvgPool2d) with these ``args``."""
        shown = module + (str(args) if args else "")
        row = self.take(f"{what} ({shown} from {_sources((src,))})")
        same_args = _without_defaults(module, _args(row)) == _without_defaults(module, args)
        if row.module != module or row.sources != (src,) or not same_args:
            self.mismatch(row, f"{what} ({shown} from {_sources((src,))})")
        return row.index

    def same_width(self, conv: _Conv, expected: int, layer: int, what: str) -> None:
        if conv.width != expected:
            self.fail(layer, f"{what} is {conv.width} wide, not {expected}; the genome has one "
                             "width for these convs")

    # -- whole-cfg checks --------------------------------------------------------------------
    def check_globals(self) -> None:
        for row in self.rows:
            if row.number != 1:
                self.fail(row.index, f"number {row.number} > 1 repeats a module, which no genome "
                                     "expresses (expand writes 1 everywhere)")
        channels = self.cfg.raw.get("ch", 3)
        if channels != 3:
            self.fail(None, f"ch {channels!r}: genomes describe 3-channel input")

    def anchors(self) -> tuple[tuple[int, ...], ...]:
        detect_layer = len(self.rows) - 1
        levels = self.cfg.anchors
        if not isinstance(levels, list):
            self.fail(detect_layer, f"anchors {levels!r} per level without sizes; a genome needs "
                                    "explicit anchor sizes")
        if len(levels) != N_LEVELS:
            self.fail(detect_layer, f"anchors has {len(levels)} levels; a genome is P5 "
                                    f"({N_LEVELS} levels: P3, P4, P5)")
        out = []
        for level in levels:
            if not all(float(v).is_integer() for v in level):
                self.fail(detect_layer, f"anchors {level} are not whole numbers")
            out.append(tuple(int(v) for v in level))
        return tuple(out)

    def finish(self) -> None:
        row = self.peek()
        if row is not None:
            self.fail(row.index, f"unexpected layer after the detect head: {_describe(row)}")

    # -- structures --------------------------------------------------------------------------
    def stem(self) -> tuple[StemConv, ...]:
        """Conv 3x3 rows chained from the input (absorbing a 3x3/s2 stage-0 downsample)."""
        convs = []
        while not convs or self.looks_like_conv(self.peek(), 3, None, self.pos - 1):
            conv = self.conv(f"stem conv {len(convs)}", 3, None, self.pos - 1)
            convs.append(StemConv(conv.width, conv.s))
        return tuple(convs)

    def stage_downsample(self, level: int) -> Downsample:
        x, row = self.pos - 1, self.peek()
        name = f"backbone stage P{level + 2}"
        if row is not None and row.module == "MP":
            mpc = self.peek(2) is not None and self.peek(2).sources == (x,)
            if mpc:
                return Downsample("mpc", self.mpc(x, name)[0])
            self.plain(f"the MP downsample of {name}", "MP", x, [])
            return Downsample("mp")
        if self.looks_like_conv(row, 3, 2, x):
            return Downsample("conv", self.conv(f"the downsample of {name}", 3, 2, x).width)
        if level == 0:
            return Downsample("none")
        self.mismatch(self.take("a downsample"),
                      f"the downsample opening {name} (MP, MPC-B or Conv 3×3 stride 2 from "
                      f"layer {x})")

    def mpc(self, x: int, name: str, lateral: int | None = None) -> tuple[int, int]:
        """MP→Conv1x1 ∥ Conv1x1→Conv3x3/s2, concatenated (with ``lateral`` in the head)."""
        what = f"the MPC downsample of {name}"
        pool = self.plain(f"the max-pool of {what}", "MP", x, [])
        first = self.conv(f"the pool-branch conv of {what}", 1, 1, pool)
        start = self.pos
        reduce = self.conv(f"the conv-branch 1×1 conv of {what}", 1, 1, x)
        self.same_width(reduce, first.width, start, f"the conv-branch 1×1 conv of {what}")
        down = self.conv(f"the conv-branch 3×3 stride-2 conv of {what}", 3, 2, start)
        self.same_width(down, first.width, start + 1, f"the conv-branch 3×3 conv of {what}")
        extra = [] if lateral is None else [lateral]
        out = self.concat(f"the concat of {what}", [start + 1, pool + 1] + extra)
        return first.width, out

    def elan(self, x: int, name: str) -> tuple[Elan, int]:
        """Two 1x1 entries from ``x``, a chain of 3x3 convs, a pattern concat, a 1x1 transition."""
        what = f"the ELAN of {name}"
        a = self.conv(f"the 1st entry conv of {what}", 1, 1, x)
        start = self.pos
        b = self.conv(f"the 2nd entry conv of {what}", 1, 1, x)
        self.same_width(b, a.width, start, f"the 2nd entry conv of {what}")
        chain = [self.conv(f"the 1st chain conv of {what}", 3, 1, start)]
        while self.looks_like_conv(self.peek(), 3, 1, self.pos - 1):
            layer = self.pos
            conv = self.conv(f"a chain conv of {what}", 3, 1, layer - 1)
            self.same_width(conv, chain[0].width, layer, f"chain conv {len(chain) + 1} of {what}")
            chain.append(conv)
        depth, at = len(chain), self.pos
        patterns = {p: [at + r for r in elan_concat(depth, p)] for p in ELAN_PATTERNS
                    if p != "every2" or depth % 2 == 0}
        row = self.peek()
        found = {p for p, srcs in patterns.items() if row is not None and row.module == "Concat"
                 and row.sources == tuple(srcs)}
        if not found:
            options = " or ".join(f"{p} {srcs}" for p, srcs in patterns.items())
            self.mismatch(self.take("an ELAN concat"),
                          f"the concat of {what} after {depth} chain convs (Concat of {options})")
        (pattern,) = found
        self.concat(f"the concat of {what}", patterns[pattern])
        out = self.conv(f"the transition conv of {what}", 1, 1, at)
        return Elan(depth, pattern, a.width, chain[0].width, out.width), self.pos - 1

    def spp(self, x: int) -> tuple[Spp, int]:
        row = self.peek()
        if row is not None and row.module in _SPP_MODULES:
            return self.spp_module(x)
        if self.looks_like_conv(row, 1, 1, x):
            nxt = self.peek(1)
            return self.spp3(x) if nxt is not None and nxt.module == "nn.AvgPool2d" else self.sp(x)
        self.mismatch(self.take("the SPP block"),
                      f"the SPP block opening the head ({', '.join(_SPP_MODULES)} or a written-out "
                      f"SPP starting with Conv 1×1 from layer {x})")

    def spp_module(self, x: int) -> tuple[Spp, int]:
        row = self.take("the SPP block")
        if row.sources != (x,):
            self.mismatch(row, f"the SPP block reading layer {x}")
        if len(row.args) != 1 or not _is_int(row.args[0]) or row.args[0] < 1:
            self.fail(row.index, f"{row.module} args {list(row.args)}: a genome's SPP block takes "
                                 "only its width ([c2], default pools)")
        self.note_activation(row, "silu")  # YOLOv7's SPP modules have SiLU built in
        return Spp(_SPP_MODULES[row.module], self.width(row.args[0])), row.index

    def sp(self, x: int) -> tuple[Spp, int]:
        """yolov7-tiny's SPP: split, three parallel SP pools, concat, conv, merge, conv."""
        what = "the written-out SPP (sp)"
        a = self.conv(f"the 1st split conv of {what}", 1, 1, x)
        b_at = self.pos
        convs = [(b_at, self.conv(f"the 2nd split conv of {what}", 1, 1, x))]
        pools = [self.plain(f"the SP({k}) pool of {what}", "SP", b_at, [k]) for k in _SP_KERNELS]
        cat = self.concat(f"the pool concat of {what}", pools[::-1] + [b_at])
        convs.append((self.pos, self.conv(f"the conv after the pools of {what}", 1, 1, cat)))
        merge = self.concat(f"the merge concat of {what}", [cat + 1, b_at - 1])
        convs.append((self.pos, self.conv(f"the output conv of {what}", 1, 1, merge)))
        for layer, conv in convs:
            self.same_width(conv, a.width, layer, f"layer {layer} of {what}")
        return Spp("sp", a.width), self.pos - 1

    def spp3(self, x: int) -> tuple[Spp, int]:
        """Conv 1x1, three chained stride-1 average pools, concat of conv and pools, Conv 1x1."""
        what = "the written-out SPP (spp3)"
        first = self.conv(f"the entry conv of {what}", 1, 1, x)
        layers = [self.pos - 1]
        for k in _SPP3_KERNELS:
            layers.append(self.plain(f"the AvgPool({k}) of {what}", "nn.AvgPool2d", self.pos - 1,
                                     [k, 1, k // 2]))
        cat = self.concat(f"the concat of {what}", layers)
        out = self.conv(f"the output conv of {what}", 1, 1, cat)
        self.same_width(out, first.width, cat + 1, f"the output conv of {what}")
        return Spp("spp3", first.width), cat + 1

    def top_down(self, x: int, routed: int, name: str) -> tuple[TopDown, int]:
        """Lateral 1x1 + upsample, 1x1 on the routed backbone output, concat, ELAN."""
        what = f"top-down level {name}"
        lateral = self.conv(f"the lateral conv of {what}", 1, 1, x)
        up = self.plain(f"the upsample of {what}", "nn.Upsample", self.pos - 1,
                        [None, 2, "nearest"])
        routed_conv = self.conv(f"the 1×1 conv of {what} on backbone stage {name}'s output",
                                1, 1, routed)
        self.same_width(routed_conv, lateral.width, up + 1, f"the routed conv of {what}")
        cat = self.concat(f"the concat of {what}", [up + 1, up])
        elan, out = self.elan(cat, what)
        return TopDown(lateral.width, elan), out

    def bottom_up(self, x: int, lateral: int, name: str) -> tuple[BottomUp, int]:
        """MPC-N or Conv 3x3/s2 + concat with the lateral feature, then ELAN."""
        what = f"bottom-up level {name}"
        row = self.peek()
        if row is not None and row.module == "MP":
            width, cat = self.mpc(x, what, lateral)
            down = Downsample("mpc", width)
        elif self.looks_like_conv(row, 3, 2, x):
            conv = self.conv(f"the downsample of {what}", 3, 2, x)
            cat = self.concat(f"the concat of {what}", [self.pos - 1, lateral])
            down = Downsample("conv", conv.width)
        else:
            self.mismatch(self.take("a downsample"),
                          f"the downsample of {what} (MP of MPC-N, or Conv 3×3 stride 2 from "
                          f"layer {x})")
        elan, out = self.elan(cat, what)
        return BottomUp(down, elan), out

    def outputs(self, level_out: list[int]) -> tuple[Outputs, list[int]]:
        """Three 3x3 output rows (all RepConv or all Conv) on the P3, P4, P5 features."""
        row = self.peek()
        if row is None or row.module not in _OUTPUT_KINDS:
            self.mismatch(self.take("the output convs"), f"the P3 output conv (RepConv or Conv "
                                                         f"3×3 from layer {level_out[0]})")
        module = row.module
        heads, widths = [], []
        for level, src in enumerate(level_out):
            heads.append(self.pos)
            widths.append(self.conv(f"the P{level + 3} output conv", 3, 1, src, module).width)
        return Outputs(_OUTPUT_KINDS[module], tuple(widths)), heads

    def detect(self, heads: list[int]) -> str:
        expected = f"the detect head (IDetect or Detect from {_sources(tuple(heads))})"
        row = self.take(expected)
        if row.module not in _DETECT_KINDS:
            self.fail(row.index, f"expected {expected}, found {_describe(row)}; y7nas genomes are "
                                 f"P5 detectors with {N_LEVELS} output levels (P3, P4, P5)")
        if len(row.sources) != N_LEVELS:
            self.fail(row.index, f"{row.module} reads {len(row.sources)} levels; y7nas genomes "
                                 f"are P5 detectors with {N_LEVELS} (P3, P4, P5)")
        if row.sources != tuple(heads):
            self.mismatch(row, expected)
        nc_arg, anchors_arg = (list(row.args) + [None, None])[:2]
        if len(row.args) != 2 or nc_arg not in ("nc", self.cfg.nc) \
                or anchors_arg not in ("anchors", self.cfg.anchors):
            self.fail(row.index, f"{row.module} args {list(row.args)}: expected [nc, anchors] "
                                 "(or the same values written out)")
        return _DETECT_KINDS[row.module]
