"""The sharing plan: which slice of which supernet tensor each weight of a sub-network is.

A *feature* (the tensor a layer outputs) is described as a list of ``(space, n)`` pieces, in
channel order: ``n`` leading channels of the named *channel space*. A conv slot ``S`` owns the
space ``S`` (its output channels); weight-free layers pass their input's pieces on (pools,
upsampling) or join them (concat). A layer's input weights are laid out in the supernet by
space: every space that can ever reach that input gets its own block of input channels, so the
sub-network's input index is "the first ``n`` channels of each block it actually receives, in
the order it receives them". Output channels are always a prefix.

:func:`plan_model` turns one expanded genome (its built plain model and its row slots) into a
list of :class:`Entry` — one per tensor of the plain state dict — and the supernet slices its
tensors by those entries. Block-specific rules live in :data:`SLICERS` (module class → function),
a registry, so a new block is one function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from nas.blocks import IDetect, RepConv, SPP, SPPCSPC, SPPF, Conv
from nas.blocks import DetectBase
from nas.errors import NasError

Feature = tuple[tuple[str, int], ...]
IMAGE: Feature = (("image", 3),)


@dataclass(frozen=True)
class Entry:
    """One tensor of the plain model and where it lives in the supernet.

    Attributes:
        key: the plain model's state-dict key (``layers.12.conv.weight``).
        super_key: the supernet tensor (``stages.1.elan.entry_a.conv.weight``).
        shape: the plain tensor's shape.
        out: leading channels taken along dim 0 (``None``: the whole dim 0).
        inputs: the input feature along ``in_dim`` (``None``: that dim is not sliced).
        in_dim: the input-channel dim (1 for conv weights and YOLOR ImplicitA).
        present: False for a tensor the supernet keeps for other genomes only (a RepConv's
            identity branch when this genome's output conv changes width).
    """

    key: str
    super_key: str
    shape: tuple[int, ...]
    out: int | None = None
    inputs: Feature | None = None
    in_dim: int = 1
    present: bool = True


def _conv(prefix: str, slot: str, module: Conv, inputs: Feature) -> list[Entry]:
    """A Conv (conv + BatchNorm): output prefix, input by feature."""
    c2 = module.conv.out_channels
    entries = [Entry(f"{prefix}conv.weight", f"{slot}.conv.weight", tuple(module.conv.weight.shape),
                     c2, inputs)]
    entries += _bn(f"{prefix}bn.", f"{slot}.bn.", module.bn, c2)
    return entries


def _bn(prefix: str, super_prefix: str, bn: nn.Module, c: int, present: bool = True
        ) -> list[Entry]:
    names = ("weight", "bias", "running_mean", "running_var")
    entries = [Entry(prefix + n, super_prefix + n, (c,), c, present=present) for n in names]
    entries.append(Entry(prefix + "num_batches_tracked", super_prefix + "num_batches_tracked", (),
                         present=present))
    return entries


def _repconv_row(prefix: str, slot: str, module: RepConv, inputs: Feature) -> list[Entry]:
    """RepConv: the 3x3 conv + BN is the slot's shared ``conv``/``bn`` (also Conv's); the 1x1
    branch and the identity BatchNorm are RepConv-only tensors of the slot."""
    if module.rbr_dense is None:
        raise NasError("the supernet shares train-form RepConv only (this one is fused)")
    dense_conv, dense_bn = module.rbr_dense
    c2 = dense_conv.out_channels
    entries = [Entry(f"{prefix}rbr_dense.0.weight", f"{slot}.conv.weight",
                     tuple(dense_conv.weight.shape), c2, inputs)]
    entries += _bn(f"{prefix}rbr_dense.1.", f"{slot}.bn.", dense_bn, c2)
    one = module.rbr_1x1[0]
    entries.append(Entry(f"{prefix}rbr_1x1.0.weight", f"{slot}.rep_1x1.weight",
                         tuple(one.weight.shape), c2, inputs))
    entries += _bn(f"{prefix}rbr_1x1.1.", f"{slot}.rep_1x1_bn.", module.rbr_1x1[1], c2)
    entries += _bn(f"{prefix}rbr_identity.", f"{slot}.rep_identity.", None, c2,
                   present=module.rbr_identity is not None)
    return entries


def _repeat(space: str, n: int, times: int) -> Feature:
    """``times`` blocks of the same hidden space (a pooled copy each), told apart by ``#k``."""
    return tuple((f"{space}#{k}", n) for k in range(times))


