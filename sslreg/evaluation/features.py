"""Frozen-backbone feature extraction, and the raw-pixel floor.

Features are extracted once per evaluation and live on the CPU as float32, so the
linear probe and kNN never hold the backbone or the accelerator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn


def extract_features(
    encoder: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Run a frozen encoder over a whole image tensor, batch by batch.

    Args:
        encoder: maps normalised float images (B, C, H, W) to features (B, D). An
            ``nn.Module`` is put in eval mode for the call and its mode restored after.
        images: uint8 (N, C, H, W), on any device.
        mean: per-channel mean of the [0, 1] images, length C.
        std: per-channel standard deviation, length C.
        batch_size: images per forward pass.
        device: where the encoder runs; bf16 autocast is used only on CUDA.

    Returns:
        float32 (N, D) features on the CPU.
    """
    _check_images(images)
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(f"mean and std need one value per channel ({images.shape[1]}), "
                         f"got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {tuple(std)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    was_training = encoder.training if isinstance(encoder, nn.Module) else None
    if isinstance(encoder, nn.Module):
        encoder.eval()
    try:
        batches = [
            _encode(encoder, images[start : start + batch_size], mean, std, device)
            for start in range(0, images.shape[0], batch_size)
        ]
    finally:
        if isinstance(encoder, nn.Module):
            encoder.train(was_training)
    # Concatenating outside inference mode gives an ordinary tensor, which autograd can
    # save for backward (the linear probe trains on these features).
    return torch.cat(batches)


def _encode(
    encoder: Callable[[Tensor], Tensor],
    batch: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
) -> Tensor:
    """One uint8 batch (B, C, H, W) -> float32 CPU features (B, D)."""
    with torch.inference_mode():
        x = batch.to(device, non_blocking=True).float().div_(255)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        x = (x - mean_t) / std_t
        # bf16 doubles throughput on GPUs; on the CPU it is slower and changes results.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            features = encoder(x)
        if features.ndim != 2:
            raise ValueError(f"encoder must return (B, D) features, got {tuple(features.shape)}")
        return features.float().cpu()


def pixel_features(images: Tensor) -> Tensor:
    """The raw-pixel floor: uint8 (N, C, H, W) -> float32 (N, C*H*W) in [0, 1], on the CPU."""
    _check_images(images)
    return images.reshape(images.shape[0], -1).cpu().float().div_(255)


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is empty")
