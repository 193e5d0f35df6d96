"""MAE's lightweight decoder: encoded visible tokens + mask tokens -> patch pixels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslreg.backbones.vit import Block, sincos_positions


class MAEDecoder(nn.Module):
    """Linear embed -> [CLS, tokens unshuffled with mask tokens] + fixed 2-D sin-cos
    positions -> transformer blocks -> LayerNorm -> Linear to p * p * C pixels.

    Args:
        encoder_dim: width of the encoder's tokens.
        dim, depth, heads: the decoder's transformer sizes.
        patch_pixels: p * p * C, the pixels one token predicts.
        mlp_ratio: the blocks' hidden width over ``dim`` (4 as the paper).
    """

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int,
                 patch_pixels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, patch_pixels)
        self._positions: dict[tuple[int, int, torch.device], Tensor] = {}
        self._init_weights()

    def _init_weights(self) -> None:
        # As the MAE code: normal(0.02) mask token, xavier-uniform linears, zero biases.
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def positions(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        # Cached per grid and device: a fresh host-to-device copy per step would sync.
        key = (*grid, device)
        if key not in self._positions:
            self._positions[key] = sincos_positions(*grid, self.dim).to(device)
        return self._positions[key]

    def forward(self, latent: Tensor, restore: Tensor, grid: tuple[int, int]) -> Tensor:
        """latent (B, 1 + K, D_enc) encoder output ([CLS] first), restore (B, L) from
        :func:`sslreg_mae.patches.random_masking` -> (B, L, p * p * C) in patch order."""
        x = self.embed(latent)  # (B, 1 + K, dim)
        cls, visible = x[:, :1], x[:, 1:]
        batch, keep, dim = visible.shape
        masked = self.mask_token.to(x.dtype).expand(batch, restore.shape[1] - keep, -1)
        x = torch.cat([visible, masked], dim=1)  # (B, L, dim), shuffled order
        x = x.gather(1, restore.unsqueeze(-1).expand(-1, -1, dim))  # original order
        x = x + self.positions(grid, x.device).to(x.dtype)
        # [CLS] takes part in attention with the zero position, as in the encoder.
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))[:, 1:]