def _sppcspc_row(prefix: str, slot: str, m: SPPCSPC, inputs: Feature) -> list[Entry]:
    c_ = m.cv1.conv.out_channels
    pools = len(m.m)
    plan = [("cv1", inputs), ("cv2", inputs), ("cv3", ((f"{slot}.cv1", c_),)),
            ("cv4", ((f"{slot}.cv3", c_),)), ("cv5", _repeat(f"{slot}.cv4", c_, pools + 1)),
            ("cv6", ((f"{slot}.cv5", c_),)), ("cv7", ((f"{slot}.cv6", c_), (f"{slot}.cv2", c_)))]
    return [e for name, feat in plan
            for e in _conv(f"{prefix}{name}.", f"{slot}.{name}", getattr(m, name), feat)]


def _spp_row(prefix: str, slot: str, m: SPP | SPPF, inputs: Feature) -> list[Entry]:
    c_ = m.cv1.conv.out_channels
    blocks = len(m.m) + 1 if isinstance(m, SPP) else 4
    return (_conv(f"{prefix}cv1.", f"{slot}.cv1", m.cv1, inputs)
            + _conv(f"{prefix}cv2.", f"{slot}.cv2", m.cv2, _repeat(f"{slot}.cv1", c_, blocks)))


def _detect_row(prefix: str, slot: str, m: DetectBase, inputs: Sequence[Feature]) -> list[Entry]:
    if type(m).inputs_per_level != 1:
        raise NasError(f"the supernet supports Detect and IDetect heads, not {type(m).__name__}")
    entries = [Entry(f"{prefix}anchors", f"{slot}.anchors", tuple(m.anchors.shape)),
               Entry(f"{prefix}anchor_grid", f"{slot}.anchor_grid", tuple(m.anchor_grid.shape))]
    for i, feat in enumerate(inputs):
        conv = m.m[i]
        entries.append(Entry(f"{prefix}m.{i}.weight", f"{slot}.m.{i}.weight",
                             tuple(conv.weight.shape), None, feat))
        entries.append(Entry(f"{prefix}m.{i}.bias", f"{slot}.m.{i}.bias", tuple(conv.bias.shape)))
        if isinstance(m, IDetect):
            entries.append(Entry(f"{prefix}ia.{i}.implicit", f"{slot}.ia.{i}.implicit",
                                 tuple(m.ia[i].implicit.shape), None, feat))
            entries.append(Entry(f"{prefix}im.{i}.implicit", f"{slot}.im.{i}.implicit",
                                 tuple(m.im[i].implicit.shape)))
    return entries


#: module class → ``(state-dict prefix, slot, module, input feature(s)) -> entries``
SLICERS: dict[type, Callable[..., list[Entry]]] = {
    Conv: _conv,
    RepConv: _repconv_row,
    SPPCSPC: _sppcspc_row,
    SPPF: _spp_row,
    SPP: _spp_row,
}


def plan_model(model: nn.Module, slots: Sequence[str | None]) -> list[Entry]:
    """The entries of every tensor of ``model`` (a plain :class:`~nas.build.Detector` built from
    an expanded genome whose row slots are ``slots``)."""
    layers = model.layers
    if len(layers) != len(slots):
        raise NasError(f"the model has {len(layers)} layers but {len(slots)} slots were given")
    features: list[Feature] = []
    entries: list[Entry] = []
    for i, (layer, slot) in enumerate(zip(layers, slots)):
        srcs = model.sources[i]
        ins = [IMAGE if s == -1 else features[s] for s in srcs]
        prefix = f"layers.{i}."
        if isinstance(layer, DetectBase):
            entries += _detect_row(prefix, slot, layer, ins)
            features.append(())
            continue
        slicer = SLICERS.get(type(layer))
        if slicer is not None:
            if slot is None:
                raise NasError(f"layer {i} ({type(layer).__name__}) has weights but no slot")
            entries += slicer(prefix, slot, layer, ins[0])
            features.append(((slot, _out_channels(layer)),))
        elif any(True for _ in layer.parameters()):
            raise NasError(f"layer {i}: the supernet has no sharing rule for {type(layer).__name__}")
        elif model.multi_input[i]:      # Concat
            features.append(tuple(piece for feat in ins for piece in feat))
        else:                           # pools, upsampling: channels pass through
            features.append(ins[0])
    return entries


#: module class → its output channels
_OUT_CHANNELS: dict[type, Callable[[nn.Module], int]] = {
    Conv: lambda m: m.conv.out_channels,
    RepConv: lambda m: m.out_channels,
    SPPCSPC: lambda m: m.cv7.conv.out_channels,
    SPPF: lambda m: m.cv2.conv.out_channels,
    SPP: lambda m: m.cv2.conv.out_channels,
}


def _out_channels(layer: nn.Module) -> int:
    return _OUT_CHANNELS[type(layer)](layer)
