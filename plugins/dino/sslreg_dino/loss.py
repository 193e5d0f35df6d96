"""DINO's self-distillation loss: cross-entropy between a centred, sharpened teacher
distribution and the student's, over every pair of different crops.

Caron et al. "Emerging Properties in Self-Supervised Vision Transformers." ICCV 2021,
sec. 3.1, eq. 3 and algorithm 1. https://arxiv.org/abs/2104.14294
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg.distributed import global_mean


class DINOLoss(nn.Module):
    """H(P_t(x), P_s(x')) averaged over every (teacher crop, student crop) pair with
    x != x' (the same crop never pairs with itself), each pair averaged over the batch.

    ``P_t = softmax((teacher - center) / teacher_temp)`` is centred and sharpened and
    receives no gradient; ``P_s = softmax(student / student_temp)``. Centring keeps one
    prototype from dominating, sharpening keeps the distribution from going uniform:
    together they avoid collapse (sec. 3.1). The loss is stateless: the caller owns the
    center and the temperature schedule. Under torchrun each rank passes its rows and
    gets the loss of the global batch as the value (:func:`sslreg.distributed.global_mean`).

    Shapes:
        student: a sequence of V tensors (N, K), every crop's logits; the teacher's crops
        come first, in the same order (crop i of the teacher is crop i of the student).
        teacher: a sequence of G <= V tensors (N, K), the global crops' logits.
        center: (1, K) or (K,), default zero. Returns a scalar.
    """

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        if not student_temp > 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        self.student_temp = student_temp

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor],
                center: Tensor | None = None,
                teacher_temp: float | Tensor = 0.04) -> Tensor:
        self._check(student, teacher)
        # float32 even under autocast: logits divided by 0.04 overflow bf16's precision.
        log_p = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student]
        targets = [teacher_probabilities(t, center, teacher_temp) for t in teacher]
        terms = [-(q * log_p[v]).sum(dim=-1).mean()
                 for g, q in enumerate(targets) for v in range(len(log_p)) if v != g]
        if not terms:
            raise ValueError("dino needs two crops at least: there is no pair of different "
                             "crops")
        # Under torchrun the value is the global batch's (every rank's rows); the
        # gradient stays this rank's, as sslreg.distributed's convention wants.
        return global_mean(torch.stack(terms).mean())

    @staticmethod
    def _check(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> None:
        if not teacher or len(teacher) > len(student):
            raise ValueError(f"dino needs 1 <= teacher crops <= student crops, got "
                             f"{len(teacher)} teacher and {len(student)} student crops")
        shape = tuple(student[0].shape)
        if len(shape) != 2 or any(tuple(x.shape) != shape for x in (*student, *teacher)):
            raise ValueError("dino needs every crop's logits of one shape (N, K), got "
                             f"{[tuple(x.shape) for x in (*student, *teacher)]}")


def teacher_probabilities(teacher: Tensor, center: Tensor | None,
                          temperature: float | Tensor) -> Tensor:
    """softmax((teacher - center) / temperature) in float32, without gradient: (N, K)."""
    logits = teacher.detach().float()
    if center is not None:
        logits = logits - center.detach().float()
    return F.softmax(logits / temperature, dim=-1)
