"""Model FLOPs utilisation (MFU): achieved model FLOPs/s over the device's peak.

Peaks are dense bf16 tensor-core rates with fp32 accumulation from the vendors' data
sheets (without 2:4 sparsity, which sslreg's models never use). MFU is only as honest as
this table: an unknown GPU or a CPU gets ``None``, and callers print "-" rather than guess.
"""

from __future__ import annotations

import re
from copy import deepcopy
from typing import Any

import torch

from sslreg.backbones.flops import forward_flops

# (model as a whole word of torch.cuda.get_device_name, upper-cased; dense bf16 FLOP/s).
# Whole words, so that "RTX A1000" is not taken for an A100. The first match wins: a
# more specific name comes before a shorter one ("H100 NVL" before "H100").
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 NVL", 835e12),
    ("H100 PCIE", 756e12),
    ("H100", 989e12),  # SXM, reported as "NVIDIA H100 80GB HBM3"
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("GH200", 989e12),  # the same Hopper tensor cores as the H100 SXM
    ("B200", 2250e12),
    ("A100", 312e12),  # SXM and PCIe, 40 and 80 GB alike
    ("A10G", 70e12),  # AWS's variant of the A10, with fewer tensor FLOPs
    ("A10", 125e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("RTX 4090", 165.2e12),
)


def peak_flops_for_name(name: str) -> float | None:
    """Dense bf16 peak FLOP/s of the GPU called ``name``, or None when it is not in the table."""
    upper = name.upper()
    for pattern, peak in PEAK_BF16_FLOPS:
        if re.search(rf"\b{pattern}\b", upper):
            return peak
    return None


def peak_flops(device: torch.device | str) -> float | None:
    """Dense bf16 peak FLOP/s of ``device``; None on the CPU or an unknown GPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return peak_flops_for_name(torch.cuda.get_device_name(device))


def training_flops_per_image(forward_flops: float, views: int) -> float:
    """FLOPs of one training step per source image.

    The backward pass costs about twice the forward (gradients with respect to both the
    activations and the weights), so forward + backward ~ 3 x forward: the usual
    convention of MFU reports (Kaplan et al. 2020; PaLM, Chowdhery et al. 2022). Each
    image is seen as ``views`` augmented views.
    """
    return 3.0 * forward_flops * views


def mfu(images_per_s: float, flops_per_image: float, peak: float | None) -> float | None:
    """Achieved model FLOP/s over ``peak`` (a fraction), or None without a known peak."""
    if peak is None:
        return None
    return images_per_s * flops_per_image / peak


def backbone_flops_per_image(backbone: torch.nn.Module, policy: Any,
                             images: torch.Tensor) -> float:
    """Training FLOPs per source image of the backbone over the policy's views.

    The views of two sample images give each view's size (multi-crop views are
    smaller); the backbone's forward is counted once per size on a CPU copy, then
    forward + backward is taken as 3 x forward. Heads, predictors and EMA teachers are
    not counted, so the MFU built on this is a lower bound for every method alike.
    """
    generator = torch.Generator(device=images.device).manual_seed(0)
    sizes = [tuple(view.shape[1:]) for view in policy(images[:2], generator)]
    copy = deepcopy(backbone).float().cpu()
    forward = {size: forward_flops(copy, size[0], size[-1]) for size in set(sizes)}
    return sum(training_flops_per_image(forward[size], 1) for size in sizes)
