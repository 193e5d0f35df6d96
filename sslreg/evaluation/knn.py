"""Weighted cosine k-nearest-neighbour classifier on frozen features.

Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", as used by DINO's ``eval_knn``: each of the k most cosine-similar
training points votes for its class with weight exp(similarity / T).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Predict test labels by a weighted vote of the k nearest training points.

    Args:
        train_features: (N, D) features of the labelled points.
        train_labels: (N,) integer labels in [0, num_classes).
        test_features: (M, D) features to classify.
        num_classes: number of classes.
        k: neighbours per vote; clamped to N.
        temperature: T in exp(sim / T); a small T lets the nearest neighbours dominate.
        chunk_size: test rows per similarity block, which bounds memory to chunk_size * N.

    Returns:
        (M,) int64 predicted labels, on the features' device.
    """
    (predictions,) = knn_predict_many(
        train_features, train_labels, test_features, num_classes=num_classes,
        ks=(k,), temperatures=(temperature,), chunk_size=chunk_size,
    )
    return predictions


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Fraction of ``test_labels`` (M,) that :func:`knn_predict` gets right."""
    _check_test_labels(test_features, test_labels)
    predictions = knn_predict(
        train_features, train_labels, test_features, num_classes=num_classes, k=k,
        temperature=temperature, chunk_size=chunk_size,
    )
    return (predictions == test_labels.to(predictions.device)).float().mean().item()


def knn_predict_many(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    num_classes: int,
    ks: Sequence[int],
    temperatures: Sequence[float],
    chunk_size: int = 1024,
) -> list[Tensor]:
    """:func:`knn_predict` for several (k, T) pairs sharing one similarity pass.

    The similarity matmul and top-k dominate the cost, and the top-k of the largest k
    contains every smaller one (sorted), so one pass serves all pairs.

    Returns:
        one (M,) int64 prediction tensor per (k, T) pair.
    """
    _check_inputs(train_features, train_labels, test_features, num_classes, chunk_size)
    if len(ks) != len(temperatures) or not ks:
        raise ValueError(f"need one temperature per k, got ks={tuple(ks)} "
                         f"temperatures={tuple(temperatures)}")
    if any(k < 1 for k in ks) or any(t <= 0 for t in temperatures):
        raise ValueError(f"k must be >= 1 and temperature > 0, got ks={tuple(ks)} "
                         f"temperatures={tuple(temperatures)}")
    ks = [min(int(k), train_features.shape[0]) for k in ks]
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    labels = train_labels.to(train.device, torch.long)
    chunks: list[list[Tensor]] = [[] for _ in ks]
    for start in range(0, test.shape[0], chunk_size):
        similarity = test[start : start + chunk_size].to(train.device) @ train.T  # (b, N)
        top_sim, top_index = similarity.topk(max(ks), dim=1)  # (b, kmax), sorted
        top_labels = labels[top_index]  # (b, kmax)
        for i, (k, t) in enumerate(zip(ks, temperatures, strict=True)):
            chunks[i].append(_vote(top_sim[:, :k], top_labels[:, :k], num_classes, t))
    return [torch.cat(c) for c in chunks]


def _vote(similarity: Tensor, labels: Tensor, num_classes: int, temperature: float) -> Tensor:
    """(b, k) neighbour similarities and labels -> (b,) label with the largest summed weight."""
    weights = (similarity / temperature).exp()
    scores = torch.zeros(similarity.shape[0], num_classes, device=similarity.device)
    scores.scatter_add_(1, labels, weights)  # (b, num_classes)
    return scores.argmax(dim=1)


def _check_inputs(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, num_classes: int,
    chunk_size: int,
) -> None:
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got train {tuple(train_features.shape)}"
                         f" and test {tuple(test_features.shape)}")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train and test features differ in width: "
                         f"{train_features.shape[1]} vs {test_features.shape[1]}")
    if train_features.shape[0] == 0:
        raise ValueError("train_features is empty")
    if train_labels.shape != (train_features.shape[0],):
        raise ValueError(f"train_labels must be ({train_features.shape[0]},), "
                         f"got {tuple(train_labels.shape)}")
    _check_label_range(train_labels, num_classes, "train_labels")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _check_test_labels(test_features: Tensor, test_labels: Tensor) -> None:
    if test_labels.shape != (test_features.shape[0],):
        raise ValueError(f"test_labels must be ({test_features.shape[0]},), "
                         f"got {tuple(test_labels.shape)}")


def _check_label_range(labels: Tensor, num_classes: int, name: str) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integers, got {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got "
                         f"[{labels.min().item()}, {labels.max().item()}]")
