"""Exponential moving averages of weights (BYOL's target network, MoCo's key encoder)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def make_target(online: nn.Module) -> nn.Module:
    """A copy of ``online`` (parameters and buffers) whose parameters take no gradient,
    to be updated by :func:`ema_update`."""
    target = copy.deepcopy(online)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float, *,
               copy_buffers: bool = True) -> None:
    """target <- momentum * target + (1 - momentum) * online, for the parameters.

    With ``copy_buffers`` (the default) every buffer of ``online`` (BatchNorm running
    statistics and batch counters) is then copied into ``target``, overwriting whatever
    the target's own forward passes accumulated. Without it the target's buffers are
    left alone: a target run in train mode keeps its own BatchNorm running statistics.
    """
    target_params = list(target.parameters())
    online_params = list(online.parameters())
    torch._foreach_lerp_(target_params, online_params, 1.0 - momentum)
    if not copy_buffers:
        return
    for target_buffer, online_buffer in zip(target.buffers(), online.buffers(), strict=True):
        target_buffer.copy_(online_buffer)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: tau = 1 - (1 - base) * (cos(pi * progress) + 1) / 2, from base to 1."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
