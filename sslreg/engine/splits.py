"""The data of a run, loaded once: the pretraining images, and the three splits of the
evaluation dataset: train (what the probes fit on), validation (a stratified share of
the training split, for every choice) and test (scored once per run, for tables).

The pretraining dataset (``dataset``) and the evaluation dataset (``eval.dataset``) are
the same unless the config names another; then pretraining uses the pretraining
dataset's whole train split (labelled or not) and the evaluation dataset is labelled.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import attrs

from sslreg.config import RunConfig
from sslreg.data import ImageDataset, checked_load
from sslreg.errors import DataError

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

# The validation split and the evaluation subsets are drawn with fixed seeds, so every
# method and seed of a comparison trains, chooses and is scored on the same images.
VAL_SEED = 0
EVAL_SUBSET_SEED = 0
# Label subset i of the label-efficient probes is drawn with seed LABEL_SUBSET_SEED + i.
LABEL_SUBSET_SEED = EVAL_SUBSET_SEED + 1000


@attrs.frozen
class RunData:
    """The pretraining images, the evaluation dataset's splits, and the channel
    statistics of the pretraining data (every image of the run is normalised by them)."""

    train: ImageDataset  # the evaluation training split without the validation images
    val: ImageDataset
    test: ImageDataset
    stats: tuple[tuple[float, ...], tuple[float, ...]]  # per-channel (mean, std)
    # What pretraining may use; None: ``train`` (one dataset, validation held out).
    pretrain: ImageDataset | None = None

    def pretraining(self, config: RunConfig) -> ImageDataset:
        """The images a run pretrains on: ``train.train_subset`` of the pretraining pool."""
        pool = self.train if self.pretrain is None else self.pretrain
        return pool.subset(config.train.train_subset, seed=config.train.seed)

    def evaluation(self, config: RunConfig) -> dict[str, ImageDataset]:
        """The probes' training images and the two scored splits, as ``eval.*`` sizes."""
        e = config.eval
        return {"train": self.train.subset(e.train_subset, seed=EVAL_SUBSET_SEED),
                "val": self.val.subset(e.val_subset, seed=EVAL_SUBSET_SEED),
                "test": self.test.subset(e.test_subset, seed=EVAL_SUBSET_SEED)}


def load_run_data(config: RunConfig, registry: Registry) -> RunData:
    """The run's data: each split loaded once, the channel statistics computed once.
    Decoded files are kept for the process (they never change), so the runs of a suite
    share them.

    Raises:
        DataError: an unlabelled evaluation dataset, or evaluation images whose channels
            or size differ from the pretraining images.
    """
    source = _key(registry, config.dataset, config.data_root, config.image_size)
    target = _key(registry, config.eval_dataset, config.eval_data_root, config.image_size)
    pool = _load(*source, "train")
    labelled = pool if target == source else _load(*target, "train")
    _require_labels(labelled, config)
    train, val = labelled.split(config.eval.val_fraction, seed=VAL_SEED)
    _check_same_shape(pool, train)
    return RunData(train=train, val=val, test=_load(*target, "test"),
                   stats=pool.channel_stats(), pretrain=None if source == target else pool)


def _key(registry: Registry, name: str, root: str, image_size: int) -> tuple[Any, ...]:
    # Keyed by the spec (and so the loader): a test that registers another dataset under
    # a known name gets its own data.
    return registry.datasets.get(name), root or None, image_size


def _require_labels(split: ImageDataset, config: RunConfig) -> None:
    if not split.labelled:
        raise DataError(
            f"{split.name} has no labels, so it cannot be evaluated on; pretrain on it and "
            "evaluate on a labelled dataset: --set eval.dataset=NAME (e.g. fashion-mnist)")


def _check_same_shape(pool: ImageDataset, evaluation: ImageDataset) -> None:
    if pool.channels != evaluation.channels:
        raise DataError(
            f"{pool.name} has {pool.channels}-channel images but {evaluation.name} has "
            f"{evaluation.channels}; evaluate on a dataset with {pool.channels} channels")
    if pool.images.shape[2:] != evaluation.images.shape[2:]:
        raise DataError(
            f"{pool.name} has {_size(pool)} images but {evaluation.name} has "
            f"{_size(evaluation)}; --set image_size=N resizes both to N x N")


def _size(dataset: ImageDataset) -> str:
    return f"{dataset.images.shape[2]}x{dataset.images.shape[3]}"


@functools.lru_cache(maxsize=8)
def _load(spec: Any, root: str | None, image_size: int, split: str) -> ImageDataset:
    return checked_load(spec.loader, spec.name, split, root, spec=spec, image_size=image_size)

