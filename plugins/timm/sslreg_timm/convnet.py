"""A timm convnet as an sslreg backbone: the architecture exactly as timm defines it,
returning its pooled features.

Small images are not given a smaller stem: timm's ResNets keep their 7x7 stride-2 conv
and max-pool (total stride 32), so 28-32 px images reach the last stage as 1x1 maps.
A size at which the model's maps vanish (a stride-4 patchify stem and unpadded
downsampling, as ConvNeXt's, need 32 px) is refused when the backbone is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sslreg.errors import ConfigError
from sslreg.interfaces import BackboneExport
from sslreg_timm.common import create, creation_options, timm_export

# The largest side tried when looking for the smallest one a model takes.
LARGEST_TRIED = 1024


class TimmConvNet(nn.Module):
    """timm's ``name`` with no classifier: (B, C, H, W) -> (B, output_dim) pooled features."""

    def __init__(self, name: str, in_channels: int, image_size: int, **options: Any) -> None:
        super().__init__()
        self.timm_name = name
        self.options = creation_options(in_channels, **options)
        self.model = create(name, self.options)
        self.output_dim = int(self.model.num_features)
        check_size(f"timm/{name}", self.model, in_channels, image_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def exports(self) -> list[BackboneExport]:
        return [timm_export(self.timm_name, self.options, self.model)]


def check_size(label: str, model: nn.Module, in_channels: int, image_size: int) -> None:
    """Refuse ``image_size`` with one line naming the smallest side the model takes,
    if the model cannot take it (its feature maps shrink to nothing)."""
    def runs(size: int) -> bool:
        return _runs_at(model, in_channels, size)

    if runs(image_size):
        return
    smallest = smallest_size(runs, image_size)
    fix = f"the smallest it takes is {smallest} px" if smallest else \
        f"it takes no size up to {LARGEST_TRIED} px"
    raise ConfigError(f"{label} cannot take {image_size} px images (its feature maps shrink "
                      f"to nothing); {fix}")


def _runs_at(model: nn.Module, in_channels: int, size: int) -> bool:
    """Whether one zero image of ``size`` px goes through; in eval mode, so BatchNorm's
    running statistics stay as they were and a batch of one is allowed."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, size, size))
    except (RuntimeError, ValueError, AssertionError):  # what a too-small map raises
        return False
    finally:
        model.train(was_training)
    return True


def smallest_size(runs: Callable[[int], Any], too_small: int) -> int | None:
    """The smallest side above ``too_small`` that ``runs``, assuming every larger one does
    too: doubling, then bisecting. ``None`` when none up to :data:`LARGEST_TRIED` does."""
    low, high = too_small, max(too_small * 2, too_small + 1)
    while not runs(high):
        if high >= LARGEST_TRIED:
            return None
        low, high = high, min(high * 2, LARGEST_TRIED)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if runs(middle) else (middle, high)
    return high
