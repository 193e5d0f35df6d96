"""Vision Transformer for small images (Dosovitskiy et al. 2021; DeiT-Tiny sizes from
Touvron et al. 2021), with the token access MAE and DINO need.

Positions are fixed 2-D sine-cosine embeddings (as MAE and MoCo v3 use), computed for
whatever patch grid arrives, so multi-crop's small local crops need no interpolation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg.interfaces import BackboneExport


def sincos_positions(height: int, width: int, dim: int) -> Tensor:
    """(height * width, dim) fixed 2-D sine-cosine position embeddings, row-major.

    Half the channels encode the row, half the column; each half is [sin, cos] of the
    coordinate times frequencies 1 / 10000^(i / (dim / 4)).
    """
    if dim % 4:
        raise ValueError(f"sine-cosine positions need a width divisible by 4, got {dim}")
    frequencies = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                                torch.arange(width, dtype=torch.float64), indexing="ij")
    parts = []
    for coordinate in (rows.flatten(), cols.flatten()):
        angles = coordinate[:, None] * frequencies[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, head_dim)
        return q, k, v

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._qkv(x)
        # Fused kernels (flash / memory-efficient) on GPU; never materialises T x T.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).flatten(2))

    def weights(self, x: Tensor) -> Tensor:
        """(B, heads, T, T) softmax attention, for visualisation."""
        q, k, _ = self._qkv(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return scores.softmax(dim=-1)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT returning the final [CLS] token (B, output_dim), output_dim = embed_dim.

    Token access for methods that need it (:class:`sslreg.interfaces.ViTBackbone`):

    * :meth:`embed` -- patch tokens with positions, (B, N, D), no [CLS];
    * :meth:`encode` -- [CLS] + given tokens through the blocks and final norm;
    * :meth:`forward_tokens` -- both, for whole images: (B, 1 + N, D);
    * :meth:`last_self_attention` -- the last block's attention, (B, heads, 1+N, 1+N).

    Args:
        in_channels: 1 or 3.
        image_size: the training image side; must be a multiple of ``patch_size``.
        patch_size: 4 fits 28-32 px images (7x7 or 8x8 patches).
        embed_dim, depth, heads, mlp_ratio: transformer sizes (DeiT-Tiny: 192, 12, 3, 4).
    """

    def __init__(self, in_channels: int, image_size: int, *, patch_size: int = 4,
                 embed_dim: int = 192, depth: int = 12, heads: int = 3,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of the patch size "
                             f"{patch_size}")
        self.in_channels, self.image_size = in_channels, image_size
        self.depth, self.heads, self.mlp_ratio = depth, heads, mlp_ratio
        self.patch_size = patch_size
        self.embed_dim = self.output_dim = embed_dim
        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._positions: dict[tuple[int, int, torch.device], Tensor] = {}
        self._init_weights()

    def _init_weights(self) -> None:
        # As MAE / timm: xavier on the patch projection seen as a linear layer,
        # truncated normal (std 0.02) on [CLS], xavier on linears, unit LayerNorms.
        patch = self.patch_embed.weight
        nn.init.xavier_uniform_(patch.view(patch.shape[0], -1))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def grid(self, images: Tensor) -> tuple[int, int]:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch "
                             f"size {self.patch_size}")
        return height // self.patch_size, width // self.patch_size

    def positions(self, height: int, width: int, device: torch.device) -> Tensor:
        key = (height, width, device)
        if key not in self._positions:
            self._positions[key] = sincos_positions(height, width, self.embed_dim).to(device)
        return self._positions[key]

    def embed(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, D) patch tokens plus their positions."""
        height, width = self.grid(images)
        tokens = self.patch_embed(images).flatten(2).transpose(1, 2)
        return tokens + self.positions(height, width, images.device).to(tokens.dtype)

    def _with_cls(self, tokens: Tensor) -> Tensor:
        # [CLS] gets the zero position: it has no place on the grid.
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1).to(tokens.dtype),
                          tokens], dim=1)

    def encode(self, tokens: Tensor) -> Tensor:
        """(B, n, D) embedded tokens (any subset) -> (B, 1 + n, D) normalised outputs."""
        x = self._with_cls(tokens)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_tokens(self, images: Tensor) -> Tensor:
        return self.encode(self.embed(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_tokens(images)[:, 0]

    @torch.no_grad()
    def last_self_attention(self, images: Tensor) -> Tensor:
        """The last block's attention weights, (B, heads, 1 + N, 1 + N)."""
        x = self._with_cls(self.embed(images))
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1].attn.weights(self.blocks[-1].norm1(x))

    def exports(self) -> list[BackboneExport]:
        """timm's ``VisionTransformer`` key names for this network at its image size."""
        return [BackboneExport(library="timm", state_dict=self.timm_state_dict(),
                               code=self.timm_code())]

    def timm_state_dict(self) -> dict[str, Tensor]:
        """The same tensors under timm's names, plus timm's learned-position table filled
        with the fixed sine-cosine positions ([CLS] at position zero, as here)."""
        names = {"patch_embed.weight": "patch_embed.proj.weight",
                 "patch_embed.bias": "patch_embed.proj.bias"}
        state = {}
        for key, value in self.state_dict().items():
            key = names.get(key, key).replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.2.",
                                                                              ".mlp.fc2.")
            state[key] = value
        side = self.image_size // self.patch_size
        grid = sincos_positions(side, side, self.embed_dim)
        state["pos_embed"] = torch.cat([torch.zeros(1, self.embed_dim), grid])[None]
        return state

    def timm_code(self) -> str:
        return (
            "from safetensors.torch import load_file\n"
            "from timm.models.vision_transformer import VisionTransformer\n"
            f"model = VisionTransformer(img_size={self.image_size}, "
            f"patch_size={self.patch_size}, in_chans={self.in_channels}, "
            f"embed_dim={self.embed_dim}, depth={self.depth}, num_heads={self.heads}, "
            f"mlp_ratio={self.mlp_ratio}, num_classes=0, global_pool=\"token\")\n"
            "# For the mean of the patch tokens (MAE's readout) instead of [CLS]:\n"
            "# global_pool=\"avg\", fc_norm=False\n"
            "model.load_state_dict(load_file(path), strict=True)\n"
            "model.eval()\n")
