"""A folder of image files, labelled or not.

Labelled: ``root/{train,test}/<class>/*.png|jpg|...``. Classes are the sorted union of
the class folders of both splits, so a label means the same class in train and test.

Unlabelled (pretraining only): image files directly in ``root`` (or in ``root/train``),
with no class folders. Its train split is every image; it has no test split and cannot
be evaluated on: pretrain on it and evaluate on a labelled dataset (``eval.dataset``).

Size: with ``image_size=0`` (the default) every image must have the same size; with
``image_size=N`` each image's shorter side is resized to N (bicubic) and the centre
N x N is cropped, so images of any size and aspect ratio load, none stretched.

Channels: images are kept grayscale (1 channel) when every file of the split is
grayscale; one colour file makes every image RGB (grayscale ones repeat their channel).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from sslreg.data.dataset import SPLITS, ImageDataset, check_split, crop_offsets, resized_shape
from sslreg.errors import DataError

NAME = "imagefolder"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GRAY_MODES = ("1", "L", "LA", "I;16", "I;16L", "I;16B")
_SIZE_FIX = "set image_size=N (e.g. --set image_size=64) to resize and centre-crop them"


def load(split: str, root: str | Path | None = None, image_size: int = 0) -> ImageDataset:
    """Load a split as uint8 ``(N, C, H, W)`` images, labelled or not (module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        root: the folder holding ``train/`` and ``test/``, or the images themselves;
            required.
        image_size: 0 keeps the stored size (all images must share it); N resizes the
            shorter side to N and centre-crops N x N.

    Raises:
        DataError: no root, unknown split, missing folder, no images, an unreadable
            image, or images of different sizes with ``image_size=0``.
    """
    if root is None:
        raise DataError(
            "imagefolder needs --data-root PATH (a folder holding train/<class>/ and "
            "test/<class>/ image files, or unlabelled image files)"
        )
    check_split(split, NAME)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder; pass --data-root PATH")
    split_dir = _split_dir(root, split)
    classes = _classes(root)
    if not classes:
        files = [(path, 0) for path in _images_in(split_dir)]
        _require(files, split_dir, "*", " (or labelled ones in train/<class>/ and test/<class>/)")
        images = _read_all(files, image_size)
        return ImageDataset(images=images, labels=None, classes=(), name=f"{NAME}/{split}")
    files = _files(split_dir, classes)
    images = _read_all(files, image_size)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return ImageDataset(images=images, labels=labels, classes=classes, name=f"{NAME}/{split}")


def _split_dir(root: Path, split: str) -> Path:
    if any((root / name).is_dir() for name in SPLITS):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"imagefolder: {split_dir} is missing; create {split}/<class>/ in "
                            f"{root}")
        return split_dir
    if split == "test" and not _images_in(root):
        raise DataError(f"imagefolder: {root} holds no images; create train/<class>/ and "
                        "test/<class>/ folders of image files in it")
    if split == "test":
        raise DataError(
            f"imagefolder: {root} holds unlabelled images (no train/ or test/ folders), so "
            "it has no test split; evaluate on a labelled dataset: --set eval.dataset=NAME"
        )
    return root  # a flat folder of images is one unlabelled train split


def _classes(root: Path) -> tuple[str, ...]:
    names = {
        entry.name
        for split in SPLITS
        if (root / split).is_dir()
        for entry in (root / split).iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    }
    return tuple(sorted(names))


def _images_in(folder: Path) -> list[Path]:
    return [path for path in sorted(folder.iterdir())
            if path.suffix.lower() in EXTENSIONS and path.is_file()]


def _files(split_dir: Path, classes: tuple[str, ...]) -> list[tuple[Path, int]]:
    files = [
        (path, label)
        for label, name in enumerate(classes)
        if (split_dir / name).is_dir()
        for path in _images_in(split_dir / name)
    ]
    _require(files, split_dir, "<class>/")
    return files


def _require(files: list[tuple[Path, int]], split_dir: Path, pattern: str,
             other: str = "") -> None:
    if not files:
        raise DataError(
            f"imagefolder: no images in {split_dir}/{pattern}; put files ending in "
            f"{', '.join(EXTENSIONS)} there{other}"
        )


def _read_all(files: list[tuple[Path, int]], image_size: int) -> torch.Tensor:
    # First pass reads headers only (PIL decodes lazily) to pick one size and mode.
    size, gray = None, True
    for path, _ in files:
        with _open(path) as image:
            if size is None:
                size = image.size
            elif image.size != size and not image_size:
                raise DataError(
                    f"imagefolder: {path} is {image.size[0]}x{image.size[1]} but earlier images "
                    f"are {size[0]}x{size[1]}; {_SIZE_FIX}"
                )
            gray = gray and image.mode in _GRAY_MODES
    mode = "L" if gray else "RGB"
    arrays = [_pixels(path, mode, image_size) for path, _ in files]
    stacked = np.stack(arrays)
    # (N, H, W) grayscale or (N, H, W, 3) RGB -> (N, C, H, W).
    stacked = stacked[:, None] if gray else stacked.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked))


def fit(image: Image.Image, size: int) -> Image.Image:
    """``image`` with its shorter side resized to ``size``, then the centre ``size`` x
    ``size`` cropped (the rule :func:`sslreg.data.dataset.resize_center_crop` applies to
    tensors)."""
    width, height = image.size
    new_height, new_width = resized_shape(height, width, size)
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    top, left = crop_offsets(new_height, new_width, size)
    return image.crop((left, top, left + size, top + size))


def _open(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"imagefolder: cannot read {path} ({error}); fix or remove it") from None


def _pixels(path: Path, mode: str, image_size: int) -> np.ndarray:
    with _open(path) as image:
        try:
            if image.mode.startswith("I;16"):
                # convert("L") would clip 16-bit values; scale 0..65535 to 0..255 instead.
                values = np.asarray(image, dtype=np.float64) / 257
                image = Image.fromarray(values.round().astype(np.uint8))
            image = image.convert(mode)
            return np.asarray(fit(image, image_size) if image_size else image, dtype=np.uint8)
        except OSError as error:  # truncated or corrupt data shows up only when decoding
            raise DataError(
                f"imagefolder: cannot decode {path} ({error}); fix or remove it"
            ) from None
