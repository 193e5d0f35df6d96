"""Image datasets as uint8 tensors, and loading a registered one. The built-in datasets are
registered by :mod:`sslreg.builtins.datasets`.

Each dataset's loader is ``load(split, root=None) -> ImageDataset`` with ``split`` in
``("train", "test")``; a missing or malformed file raises :class:`sslreg.DataError` with
one line saying what is missing, where it looked, and the fix.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sslreg.data.dataset import SPLITS, ImageDataset
from sslreg.errors import PluginError
from sslreg.specs import DatasetSpec

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

__all__ = ["SPLITS", "ImageDataset", "check_spec", "checked_load", "load_dataset"]


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
