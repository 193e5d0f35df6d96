"""RankMe, the effective rank of the embeddings (Garrido et al. 2023; Roy & Vetterli 2007).

exp of the entropy of the normalised singular values: D for embeddings that use every
dimension evenly, 1 for a collapse onto a line (dimensional collapse shows as a low rank).
"""

from __future__ import annotations

import torch
from torch import Tensor


class RankMe:
    """Effective rank of a (B, D) embedding batch.

    Args:
        min_rank: collapse is flagged below this effective rank.
    """

    name = "rankme"

    def __init__(self, min_rank: float = 2.0, eps: float = 1e-7) -> None:
        self.min_rank = min_rank
        self.eps = eps

    @torch.no_grad()
    def __call__(self, embeddings: Tensor) -> dict[str, float]:
        singular_values = torch.linalg.svdvals(embeddings.float())
        p = singular_values / (singular_values.sum() + self.eps) + self.eps
        rank = torch.exp(-(p * p.log()).sum()).item()
        return {"rankme": rank}

    def collapsed(self, metrics: dict[str, float]) -> str | None:
        value = metrics.get("rankme")
        if value is not None and value < self.min_rank:
            return f"effective rank (RankMe) = {value:.2f}: the embeddings span about one direction"
        return None
