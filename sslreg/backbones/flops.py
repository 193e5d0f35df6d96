"""Counting a backbone's forward FLOPs per image (multiply-adds count as 2 FLOPs)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_flops(model: nn.Module, channels: int, image_size: int) -> int:
    """FLOPs of one forward pass of one image, counted by torch's FlopCounterMode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, channels, image_size, image_size))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
