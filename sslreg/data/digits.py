"""scikit-learn's 8x8 handwritten digits (1,797 images), split 1,500 train / 297 test.

The data ships inside scikit-learn, so nothing is downloaded. The split is a fixed
permutation (seed 0), the same on every machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from sslreg.data.dataset import ImageDataset, check_split
from sslreg.errors import DataError

NAME = "digits"
TRAIN_SIZE = 1500
CLASSES = tuple(str(digit) for digit in range(10))


def load(split: str, root: str | Path | None = None) -> ImageDataset:
    """Load a split of the digits as ``(N, 1, 8, 8)`` uint8 images.

    Args:
        split: ``"train"`` (1,500 images) or ``"test"`` (297).
        root: ignored; the data comes with scikit-learn.

    Raises:
        DataError: unknown split, or scikit-learn is not installed.
    """
    check_split(split, NAME)
    pixels, targets = _digits()
    # 17 gray levels 0..16 -> 0..255, rounded so 16 maps to exactly 255.
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))
    index = order[:TRAIN_SIZE] if split == "train" else order[TRAIN_SIZE:]
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images[index][:, None])),
        labels=torch.from_numpy(targets[index].astype(np.int64)),
        classes=CLASSES,
        name=f"{NAME}/{split}",
    )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images ``(N, 8, 8)`` with values 0..16, and their labels."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise DataError(
            "the digits dataset needs scikit-learn: `pip install scikit-learn` "
            "(or `pip install sslreg[digits]`)"
        )
    # Reading the CSV that load_digits reads skips importing sklearn.datasets (seconds).
    for folder in spec.submodule_search_locations or ():
        csv = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.int64)
            if table.shape == (1797, 65):
                return table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    from sklearn.datasets import load_digits  # the file moved: use the public API

    bunch = load_digits()
    return bunch.images, bunch.target
