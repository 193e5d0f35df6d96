"""Evaluation of a run's final checkpoint, and the floors every table carries."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sslreg.config import RunConfig
from sslreg.data import ImageDataset
from sslreg.engine.checkpoint import load_checkpoint
from sslreg.engine.device import resolve_device
from sslreg.engine.trainer import build_method, load_split
from sslreg.evaluation import evaluate_features, extract_features, pixel_features
from sslreg.interfaces import Method
from sslreg.runs import RunDir, write_json
from sslreg.views import normalize

# Evaluation subsets are drawn with one fixed seed so every method and seed of a
# comparison is scored on the very same images.
EVAL_SUBSET_SEED = 0


def eval_splits(config: RunConfig, registry: Any) -> tuple[ImageDataset, ImageDataset]:
    full_train = load_split(config, registry, "train")
    train = full_train.subset(config.eval.train_subset, seed=EVAL_SUBSET_SEED)
    test = load_split(config, registry, "test").subset(config.eval.test_subset,
                                                       seed=EVAL_SUBSET_SEED)
    return train, test


def score(encode: Callable[[torch.Tensor], torch.Tensor], config: RunConfig,
          train: ImageDataset, test: ImageDataset, stats: tuple) -> dict[str, float]:
    """Extract features of both splits with ``encode`` and run the probe and kNN."""
    device = resolve_device(config.train.device)
    mean, std = stats
    features = [extract_features(encode, split.images, mean=mean, std=std,
                                 batch_size=config.eval.batch_size, device=device)
                for split in (train, test)]
    return _evaluate(config, features[0], train.labels, features[1], test.labels, device)


def _evaluate(config: RunConfig, train_x: torch.Tensor, train_y: torch.Tensor,
              test_x: torch.Tensor, test_y: torch.Tensor, device: torch.device) -> dict:
    return evaluate_features(
        train_x, train_y, test_x, test_y, num_classes=int(train_y.max()) + 1,
        knn_k=config.eval.knn_k, knn_temperature=config.eval.knn_temperature,
        holdout_fraction=config.eval.holdout_fraction, seed=EVAL_SUBSET_SEED, device=device)


def evaluate_run(run: RunDir, registry: Any, method: Method | None = None) -> dict[str, Any]:
    """Score the final checkpoint of ``run`` and write ``result.json``."""
    config = run.load_config(registry)
    started = time.perf_counter()
    train, test = eval_splits(config, registry)
    full_train = load_split(config, registry, "train")
    stats = full_train.channel_stats()
    state = load_checkpoint(run.checkpoint, expected_digest=config.digest())
    if method is None:
        method = build_method(config, registry, full_train)
        method.load_state_dict(state["model"])
    device = resolve_device(config.train.device)
    method = method.to(device).eval()
    metrics = score(method.features, config, train, test, stats)
    metrics.update(extra_metrics(method, config, test, stats, device))
    result = {
        "metrics": metrics,
        "checkpoint_epoch": state["epoch"],
        "eval_train_images": len(train),
        "eval_test_images": len(test),
        "eval_seconds": round(time.perf_counter() - started, 2),
    }
    write_json(run.result, result)
    return result


def extra_metrics(method: Method, config: RunConfig, test: ImageDataset, stats: tuple,
                  device: torch.device) -> dict[str, float]:
    """The method's own test metrics (e.g. zero-shot accuracy) on the test split."""
    if type(method).extra_evaluation is Method.extra_evaluation:
        return {}
    mean, std = stats
    images = normalize(test.images.to(device).float().div_(255), mean, std)
    return {name: float(value)
            for name, value in method.extra_evaluation(images, test.labels.to(device)).items()}


def floors(config: RunConfig, registry: Any, out: Path) -> dict[str, dict[str, float]]:
    """Raw pixels and a randomly initialised backbone, scored exactly like a method.

    Cached per dataset, backbone, evaluation protocol and seed in ``out/floors``.
    """
    e = config.eval
    path = floors_path(out, config.dataset, config.backbone, config.train.seed,
                       (e.train_subset, e.test_subset, e.holdout_fraction))
    if path.exists():
        return RunDir(path.parent).read_json(path)
    train, test = eval_splits(config, registry)
    stats = load_split(config, registry, "train").channel_stats()
    device = resolve_device(config.train.device)
    pixels = _evaluate(config, pixel_features(train.images), train.labels,
                       pixel_features(test.images), test.labels, device)
    torch.manual_seed(config.train.seed)
    backbone = registry.backbones.create(config.backbone, in_channels=train.channels,
                                         image_size=train.images.shape[-1]).to(device)
    random_init = score(backbone, config, train, test, stats)
    result = {"raw pixels": pixels, "random init": random_init}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result


def floors_path(out: Path | str, dataset: str, backbone: str, seed: int,
                protocol: tuple[int, int, float]) -> Path:
    """Where the floors of one dataset, backbone, seed and evaluation protocol (train
    subset, test subset, hold-out fraction) are cached; leaderboards read them here."""
    train_subset, test_subset, holdout = protocol
    key = f"{dataset}-{backbone}-seed{seed}-tr{train_subset}-te{test_subset}-h{holdout}"
    return Path(out) / "floors" / f"{key}.json"
