"""Objectives: one loss module per file, typed keyword arguments with the papers'
defaults. The built-in specs are registered by :mod:`sslreg.builtins.objectives`."""

from __future__ import annotations

from sslreg.objectives.barlow_twins import BarlowTwinsLoss
from sslreg.objectives.bounds import infonce_bound
from sslreg.objectives.clip import CLIPLoss, clip_loss
from sslreg.objectives.cross_entropy import CrossEntropyLoss
from sslreg.objectives.info_nce import InfoNCELoss
from sslreg.objectives.negative_cosine import NegativeCosineLoss
from sslreg.objectives.nt_xent import NTXentLoss
from sslreg.objectives.vicreg import (
    VICRegLoss,
    covariance_term,
    invariance_term,
    variance_term,
    vicreg_terms,
)

__all__ = [
    "BarlowTwinsLoss",
    "CLIPLoss",
    "CrossEntropyLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "NegativeCosineLoss",
    "VICRegLoss",
    "clip_loss",
    "covariance_term",
    "infonce_bound",
    "invariance_term",
    "variance_term",
    "vicreg_terms",
]
