"""VICReg: variance-invariance-covariance regularisation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg.distributed import gather_pair

# The paper's epsilon inside the square root: it keeps the gradient of sqrt finite when
# a feature's variance reaches 0, which is exactly the collapse the term fights.
_VARIANCE_EPS = 1e-4


class VICRegLoss(nn.Module):
    """VICReg loss.

    Bardes, Ponce and LeCun 2022, "VICReg: Variance-Invariance-Covariance Regularization
    for Self-Supervised Learning", eq. 1-6, following the reference code:

    - invariance: ``mse(z1, z2)``, the mean over all N * D entries;
    - variance: ``mean_d relu(1 - sqrt(var_d + 1e-4))`` per branch, with the *unbiased*
      variance (N - 1), averaged over the two branches;
    - covariance: the sum of squared off-diagonal entries of each branch's unbiased
      covariance matrix, divided by D, summed over the two branches.

    ``loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance``.

    Under ``torchrun`` N is the global batch: both branches are gathered from every rank
    (with gradients) first, so all three terms are those of the whole batch.

    Args:
        sim_coeff: Weight of the invariance term (lambda in the paper), >= 0.
        std_coeff: Weight of the variance term (mu), >= 0.
        cov_coeff: Weight of the covariance term (nu), >= 0.

    Shapes:
        z1, z2: (N, D) expander outputs of the two views, N >= 2. Returns a scalar.
    """

    def __init__(
        self, *, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0
    ) -> None:
        super().__init__()
        for name, value in (
            ("sim_coeff", sim_coeff),
            ("std_coeff", std_coeff),
            ("cov_coeff", cov_coeff),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"vicreg {name} must be a finite number >= 0, got {value}")
        self.sim_coeff = float(sim_coeff)
        self.std_coeff = float(std_coeff)
        self.cov_coeff = float(cov_coeff)

    def extra_repr(self) -> str:
        return f"sim_coeff={self.sim_coeff}, std_coeff={self.std_coeff}, cov_coeff={self.cov_coeff}"

    def terms(self, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        """The unweighted ``invariance``, ``variance`` and ``covariance`` terms of the
        global batch, in float32 (see :func:`vicreg_terms`)."""
        return vicreg_terms(z1, z2)

    def weigh(self, terms: dict[str, Tensor]) -> Tensor:
        """The loss from :meth:`terms`: each term times its coefficient, summed."""
        return (self.sim_coeff * terms["invariance"] + self.std_coeff * terms["variance"]
                + self.cov_coeff * terms["covariance"])

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return self.weigh(self.terms(z1, z2))


def vicreg_terms(z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
    """The three unweighted VICReg terms of two branches, as ``{"invariance",
    "variance", "covariance"}``: :func:`invariance_term`, the mean over the branches of
    :func:`variance_term`, the sum over them of :func:`covariance_term`. Under torchrun
    the branches are gathered from every rank first, so the terms are the global
    batch's. Shapes: z1, z2 (N, D), N >= 2."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            "vicreg needs z1 and z2 of the same shape (N, D), "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 2:
        raise ValueError(
            f"vicreg needs a batch of at least 2 for an unbiased variance, got {z1.shape[0]}"
        )
    # Under torchrun: the global batch, so every term is one process's (each rank
    # computes the whole loss; see barlow_twins for why).
    z1, z2 = gather_pair(z1, z2)
    # float32 even under autocast: the D x D covariance loses precision in bf16.
    z1, z2 = z1.float(), z2.float()
    return {
        "invariance": invariance_term(z1, z2),
        "variance": (variance_term(z1) + variance_term(z2)) / 2,
        "covariance": covariance_term(z1) + covariance_term(z2),
    }


def invariance_term(z1: Tensor, z2: Tensor) -> Tensor:
    """Paper eq. 5: the mean squared distance between paired rows, over all N * D
    entries (the reference code's ``F.mse_loss``). Shapes: (N, D) each -> scalar."""
    return F.mse_loss(z1, z2)


def variance_term(z: Tensor) -> Tensor:
    """Paper eq. 1-2: ``mean_d relu(1 - sqrt(var_d + 1e-4))`` with the unbiased (N - 1)
    variance of each dimension over the batch. Shapes: (N, D) -> scalar."""
    std = torch.sqrt(z.var(dim=0, unbiased=True) + _VARIANCE_EPS)  # (D,)
    return F.relu(1 - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """Paper eq. 3-4: the squared off-diagonal entries of the unbiased covariance
    matrix, summed and divided by D. Shapes: (N, D) -> scalar."""
    n, d = z.shape
    centered = z - z.mean(dim=0)
    cov = centered.T @ centered / (n - 1)  # (D, D)
    off_diagonal = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
    return off_diagonal / d
