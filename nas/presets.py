"""Genomes of the upstream YOLOv7 P5 detectors (nc=80, upstream anchors).

Each preset expands (:func:`nas.expand.expand`) to rows identical to the matching upstream
``cfg/training/*.yaml``; built, they have 6,228,762 / 37,622,682 / 71,347,394 parameters.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from nas.errors import NasError
from nas.genome import (
    BottomUp, Downsample, Elan, Genome, Head, Outputs, Spp, Stage, StemConv, TopDown,
)

_ANCHORS_TINY = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
_ANCHORS_P5 = ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146), (142, 110, 192, 243, 459, 401))


def _stem(*convs: tuple[int, int]) -> tuple[StemConv, ...]:
    return tuple(StemConv(width, stride) for width, stride in convs)


def _yolov7_tiny() -> Genome:
    def elan(w: int, out: int) -> Elan:  # ELAN-H with a chain of two, all widths w
        return Elan(2, "all", w, w, out)

    return Genome(
        activation="leakyrelu",
        stem=_stem((32, 2), (64, 2)),
        stages=(
            Stage(Downsample("none"), elan(32, 64)),
            Stage(Downsample("mp"), elan(64, 128)),
            Stage(Downsample("mp"), elan(128, 256)),
            Stage(Downsample("mp"), elan(256, 512)),
        ),
        spp=Spp("sp", 256),
        head=Head(
            top_down=(TopDown(128, elan(64, 128)), TopDown(64, elan(32, 64))),
            bottom_up=(BottomUp(Downsample("conv", 128), elan(64, 128)),
                       BottomUp(Downsample("conv", 256), elan(128, 256))),
        ),
        outputs=Outputs("conv", (128, 256, 512)),
        detect="idetect",
        nc=80,
        anchors=_ANCHORS_TINY,
    )


def _yolov7() -> Genome:
    def elan(w: int, out: int) -> Elan:  # backbone ELAN: chain 4, every second output
        return Elan(4, "every2", w, w, out)

    def elan_h(w: int, out: int) -> Elan:  # head ELAN-H: chain 4 at half the entry width
        return Elan(4, "all", w, w // 2, out)

    return Genome(
        activation="silu",
        stem=_stem((32, 1), (64, 2), (64, 1), (128, 2)),
        stages=(
            Stage(Downsample("none"), elan(64, 256)),
            Stage(Downsample("mpc", 128), elan(128, 512)),
            Stage(Downsample("mpc", 256), elan(256, 1024)),
            Stage(Downsample("mpc", 512), elan(256, 1024)),
        ),
        spp=Spp("sppcspc", 512),
        head=Head(
            top_down=(TopDown(256, elan_h(256, 256)), TopDown(128, elan_h(128, 128))),
            bottom_up=(BottomUp(Downsample("mpc", 128), elan_h(256, 256)),
                       BottomUp(Downsample("mpc", 256), elan_h(512, 512))),
        ),
        outputs=Outputs("repconv", (256, 512, 1024)),
        detect="idetect",
        nc=80,
        anchors=_ANCHORS_P5,
    )


def _yolov7x() -> Genome:
    def elan(w: int, out: int) -> Elan:  # chain 6, every second output, everywhere
        return Elan(6, "every2", w, w, out)

    return Genome(
        activation="silu",
        stem=_stem((40, 1), (80, 2), (80, 1), (160, 2)),
        stages=(
            Stage(Downsample("none"), elan(64, 320)),
            Stage(Downsample("mpc", 160), elan(128, 640)),
            Stage(Downsample("mpc", 320), elan(256, 1280)),
            Stage(Downsample("mpc", 640), elan(256, 1280)),
        ),
        spp=Spp("sppcspc", 640),
        head=Head(
            top_down=(TopDown(320, elan(256, 320)), TopDown(160, elan(128, 160))),
            bottom_up=(BottomUp(Downsample("mpc", 160), elan(256, 320)),
                       BottomUp(Downsample("mpc", 320), elan(512, 640))),
        ),
        outputs=Outputs("conv", (320, 640, 1280)),
        detect="idetect",
        nc=80,
        anchors=_ANCHORS_P5,
    )


#: Read-only name → genome map of the upstream presets.
PRESETS: Mapping[str, Genome] = MappingProxyType({
    "yolov7-tiny": _yolov7_tiny(),
    "yolov7": _yolov7(),
    "yolov7x": _yolov7x(),
})


def get_preset(name: str) -> Genome:
    """The preset genome called ``name``; :class:`NasError` listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise NasError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})") from None
