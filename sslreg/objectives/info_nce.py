"""InfoNCE as used by MoCo: one positive key against a queue or the batch's other keys."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg.distributed import gather_with_grad, global_mean, rank


class InfoNCELoss(nn.Module):
    """MoCo's InfoNCE loss.

    He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning"
    (MoCo), eq. 1; the in-batch form is MoCo v3's (Chen, Xie and He 2021). All vectors
    are L2-normalised. With ``negatives`` (a (K, D) queue) the logits of query i are
    ``[q_i . k_i, q_i . n_1, ..., q_i . n_K] / T`` and the target is index 0. Without
    it, the other keys of the batch are the negatives: cross-entropy over
    ``q @ k.T / T`` with the diagonal as target. The mean is over the N queries.

    Under ``torchrun`` the in-batch keys are gathered from every rank (with gradients,
    when they have any), each rank scores its own queries, and the value is the mean
    over all ranks' queries; a queue of ``negatives`` is used as given.

    The loss stops no gradient itself: a method whose keys come from a momentum encoder
    computes them under ``torch.no_grad()``, as MoCo does.

    Args:
        temperature: Softmax temperature, > 0. The default 0.2 is MoCo v2's.

    Shapes:
        query, key: (N, D); negatives: (K, D) or ``None`` (then N >= 2). Returns a
        scalar.
    """

    def __init__(self, *, temperature: float = 0.2) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"info_nce temperature must be a finite number > 0, got {temperature}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, query: Tensor, key: Tensor, negatives: Tensor | None = None) -> Tensor:
        _check_shapes(query, key, negatives)
        # float32 even under autocast: logits / T are too coarse in bf16, overflow in fp16.
        q = F.normalize(query.float(), dim=1)  # (N, D)
        k = F.normalize(key.float(), dim=1)  # (N, D)
        if negatives is None:
            # Under torchrun the keys are every rank's (MoCo v3 gathers them too), and
            # this rank's positives sit at its offset. With one process: k itself.
            logits = q @ gather_with_grad(k).T  # (N, N x ranks)
            targets = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
        else:
            positive = (q * k).sum(dim=1, keepdim=True)  # (N, 1)
            negative = q @ F.normalize(negatives.float(), dim=1).T  # (N, K)
            logits = torch.cat([positive, negative], dim=1)  # (N, 1 + K)
            targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return global_mean(F.cross_entropy(logits / self.temperature, targets))


def _check_shapes(query: Tensor, key: Tensor, negatives: Tensor | None) -> None:
    if query.ndim != 2 or query.shape != key.shape:
        raise ValueError(
            "info_nce needs query and key of the same shape (N, D), "
            f"got {tuple(query.shape)} and {tuple(key.shape)}"
        )
    if negatives is None:
        if query.shape[0] < 2:
            raise ValueError(
                "info_nce without a queue needs a batch of at least 2 to have negatives, "
                f"got {query.shape[0]}"
            )
    elif negatives.ndim != 2 or negatives.shape[1] != query.shape[1] or negatives.shape[0] < 1:
        raise ValueError(
            f"info_nce needs negatives of shape (K, {query.shape[1]}) with K >= 1, "
            f"got {tuple(negatives.shape)}"
        )
