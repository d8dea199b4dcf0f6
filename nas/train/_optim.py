"""Optimizer parameter groups, the warm-up + cosine schedule and the EMA of weights.

Parameter groups follow YOLOv7's train.py: conv/linear weights get weight decay; biases and
everything else (BatchNorm weights, YOLOR implicit vectors) get none. During warm-up the bias
group's learning rate falls from ``warmup_bias_lr`` (SGD only) while the others rise from 0, and
SGD momentum rises from ``warmup_momentum``; afterwards the rate follows a cosine from ``lr`` to
``lr · lrf``, evaluated every iteration (YOLOv7 steps it once per epoch).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nas.build import PARAMETER_ROLES, parameter_roles
from nas.errors import NasError

OPTIMIZERS = ("sgd", "adamw")
NOMINAL_BATCH = 64  # YOLOv7's nbs: weight decay is scaled by batch / 64


def param_groups(model: nn.Module) -> tuple[list, list, list]:
    """(no-decay others, decayed weights, biases) as YOLOv7 splits them, each tensor by what it
    is (:func:`nas.build.parameter_roles`: the owning module's kind), never by its name."""
    roles = parameter_roles(model)
    groups: dict[str, list] = {role: [] for role in PARAMETER_ROLES}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[roles[name]].append(p)
    return groups["other"], groups["decay"], groups["bias"]


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW (β1 = momentum) over :func:`param_groups`; group 2 = biases."""
    other, decay, bias = param_groups(model)
    groups = [{"params": other, "weight_decay": 0.0},
              {"params": decay, "weight_decay": weight_decay},
              {"params": bias, "weight_decay": 0.0}]
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    elif name == "adamw":
        opt = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    else:
        raise NasError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    for g in opt.param_groups:
        g["initial_lr"] = lr
    return opt


class Schedule:
    """Per-iteration learning rate and momentum: linear warm-up, then cosine to ``lr · lrf``."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_iters: int, warmup_iters: int,
                 lr: float, lrf: float, momentum: float, warmup_momentum: float,
                 warmup_bias_lr: float):
        self.opt = optimizer
        self.total = max(int(total_iters), 1)
        self.warmup = max(int(warmup_iters), 0)
        self.lr, self.lrf = lr, lrf
        self.momentum, self.warmup_momentum = momentum, warmup_momentum
        self.warmup_bias_lr = warmup_bias_lr
        self.sgd = isinstance(optimizer, torch.optim.SGD)

    def factor(self, it: int) -> float:
        """Cosine factor 1 → lrf over the run (YOLOv7's ``one_cycle``)."""
        return ((1 - math.cos(math.pi * min(it, self.total) / self.total)) / 2) * (self.lrf - 1) + 1

    def step(self, it: int) -> float:
        """Set every group's rate (and SGD momentum) for iteration ``it``; returns the main rate."""
        target = self.lr * self.factor(it)
        for j, g in enumerate(self.opt.param_groups):
            if it < self.warmup:
                x = it / self.warmup
                start = self.warmup_bias_lr if (j == 2 and self.sgd) else 0.0
                g["lr"] = start + (target - start) * x
                m = self.warmup_momentum + (self.momentum - self.warmup_momentum) * x
            else:
                g["lr"] = target
                m = self.momentum
            if self.sgd:
                g["momentum"] = m
            else:
                g["betas"] = (m, g["betas"][1])
        return self.opt.param_groups[1]["lr"]


class ModelEMA:
    """Exponential moving average of every floating-point tensor of the state dict.

    Decay ramps like YOLOv7's: ``d = decay · (1 − exp(−updates / tau))`` (0.9999, tau 2000), so
    early updates follow the model closely. Updates use fused ``_foreach`` ops (one call per step).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0):
        import copy

        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0
        ema_sd, model_sd = self.module.state_dict(), model.state_dict()
        keys = [k for k, v in ema_sd.items() if v.dtype.is_floating_point]
        self._ema = [ema_sd[k] for k in keys]
        self._src = [model_sd[k] for k in keys]

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        torch._foreach_mul_(self._ema, d)
        torch._foreach_add_(self._ema, self._src, alpha=1.0 - d)
