"""STL-10 in the standard binary format: the labelled splits, and the unlabelled one.

Dataset ``stl10`` reads ``stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin,
class_names.txt}``; dataset ``stl10-unlabeled`` reads ``stl10_binary/unlabeled_X.bin``
(100,000 images, 2.76 GB held as uint8) as its train split, for pretraining, and has no
test split (evaluate with ``eval.dataset=stl10``). Both look in the given root or
``$SSLREG_DATA`` (the unpacked folder itself is accepted as root too). The archive comes
from https://cs.stanford.edu/~acoates/stl10/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sslreg.data.dataset import ImageDataset, check_split, data_root, find_folder
from sslreg.errors import DataError

NAME = "stl10"
UNLABELED_NAME = "stl10-unlabeled"
UNLABELED_FILE = "unlabeled_X.bin"
FOLDER = "stl10_binary"
SIDE = 96
_IMAGE_BYTES = 3 * SIDE * SIDE
_URL = "https://cs.stanford.edu/~acoates/stl10/"
# Images decoded per read: the column-major transpose needs a copy, so reading in
# chunks keeps the peak near the 2.76 GB the 100k unlabelled images take as uint8.
_READ_CHUNK = 4096


def load(split: str, root: str | Path | None = None) -> ImageDataset:
    """Load an STL-10 labelled split (5,000 / 8,000 images, ``(N, 3, 96, 96)`` uint8).

    Args:
        split: ``"train"`` or ``"test"``; the unlabelled split is not offered.
        root: the folder holding ``stl10_binary/``; ``None`` uses ``$SSLREG_DATA``.

    Raises:
        DataError: unknown split, files missing or malformed.
    """
    check_split(split, NAME)
    base = data_root(root, NAME, FOLDER)
    folder = find_folder(base, FOLDER, f"{split}_X.bin")
    if folder is None:
        raise DataError(
            f"STL-10 not found: no {FOLDER}/{split}_X.bin in {base}; download the binary "
            f"version from {_URL} and unpack it there"
        )
    images = _read_images(folder / f"{split}_X.bin")
    labels = _read_labels(folder / f"{split}_y.bin", len(images))
    classes = _read_classes(folder / "class_names.txt")
    return ImageDataset(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        classes=classes,
        name=f"{NAME}/{split}",
    )


def load_unlabeled(split: str, root: str | Path | None = None) -> ImageDataset:
    """Load STL-10's unlabelled images (``(100000, 3, 96, 96)`` uint8) as the train split.

    Args:
        split: ``"train"``; ``"test"`` is refused (there are no labels to score).
        root: the folder holding ``stl10_binary/``; ``None`` uses ``$SSLREG_DATA``.

    Raises:
        DataError: unknown split or the test split, file missing or malformed.
    """
    check_split(split, UNLABELED_NAME)
    if split != "train":
        raise DataError(f"{UNLABELED_NAME} has only a train split (unlabelled images); "
                        "evaluate on the labelled splits: --set eval.dataset=stl10")
    base = data_root(root, UNLABELED_NAME, FOLDER)
    folder = find_folder(base, FOLDER, UNLABELED_FILE)
    if folder is None:
        raise DataError(
            f"STL-10 unlabelled images not found: no {FOLDER}/{UNLABELED_FILE} in {base}; "
            f"download the binary version from {_URL} and unpack it there"
        )
    images = _read_images(folder / UNLABELED_FILE)
    return ImageDataset(images=torch.from_numpy(images), labels=None, classes=(),
                        name=f"{UNLABELED_NAME}/train")


def _read_images(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size == 0 or size % _IMAGE_BYTES:
        raise DataError(
            f"{path} holds {size} bytes, not a multiple of {_IMAGE_BYTES} (3x96x96); "
            f"download it again from {_URL}"
        )
    images = np.empty((size // _IMAGE_BYTES, 3, SIDE, SIDE), dtype=np.uint8)
    with open(path, "rb") as stream:
        for start in range(0, len(images), _READ_CHUNK):
            chunk = images[start:start + _READ_CHUNK]
            data = np.fromfile(stream, dtype=np.uint8, count=chunk.size)
            if data.size != chunk.size:
                raise DataError(f"{path} ended early while reading; download it again from "
                                f"{_URL}")
            # Each channel is stored column-major (x outer, y inner), so swap H and W back.
            chunk[...] = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2)
    return images


def _read_labels(path: Path, count: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path} is missing; download the binary version from {_URL}")
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if labels.shape != (count,) or (count and (labels.min() < 1 or labels.max() > 10)):
        raise DataError(
            f"{path} should hold {count} labels in 1..10; download it again from {_URL}"
        )
    return labels - 1  # the files count classes from 1


def _read_classes(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        raise DataError(f"{path} is missing; download the binary version from {_URL}")
    names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(names) != 10:
        raise DataError(f"{path} names {len(names)} classes, not 10; download it again")
    return names
