"""Built-in objectives, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslreg.hookspecs import hookimpl
from sslreg.objectives import (
    BarlowTwinsLoss,
    CLIPLoss,
    CrossEntropyLoss,
    InfoNCELoss,
    NegativeCosineLoss,
    NTXentLoss,
    VICRegLoss,
)
from sslreg.specs import ObjectiveSpec

_SPECS = (
    ObjectiveSpec(
        name="nt_xent",
        factory=NTXentLoss,
        paper="Chen et al. 2020, A Simple Framework for Contrastive Learning of Visual "
        "Representations (SimCLR)",
        description="(z1, z2): 2N anchors, the pair as positive, the other 2N-2 as negatives",
    ),
    ObjectiveSpec(
        name="info_nce",
        factory=InfoNCELoss,
        paper="He et al. 2020, Momentum Contrast for Unsupervised Visual Representation "
        "Learning (MoCo)",
        description="(query, key, negatives=None): q.k+ against a (K, D) queue or the "
        "batch's other keys",
    ),
    ObjectiveSpec(
        name="negative_cosine",
        factory=NegativeCosineLoss,
        paper="Chen and He 2021, Exploring Simple Siamese Representation Learning (SimSiam)",
        description="(p, z): mean of -cos(p, z), gradient stopped on z",
    ),
    ObjectiveSpec(
        name="barlow_twins",
        factory=BarlowTwinsLoss,
        paper="Zbontar et al. 2021, Barlow Twins: Self-Supervised Learning via Redundancy "
        "Reduction",
        description="(z1, z2): drive the cross-correlation of standardized views to identity",
    ),
    ObjectiveSpec(
        name="vicreg",
        factory=VICRegLoss,
        paper="Bardes, Ponce and LeCun 2022, VICReg: Variance-Invariance-Covariance "
        "Regularization for Self-Supervised Learning",
        description="(z1, z2): invariance (MSE) + variance hinge + covariance penalty",
    ),
    ObjectiveSpec(
        name="clip",
        factory=CLIPLoss,
        paper="Radford et al. 2021, Learning Transferable Visual Models From Natural "
        "Language Supervision (CLIP)",
        description="(image_emb, text_emb): symmetric cross-entropy over cosine "
        "similarities at a learned temperature (logit scale clipped at 100)",
    ),
    ObjectiveSpec(
        name="cross_entropy",
        factory=CrossEntropyLoss,
        paper="cross-entropy with the labels (the supervised ceiling); label smoothing: "
        "Szegedy et al. 2016, Rethinking the Inception Architecture",
        description="(logits, labels): mean cross-entropy, optional label smoothing",
    ),
)


@hookimpl
def register_objectives(register: Callable[[Any], None]) -> None:
    """Register the built-in objectives."""
    for spec in _SPECS:
        register(spec)
