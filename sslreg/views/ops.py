"""Batched augmentation primitives on float images in [0, 1], shape (B, C, H, W).

Every random operation draws its per-sample parameters from a ``torch.Generator`` that
lives on the images' device, so a whole batch is augmented by a handful of tensor kernels
(on the GPU when the data is there) and the same generator seed gives the same views.
No Python loop over samples and no host-device synchronisation: nothing here reads a
random value back to Python.

Probabilities ``p`` are per sample: a float (the same for every sample) or a (B,) tensor
(one per sample, e.g. a different probability per view when views share one batch).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Probability = float | Tensor

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ (NTSC); a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)


def _uniform(
    batch: int, low: float, high: float, generator: torch.Generator, like: Tensor
) -> Tensor:
    """(B,) samples from U(low, high) on ``like``'s device."""
    u = torch.rand(batch, generator=generator, device=like.device, dtype=like.dtype)
    return u * (high - low) + low


def _always(p: Probability) -> bool:
    return isinstance(p, (int, float)) and p >= 1.0


def _never(p: Probability) -> bool:
    return isinstance(p, (int, float)) and p <= 0.0


def sample_mask(batch: int, p: Probability, generator: torch.Generator, like: Tensor) -> Tensor:
    """(B,) bool: True with probability ``p`` (a float or a (B,) tensor) per sample."""
    u = torch.rand(batch, generator=generator, device=like.device)
    return u < p


def _per_sample(values: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1), to broadcast a per-sample value over an image batch."""
    return values.view(-1, 1, 1, 1)


def _size_pair(size: int | Sequence[int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return default
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def axis_aligned_grid(
    scale_x: Tensor, shift_x: Tensor, scale_y: Tensor, shift_y: Tensor, size: tuple[int, int]
) -> Tensor:
    """``F.affine_grid`` for the affine [[scale_x, 0, shift_x], [0, scale_y, shift_y]].

    Without rotation or shear, x depends only on the column and y only on the row, so
    the grid is two broadcast rows stacked: several times cheaper than ``affine_grid``'s
    batched matmul over every pixel, whose cost dominated the crop on the CPU. Same
    convention as ``affine_grid(..., align_corners=False)``.

    Args:
        scale_x, shift_x, scale_y, shift_y: (B,) affine coefficients.
        size: output (height, width).

    Returns:
        (B, height, width, 2) sampling grid, x first.
    """
    height, width = size
    # Pixel centres in normalised coordinates: -1 + (2i + 1) / n.
    cols = (torch.arange(width, device=scale_x.device, dtype=scale_x.dtype) * 2 + 1) / width - 1
    rows = (torch.arange(height, device=scale_x.device, dtype=scale_x.dtype) * 2 + 1) / height - 1
    grid_x = scale_x.view(-1, 1) * cols + shift_x.view(-1, 1)  # (B, W)
    grid_y = scale_y.view(-1, 1) * rows + shift_y.view(-1, 1)  # (B, H)
    batch = grid_x.shape[0]
    return torch.stack(
        [
            grid_x.unsqueeze(1).expand(batch, height, width),
            grid_y.unsqueeze(2).expand(batch, height, width),
        ],
        dim=-1,
    )


def random_resized_crop(
    x: Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    out_size: int | Sequence[int] | None = None,
    flip_p: Probability = 0.0,
) -> Tensor:
    """Crop a random box of each image and resize it, with an optional horizontal flip.

    As torchvision's ``RandomResizedCrop`` but sampled once, without its rejection loop:
    the box side is clamped to the image side instead. One affine grid
    (:func:`axis_aligned_grid`) and one bilinear ``grid_sample`` call handle the whole
    batch and resample straight to ``out_size``, so small (multi-crop) views cost no
    full-resolution work.

    Args:
        x: (B, C, H, W) float images.
        generator: random generator on ``x``'s device.
        scale: range of the box area as a fraction of the image area (uniform).
        ratio: range of the box aspect ratio width/height (log-uniform).
        out_size: output (height, width) or side; default (H, W).
        flip_p: per-sample probability of a horizontal flip (a negative x scale).

    Returns:
        (B, C, out_h, out_w) float images.
    """
    batch, _, height, width = x.shape
    out_h, out_w = _size_pair(out_size, (height, width))
    area = _uniform(batch, scale[0], scale[1], generator, x)
    aspect = torch.exp(_uniform(batch, math.log(ratio[0]), math.log(ratio[1]), generator, x))
    # Box sides as fractions of the image sides; torchvision's box is sqrt(area*H*W*aspect)
    # pixels wide.
    box_w = torch.sqrt(area * aspect * height / width).clamp(max=1.0)
    box_h = torch.sqrt(area / aspect * width / height).clamp(max=1.0)
    # Centre in normalised [-1, 1] coordinates, so that the whole box stays inside.
    centre_x = _uniform(batch, -1.0, 1.0, generator, x) * (1 - box_w)
    centre_y = _uniform(batch, -1.0, 1.0, generator, x) * (1 - box_h)
    if not _never(flip_p):
        flip = sample_mask(batch, flip_p, generator, x)
        box_w = torch.where(flip, -box_w, box_w)
    grid = axis_aligned_grid(box_w, centre_x, box_h, centre_y, (out_h, out_w))
    # "border": bilinear taps just outside the box edge must not darken the crop.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def luma(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H, W) grey level (BT.601 for colour; the image itself for C=1)."""
    if x.shape[1] == 1:
        return x
    red, green, blue = x.unbind(dim=1)
    return (_LUMA[0] * red + _LUMA[1] * green + _LUMA[2] * blue).unsqueeze(1)


