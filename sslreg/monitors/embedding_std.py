"""Standard deviation of L2-normalised embeddings (Chen & He 2021, SimSiam, sec. 4.1).

For embeddings spread over the unit sphere each dimension's std is about 1/sqrt(D); a
collapsed representation (every sample mapped to one point) has std 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class EmbeddingStd:
    """Mean over dimensions of the per-dimension std of L2-normalised embeddings.

    Args:
        threshold: collapse is flagged when ``std * sqrt(D)`` falls below this fraction
            of the healthy value 1.
    """

    name = "embedding_std"

    def __init__(self, threshold: float = 0.1) -> None:
        self.threshold = threshold

    @torch.no_grad()
    def __call__(self, embeddings: Tensor) -> dict[str, float]:
        z = F.normalize(embeddings.float(), dim=1)  # (B, D)
        std = z.std(dim=0).mean().item()
        return {"embedding_std": std, "embedding_std_x_sqrt_d": std * math.sqrt(z.shape[1])}

    def collapsed(self, metrics: dict[str, float]) -> str | None:
        value = metrics.get("embedding_std_x_sqrt_d")
        if value is not None and value < self.threshold:
            return (f"embedding std x sqrt(D) = {value:.3f} (healthy is about 1): "
                    "the embeddings are collapsing to a point")
        return None
