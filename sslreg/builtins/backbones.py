"""Built-in backbones, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable

from sslreg.backbones import ResNet18, ViT, vit_patch_size
from sslreg.hookspecs import hookimpl
from sslreg.specs import BackboneSpec


def _resnet18(width: int, stem_stride: int) -> Callable[..., ResNet18]:
    def build(in_channels: int, image_size: int) -> ResNet18:
        return ResNet18(in_channels, width=width, stem_stride=stem_stride)

    return build


def _vit(**sizes: int) -> Callable[..., ViT]:
    def build(in_channels: int, image_size: int) -> ViT:
        # The multi-crop views size their crops by the same rule (sslreg.backbones.sizes).
        return ViT(in_channels, image_size, patch_size=vit_patch_size(image_size), **sizes)

    return build


@hookimpl
def register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    """Register the built-in backbones."""
    register(BackboneSpec(
        name="resnet18",
        factory=_resnet18(width=64, stem_stride=1),
        description="ResNet-18, small-image stem (3x3 conv, no max-pool), 512-d features; "
        "0.91 GFLOPs per 1x28x28 image (1.11 at 3x32x32)",
    ))
    register(BackboneSpec(
        name="resnet18-narrow",
        factory=_resnet18(width=16, stem_stride=2),
        description="ResNet-18 at 1/4 width with a stride-2 stem, 128-d features, for CPU "
        "budgets; 15.3 MFLOPs per 1x28x28 image (17.5 at 3x32x32)",
    ))
    register(BackboneSpec(
        name="vit-tiny",
        factory=_vit(embed_dim=192, depth=12, heads=3),
        family="vit",
        description="ViT-Tiny (DeiT sizes: 192-d, 12 blocks, 3 heads), 4x4 patches at 28-32 px "
        "(about 8x8 patches above, see sslreg.backbones.vit_patch_size), fixed "
        "sine-cosine positions, [CLS] features; 0.53 GFLOPs per 1x28x28 image (0.69 at "
        "3x32x32)",
    ))
    register(BackboneSpec(
        name="vit-mini",
        factory=_vit(embed_dim=128, depth=4, heads=4),
        family="vit",
        description="a 128-d, 4-block, 4-head ViT for CPU budgets, 4x4 patches at 28-32 px; "
        "79 MFLOPs per 1x28x28 image (103 at 3x32x32)",
    ))
