"""ELAN / MPC / SPP search spaces around the YOLOv7 presets.

Both spaces share one layout (:class:`ElanSpace`) and differ in the preset they are centred on
and the ranges they allow. The preset fixes the topology (stem, four backbone stages P2..P5,
SPP, two top-down and two bottom-up head levels, three output convs, detect head, anchors); the
dimensions choose, per level:

* ``<level>.depth``   ELAN chain length
* ``<level>.pattern`` concat of every second chain output (``every2``, ELAN) or of all of them
  (``all``, ELAN-H); sampled only when the depth is even (``every2`` needs an even chain), odd
  depths use ``all``
* ``<level>.hidden``  multiplier of the preset's entry/chain (hidden) widths
* ``<level>.out``     multiplier of the preset's transition (output) width
* ``<level>.down``    downsample kind: backbone P3..P5 ``conv`` (strided 3x3) | ``mpc`` (MPC-B) |
  ``mp`` (max-pool only); head ``bu_p4``/``bu_p5`` ``mpc`` (MPC-N) | ``conv``

and globally ``width`` (multiplier of every width), ``activation``, the SPP kind and the output
conv kind (``repconv`` | ``conv``). SPPCSPC, SPPF and SPP are YOLOv7 modules with a built-in
SiLU, so the SPP kind is sampled as ``spp`` (all five kinds) when the activation is SiLU and as
``spp_plain`` (``spp3`` | ``sp``) otherwise.

Level names: backbone ``p2 p3 p4 p5`` (stride 4..32), head top-down ``td_p4 td_p3``, head
bottom-up ``bu_p4 bu_p5``. Every width is rounded to a multiple of 8. Downsample widths follow the
incoming channels so a choice never changes the channel count it hands on: a strided conv keeps
the input width, an MPC block uses two branches of half of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from nas.errors import SearchError
from nas.genome import (SILU_ONLY_SPP, SPP_KINDS, BottomUp, Downsample, Elan, Genome, Head, Outputs,
                        Spp, Stage, StemConv, TopDown)
from nas.presets import PRESETS
from search_spaces._base import Dimension, SearchSpace, round8

BACKBONE_LEVELS = ("p2", "p3", "p4", "p5")
TOP_DOWN_LEVELS = ("td_p4", "td_p3")
BOTTOM_UP_LEVELS = ("bu_p4", "bu_p5")
PLAIN_SPP = tuple(k for k in SPP_KINDS if k not in SILU_ONLY_SPP)


@dataclass(frozen=True)
class ElanRanges:
    """The ranges one :class:`ElanSpace` allows."""

    preset: str
    width: tuple[float, float, float]          # low, high, step of the global multiplier
    depth: tuple[int, int, int]                # low, high, step of every ELAN chain length
    hidden: tuple[float, float, float]         # multiplier of the preset's hidden widths
    out: tuple[float, float, float]            # multiplier of the preset's transition widths
    activations: tuple[str, ...] = ("silu", "leakyrelu", "relu")


def _range(name: str, r: tuple, help: str, condition: str | None = None) -> Dimension:
    return Dimension(name, low=r[0], high=r[1], step=r[2], condition=condition, help=help)


class ElanSpace(SearchSpace):
    """A space over ELAN depth/pattern/widths, downsample, SPP, output conv and activation."""

    ranges: ElanRanges

    def __init__(self, nc: int = 80):
        super().__init__(nc)
        self.base = PRESETS[self.ranges.preset]
        self._dims = self._build_dimensions()

    # -- description ---------------------------------------------------------------------
    def _build_dimensions(self) -> tuple[Dimension, ...]:
        r = self.ranges
        dims = [
            _range("width", r.width, "global width multiplier (every channel width)"),
            Dimension("activation", choices=r.activations, help="activation of every conv"),
        ]

        def elan(level: str) -> list[Dimension]:
            return [
                _range(f"{level}.depth", r.depth, "ELAN chain length (3x3 convs)"),
                Dimension(f"{level}.pattern", choices=("every2", "all"),
                          condition=f"{level}.depth is even",
                          help="concat every second chain output (ELAN) or all (ELAN-H)"),
                _range(f"{level}.hidden", r.hidden, "x preset entry/chain (hidden) width"),
                _range(f"{level}.out", r.out, "x preset transition (output) width"),
            ]

        for i, level in enumerate(BACKBONE_LEVELS):
            if i > 0:
                dims.append(Dimension(f"{level}.down", choices=("conv", "mpc", "mp"),
                                      help="backbone downsample: strided Conv | MPC-B | MaxPool"))
            dims += elan(level)
        dims.append(Dimension("spp", choices=SPP_KINDS, condition="activation is silu",
                              help="SPP block (sppcspc/sppf/spp have a built-in SiLU)"))
        dims.append(Dimension("spp_plain", choices=PLAIN_SPP, condition="activation is not silu",
                              help="SPP block usable with any activation"))
        for level in TOP_DOWN_LEVELS:
            dims += elan(level)
        for level in BOTTOM_UP_LEVELS:
            dims.append(Dimension(f"{level}.down", choices=("mpc", "conv"),
                                  help="head downsample: MPC-N | strided Conv"))
            dims += elan(level)
        dims.append(Dimension("outputs", choices=("repconv", "conv"), help="3x3 output convs"))
        return tuple(dims)

    def dimensions(self) -> tuple[Dimension, ...]:
        return self._dims

    def active(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        names = []
        for d in self._dims:
            if d.name.endswith(".pattern"):
                depth = params.get(d.name[: -len("pattern")] + "depth")
                if depth is None or depth % 2:
                    continue
            elif d.name == "spp" and params.get("activation") != "silu":
                continue
            elif d.name == "spp_plain" and params.get("activation") in (None, "silu"):
                continue
            names.append(d.name)
        return tuple(names)

    # -- decoding ------------------------------------------------------------------------
    def decode(self, params: Mapping[str, Any]) -> Genome:
        missing = [n for n in self.active(params) if n not in params]
        if missing:
            raise SearchError(f"space {self.name!r}: missing parameter(s) {', '.join(missing)}")
        p, base, gw = params, self.base, float(params["width"])

        def elan(level: str, preset: Elan) -> Elan:
            depth = int(p[f"{level}.depth"])
            pattern = p.get(f"{level}.pattern", "all") if depth % 2 == 0 else "all"
            h, o = float(p[f"{level}.hidden"]), float(p[f"{level}.out"])
            return Elan(depth, pattern, round8(preset.entry * gw * h), round8(preset.chain * gw * h),
                        round8(preset.out * gw * o))

        stem = tuple(StemConv(round8(c.width * gw), c.stride) for c in base.stem)
        channels = stem[-1].width
        stages = []
        for i, (level, stage) in enumerate(zip(BACKBONE_LEVELS, base.stages)):
            kind = "none" if i == 0 else p[f"{level}.down"]
            width = {"conv": channels, "mpc": round8(channels / 2)}.get(kind)
            stages.append(Stage(Downsample(kind, width), elan(level, stage.elan)))
            channels = stages[-1].elan.out
        activation = p["activation"]
        spp_kind = p["spp"] if activation == "silu" else p["spp_plain"]
        top_down = tuple(TopDown(round8(level.lateral * gw), elan(name, level.elan))
                         for name, level in zip(TOP_DOWN_LEVELS, base.head.top_down))
        bottom_up = []
        for name, level in zip(BOTTOM_UP_LEVELS, base.head.bottom_up):
            total = level.down.width * (2 if level.down.kind == "mpc" else 1)  # channels it adds
            kind = p[f"{name}.down"]
            width = round8(total * gw / 2) if kind == "mpc" else round8(total * gw)
            bottom_up.append(BottomUp(Downsample(kind, width), elan(name, level.elan)))
        return Genome(
            activation=activation,
            stem=stem,
            stages=tuple(stages),
            spp=Spp(spp_kind, round8(base.spp.width * gw)),
            head=Head(top_down=top_down, bottom_up=tuple(bottom_up)),
            outputs=Outputs(p["outputs"], tuple(round8(w * gw) for w in base.outputs.widths)),
            detect=base.detect,
            nc=self.nc,
            anchors=base.anchors,
        )


class YoloV7TinySpace(ElanSpace):
    name = "yolov7-tiny"
    description = ("around yolov7-tiny, sized for CPU search: width x0.25..1, ELAN chains 1-4, "
                   "hidden/transition widths x0.5..1.25")
    ranges = ElanRanges(preset="yolov7-tiny", width=(0.25, 1.0, 0.125), depth=(1, 4, 1),
                        hidden=(0.5, 1.25, 0.25), out=(0.5, 1.25, 0.25),
                        activations=("leakyrelu", "silu", "relu"))


class YoloV7TinyCpuSpace(ElanSpace):
    name = "yolov7-tiny-cpu"
    description = ("yolov7-tiny space at width x0.25..0.5: its one-shot supernet trains in "
                   "minutes on a CPU (make demo)")
    ranges = ElanRanges(preset="yolov7-tiny", width=(0.25, 0.5, 0.125), depth=(1, 4, 1),
                        hidden=(0.5, 1.25, 0.25), out=(0.5, 1.25, 0.25),
                        activations=("leakyrelu", "silu", "relu"))


class YoloV7Space(ElanSpace):
    name = "yolov7"
    description = ("around yolov7 / yolov7x: width x0.5..1.25, ELAN chains 2/4/6/8, "
                   "hidden/transition widths x0.5..1.25")
    ranges = ElanRanges(preset="yolov7", width=(0.5, 1.25, 0.125), depth=(2, 8, 2),
                        hidden=(0.5, 1.25, 0.25), out=(0.5, 1.25, 0.25))
