"""CLIP's symmetric contrastive loss between two paired sets of embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CLIPLoss(nn.Module):
    """CLIP's symmetric cross-entropy over the cosine-similarity matrix, at a learned
    temperature.

    Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
    Supervision" (CLIP), figure 3 and sec. 2.5. Both sets are L2-normalised, ``logits =
    scale * img @ txt.T``, and the loss is ``(CE(logits, arange) + CE(logits.T,
    arange)) / 2``: row i must pick column i and column i must pick row i. The loss is
    symmetric in its two arguments (see :func:`clip_loss`).

    The scale is learned in log space, as the paper: the parameter ``logit_scale``
    starts at ``log(1 / temperature)``; the paper clips the scale at 100 "to prevent
    training instability", which :meth:`clamp_` does in place after an optimizer step
    (CLIP's ``on_step_end`` calls it). ``learn_temperature=False`` keeps it fixed.

    Args:
        temperature: Initial softmax temperature, > 0; CLIP's is 0.07.
        learn_temperature: Train the scale (the paper) or keep it at 1 / temperature.
        max_logit_scale: Where :meth:`clamp_` clips the scale, >= 1 / temperature.

    Shapes:
        image_emb, text_emb: (N, D) paired embeddings, N >= 2. Returns a scalar.
    """

    def __init__(self, *, temperature: float = 0.07, learn_temperature: bool = True,
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"clip temperature must be a finite number > 0, got {temperature}")
        if not 1 / temperature <= max_logit_scale:
            raise ValueError(f"clip max_logit_scale={max_logit_scale} is below the initial "
                             f"scale 1/temperature={1 / temperature:g}")
        self.temperature = float(temperature)
        self.max_logit_scale = float(max_logit_scale)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)),
                                        requires_grad=learn_temperature)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, max_logit_scale={self.max_logit_scale}, "
                f"learn_temperature={self.logit_scale.requires_grad}")

    def scale(self) -> Tensor:
        """exp(logit_scale): the inverse temperature, 0-d, with its gradient."""
        return self.logit_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the scale in [1, max_logit_scale] (the paper's clip at 100, and at least
        1 as the reference training code); in place, no host sync."""
        self.logit_scale.clamp_(0.0, math.log(self.max_logit_scale))

    def forward(self, image_emb: Tensor, text_emb: Tensor) -> Tensor:
        if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
            raise ValueError(
                "clip needs image_emb and text_emb of the same shape (N, D), "
                f"got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
            )
        if image_emb.shape[0] < 2:
            raise ValueError("clip needs a batch of at least 2 pairs to have negatives, "
                             f"got {image_emb.shape[0]}")
        return clip_loss(image_emb, text_emb, self.scale())


def clip_loss(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """The paper's figure 3 loss at a given scale (an inverse temperature, which may
    carry a gradient): ``logits = scale * img_n @ txt_n.T``, then the mean of the
    row-wise and column-wise cross-entropies against the diagonal.

    Shapes: image_emb, text_emb (N, D) paired; logit_scale 0-d. Returns a scalar.
    """
    # float32 even under autocast: scaled logits are too coarse in bf16, overflow in fp16.
    image = F.normalize(image_emb.float(), dim=1)  # (N, D)
    text = F.normalize(text_emb.float(), dim=1)  # (N, D)
    scale = logit_scale.float() if isinstance(logit_scale, Tensor) else logit_scale
    logits = scale * image @ text.T  # (N, N)
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
