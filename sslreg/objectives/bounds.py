"""The InfoNCE lower bound on mutual information, reported by contrastive methods."""

from __future__ import annotations

import math

from torch import Tensor


def infonce_bound(loss: Tensor, num_candidates: int) -> Tensor:
    """log(K) - L_InfoNCE, a lower bound on I(view1; view2) in nats.

    Oord et al. 2018 (CPC), eq. 10; Poole et al. 2019. ``num_candidates`` K counts the
    positive and every negative one query is scored against (2N-1 for NT-Xent over N
    pairs, 1 + queue length for MoCo, N for CLIP). The bound can never exceed log(K).
    """
    if num_candidates < 2:
        raise ValueError(f"the InfoNCE bound needs at least 2 candidates, got {num_candidates}")
    return math.log(num_candidates) - loss.detach()
