"""Detection heads: Detect, IDetect (with YOLOR implicit knowledge), IAuxDetect.

Contract with the model builder
-------------------------------
The heads are built as ``Head(nc, anchors, ch)``: ``anchors`` is one flat ``[w0, h0, w1, h1, …]``
list per level, in pixels, and ``ch`` the input channels per level (for IAuxDetect ``2 * nl``
entries: the ``nl`` main inputs first, then the ``nl`` auxiliary ones).

Strides are only known once the whole network exists, so the builder must then call
:meth:`DetectBase.set_stride` with the per-level strides (YOLOv7 finds them with a forward pass
of a 256×256 zero image in training mode: ``stride[i] = 256 / out[i].shape[-2]``). That fills

* ``stride`` – (nl,) non-persistent buffer, pixels per grid cell (zeros until set);
* ``anchors`` – (nl, na, 2) buffer in grid units, ``anchor_grid / stride`` (the buffer YOLOv7's
  loss uses; it holds pixels until the stride is set);
* ``anchor_grid`` – (nl, 1, na, 1, 1, 2) buffer in pixels, used to decode boxes.

and, like YOLOv7's ``check_anchor_order``, reverses the level order of the anchors when their
areas run against the strides. :meth:`DetectBase.initialize_biases` then applies YOLOv7's prior
for objectness and class biases. Attribute names match YOLOv7 so state dicts line up.

Outputs: in training mode a list of per-level raw tensors shaped (bs, na, ny, nx, no) (for
IAuxDetect main levels then aux levels); in eval mode ``(decoded, levels)`` with ``decoded`` of
shape (bs, N, no) holding xywh in input pixels and sigmoid scores.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from nas.errors import ConfigError, NasError


class _Implicit(nn.Module):
    """A learned per-channel tensor ``implicit`` (1, channel, 1, 1) drawn from N(mean, std²)."""

    def __init__(self, channel: int, mean: float, std: float):
        super().__init__()
        self.channel, self.mean, self.std = channel, mean, std
        self.implicit = nn.Parameter(torch.empty(1, channel, 1, 1))
        # Meta tensors (the builder sizes every layer on the meta device before allocating it)
        # hold no values; skipping normal_ there also skips its seconds-long first call.
        if not self.implicit.is_meta:
            nn.init.normal_(self.implicit, mean=mean, std=std)


class ImplicitA(_Implicit):
    """Learned per-channel offset added to the input (YOLOR implicit knowledge)."""

    def __init__(self, channel: int, mean: float = 0.0, std: float = 0.02):
        super().__init__(channel, mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit + x


class ImplicitM(_Implicit):
    """Learned per-channel scale multiplied onto the input (YOLOR implicit knowledge)."""

    def __init__(self, channel: int, mean: float = 1.0, std: float = 0.02):
        super().__init__(channel, mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.implicit * x


def _anchor_tensor(anchors: Sequence[Sequence[float]]) -> torch.Tensor:
    """Validate per-level flat anchor lists and return them as an (nl, na, 2) tensor."""
    levels = [list(level) for level in anchors]
    if not levels or not levels[0] or len(levels[0]) % 2:
        raise ConfigError(f"detect anchors must be per-level lists of w,h pairs, got {anchors!r}")
    if any(len(level) != len(levels[0]) for level in levels):
        raise ConfigError(f"detect anchors: every level needs the same number, got {anchors!r}")
    return torch.tensor(levels, dtype=torch.float32).view(len(levels), -1, 2)


def _grid(nx: int, ny: int, like: torch.Tensor) -> torch.Tensor:
    """Cell offsets (1, 1, ny, nx, 2) holding (x, y)."""
    yv, xv = torch.meshgrid(torch.arange(ny, device=like.device, dtype=like.dtype),
                            torch.arange(nx, device=like.device, dtype=like.dtype), indexing="ij")
    return torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2)


class DetectBase(nn.Module):
    """Shared anchor bookkeeping, reshaping and box decoding of the YOLOv7 heads."""

    #: how many entries of ``ch`` (and input tensors) each detection level takes
    inputs_per_level = 1

    def __init__(self, nc: int, anchors: Sequence[Sequence[float]], ch: Sequence[int]):
        super().__init__()
        a = _anchor_tensor(anchors)
        self.nc = nc
        self.no = nc + 5
        self.nl, self.na = a.shape[0], a.shape[1]
        if len(ch) != self.inputs_per_level * self.nl:
            raise ConfigError(f"{type(self).__name__} with {self.nl} anchor levels needs "
                              f"{self.inputs_per_level * self.nl} inputs, got {len(ch)}")
        self.register_buffer("anchors", a.clone())
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, self.na, 1, 1, 2))
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch[:self.nl])

    @torch.no_grad()
    def set_stride(self, stride: Sequence[float] | torch.Tensor) -> None:
        """Record per-level strides, fix the anchor level order and set grid-unit anchors."""
        s = torch.as_tensor(stride, dtype=self.anchors.dtype).to(self.anchors.device).view(-1)
        if s.numel() != self.nl or not bool((s > 0).all()):
            raise ConfigError(f"detect head needs {self.nl} positive strides, got {s.tolist()}")
        area = self.anchor_grid.prod(-1).view(-1)
        if (area[-1] - area[0]).sign() != (s[-1] - s[0]).sign():
            self.anchor_grid.copy_(self.anchor_grid.flip(0))
        self.stride.copy_(s)
        self.anchors.copy_(self.anchor_grid.view(self.nl, self.na, 2) / s.view(-1, 1, 1))

    @torch.no_grad()
    def initialize_biases(self, cf: torch.Tensor | None = None) -> None:
        """YOLOv7's bias prior: about 8 objects per 640² image; classes from frequencies ``cf``."""
        self._require_stride()
        for convs in self._output_conv_lists():
            for conv, s in zip(convs, self.stride.tolist()):
                b = conv.bias.view(self.na, -1)
                b[:, 4] += math.log(8 / (640 / s) ** 2)
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99)) if cf is None else torch.log(cf / cf.sum())

    def _output_conv_lists(self) -> list[nn.ModuleList]:
        return [self.m]

    def _require_stride(self) -> None:
        if not bool((self.stride > 0).all()):
            raise NasError(f"{type(self).__name__}: strides are not set; call set_stride() first")

    def _levels(self, t: torch.Tensor) -> torch.Tensor:
        """(bs, na*no, ny, nx) → (bs, na, ny, nx, no)."""
        bs, _, ny, nx = t.shape
        return t.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()

    def _decode(self, i: int, p: torch.Tensor) -> torch.Tensor:
        """Raw level ``i`` (bs, na, ny, nx, no) → (bs, na*ny*nx, no), xywh in pixels."""
        bs, _, ny, nx, _ = p.shape
        y = p.sigmoid()
        xy = (y[..., 0:2] * 2.0 - 0.5 + _grid(nx, ny, y)) * self.stride[i]
        wh = (y[..., 2:4] * 2.0) ** 2 * self.anchor_grid[i]
        return torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no)

    def _main(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Output conv of main level ``i`` before reshaping (subclasses add implicit terms)."""
        return self.m[i](x)

    def forward(self, x: Sequence[torch.Tensor]):
        levels = [self._levels(self._main(i, x[i])) for i in range(self.nl)]
        if self.training:
            return levels
        self._require_stride()
        return torch.cat([self._decode(i, p) for i, p in enumerate(levels)], 1), levels


class Detect(DetectBase):
    """Plain YOLO head: one 1×1 conv per level producing ``na * (nc + 5)`` channels."""

    def __init__(self, nc: int = 80, anchors: Sequence[Sequence[float]] = (), ch: Sequence[int] = ()):
        super().__init__(nc, anchors, ch)


class IDetect(DetectBase):
    """YOLOR head: ``im * conv(x + ia)`` per level.

    :func:`nas.fuse.fuse` folds ``ia``/``im`` into ``m`` and sets ``implicit_folded``; the
    implicit parameters stay attached afterwards (see that function).
    """

    def __init__(self, nc: int = 80, anchors: Sequence[Sequence[float]] = (), ch: Sequence[int] = ()):
        super().__init__(nc, anchors, ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch[:self.nl])
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch[:self.nl])
        self.implicit_folded = False

    def _main(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.implicit_folded:
            return self.m[i](x)
        return self.im[i](self.m[i](self.ia[i](x)))


class IAuxDetect(IDetect):
    """IDetect on the first ``nl`` inputs plus plain auxiliary convs ``m2`` on the next ``nl``.

    The auxiliary outputs only feed the training loss: training mode returns main then aux
    levels (2·nl tensors); eval mode decodes and returns the main levels only.
    """

    inputs_per_level = 2

    def __init__(self, nc: int = 80, anchors: Sequence[Sequence[float]] = (), ch: Sequence[int] = ()):
        super().__init__(nc, anchors, ch)
        self.m2 = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch[self.nl:])

    def _output_conv_lists(self) -> list[nn.ModuleList]:
        return [self.m, self.m2]

    def forward(self, x: Sequence[torch.Tensor]):
        if not self.training:
            return super().forward(x)
        main = super().forward(x)
        aux = [self._levels(self.m2[i](x[self.nl + i])) for i in range(self.nl)]
        return main + aux
