"""The three splits of a run, loaded once: train (what pretraining and the probes fit
on), validation (a stratified share of the training split, for every choice) and test
(scored once per run, for tables)."""

from __future__ import annotations

import functools
from typing import Any

import attrs

from sslreg.config import RunConfig
from sslreg.data import ImageDataset, checked_load

# The validation split and the evaluation subsets are drawn with fixed seeds, so every
# method and seed of a comparison trains, chooses and is scored on the same images.
VAL_SEED = 0
EVAL_SUBSET_SEED = 0


@attrs.frozen
class RunData:
    """The splits of one run's dataset and the training split's channel statistics."""

    train: ImageDataset  # the training split without the validation images
    val: ImageDataset
    test: ImageDataset
    stats: tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std)

    def pretraining(self, config: RunConfig) -> ImageDataset:
        """The images a run pretrains on: ``train.train_subset`` of the train split."""
        return self.train.subset(config.train.train_subset, seed=config.train.seed)

    def evaluation(self, config: RunConfig) -> dict[str, ImageDataset]:
        """The probes' training images and the two scored splits, as ``eval.*`` sizes."""
        e = config.eval
        return {"train": self.train.subset(e.train_subset, seed=EVAL_SUBSET_SEED),
                "val": self.val.subset(e.val_subset, seed=EVAL_SUBSET_SEED),
                "test": self.test.subset(e.test_subset, seed=EVAL_SUBSET_SEED)}


def load_run_data(config: RunConfig, registry: Any) -> RunData:
    """The run's splits; decoded files are kept for the process (they never change)."""
    loader = registry.datasets.get(config.dataset).loader
    key = (loader, config.dataset, config.data_root or None)
    train, val = _train_val(*key, config.eval.val_fraction)
    return RunData(train=train, val=val, test=_load(*key, "test"), stats=_train_stats(*key))


@functools.lru_cache(maxsize=8)
def _train_val(loader: Any, dataset: str, root: str | None,
               fraction: float) -> tuple[ImageDataset, ImageDataset]:
    # A run asks for its splits several times (trainer, evaluation, floors): draw once.
    return _load(loader, dataset, root, "train").split(fraction, seed=VAL_SEED)


@functools.lru_cache(maxsize=8)
def _load(loader: Any, dataset: str, root: str | None, split: str) -> ImageDataset:
    # Keyed by the loader too: a test that registers another dataset under a known
    # name gets its own data.
    return checked_load(loader, dataset, split, root)


@functools.lru_cache(maxsize=8)
def _train_stats(loader: Any, dataset: str,
                 root: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return _load(loader, dataset, root, "train").channel_stats()
