"""One rule for the sizes a ViT sees: its patch for an image side, and the multi-crop
global and local crop sides derived from it.

The ViT backbones (:mod:`sslreg.backbones`) take their patch from :func:`vit_patch_size`
and the multi-crop views (:class:`sslreg.views.policies.MultiCropViews`, DINO's and
SwAV's) take their crop sides from :func:`multicrop_sizes` and check an explicit local
side with :func:`check_local_size`. A view policy does not know which backbone it feeds,
so every crop it makes is a multiple of the ViT patch at that image size: a ViT
(which only takes whole patches) and a convnet (which takes anything) both work.
"""

from __future__ import annotations

import math

from sslreg.errors import ConfigError

# 4 px patches suit 28-32 px images (7x7 or 8x8 patches, the usual ViT-on-CIFAR
# setting); larger images keep about an 8x8 grid, so the token count (and the cost of
# attention) stays that of a 32 px image instead of growing with the square of the side.
SMALL_PATCH = 4
GRID_SIDE = 8
# The multi-crop papers' local crops are 96 px for 224 px global crops (DINO, SwAV).
LOCAL_TO_GLOBAL = 96 / 224
# A local crop smaller than 8 px leaves a convnet almost nothing to look at.
MIN_LOCAL = 8


def vit_patch_size(image_size: int) -> int:
    """The ViT patch side for ``image_size`` px images: the largest divisor of the side
    that is at most max(4, side // 8), so that whole patches tile the image (4 at 28 and
    32 px, 8 at 64, 12 at 96)."""
    target = max(SMALL_PATCH, image_size // GRID_SIDE)
    for patch in range(min(target, image_size), 1, -1):
        if image_size % patch == 0:
            return patch
    raise ConfigError(f"a ViT cannot tile {image_size} px images with square patches "
                      f"of 2..{target} px; use an image side with such a divisor, e.g. "
                      f"{target * math.ceil(image_size / target)}")


def multicrop_sizes(image_size: int) -> tuple[int, int]:
    """(global, local) crop sides for multi-crop views of ``image_size`` px images.

    The global crops are the whole side (a multiple of the patch by construction); the
    local side is the papers' 96/224 of it rounded to whole patches, at least 8 px: 12
    at 28 and 32 px (3x3 patches of 4), 24 at 64 px, 36 at 96 px.
    """
    patch = vit_patch_size(image_size)
    patches = max(round(image_size * LOCAL_TO_GLOBAL / patch), math.ceil(MIN_LOCAL / patch))
    return image_size, min(patches * patch, image_size)


def valid_local_sizes(image_size: int) -> list[int]:
    """Every local crop side a ViT can take at ``image_size`` px: whole patches, up to
    the image side."""
    patch = vit_patch_size(image_size)
    return list(range(patch, image_size + 1, patch))


def check_local_size(local_size: int, image_size: int, policy: str = "multi-crop") -> int:
    """``local_size`` if it is in :func:`valid_local_sizes`, else a one-line
    :class:`ConfigError` naming the valid sides."""
    valid = valid_local_sizes(image_size)
    if local_size not in valid:
        raise ConfigError(
            f"view policy {policy}: local_size={local_size} does not fit {image_size} px "
            f"images; it must be a multiple of the ViT patch ({vit_patch_size(image_size)} "
            f"px) no larger than the image: one of {', '.join(map(str, valid))} "
            f"(default {multicrop_sizes(image_size)[1]})")
    return local_size