def _neutral_where_off(factor: Tensor, mask: Tensor | None, neutral: float) -> Tensor:
    # An exact neutral factor keeps masked-off samples bit-identical, at no extra pass.
    return factor if mask is None else torch.where(mask, factor, torch.full_like(factor, neutral))


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """x * f + other * (1 - f), clamped: exactly ``x`` for f = 1 (unlike a lerp)."""
    f = _per_sample(factor)
    return torch.addcmul(other * (1 - f), x, f).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor, mask: Tensor | None = None) -> Tensor:
    """Scale intensities by ``factor`` (B,) where ``mask`` (B,) is on; (B, C, H, W)."""
    factor = _neutral_where_off(factor, mask, 1.0)
    return (x * _per_sample(factor)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor, mask: Tensor | None = None) -> Tensor:
    """Blend with each image's mean grey level by ``factor`` (B,) where ``mask`` is on."""
    factor = _neutral_where_off(factor, mask, 1.0)
    mean = luma(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor, mask: Tensor | None = None) -> Tensor:
    """Blend each colour pixel with its grey level by ``factor`` (B,); identity for C=1."""
    if x.shape[1] == 1:
        return x
    factor = _neutral_where_off(factor, mask, 1.0)
    return _blend(x, luma(x), factor)


@functools.lru_cache(maxsize=8)
def _hue_basis(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Constant 3x3 matrices A, Bc, Bs with rotation(angle) = A + cos*Bc + sin*Bs in RGB.

    Cached per device so that no per-batch host-to-device copy is needed.
    """
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
    to_rgb = torch.linalg.inv(to_yiq)
    luma_part = to_rgb[:, :1] @ to_yiq[:1]
    cos_part = to_rgb[:, 1:] @ to_yiq[1:]
    quarter_turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    sin_part = to_rgb[:, 1:] @ quarter_turn @ to_yiq[1:]

    def place(matrix: Tensor) -> Tensor:
        return matrix.to(device=device, dtype=torch.float32)

    return place(luma_part), place(cos_part), place(sin_part)


def adjust_hue(x: Tensor, factor: Tensor, mask: Tensor | None = None) -> Tensor:
    """Shift hue by ``factor`` (B,) turns in [-0.5, 0.5] where ``mask`` is on; C=1 unchanged.

    A rotation of the YIQ chroma plane: one (B, 3, 3) matrix per sample and one batched
    matmul, a close and much cheaper stand-in for torchvision's HSV round trip.
    """
    if x.shape[1] == 1:
        return x
    batch, channels, height, width = x.shape
    # YIQ angles run against HSV hue (red -> yellow is clockwise), hence the minus.
    angle = (-2 * math.pi * factor).view(batch, 1, 1)
    luma_part, cos_part, sin_part = _hue_basis(x.device)
    rotation = luma_part + torch.cos(angle) * cos_part + torch.sin(angle) * sin_part  # (B, 3, 3)
    rotated = torch.bmm(rotation.to(x.dtype), x.reshape(batch, channels, height * width))
    rotated = rotated.view_as(x).clamp_(0.0, 1.0)
    return rotated if mask is None else torch.where(_per_sample(mask), rotated, x)


def random_order(n: int, generator: torch.Generator) -> list[int]:
    """A random permutation of ``range(n)`` that follows ``generator`` without a device sync.

    Reading a permutation drawn on the GPU would block until the device catches up; the
    generator's state lives on the host for CPU and CUDA generators alike, so a digest of
    it seeds a small CPU generator instead. Draw something from ``generator`` first, so
    that successive calls see different states.
    """
    digest = hashlib.blake2b(generator.get_state().numpy().tobytes(), digest_size=8).digest()
    host = torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
    return torch.randperm(n, generator=host).tolist()


def color_jitter(
    x: Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
    p: Probability = 0.8,
) -> Tensor:
    """torchvision's ``RandomApply([ColorJitter(...)], p)``, batched.

    Factors are per sample (brightness, contrast, saturation uniform in
    [max(0, 1 - s), 1 + s], hue in [-hue, hue]); the order of the adjustments is random
    per batch. Saturation and hue are skipped for 1-channel images.

    Args:
        x: (B, C, H, W) float images in [0, 1].
        generator: random generator on ``x``'s device.

    Returns:
        (B, C, H, W) jittered images.
    """
    if _never(p):
        return x
    batch = x.shape[0]
    mask = None if _always(p) else sample_mask(batch, p, generator, x)
    strengths = {"brightness": brightness, "contrast": contrast}
    if x.shape[1] == 3:
        strengths |= {"saturation": saturation, "hue": hue}
    adjustments = []
    for name, strength in strengths.items():
        if strength <= 0:
            continue
        low, high = (
            (-strength, strength) if name == "hue" else (max(0.0, 1 - strength), 1 + strength)
        )
        adjustments.append((_ADJUST[name], _uniform(batch, low, high, generator, x)))
    for index in random_order(len(adjustments), generator):
        adjust, factor = adjustments[index]
        x = adjust(x, factor, mask)
    return x


_ADJUST = {
    "brightness": adjust_brightness,
    "contrast": adjust_contrast,
    "saturation": adjust_saturation,
    "hue": adjust_hue,
}


def random_grayscale(x: Tensor, generator: torch.Generator, p: Probability = 0.2) -> Tensor:
    """Replace colour images by their BT.601 grey level (on all 3 channels) with prob. ``p``.

    1-channel images are returned unchanged. (B, C, H, W) -> (B, C, H, W).
    """
    if x.shape[1] == 1 or _never(p):
        return x
    grey = luma(x).expand_as(x)
    if _always(p):
        return grey.contiguous()
    mask = sample_mask(x.shape[0], p, generator, x)
    return torch.where(_per_sample(mask), grey, x)


def default_kernel_size(image_side: int) -> int:
    """SimCLR's blur kernel: about 10% of the image side, odd, at least 3."""
    return max(3, int(0.1 * image_side) // 2 * 2 + 1)


def _gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """(B,) sigmas -> (B, K) normalised 1-D Gaussian kernels."""
    offsets = torch.arange(kernel_size, device=sigma.device, dtype=sigma.dtype) - kernel_size // 2
    kernels = torch.exp(-(offsets**2) / (2 * sigma.unsqueeze(1) ** 2))
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(
    x: Tensor,
    generator: torch.Generator,
    p: Probability,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
) -> Tensor:
    """Gaussian blur with a per-sample sigma ~ U(sigma), applied with probability ``p``.

    Separable: one grouped convolution per axis over all B*C planes at once, with
    reflect padding (as torchvision).

    Args:
        x: (B, C, H, W) float images.
        generator: random generator on ``x``'s device.
        p: per-sample probability of blurring.
        sigma: range of the standard deviation, in pixels.
        kernel_size: odd kernel side; default :func:`default_kernel_size` of min(H, W).

    Returns:
        (B, C, H, W) images.
    """
    batch, channels, height, width = x.shape
    size = kernel_size or default_kernel_size(min(height, width))
    radius = size // 2
    if size % 2 == 0 or radius >= min(height, width):
        raise ValueError(f"blur kernel_size={size} must be odd and smaller than 2x the image side")
    if _never(p):
        return x
    mask = None if _always(p) else sample_mask(batch, p, generator, x)
    kernels = _gaussian_kernels(_uniform(batch, sigma[0], sigma[1], generator, x), size)
    weight = kernels.repeat_interleave(channels, dim=0)  # (B*C, K)
    planes = batch * channels
    y = F.pad(x.reshape(1, planes, height, width), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, weight.view(planes, 1, 1, size), groups=planes)  # along W
    y = F.conv2d(y, weight.view(planes, 1, size, 1), groups=planes)  # along H
    y = y.view_as(x)
    return y if mask is None else torch.where(_per_sample(mask), y, x)


def solarize(
    x: Tensor, generator: torch.Generator, p: Probability, threshold: float = 0.5
) -> Tensor:
    """Invert pixels at or above ``threshold`` (x -> 1 - x) with per-sample prob. ``p``."""
    if _never(p):
        return x
    invert = x >= threshold
    if not _always(p):
        invert = invert & _per_sample(sample_mask(x.shape[0], p, generator, x))
    return torch.where(invert, 1.0 - x, x)


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Per-channel standardisation, without augmentation (also for evaluation).

    Args:
        x: (..., C, H, W) uint8 images in [0, 255] or float images in [0, 1].
        mean: C channel means, on the [0, 1] scale.
        std: C channel standard deviations, on the [0, 1] scale.

    Returns:
        (..., C, H, W) ``(x / 255 - mean) / std`` in float32 for uint8 input, else
        ``(x - mean) / std`` in the input's dtype.
    """
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"normalize takes uint8 or float images, got {x.dtype}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    mean_t = torch.as_tensor(mean, dtype=dtype, device=x.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=dtype, device=x.device).view(-1, 1, 1)
    channels = x.shape[-3]
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(
            f"normalize got {mean_t.numel()} means and {std_t.numel()} stds "
            f"for {channels}-channel images"
        )
    # x * scale + shift in one fused pass; the uint8 -> [0, 1] rescale folds into scale.
    scale = 1.0 / std_t if x.is_floating_point() else 1.0 / (255.0 * std_t)
    return torch.addcmul(-mean_t / std_t, x.to(dtype), scale)
