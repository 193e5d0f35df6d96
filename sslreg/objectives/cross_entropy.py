"""Cross-entropy with the labels: the supervised ceiling's objective."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy of class logits against integer labels, optionally with label
    smoothing (Szegedy et al. 2016, sec. 7): the target puts ``1 - label_smoothing`` on
    the true class and spreads ``label_smoothing`` evenly over all C classes.

    Args:
        label_smoothing: In [0, 1]; 0 is plain cross-entropy.

    Shapes:
        logits: (N, C); labels: (N,) class indices. Returns a scalar.
    """

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not (math.isfinite(label_smoothing) and 0 <= label_smoothing <= 1):
            raise ValueError(f"cross_entropy label_smoothing must be in [0, 1], got "
                             f"{label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        if logits.ndim != 2 or labels.shape != logits.shape[:1]:
            raise ValueError("cross_entropy needs logits (N, C) and labels (N,), got "
                             f"{tuple(logits.shape)} and {tuple(labels.shape)}")
        # float32 even under autocast: log-softmax of bf16 logits is coarse.
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
