"""The learning curve: kNN accuracy of the frozen backbone after every few epochs.

Cheaper than the final evaluation (a fixed subset, one k), so a leaderboard can draw
how each method's features improve; the points go to TensorBoard as ``curve/knn_acc``
(one per evaluated epoch) and to ``train.json``. It is scored on the validation split.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch
from torch.utils.tensorboard import SummaryWriter

from sslreg.config import RunConfig
from sslreg.data import ImageDataset
from sslreg.engine.splits import RunData
from sslreg.evaluation import extract_features, knn_accuracy

CURVE_TAG = "curve/knn_acc"
# The curve's subsets are drawn with one fixed seed so every method's curve is scored
# on the same images.
CURVE_SEED = 0


@attrs.frozen
class CurveProbe:
    """The fixed images the curve is scored on, and how."""

    train: ImageDataset
    test: ImageDataset  # validation images: a curve chooses, so it never reads the test split
    stats: tuple
    every: int
    k: int
    temperature: float
    batch_size: int


def curve_probe(config: RunConfig, data: RunData) -> CurveProbe:
    """Fixed subsets of the train and validation splits, scored with the config's first k."""
    e = config.eval
    return CurveProbe(train=data.train.subset(e.curve_images, seed=CURVE_SEED),
                      test=data.val.subset(e.curve_images, seed=CURVE_SEED), stats=data.stats,
                      every=e.curve_every, k=e.knn_k[0], temperature=e.knn_temperature[0],
                      batch_size=e.batch_size)


def due(probe: CurveProbe | None, epoch: int, epochs: int) -> bool:
    """After every ``every``-th epoch and after the last one."""
    return probe is not None and (epoch % probe.every == 0 or epoch == epochs)


@torch.no_grad()
def curve_point(probe: CurveProbe, encode: Any, device: torch.device) -> float:
    """kNN accuracy of ``encode``'s features on the probe's validation images."""
    mean, std = probe.stats
    features = [extract_features(encode, split.images, mean=mean, std=std,
                                 batch_size=probe.batch_size, device=device)
                for split in (probe.train, probe.test)]
    num_classes = int(max(probe.train.labels.max(), probe.test.labels.max())) + 1
    return knn_accuracy(features[0], probe.train.labels, features[1], probe.test.labels,
                        num_classes=num_classes, k=min(probe.k, len(probe.train)),
                        temperature=probe.temperature)


def log_curve_point(writer: SummaryWriter, epoch: int, accuracy: float) -> None:
    writer.add_scalar(CURVE_TAG, accuracy, epoch)
