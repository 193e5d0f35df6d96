"""Frozen-backbone evaluation: feature extraction, linear probe and weighted kNN.

:func:`evaluate_features` is the one entry point the rest of sslreg calls; it follows
the protocol in DESIGN.md ("Evaluation protocol"): the linear probe's L2 strength is
chosen on a held-out split of the training set, and the test set is scored once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from sslreg.evaluation.features import extract_features, pixel_features
from sslreg.evaluation.knn import knn_accuracy, knn_predict, knn_predict_many
from sslreg.evaluation.label_efficient import (
    SubsetProbeResult,
    fraction_name,
    label_efficient_probes,
    label_subsets,
    shots_name,
    subset_probe,
)
from sslreg.evaluation.linear import (
    FittedProbe,
    LinearProbeResult,
    fit_linear_probe,
    linear_probe,
)

__all__ = [
    "FittedProbe",
    "LinearProbeResult",
    "SubsetProbeResult",
    "evaluate_features",
    "evaluate_splits",
    "extract_features",
    "fit_linear_probe",
    "fraction_name",
    "knn_accuracy",
    "knn_predict",
    "knn_predict_many",
    "label_efficient_probes",
    "label_subsets",
    "linear_probe",
    "pixel_features",
    "shots_name",
    "subset_probe",
]


def evaluate_features(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    knn_k: Sequence[int] = (20, 200),
    knn_temperature: Sequence[float] = (0.07, 0.1),
    holdout_fraction: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Linear probe and weighted kNN accuracies of frozen features.

    Args:
        train_features: (N, D) features of the labelled training images.
        train_labels: (N,) integer labels in [0, num_classes).
        test_features: (M, D) features of the test images.
        test_labels: (M,) integer labels in [0, num_classes).
        num_classes: number of classes.
        knn_k: neighbour counts, one kNN result per entry.
        knn_temperature: the temperature paired with each k.
        holdout_fraction: share of the training set that chooses the probe's L2 strength.
        seed: seeds the holdout split.
        device: where the probe and the kNN run.

    Returns:
        ``linear_acc``, ``linear_weight_decay`` and ``knn{k}_acc`` for each k; accuracies
        are fractions in [0, 1].
    """
    scored = evaluate_splits(train_features, train_labels, {"test": (test_features, test_labels)},
                             num_classes=num_classes, knn_k=knn_k,
                             knn_temperature=knn_temperature,
                             holdout_fraction=holdout_fraction, seed=seed, device=device)
    return scored["test"]


def evaluate_splits(
    train_features: Tensor,
    train_labels: Tensor,
    scored: dict[str, tuple[Tensor, Tensor]],
    *,
    num_classes: int,
    knn_k: Sequence[int] = (20, 200),
    knn_temperature: Sequence[float] = (0.07, 0.1),
    holdout_fraction: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_features` on several scored splits (e.g. ``{"val": ..., "test":
    ...}``) with one probe fit: each split gets the metrics of the same probe and
    kNN memory, and nothing computed on one split feeds another.

    Returns:
        ``{split: {"linear_acc": ..., "linear_weight_decay": ..., "knn{k}_acc": ...}}``.
    """
    if len(knn_k) != len(knn_temperature):
        raise ValueError(f"need one kNN temperature per k, got knn_k={tuple(knn_k)} "
                         f"knn_temperature={tuple(knn_temperature)}")
    probe = fit_linear_probe(train_features, train_labels, num_classes=num_classes,
                             holdout_fraction=holdout_fraction, seed=seed, device=device)
    memory = train_features.to(device)
    results = {}
    for name, (features, labels) in scored.items():
        metrics = {"linear_acc": probe.accuracy(features, labels),
                   "linear_weight_decay": probe.weight_decay}
        predictions = knn_predict_many(memory, train_labels, features.to(device),
                                       num_classes=num_classes, ks=knn_k,
                                       temperatures=knn_temperature)
        for k, predicted in zip(knn_k, predictions, strict=True):
            correct = predicted.cpu() == labels.cpu()
            metrics[f"knn{k}_acc"] = correct.float().mean().item()
        results[name] = metrics
    return results
