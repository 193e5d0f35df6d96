"""timm backbones for sslreg: timm's architectures, randomly initialised, by name.

Registers ``timm/resnet18`` and ``timm/resnet50`` (family ``"convnet"``) and
``timm/vit_tiny_patch16_224`` and ``timm/vit_small_patch16_224`` (family ``"vit"``, with
the token API MAE and DINO read). The plugin's README.md says how each is built, what it
does at small image sizes, and what its ``exports()`` give.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from sslreg import BackboneSpec, hookimpl

NAMESPACE = "timm"


@attrs.frozen
class Model:
    """One timm architecture to register: timm's name, the family, a description and any
    options for ``timm.create_model`` beyond the ones every backbone gets."""

    name: str
    family: str
    description: str
    options: dict[str, Any] = attrs.field(factory=dict)


# timm zero-initialises each residual branch's last BatchNorm scale; then a fresh
# network's branches output 0, no gradient reaches their other layers at the first step
# (the core's backbone contract fails) and the random-init floor reads only what the
# shortcuts pass. Off, as in torchvision and the built-in ResNet-18.
RESNET = {"zero_init_last": False}


# The registered models, one line each. Each must take 1x28 and 3x32 px images (the
# core's backbone contract) in seconds on a CPU.
MODELS = (
    Model("resnet18", "convnet", "timm's ResNet-18 as timm defines it (7x7 stride-2 stem and "
          "max-pool: 1x1 maps at the last stage at 28-32 px), 512-d pooled features", RESNET),
    Model("resnet50", "convnet", "timm's ResNet-50 as timm defines it (7x7 stride-2 stem and "
          "max-pool: 1x1 maps at the last stage at 28-32 px), 2048-d pooled features", RESNET),
    Model("vit_tiny_patch16_224", "vit", "timm's ViT-Ti (192-d, 12 blocks, 3 heads, learned "
          "positions) at the run's image size with sslreg's patch (4 px at 28-32 px, see "
          "sslreg.backbones.vit_patch_size), [CLS] features"),
    Model("vit_small_patch16_224", "vit", "timm's ViT-S (384-d, 12 blocks, 6 heads, learned "
          "positions) at the run's image size with sslreg's patch (4 px at 28-32 px, see "
          "sslreg.backbones.vit_patch_size), [CLS] features"),
)


def factory(model: Model) -> Callable[..., Any]:
    """``factory(in_channels, image_size)`` building the wrapper of ``model``'s family."""
    def build(in_channels: int, image_size: int) -> Any:
        # Imported here: timm takes seconds to import, and only a run that builds one of
        # its models should pay that (not `sslreg --help`, not every plugin listing).
        if model.family == "vit":
            from sslreg_timm.vit import TimmViT as wrapper
        else:
            from sslreg_timm.convnet import TimmConvNet as wrapper
        return wrapper(model.name, in_channels, image_size, **model.options)

    return build


def spec(model: Model) -> BackboneSpec:
    return BackboneSpec(name=f"{NAMESPACE}/{model.name}", factory=factory(model),
                        family=model.family, description=model.description)


@hookimpl
def register_backbones(register: Callable[[BackboneSpec], None]) -> None:
    for model in MODELS:
        register(spec(model))
