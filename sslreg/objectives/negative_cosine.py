"""SimSiam's negative cosine similarity with a stop-gradient on the target."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class NegativeCosineLoss(nn.Module):
    """SimSiam's D(p, z) = -cos(p, stopgrad(z)), averaged over the batch.

    Chen and He 2021, "Exploring Simple Siamese Representation Learning" (SimSiam),
    eq. 1 and 3. The stop-gradient on ``z`` is what keeps SimSiam from collapsing, so it
    lives in the loss rather than in every method: ``z`` receives no gradient. The
    symmetric SimSiam loss is ``(D(p1, z2) + D(p2, z1)) / 2``, built by the method.

    Shapes:
        p: (N, D) predictor outputs; z: (N, D) projections (the targets). Returns a
        scalar in [-1, 1].
    """

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        if p.ndim != 2 or p.shape != z.shape:
            raise ValueError(
                "negative_cosine needs p and z of the same shape (N, D), "
                f"got {tuple(p.shape)} and {tuple(z.shape)}"
            )
        if p.shape[0] < 1:
            raise ValueError("negative_cosine needs a non-empty batch, got N = 0")
        # float32 even under autocast: the norms of wide bf16 vectors lose precision.
        return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()
