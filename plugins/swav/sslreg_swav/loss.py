"""SwAV's swapped-prediction loss and the Sinkhorn-Knopp codes it predicts.

Caron et al. "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments." NeurIPS 2020. https://arxiv.org/abs/2006.09882 (sec. 3.1, eq. 1-3 and
appendix A.1; the reference code's ``distributed_sinkhorn``, over every rank's rows
under torchrun).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg.distributed import all_reduce_max, all_reduce_sum, global_mean, world_size


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Soft codes Q from prototype scores by the Sinkhorn-Knopp algorithm (paper eq. 3).

    Q = exp(scores / epsilon), then ``iterations`` rounds of rescaling that give each
    prototype a total mass of 1/K and then each sample a mass of 1/B (the equipartition
    constraint of the transportation polytope); finally Q is scaled by B so each
    sample's code is a distribution over prototypes. After the last round each row sums
    to exactly 1 and each prototype is used about B/K times (exactly in the limit of many
    rounds). Computed in float32 without gradient: the codes are targets.

    Under torchrun each rank passes its rows of the global batch and gets their codes:
    the total mass and each prototype's mass are summed over the ranks and B is the
    global batch, as the reference code's ``distributed_sinkhorn`` does, so the codes
    are the rows one process would compute on the whole batch. (A sample's own mass
    needs only its own row.)

    Shapes:
        scores: (B, K) cosine scores of B samples against K prototypes. Returns (B, K);
        under torchrun, this rank's (B / W, K) in and out.
    """
    logits = scores.float() / epsilon  # (B, K)
    # exp(x - max) equals exp(x) up to a constant, which the first normalisation removes;
    # every rank must subtract the same constant, hence the maximum over the ranks.
    q = torch.exp(logits - all_reduce_max(logits.max())).T  # (K, B)
    q /= all_reduce_sum(q.sum())
    prototypes, samples = q.shape[0], q.shape[1] * world_size()
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True)) * prototypes  # each prototype: 1/K
        q /= q.sum(dim=0, keepdim=True) * samples  # each sample's mass: 1/B
    return (q * samples).T  # (B, K)


class SwAVLoss(nn.Module):
    """Swapped prediction between multi-crop views (paper eq. 1-2).

    The first ``crops_for_assign`` crops (the global ones) get codes q by
    :func:`sinkhorn` on their scores alone (optionally preceded by a queue's scores,
    which only widen the batch the equipartition is taken over). Each assigned crop's
    code is predicted from every other crop v by p_v = softmax(scores_v / temperature):
    the cross-entropy -sum_k q_k log p_v,k, averaged over the batch, over the V - 1
    predicting crops, then over the assigned crops, as the reference code does. Under
    torchrun each rank passes its rows (and its own queue): the codes are normalised
    over every rank's rows and queues, and the value is the global batch's loss.

    Args:
        temperature: softmax temperature of the predictions, > 0; the paper's 0.1.
        epsilon: entropy regularisation of the codes, > 0; the paper's 0.05.
        sinkhorn_iterations: Sinkhorn-Knopp rounds, >= 1; the paper's 3.
        crops_for_assign: how many leading crops get codes; the paper's 2.

    Shapes:
        scores: V >= max(2, crops_for_assign) tensors (B, K), crop v's scores (cosines of
        normalised projections and prototypes); queue_scores: ``None`` or one (Q, K)
        tensor per assigned crop. Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, crops_for_assign: int = 2) -> None:
        super().__init__()
        for name, value in (("temperature", temperature), ("epsilon", epsilon)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"swav {name} must be a finite number > 0, got {value}")
        for name, value in (("sinkhorn_iterations", sinkhorn_iterations),
                            ("crops_for_assign", crops_for_assign)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"swav {name} must be an int >= 1, got {value!r}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.sinkhorn_iterations = sinkhorn_iterations
        self.crops_for_assign = crops_for_assign

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, epsilon={self.epsilon}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}, "
                f"crops_for_assign={self.crops_for_assign}")

    def forward(self, scores: Sequence[Tensor],
                queue_scores: Sequence[Tensor] | None = None) -> Tensor:
        self._check(scores, queue_scores)
        # float32 even under autocast: logits / 0.1 and exp(x / 0.05) are too coarse in bf16.
        log_p = [F.log_softmax(s.float() / self.temperature, dim=1) for s in scores]
        loss = scores[0].new_zeros((), dtype=torch.float32)
        for i in range(self.crops_for_assign):
            q = self.codes(scores[i], None if queue_scores is None else queue_scores[i])
            others = [v for v in range(len(scores)) if v != i]
            subloss = sum(-(q * log_p[v]).sum(dim=1).mean() for v in others)
            loss = loss + subloss / len(others)
        # Under torchrun the value is the global batch's; the gradient stays this rank's.
        return global_mean(loss / self.crops_for_assign)

    def codes(self, scores: Tensor, queue_scores: Tensor | None = None) -> Tensor:
        """(B, K) codes of one crop; a queue's (Q, K) scores join the Sinkhorn batch and
        their codes are dropped."""
        if queue_scores is None:
            return sinkhorn(scores, self.epsilon, self.sinkhorn_iterations)
        both = torch.cat([queue_scores.detach().float(), scores.detach().float()])
        return sinkhorn(both, self.epsilon, self.sinkhorn_iterations)[-len(scores):]

    def _check(self, scores: Sequence[Tensor], queue_scores: Sequence[Tensor] | None) -> None:
        if len(scores) < max(2, self.crops_for_assign):
            raise ValueError(f"swav needs at least 2 and at least crops_for_assign="
                             f"{self.crops_for_assign} crops, got {len(scores)}")
        shape = scores[0].shape
        if len(shape) != 2 or any(s.shape != shape for s in scores):
            raise ValueError("swav needs every crop's scores of the same shape (B, K), got "
                             f"{[tuple(s.shape) for s in scores]}")
        if queue_scores is not None and (
                len(queue_scores) != self.crops_for_assign
                or any(q.ndim != 2 or q.shape[1] != shape[1] for q in queue_scores)):
            raise ValueError(f"swav needs one (Q, {shape[1]}) queue score tensor per assigned "
                             f"crop ({self.crops_for_assign})")
