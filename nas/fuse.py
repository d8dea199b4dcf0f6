"""Deploy-form fusion: fold batch norms, RepConv branches and implicit terms into convs.

:func:`fuse` mirrors what YOLOv7's ``Model.fuse()`` does to a model built from
:mod:`nas.blocks`, so parameter counts after fusion equal YOLOv7's (see REFERENCE.md):

* :class:`~nas.blocks.Conv` — conv + BN become one biased conv; ``bn`` becomes ``nn.Identity``.
* :class:`~nas.blocks.RepConv` — 3×3, 1×1 and identity branches become one biased 3×3 conv
  (RepVGG re-parameterisation; grouped convs included).
* :class:`~nas.blocks.IDetect` / :class:`~nas.blocks.IAuxDetect` — ``im * conv(x + ia)`` becomes
  one conv with ``b' = (b + W·a)·m`` and ``W' = W·m``.

Everything else (bare ``nn.Conv2d``/``nn.BatchNorm2d`` rows, IAuxDetect's auxiliary convs) is
left as it is, as YOLOv7 does. Folding uses the BN running statistics, so the fused model
reproduces the original's *eval-mode* output.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from nas.blocks import Conv, IDetect, RepConv


def fold_batch_norm(weight: torch.Tensor, bn: nn.BatchNorm2d,
                    bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` as one conv, from the conv's ``weight``/``bias``."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    if bias is not None:
        shift = shift + bias * scale
    return weight * scale.view(-1, 1, 1, 1), shift


def identity_kernel(channels: int, groups: int, like: torch.Tensor) -> torch.Tensor:
    """3×3 grouped-conv kernel (channels, channels // groups, 3, 3) that copies its input."""
    per_group = channels // groups
    kernel = torch.zeros(channels, per_group, 3, 3, dtype=like.dtype, device=like.device)
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % per_group, 1, 1] = 1.0
    return kernel


def repconv_kernel_bias(rep: RepConv) -> tuple[torch.Tensor, torch.Tensor]:
    """The single 3×3 kernel and bias equivalent to a training-form RepConv's three branches."""
    dense_conv, dense_bn = rep.rbr_dense[0], rep.rbr_dense[1]
    kernel, bias = fold_batch_norm(dense_conv.weight, dense_bn, dense_conv.bias)
    one_conv, one_bn = rep.rbr_1x1[0], rep.rbr_1x1[1]
    k1, b1 = fold_batch_norm(one_conv.weight, one_bn, one_conv.bias)
    kernel = kernel + nn.functional.pad(k1, [1, 1, 1, 1])
    bias = bias + b1
    if rep.rbr_identity is not None:
        kid, bid = fold_batch_norm(identity_kernel(rep.in_channels, rep.groups, kernel),
                                   rep.rbr_identity)
        kernel, bias = kernel + kid, bias + bid
    return kernel, bias


def _biased_conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A biased copy of ``like``'s geometry holding ``weight`` (whose shape sets the kernel)."""
    conv = nn.Conv2d(like.in_channels, like.out_channels, tuple(weight.shape[2:]), like.stride,
                     like.padding, like.dilation, like.groups, bias=True,
                     padding_mode=like.padding_mode, device=weight.device, dtype=weight.dtype)
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    return conv


def _fuse_conv(m: Conv) -> None:
    if not isinstance(m.bn, nn.BatchNorm2d):
        return  # already fused
    m.conv = _biased_conv(m.conv, *fold_batch_norm(m.conv.weight, m.bn, m.conv.bias))
    m.bn = nn.Identity()


def _fuse_repconv(m: RepConv) -> None:
    if m.rbr_reparam is not None:
        return  # deploy form already
    dense = m.rbr_dense[0]
    m.rbr_reparam = _biased_conv(dense, *repconv_kernel_bias(m))
    m.rbr_dense = m.rbr_1x1 = m.rbr_identity = None
    m.deploy = True


def _fold_implicit(m: IDetect) -> None:
    if m.implicit_folded:
        return
    for conv, ia, im in zip(m.m, m.ia, m.im):  # 1×1 convs, groups=1, always biased
        w, scale = conv.weight, im.implicit.view(-1)
        conv.bias.add_(w.view(w.shape[0], -1) @ ia.implicit.view(-1)).mul_(scale)
        w.mul_(scale.view(-1, 1, 1, 1))
    # The ImplicitA/ImplicitM modules stay attached although the forward no longer applies
    # them: YOLOv7's fuse() keeps them too, and its published "params after fuse()" counts
    # them, so keeping them makes our fused parameter counts comparable one-to-one.
    m.implicit_folded = True


def fuse(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` in deploy form (a deep copy unless ``inplace``).

    Walks the whole module tree, so it works on a full detector or on a single block. The
    train/eval flag is left as it is; the fused model matches the original in eval mode.
    Fusing an already fused model changes nothing.
    """
    target = model if inplace else copy.deepcopy(model)
    with torch.no_grad():
        for m in list(target.modules()):
            if isinstance(m, Conv):
                _fuse_conv(m)
            elif isinstance(m, RepConv):
                _fuse_repconv(m)
            elif isinstance(m, IDetect):
                _fold_implicit(m)
    return target


__all__ = ["fold_batch_norm", "fuse", "identity_kernel", "repconv_kernel_bias"]
