"""RepConv: the RepVGG-style re-parameterisable 3×3 convolution used by YOLOv7."""
from __future__ import annotations

import torch
from torch import nn

from nas.errors import ConfigError

from ._common import autopad, batch_norm, make_activation


class RepConv(nn.Module):
    """Three parallel branches in training form, one biased 3×3 conv in deploy form.

    Training form: ``act(bn(conv3x3(x)) + bn(conv1x1(x)) + bn(x))``, the identity branch
    (a bare BatchNorm2d) existing only when ``c1 == c2`` and ``s == 1``. Deploy form
    (``deploy=True`` or after :func:`nas.fuse.fuse`): ``act(rbr_reparam(x))``. Unused branch
    attributes are ``None`` so the same forward serves both forms.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None,
                 g: int = 1, act: bool | nn.Module | None = True, deploy: bool = False):
        super().__init__()
        if k != 3 or autopad(k, p) != 1:
            raise ConfigError(f"RepConv needs k=3 with padding 1, got k={k}, p={p}")
        self.deploy = deploy
        self.groups = g
        self.in_channels = c1
        self.out_channels = c2
        self.act = make_activation(act)
        self.rbr_reparam: nn.Conv2d | None = None
        self.rbr_identity: nn.BatchNorm2d | None = None
        self.rbr_dense: nn.Sequential | None = None
        self.rbr_1x1: nn.Sequential | None = None
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, 3, s, 1, groups=g, bias=True)
        else:
            self.rbr_identity = batch_norm(c1) if c1 == c2 and s == 1 else None
            self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, 3, s, 1, groups=g, bias=False),
                                           batch_norm(c2))
            self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, 0, groups=g, bias=False),
                                         batch_norm(c2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.act(y)
