"""CLIP's text encoder, small: a causal pre-norm transformer read at the EOS token.

Radford et al. 2021, sec. 2.4: token embedding + learned positions, masked (causal)
self-attention blocks, a final LayerNorm, the feature at the EOS token, then a linear
projection into the joint space. The initialisation follows the reference model's
(normal std 0.02 for tokens, 0.01 for positions, width^-0.5 scaled projections).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg_clip.tokenizer import EOS_ID


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where token t sees tokens 0..t only.

    The causal mask is why CLIP needs no padding mask: the EOS feature never sees the
    padding that follows it.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, L, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, L, hd)
        return self.proj(out.transpose(1, 2).flatten(2))  # (B, L, width)


class CausalBlock(nn.Module):
    """Pre-norm residual block: x + attn(LN(x)), then x + MLP(LN(x)), MLP ratio 4."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """(M, L) token ids, each row with one EOS -> (M, out_dim) text embeddings."""

    def __init__(self, *, vocab_size: int, context_length: int, width: int, layers: int,
                 heads: int, out_dim: int) -> None:
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positions = nn.Parameter(torch.empty(context_length, width))
        self.blocks = nn.ModuleList(CausalBlock(width, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, out_dim, bias=False)
        self._init_weights(width, layers)

    def _init_weights(self, width: int, layers: int) -> None:
        # The reference model's scheme: residual-branch outputs shrink with depth.
        residual_std = width**-0.5 * (2 * layers) ** -0.5
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positions, std=0.01)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=width**-0.5)
            nn.init.normal_(block.attn.proj.weight, std=residual_std)
            nn.init.normal_(block.mlp[0].weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp[2].weight, std=residual_std)
        nn.init.normal_(self.projection.weight, std=width**-0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"{length} tokens exceed the text context of "
                             f"{self.context_length}")
        x = self.token_embedding(tokens) + self.positions[:length]  # (M, L, width)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        # Each row's first EOS; argmax over a 0/1 row is a device op, no host sync.
        eos = (tokens == EOS_ID).int().argmax(dim=1)  # (M,)
        return self.projection(x[torch.arange(len(x), device=x.device), eos])  # (M, out_dim)
