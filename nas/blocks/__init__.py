"""Torch modules of the YOLOv7 family, named and parameterised as in YOLOv7's cfgs.

The model builder looks these up by cfg name; :func:`nas.fuse.fuse` turns a model built from
them into its deploy form.
"""
from ._common import MP, SP, Concat, Conv, ReOrg, Shortcut, autopad
from ._detect import Detect, DetectBase, IAuxDetect, IDetect, ImplicitA, ImplicitM
from ._repconv import RepConv
from ._spp import SPP, SPPCSPC, SPPF, DownC

__all__ = [
    "Concat", "Conv", "Detect", "DetectBase", "DownC", "IAuxDetect", "IDetect", "ImplicitA",
    "ImplicitM", "MP", "ReOrg", "RepConv", "SP", "SPP", "SPPCSPC", "SPPF", "Shortcut", "autopad",
]
