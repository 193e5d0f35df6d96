"""Built-in backbones, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable

from sslreg.backbones.flops import forward_flops
from sslreg.backbones.resnet import ResNet18
from sslreg.hookspecs import hookimpl
from sslreg.specs import BackboneSpec

__all__ = ["ResNet18", "forward_flops", "register_backbones"]


def _resnet18(width: int, stem_stride: int) -> Callable[..., ResNet18]:
    def build(in_channels: int, image_size: int) -> ResNet18:
        return ResNet18(in_channels, width=width, stem_stride=stem_stride)

    return build


@hookimpl
def register_backbones(register: Callable[[BackboneSpec], None]) -> None:
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
