"""Barlow Twins: push the cross-correlation matrix of the two views to the identity."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sslreg.distributed import gather_pair

# BatchNorm1d's default eps, as in the reference code; it also keeps a constant
# feature (std 0) finite instead of dividing by zero.
_STANDARDIZE_EPS = 1e-5


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins redundancy-reduction loss.

    Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
    Reduction", eq. 1. Each feature is standardised along the batch with the *biased*
    standard deviation (divide by N), as the reference code's ``BatchNorm1d(affine=False)``
    does: ``zn = (z - mean) / sqrt(var_biased + 1e-5)``. Then ``C = z1n.T @ z2n / N`` and
    ``loss = sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2``.

    Under ``torchrun`` N is the global batch: both views are gathered from every rank
    (with gradients) before standardising.

    Args:
        lambda_offdiag: Weight of the redundancy-reduction term, >= 0. The paper's
            default is 5e-3.

    Shapes:
        z1, z2: (N, D) projections of the two views, N >= 2. Returns a scalar.
    """

    def __init__(self, *, lambda_offdiag: float = 5e-3) -> None:
        super().__init__()
        if not (math.isfinite(lambda_offdiag) and lambda_offdiag >= 0):
            raise ValueError(
                f"barlow_twins lambda_offdiag must be a finite number >= 0, got {lambda_offdiag}"
            )
        self.lambda_offdiag = float(lambda_offdiag)

    def extra_repr(self) -> str:
        return f"lambda_offdiag={self.lambda_offdiag}"

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(
                "barlow_twins needs z1 and z2 of the same shape (N, D), "
                f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        n = z1.shape[0]
        if n < 2:
            raise ValueError(f"barlow_twins needs a batch of at least 2 to standardize, got {n}")
        # Under torchrun: the global batch, so the statistics and C are one process's.
        # Every rank then computes the whole loss, O(B D^2), cheaper to write than
        # all-reducing partial sums and small beside the backbone.
        z1, z2 = gather_pair(z1, z2)
        n = z1.shape[0]
        # float32 even under autocast: the D x D sums lose precision in bf16.
        c = _standardize(z1.float()).T @ _standardize(z2.float()) / n  # (D, D)
        diagonal = torch.diagonal(c)
        on_diag = (1 - diagonal).pow(2).sum()
        off_diag = c.pow(2).sum() - diagonal.pow(2).sum()
        return on_diag + self.lambda_offdiag * off_diag


def _standardize(z: Tensor) -> Tensor:
    """Mean 0, biased std 1 along the batch (dim 0)."""
    centered = z - z.mean(dim=0)
    return centered / torch.sqrt(centered.pow(2).mean(dim=0) + _STANDARDIZE_EPS)
