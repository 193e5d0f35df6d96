"""Optimizers (SGD with momentum, LARS, AdamW) and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from sslreg.config import OptimConfig


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as used by SimCLR and BYOL.

    Each parameter's update is scaled by ``eta * ||w|| / ||g + wd * w||``; groups with
    ``lars=False`` (biases and normalisation weights, as in the papers) skip both the
    scaling and the weight decay.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 1e-3) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return None

    def _update(self, param: torch.Tensor, group: dict) -> None:
        grad = param.grad
        if group["lars"]:
            grad = grad.add(param, alpha=group["weight_decay"])
            param_norm, grad_norm = param.norm(), grad.norm()
            # The trust ratio is 1 where a norm is zero (fresh zero-init weights).
            trust = torch.where((param_norm > 0) & (grad_norm > 0),
                                group["eta"] * param_norm / grad_norm, 1.0)
            grad = grad.mul(trust)
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        buffer = state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
        param.add_(buffer, alpha=-group["lr"])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Biases and normalisation weights (1-d tensors) get no weight decay and no LARS."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay, "lars": True},
        {"params": no_decay, "weight_decay": 0.0, "lars": False},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig,
                    device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay)
    if config.name == "lars":
        return LARS(groups, lr=config.lr, momentum=config.momentum, eta=config.lars_eta)
    for group in groups:
        group.pop("lars")
    # Fused kernels do the whole update in one launch on CUDA.
    fused = {"fused": True} if device.type == "cuda" else {}
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                 **fused)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, **fused)


def lr_schedule(config: OptimConfig, batch_size: int, steps_per_epoch: int,
                epochs: int) -> torch.Tensor:
    """Per-step learning rates: linear warm-up to ``lr * batch_size / 256``, then cosine
    to zero. A warm-up longer than half the run is cut to half, so short runs still
    reach the peak rate."""
    total = steps_per_epoch * epochs
    peak = config.lr * batch_size / 256
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total // 2)
    steps = torch.arange(total, dtype=torch.float64)
    after = (steps - warmup) / max(total - warmup, 1)
    rates = peak * 0.5 * (1 + torch.cos(math.pi * after))
    if warmup > 0:
        rates[:warmup] = peak * (steps[:warmup] + 1) / warmup
    if len(rates) != total:
        raise AssertionError("schedule length does not match the number of steps")
    return rates


def set_hyperparameters(optimizer: torch.optim.Optimizer, lr: float,
                        base_decay: list[float], decay_scale: float | None = None) -> None:
    """This step's rate on every group and, with a weight-decay schedule, each group's
    built weight decay times its value (groups built without decay keep none)."""
    for group, decay in zip(optimizer.param_groups, base_decay, strict=True):
        group["lr"] = lr
        if decay_scale is not None:
            group["weight_decay"] = decay * decay_scale
