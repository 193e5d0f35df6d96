"""Backbones: a small-image ResNet-18 and a ViT, and the size rules they share with the
multi-crop views. The built-in specs are registered by :mod:`sslreg.builtins.backbones`."""

from __future__ import annotations

from sslreg.backbones.flops import forward_flops
from sslreg.backbones.resnet import ResNet18
from sslreg.backbones.sizes import multicrop_sizes, vit_patch_size
from sslreg.backbones.vit import ViT

__all__ = ["ResNet18", "ViT", "forward_flops", "multicrop_sizes", "vit_patch_size"]
