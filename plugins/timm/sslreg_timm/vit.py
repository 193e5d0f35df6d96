"""A timm VisionTransformer as an sslreg ViT backbone, with the token API MAE and DINO
read (:class:`sslreg.interfaces.ViTBackbone`).

The model is timm's, built for the run's images: ``img_size`` is the image side and
``patch_size`` comes from :func:`sslreg.backbones.vit_patch_size`, the rule the built-in
ViTs and the multi-crop views share (4 px at 28-32 px, about an 8x8 grid above), so
every crop a view policy makes is whole patches. Its learned positions are for that
grid; a smaller crop (multi-crop's local views) gets them resampled by timm's
``resample_abs_pos_embed``, as timm itself does with ``dynamic_img_size``, which the
model is built with so that timm takes those crops too.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from torch import Tensor, nn

from sslreg.backbones import vit_patch_size
from sslreg.errors import ConfigError
from sslreg.interfaces import BackboneExport
from sslreg_timm.common import create, creation_options, timm_export


class TimmViT(nn.Module):
    """timm's ViT ``name``: (B, C, H, W) -> (B, embed_dim) [CLS] token after the final
    norm, which is what timm's own ``model(images)`` returns without a classifier."""

    def __init__(self, name: str, in_channels: int, image_size: int, **options: Any) -> None:
        super().__init__()
        self.timm_name = name
        self.options = creation_options(in_channels, img_size=image_size,
                                        patch_size=_patch_size(name, image_size),
                                        dynamic_img_size=True, **options)
        self.model = create(name, self.options)
        check_plain_vit(f"timm/{name}", self.model)
        self.in_channels = in_channels
        self.patch_size = self.options["patch_size"]
        self.embed_dim = self.output_dim = int(self.model.embed_dim)

    def grid(self, images: Tensor) -> tuple[int, int]:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch "
                             f"size {self.patch_size}")
        return height // self.patch_size, width // self.patch_size

    def _positions(self) -> tuple[Tensor | None, Tensor]:
        """(the class token's position or None, the built grid's patch positions)."""
        positions = self.model.pos_embed
        if self.model.no_embed_class:  # DeiT III style: the class token has no position
            return None, positions
        return positions[:, :1], positions[:, 1:]

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, D) patch tokens plus their positions, no [CLS]."""
        rows, cols = self.grid(images)
        tokens = self.model.patch_embed(images).flatten(1, 2)  # (B, rows, cols, D) -> (B, N, D)
        _, positions = self._positions()
        positions = resample_abs_pos_embed(positions, new_size=[rows, cols],
                                           old_size=self.model.patch_embed.grid_size,
                                           num_prefix_tokens=0)
        return tokens + positions

    def _with_cls(self, tokens: Tensor) -> Tensor:
        """[CLS] (with its position) first, then pos_drop and norm_pre, as timm orders them."""
        cls_position, _ = self._positions()
        cls = self.model.cls_token if cls_position is None else \
            self.model.cls_token + cls_position
        x = torch.cat([cls.expand(len(tokens), -1, -1).to(tokens.dtype), tokens], dim=1)
        return self.model.norm_pre(self.model.pos_drop(x))

    def encode(self, tokens: Tensor) -> Tensor:
        """(B, n, D) embedded tokens (any subset) -> (B, 1 + n, D) after the final norm."""
        return self.model.norm(self.model.blocks(self._with_cls(tokens)))

    def forward_tokens(self, images: Tensor) -> Tensor:
        return self.encode(self.embed(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_tokens(images)[:, 0]

    @torch.no_grad()
    def last_self_attention(self, images: Tensor) -> Tensor:
        """The last block's softmax attention, (B, heads, 1 + N, 1 + N), [CLS] first."""
        x = self._with_cls(self.embed(images))
        *first, last = self.model.blocks
        for block in first:
            x = block(x)
        return attention_weights(last.attn, last.norm1(x))

    def exports(self) -> list[BackboneExport]:
        return [timm_export(self.timm_name, self.options, self.model)]


def attention_weights(attention: nn.Module, x: Tensor) -> Tensor:
    """(B, T, D) -> (B, heads, T, T): the softmax weights timm's ``Attention`` computes
    from its qkv projection and q/k norms (its fused kernel never forms them)."""
    batch, tokens, _ = x.shape
    qkv = attention.qkv(x).reshape(batch, tokens, 3, attention.num_heads, -1)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
    q, k = attention.q_norm(q), attention.k_norm(k)
    return (q * attention.scale @ k.transpose(-2, -1)).softmax(dim=-1)


def _patch_size(name: str, image_size: int) -> int:
    try:
        return vit_patch_size(image_size)
    except ConfigError as error:
        raise ConfigError(f"timm/{name}: {error}") from None


def check_plain_vit(label: str, model: nn.Module) -> None:
    """Refuse a ViT whose tokens the wrapper would get wrong: it reads one class token and
    learned absolute positions, and the weights of timm's plain ``Attention``."""
    needs = {
        "a class token": getattr(model, "cls_token", None) is not None,
        "no register tokens": getattr(model, "reg_token", None) is None,
        "learned absolute positions": getattr(model, "pos_embed", None) is not None,
        "[CLS] pooling (global_pool='token')": getattr(model, "global_pool", None) == "token",
        "timm's Attention (qkv, q_norm, k_norm)": all(
            hasattr(block.attn, part) for block in model.blocks
            for part in ("qkv", "q_norm", "k_norm", "scale", "num_heads")),
    }
    missing = [need for need, met in needs.items() if not met]
    if missing:
        raise ConfigError(f"{label} does not fit the ViT token API: it needs "
                          f"{', '.join(missing)}")
