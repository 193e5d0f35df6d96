"""Patches and masking: images <-> rows of patch pixels, and MAE's per-sample shuffle."""

from __future__ import annotations

import torch
from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, L, p * p * C), patches row-major over the grid as the ViT's
    tokens, each patch's pixels row-major with the channels last (as the MAE code)."""
    batch, channels, height, width = images.shape
    p = patch_size
    rows, cols = height // p, width // p
    x = images.reshape(batch, channels, rows, p, cols, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, rows, cols, p, p, C)
    return x.reshape(batch, rows * cols, p * p * channels)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """(B, L, p * p * C) -> (B, C, H, W), the inverse of :func:`patchify`."""
    batch = patches.shape[0]
    p = patch_size
    rows, cols = grid
    channels = patches.shape[-1] // (p * p)
    x = patches.reshape(batch, rows, cols, p, p, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, rows, p, cols, p)
    return x.reshape(batch, channels, rows * p, cols * p)


def visible_count(length: int, mask_ratio: float) -> int:
    """How many of ``length`` patches stay visible: the paper's int(L * (1 - ratio)),
    kept in [1, L - 1] so the encoder sees a patch and the loss has one to score."""
    return min(max(1, int(length * (1 - mask_ratio))), length - 1)


def random_masking(tokens: Tensor, mask_ratio: float,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample random masking by sorting uniform noise (He et al. 2022, sec. 3).

    Each sample's patches are shuffled by ``argsort(noise)``; the first
    :func:`visible_count` stay visible.

    Returns:
        visible: (B, K, D) the kept tokens, in shuffled order;
        mask: (B, L) 1 for masked patches, 0 for visible ones, in the original order;
        restore: (B, L) indices that put [visible, masked] back into the original order.
    """
    batch, length, dim = tokens.shape
    keep = visible_count(length, mask_ratio)
    noise = torch.rand(batch, length, device=tokens.device, generator=generator)
    shuffle = noise.argsort(dim=1)  # (B, L): position in the shuffle -> patch index
    restore = shuffle.argsort(dim=1)  # (B, L): patch index -> position in the shuffle
    kept = shuffle[:, :keep]  # (B, K)
    visible = tokens.gather(1, kept.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=tokens.device)
    mask[:, :keep] = 0
    return visible, mask.gather(1, restore), restore
