"""Fashion-MNIST from the original IDX files (gzipped or not).

Search order: the given root (and ``root/fashion-mnist``), the Debian package
``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), ``$SSLREG_DATA/fashion-mnist``
(or ``~/.cache/sslreg/fashion-mnist`` without ``$SSLREG_DATA``), then a download into that
last folder unless ``SSLREG_OFFLINE=1``.
"""

from __future__ import annotations

import gzip
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

from sslreg.data.dataset import ImageDataset, check_split
from sslreg.errors import DataError

NAME = "fashion-mnist"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DOWNLOAD_TIMEOUT_S = 5.0

# IDX magic numbers: two zero bytes, type 0x08 (unsigned byte), number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801


def load(split: str, root: str | Path | None = None) -> ImageDataset:
    """Load a Fashion-MNIST split as ``(N, 1, 28, 28)`` uint8 images.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: a folder holding the IDX files, searched first; ``None`` searches the
            usual places only.

    Raises:
        DataError: unknown split, files not found anywhere, or a malformed file.
    """
    check_split(split, NAME)
    image_name, label_name = FILES[split]
    folder = _find(split, root)
    images = read_idx(_existing(folder, image_name), _IMAGES_MAGIC)
    labels = read_idx(_existing(folder, label_name), _LABELS_MAGIC)
    if images.shape[1:] != (28, 28) or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"Fashion-MNIST files in {folder} disagree: images {images.shape}, labels "
            f"{labels.shape}; expected (N, 28, 28) and (N,); replace them with the originals"
        )
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=CLASSES,
        name=f"{NAME}/{split}",
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes, checking its magic number and size.

    Args:
        path: the file; a ``.gz`` suffix means gzip-compressed.
        magic: the expected magic number (``0x803`` for images, ``0x801`` for labels).

    Returns:
        A writable uint8 array with the dimensions the header gives.

    Raises:
        DataError: unreadable, wrong magic number, or data size not matching the header.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}; download the file again") from None
    fix = "delete it and download the original again"
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file with magic number {magic:#06x}; {fix}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated inside its header; {fix}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise DataError(
            f"{path} holds {len(data) - header} data bytes but its header {dims} says "
            f"{expected}; {fix}"
        )
    # bytearray gives a writable buffer, so torch.from_numpy needs no extra copy.
    return np.frombuffer(bytearray(data[header:]), dtype=np.uint8).reshape(dims)


def _existing(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / name}[.gz] is missing; put the Fashion-MNIST IDX files there")


def _has_split(folder: Path, split: str) -> bool:
    return all(
        (folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in FILES[split]
    )


def download_dir() -> Path:
    """Where downloads go: ``$SSLREG_DATA/fashion-mnist``, else the user cache."""
    env = os.environ.get("SSLREG_DATA")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "sslreg"
    return base / NAME


def search_dirs(root: str | Path | None) -> list[Path]:
    """The folders searched for the IDX files, in order."""
    dirs = []
    if root is not None:
        root = Path(root).expanduser()
        dirs += [root, root / NAME]
    return dirs + list(SYSTEM_DIRS) + [download_dir()]


def _find(split: str, root: str | Path | None) -> Path:
    places = search_dirs(root)
    for folder in places:
        if _has_split(folder, split):
            return folder
    target = download_dir()
    reason = download(target)
    if reason is None and _has_split(target, split):
        return target
    raise DataError(
        f"Fashion-MNIST not found in {', '.join(map(str, places))} ({reason}); install it "
        "with `apt-get install dataset-fashion-mnist` or put the IDX files in "
        "$SSLREG_DATA/fashion-mnist"
    )


def download(target: Path) -> str | None:
    """Download the four gzipped IDX files into ``target``.

    Returns:
        ``None`` on success, else why nothing was downloaded (for the error message).
    """
    if os.environ.get("SSLREG_OFFLINE", "") not in ("", "0"):
        return "download skipped: SSLREG_OFFLINE is set"
    for name in (name for pair in FILES.values() for name in pair):
        path = target / f"{name}.gz"
        if path.is_file():
            continue
        partial = target / f"{name}.gz.part"
        try:
            target.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(f"{MIRROR}{name}.gz", timeout=DOWNLOAD_TIMEOUT_S) as r:
                partial.write_bytes(r.read())
            # Rename only complete files, so an interrupted download is never read.
            partial.replace(path)
        except Exception as error:  # offline, DNS, timeout, HTTP error, read-only disk
            partial.unlink(missing_ok=True)
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()  # leave no empty folder behind
            return f"download from {MIRROR} failed: {type(error).__name__}"
    return None
