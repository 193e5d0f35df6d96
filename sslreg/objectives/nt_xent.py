"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg.distributed import gather_with_grad, global_mean, rank


class NTXentLoss(nn.Module):
    """SimCLR's contrastive loss over two views of the same batch.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations" (SimCLR), eq. 1. The 2N projections are L2-normalised; each of the
    2N anchors has its pair as the positive and the other 2N - 2 projections as
    negatives; the loss is the cross-entropy over cosine similarity / temperature,
    averaged over the 2N anchors. The loss is symmetric in ``z1`` and ``z2``.

    Under ``torchrun`` with W ranks each rank's anchors are its own 2N rows, scored
    against every rank's 2NW projections (gathered with gradients) less the anchor
    itself: one positive and 2NW - 2 negatives. The value returned is the mean of the
    ranks' losses, that of the global batch of NW images; see
    :mod:`sslreg.distributed` for the gradient convention.

    Args:
        temperature: Softmax temperature, > 0. The paper's default is 0.5.

    Shapes:
        z1, z2: (N, D) projections of the two views, N >= 2. Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.5) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"nt_xent temperature must be a finite number > 0, got {temperature}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                "nt_xent needs z1 and z2 of the same shape (N, D), "
                f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        n = z1.shape[0]
        if n < 2:
            raise ValueError(
                f"nt_xent needs a batch of at least 2 pairs to have negatives, got {n}"
            )
        # float32 even under autocast: logits / T are too coarse in bf16, overflow in fp16.
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D), this rank's anchors
        # Under torchrun the candidates are every rank's 2N projections, rank by rank;
        # this rank's own sit at ``offset``. With one process: z itself, offset 0.
        candidates = gather_with_grad(z)
        offset = rank() * 2 * n
        logits = z @ candidates.T / self.temperature  # (2N, 2N x ranks)
        # An anchor is never its own negative.
        columns = torch.arange(2 * n, device=z.device) + offset
        self_mask = columns[:, None] == torch.arange(len(candidates), device=z.device)
        logits = logits.masked_fill(self_mask, float("-inf"))
        index = torch.arange(n, device=z.device) + offset
        targets = torch.cat([index + n, index])  # row i's positive is its pair
        return global_mean(F.cross_entropy(logits, targets))
