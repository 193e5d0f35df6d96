"""A folder of image files: ``root/{train,test}/<class>/*.png|jpg|...``.

Classes are the sorted union of the class folders of both splits, so a label means the
same class in train and test. Every image must have the same size (nothing is resized);
images are kept grayscale when every file is grayscale, else converted to RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sslreg.data.dataset import SPLITS, ImageDataset, check_split
from sslreg.errors import DataError

NAME = "imagefolder"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GRAY_MODES = ("1", "L", "LA", "I;16", "I;16L", "I;16B")


def load(split: str, root: str | Path | None = None) -> ImageDataset:
    """Load ``root/<split>/<class>/*`` as uint8 ``(N, C, H, W)`` images.

    Args:
        split: ``"train"`` or ``"test"``.
        root: the folder holding ``train/`` and ``test/``; required.

    Raises:
        DataError: no root, unknown split, missing folder, no images, an unreadable
            image, or images of different sizes.
    """
    if root is None:
        raise DataError(
            "imagefolder needs --data-root PATH (a folder holding train/<class>/ and "
            "test/<class>/ image files)"
        )
    check_split(split, NAME)
    root = Path(root).expanduser()
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"imagefolder: {split_dir} is missing; create {split}/<class>/ in {root}")
    classes = _classes(root)
    files = _files(split_dir, classes)
    images = _read_all(files)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageDataset(images=images, labels=labels, classes=classes, name=f"{NAME}/{split}")


def _classes(root: Path) -> tuple[str, ...]:
    names = {
        entry.name
        for split in SPLITS
        if (root / split).is_dir()
        for entry in (root / split).iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    }
    return tuple(sorted(names))


def _files(split_dir: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    files = [
        (path, label)
        for label, name in enumerate(classes)
        if (split_dir / name).is_dir()
        for path in sorted((split_dir / name).iterdir())
        if path.suffix.lower() in EXTENSIONS and path.is_file()
    ]
    if not files:
        raise DataError(
            f"imagefolder: no images in {split_dir}/<class>/; expected files ending in "
            f"{', '.join(EXTENSIONS)}"
        )
    return files


def _read_all(files: list[tuple[Path, int]]) -> torch.Tensor:
    # First pass reads headers only (PIL decodes lazily) to pick one size and mode.
    size, gray = None, True
    for path, _ in files:
        with _open(path) as image:
            if size is None:
                size = image.size
            elif image.size != size:
                raise DataError(
                    f"imagefolder: {path} is {image.size[0]}x{image.size[1]} but earlier images "
                    f"are {size[0]}x{size[1]}; resize all images to one size first"
                )
            gray = gray and image.mode in _GRAY_MODES
    mode = "L" if gray else "RGB"
    arrays = [_pixels(path, mode) for path, _ in files]
    stacked = np.stack(arrays)
    # (N, H, W) grayscale or (N, H, W, 3) RGB -> (N, C, H, W).
    stacked = stacked[:, None] if gray else stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"imagefolder: cannot read {path} ({error}); fix or remove it") from None


def _pixels(path: Path, mode: str) -> np.ndarray:
    with _open(path) as image:
        try:
            if image.mode.startswith("I;16"):
                # convert("L") would clip 16-bit values; scale 0..65535 to 0..255 instead.
                values = np.asarray(image, dtype=np.float64) / 257
                image = Image.fromarray(values.round().astype(np.uint8))
            return np.asarray(image.convert(mode), dtype=np.uint8)
        except OSError as error:  # truncated or corrupt data shows up only when decoding
            raise DataError(
                f"imagefolder: cannot decode {path} ({error}); fix or remove it"
            ) from None
