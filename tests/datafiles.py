"""Tiny files in the built-in datasets' real on-disk formats, for the data tests and the
dataset contract tests (tests/test_data.py, tests/test_contracts.py,
tests/test_data_sources.py)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from sslreg.data import idx


def pattern(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    content = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    content += array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as stream:
            stream.write(content)
    else:
        path.write_bytes(content)


def write_fashion(folder: Path, compress: bool, count: int = 7) -> np.ndarray:
    """Both Fashion-MNIST splits, ``count`` 28x28 images each, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    images = pattern((count, 28, 28))
    for image_name, label_name in idx.FILES.values():
        write_idx(folder / image_name, images, 0x803, compress)
        write_idx(folder / label_name, np.arange(count) % 10, 0x801, compress)
    return images


def cifar_batch(path: Path, images: np.ndarray, labels: list[int], key: bytes) -> None:
    batch = {b"batch_label": b"x", b"data": images.reshape(len(images), -1), key: labels}
    path.write_bytes(pickle.dumps(batch))


def write_cifar10(root: Path, per_batch: int = 2) -> None:
    """root/cifar-10-batches-py: five training batches and a test batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"class{i}".encode() for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    for number, name in enumerate([*(f"data_batch_{n}" for n in range(1, 6)), "test_batch"]):
        labels = [(number + i) % 10 for i in range(per_batch)]
        cifar_batch(folder / name, pattern((per_batch, 3, 32, 32), number), labels, b"labels")


def write_cifar100(root: Path, count: int = 4) -> None:
    """root/cifar-100-python: train and test with fine labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": []}
    (folder / "meta").write_bytes(pickle.dumps(meta))
    for seed, split in enumerate(("train", "test")):
        batch = {b"data": pattern((count, 3 * 32 * 32), seed),
                 b"fine_labels": [i * 7 % 100 for i in range(count)], b"coarse_labels": [0]}
        (folder / split).write_bytes(pickle.dumps(batch))


def write_stl10(root: Path, count: int = 2) -> None:
    """root/stl10_binary: column-major 96x96 images, labels 1..10 and class names."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        (folder / f"{split}_X.bin").write_bytes(pattern((count, 3, 96, 96)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(bytes(range(1, count + 1)))
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")


def write_stl10_unlabeled(root: Path, count: int = 2) -> None:
    """root/stl10_binary/unlabeled_X.bin: column-major 96x96 images, no labels."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "unlabeled_X.bin").write_bytes(pattern((count, 3, 96, 96)).tobytes())


def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_imagefolder(root: Path, classes: int = 2, size: int = 32) -> None:
    """root/{train,test}/<class>/*.png, one RGB image per class and split."""
    for split in ("train", "test"):
        for label in range(classes):
            write_png(root / split / f"class{label}" / "0.png", pattern((size, size, 3), label))


def write_mixed_photos(root: Path, per_class: int = 8, classes: int = 2) -> None:
    """root/{train,test}/<class>/*.jpg|png: RGB and grey images of assorted sizes and
    aspect ratios (40-90 px a side), as a folder of a user's photos would be."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in range(classes):
            for index in range(per_class):
                height, width = rng.integers(40, 91, size=2)
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                pixels[:, : width // 2] //= label + 1  # classes differ in brightness
                if index % 4 == 3:
                    pixels = pixels[..., 0]  # a grey photo among colour ones
                suffix = ".jpg" if index % 2 else ".png"
                write_png(root / split / f"class{label}" / f"{index}{suffix}", pixels)
