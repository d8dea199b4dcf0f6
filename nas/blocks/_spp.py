"""Pooling and downsampling blocks built from :class:`Conv`: SPP, SPPF, SPPCSPC, DownC."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nas.errors import ConfigError

from ._common import Conv


def _hidden(name: str, c_: int, rule: str) -> int:
    """The hidden width of an SPP block, refused when it rounds down to nothing."""
    if c_ < 1:
        raise ConfigError(f"{name} hidden width {rule} is {c_}; it must be at least 1")
    return c_


def _same_pools(k: Sequence[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)


class SPP(nn.Module):
    """Spatial pyramid pooling: 1×1 to ``c1 // 2``, parallel max-pools, concat, 1×1 to c2."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)):
        super().__init__()
        c_ = _hidden("SPP", c1 // 2, f"c1 // 2 = {c1} // 2")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = _same_pools(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: one max-pool applied three times in sequence (same output as SPP(5, 9, 13))."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = _hidden("SPPF", c1 // 2, f"c1 // 2 = {c1} // 2")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class SPPCSPC(nn.Module):
    """CSP-wrapped SPP of YOLOv7 with hidden width ``c_ = int(2 * c2 * e)``.

    ``n``, ``shortcut`` and ``g`` are accepted (the cfg convention inserts ``n``) but unused,
    as in YOLOv7.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False, g: int = 1,
                 e: float = 0.5, k: Sequence[int] = (5, 9, 13)):
        super().__init__()
        c_ = _hidden("SPPCSPC", int(2 * c2 * e), f"int(2·c2·e) = int(2·{c2}·{e:g})")
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 1)
        self.cv4 = Conv(c_, c_, 1, 1)
        self.m = _same_pools(k)
        self.cv5 = Conv((len(k) + 1) * c_, c_, 1, 1)
        self.cv6 = Conv(c_, c_, 3, 1)
        self.cv7 = Conv(2 * c_, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [m(x1) for m in self.m], 1)))
        y2 = self.cv2(x)
        return self.cv7(torch.cat((y1, y2), 1))


class DownC(nn.Module):
    """Downsample by ``k``: (1×1 → 3×3 stride k) ∥ (max-pool k → 1×1), each ``c2 // 2`` wide.

    ``n`` is accepted (the cfg convention inserts it) but unused, as in YOLOv7.
    """

    def __init__(self, c1: int, c2: int, n: int = 1, k: int = 2):
        super().__init__()
        if c2 % 2:
            raise ConfigError(f"DownC splits its output into two halves; c2 must be even, got {c2}")
        self.cv1 = Conv(c1, c1, 1, 1)
        self.cv2 = Conv(c1, c2 // 2, 3, k)
        self.cv3 = Conv(c1, c2 // 2, 1, 1)
        self.mp = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), 1)
