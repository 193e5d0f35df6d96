"""Built-in data, registered through the same hook a third-party plugin uses.

Each dataset's loader is ``load(split, root=None) -> ImageDataset`` with ``split`` in
``("train", "test")``; a missing or malformed file raises :class:`sslreg.DataError` with
one line saying what is missing, where it looked, and the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslreg.data import cifar, digits, idx, imagefolder, stl10, synthetic
from sslreg.data.dataset import SPLITS, ImageDataset
from sslreg.errors import PluginError
from sslreg.hookspecs import hookimpl
from sslreg.specs import DatasetSpec

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

__all__ = ["SPLITS", "ImageDataset", "built_in_specs", "check_spec", "checked_load",
           "load_dataset", "register_datasets"]


def _spec(
    name: str, loader: Callable[..., ImageDataset], description: str, **shape: Any
) -> DatasetSpec:
    return DatasetSpec(name=name, loader=loader, description=description, **shape)


def built_in_specs() -> list[DatasetSpec]:
    """The built-in datasets' specs."""
    return [
        _spec("fashion-mnist", idx.load,
              "Zalando Fashion-MNIST, 60k/10k 28x28 grayscale (Xiao et al. 2017)",
              num_classes=10, channels=1, image_size=28),
        _spec("cifar10", cifar.load_cifar10,
              "CIFAR-10, 50k/10k 32x32 RGB (Krizhevsky 2009), python pickle format",
              num_classes=10, channels=3, image_size=32),
        _spec("cifar100", cifar.load_cifar100,
              "CIFAR-100 fine labels, 50k/10k 32x32 RGB (Krizhevsky 2009)",
              num_classes=100, channels=3, image_size=32),
        _spec("stl10", stl10.load,
              "STL-10 labelled splits, 5k/8k 96x96 RGB (Coates et al. 2011), binary format",
              num_classes=10, channels=3, image_size=96),
        _spec("stl10-unlabeled", stl10.load_unlabeled,
              "STL-10's 100k unlabelled 96x96 RGB images as the train split, for "
              "pretraining; evaluate with eval.dataset=stl10",
              num_classes=0, channels=3, image_size=96),
        _spec("imagefolder", imagefolder.load,
              "root/{train,test}/<class>/*.png|jpg (labelled) or root/*.png|jpg (unlabelled, "
              "pretraining only); classes, channels and size come from the files; "
              "image_size=N resizes the shorter side to N and centre-crops",
              needs_root=True),
        _spec("digits", digits.load,
              "scikit-learn's 8x8 handwritten digits, 1500/297 split (seed 0)",
              num_classes=10, channels=1, image_size=8),
        _spec("synthetic", synthetic.load,
              "ten procedurally drawn shapes, 2000/500 28x28 grayscale, no files",
              num_classes=10, channels=1, image_size=28),
    ]  # fmt: skip


@hookimpl
def register_datasets(register: Callable[[Any], None]) -> None:
    """Register the built-in datasets."""
    for spec in built_in_specs():
        register(spec)


def load_dataset(
    registry: Registry, name: str, split: str, root: str | Path | None = None, image_size: int = 0
) -> ImageDataset:
    """Load a split of a registered dataset.

    Args:
        registry: a :class:`sslreg.registry.Registry` (from ``sslreg.load_registry()``).
        name: the dataset's registered name.
        split: ``"train"`` or ``"test"``.
        root: a data folder the user gave, or ``None`` for the usual places.
        image_size: 0 keeps the stored size; N resizes the shorter side to N, then
            centre-crops N x N.

    Raises:
        UnknownNameError: no dataset of that name.
        DataError: the loader could not find or read the data.
        PluginError: the loader returned something other than an ``ImageDataset``, or
            something other than its spec declares.
    """
    spec = registry.datasets.get(name)
    return checked_load(spec.loader, name, split, root, spec=spec, image_size=image_size)


def checked_load(loader: Callable[..., Any], name: str, split: str,
                 root: str | Path | None, *, spec: DatasetSpec | None = None,
                 image_size: int = 0) -> ImageDataset:
    """``loader(split, root)``, refused unless it returns an ``ImageDataset`` that matches
    ``spec`` (:func:`check_spec`); then brought to ``image_size`` when that is not 0."""
    resizes = bool(image_size) and _takes_image_size(loader)
    dataset = loader(split, root, image_size=image_size) if resizes else loader(split, root)
    if not isinstance(dataset, ImageDataset):
        raise PluginError(
            f"dataset '{name}' returned {type(dataset).__name__}; loaders must return "
            "sslreg.data.ImageDataset"
        )
    if spec is not None:
        # A size asked for replaces the declared one, for a loader that resizes itself.
        check_spec(spec, dataset, skip=("image_size",) if resizes else ())
    return dataset.resized(image_size)


def check_spec(spec: DatasetSpec, dataset: ImageDataset, skip: tuple[str, ...] = ()) -> None:
    """Refuse a loaded split that differs from what ``spec`` declares.

    ``num_classes``, ``channels`` and ``image_size`` are checked where they are not
    ``None``; ``None`` leaves the field to the files.

    Raises:
        PluginError: naming the dataset, the field, the declared and the loaded value.
    """
    for field in ("num_classes", "channels", "image_size"):
        if field in skip:
            continue
        declared, loaded = getattr(spec, field), getattr(dataset, field)
        if declared is not None and declared != loaded:
            raise PluginError(
                f"dataset '{spec.name}' declares {field}={declared} but {dataset.name} has "
                f"{field}={loaded}; fix the spec (None lets the files decide) or the loader"
            )


def _takes_image_size(loader: Callable[..., Any]) -> bool:
    # Only a loader of files of many sizes needs the size while reading (to stack them).
    try:
        return "image_size" in inspect.signature(loader).parameters
    except (TypeError, ValueError):  # builtins and some callables have no signature
        return False
