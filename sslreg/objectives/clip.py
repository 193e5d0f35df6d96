"""CLIP's symmetric contrastive loss between two paired sets of embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CLIPLoss(nn.Module):
    """CLIP's symmetric cross-entropy over the cosine-similarity matrix.

    Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
    Supervision" (CLIP), figure 3. Both sets are L2-normalised, ``logits = img @ txt.T /
    T``, and the loss is ``(CE(logits, arange) + CE(logits.T, arange)) / 2``: row i must
    pick column i and column i must pick row i. The temperature here is fixed; CLIP
    learns it, starting from 0.07. The loss is symmetric in its two arguments.

    Args:
        temperature: Softmax temperature, > 0. CLIP's initial value is 0.07.

    Shapes:
        image_emb, text_emb: (N, D) paired embeddings, N >= 2. Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.07) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"clip temperature must be a finite number > 0, got {temperature}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
            raise ValueError(
                "clip needs image_emb and text_emb of the same shape (N, D), "
                f"got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
            )
        n = image_emb.shape[0]
        if n < 2:
            raise ValueError(f"clip needs a batch of at least 2 pairs to have negatives, got {n}")
        # float32 even under autocast: logits / T are too coarse in bf16, overflow in fp16.
        image = F.normalize(image_emb.float(), dim=1)  # (N, D)
        text = F.normalize(text_emb.float(), dim=1)  # (N, D)
        logits = image @ text.T / self.temperature  # (N, N)
        targets = torch.arange(n, device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
