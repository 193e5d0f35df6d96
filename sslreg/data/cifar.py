"""CIFAR-10 and CIFAR-100 in the standard "python version" pickle format.

CIFAR-10 reads ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``,
CIFAR-100 reads ``cifar-100-python/{train, test, meta}`` with the 100 fine labels, from
the given root or ``$SSLREG_DATA`` (the unpacked folder itself is accepted as root too).
Both archives come from https://www.cs.toronto.edu/~kriz/cifar.html.

The files are pickles, as published; only load files you trust.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from sslreg.data.dataset import ImageDataset, check_split, data_root, find_folder
from sslreg.errors import DataError

_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@attrs.frozen
class _Layout:
    """Where one CIFAR variant keeps its files and which keys hold what."""

    name: str
    folder: str
    files: dict[str, tuple[str, ...]]
    meta: str
    label_key: str
    names_key: str


CIFAR10 = _Layout(
    name="cifar10",
    folder="cifar-10-batches-py",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    meta="batches.meta",
    label_key="labels",
    names_key="label_names",
)
CIFAR100 = _Layout(
    name="cifar100",
    folder="cifar-100-python",
    files={"train": ("train",), "test": ("test",)},
    meta="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
)


def load_cifar10(split: str, root: str | Path | None = None) -> ImageDataset:
    """Load a CIFAR-10 split (50,000 / 10,000 images, ``(N, 3, 32, 32)`` uint8).

    Raises:
        DataError: unknown split, files missing or malformed.
    """
    return _load(CIFAR10, split, root)


def load_cifar100(split: str, root: str | Path | None = None) -> ImageDataset:
    """Load a CIFAR-100 split with its 100 fine labels (``(N, 3, 32, 32)`` uint8).

    Raises:
        DataError: unknown split, files missing or malformed.
    """
    return _load(CIFAR100, split, root)


def _load(layout: _Layout, split: str, root: str | Path | None) -> ImageDataset:
    check_split(split, layout.name)
    base = data_root(root, layout.name, layout.folder)
    folder = find_folder(base, layout.folder, layout.meta)
    if folder is None:
        raise DataError(
            f"{layout.name} not found: no {layout.folder}/{layout.meta} in {base}; download "
            f"the python version from {_URL} and unpack it there"
        )
    meta = folder / layout.meta
    classes = tuple(_decode(name) for name in _field(_unpickle(meta), layout.names_key, meta))
    batches = [_read_batch(folder / name, layout.label_key) for name in layout.files[split]]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        classes=classes,
        name=f"{layout.name}/{split}",
    )


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data = np.asarray(_field(batch, "data", path), dtype=np.uint8)
    labels = np.asarray(_field(batch, label_key, path), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise DataError(
            f"{path} holds data {data.shape} and labels {labels.shape}; expected (N, 3072) "
            f"and (N,); download it again from {_URL}"
        )
    # Rows are 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32.
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path} is missing; download the python version from {_URL}")
    try:
        with open(path, "rb") as stream:
            content = pickle.load(stream, encoding="bytes")
    except Exception as error:  # pickle raises many kinds on a corrupt file
        raise DataError(
            f"cannot read {path} ({type(error).__name__}); download it again from {_URL}"
        ) from None
    if not isinstance(content, dict):
        raise DataError(f"{path} is not a CIFAR pickle (no dict inside); download it again")
    return content


def _field(content: dict, key: str, path: Path) -> Any:
    # The original files pickle str keys under Python 2, so they load as bytes.
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    raise DataError(f"{path} has no '{key}' entry; download it again from {_URL}")


def _decode(name: Any) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)
