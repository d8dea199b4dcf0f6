"""Basic YOLOv7 building blocks: Conv, pooling wrappers, Concat, Shortcut, ReOrg.

Constructor signatures follow YOLOv7's ``models/common.py`` so that the flat cfg argument
convention ``[c1, c2, *rest]`` maps onto them unchanged, and attribute names follow it too so
that state-dict keys line up with YOLOv7 checkpoints.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: YOLOv7's ``Model`` rewrites every ``nn.BatchNorm2d`` to these values after construction
#: (``utils.torch_utils.initialize_weights``); y7nas builds them in from the start.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int | Sequence[int], p: int | Sequence[int] | None = None) -> int | list[int]:
    """Padding that keeps the spatial size for stride 1 ('same'): ``k // 2`` unless given."""
    if p is not None:
        return p
    return k // 2 if isinstance(k, int) else [x // 2 for x in k]


def batch_norm(c: int) -> nn.BatchNorm2d:
    """A BatchNorm2d with YOLOv7's effective eps and momentum."""
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def make_activation(act: bool | nn.Module | None) -> nn.Module:
    """``True`` → SiLU, an ``nn.Module`` → itself, anything else (False/None) → Identity."""
    if act is True:
        return nn.SiLU()
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


class Conv(nn.Module):
    """Conv2d (no bias) → BatchNorm2d → activation.

    After :func:`nas.fuse.fuse` the conv carries a bias and ``bn`` is an ``nn.Identity``.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None,
                 g: int = 1, act: bool | nn.Module | None = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn: nn.Module = batch_norm(c2)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MP(nn.Module):
    """Non-overlapping max-pool: kernel and stride ``k`` (halves the size for k=2)."""

    def __init__(self, k: int = 2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class SP(nn.Module):
    """Max-pool with 'same' padding ``k // 2`` and stride ``s``."""

    def __init__(self, k: int = 3, s: int = 1):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension`` (channels by default)."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(x), self.d)


class Shortcut(nn.Module):
    """Element-wise sum of its first two inputs (``dimension`` is kept for cfg compatibility)."""

    def __init__(self, dimension: int = 0):
        super().__init__()
        self.d = dimension

    def forward(self, x: Sequence[torch.Tensor]) -> torch.Tensor:
        return x[0] + x[1]


class ReOrg(nn.Module):
    """Space-to-depth: (b, c, h, w) → (b, 4c, h/2, w/2), YOLOv7's pixel order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2],
                          x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
