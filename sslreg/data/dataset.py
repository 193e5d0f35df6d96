"""The in-memory image dataset every loader returns (labelled, or unlabelled for
pretraining only), and helpers loaders share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from sslreg.errors import DataError

SPLITS = ("train", "test")

# Images per chunk in channel_stats: one channel of 2048 96x96 images is a 19 MB copy.
_STATS_CHUNK = 2048


def _contiguous(value: Any) -> Any:
    # Only tensors are converted; anything else reaches the checks in __attrs_post_init__.
    return value.contiguous() if isinstance(value, torch.Tensor) else value


@attrs.frozen(kw_only=True)
class ImageDataset:
    """An image dataset held as tensors, labelled or not.

    An unlabelled dataset (a folder of images without class folders, STL-10's
    ``unlabeled`` split) has ``labels=None`` and ``classes=()``: it can be pretrained
    on, never evaluated on.

    Attributes:
        images: ``uint8`` tensor of shape ``(N, C, H, W)``, contiguous.
        labels: ``int64`` tensor of shape ``(N,)`` with values in ``range(len(classes))``,
            or ``None`` for an unlabelled dataset.
        classes: class names; ``classes[label]`` names a label; ``()`` when unlabelled.
        name: the dataset's name, with its split, e.g. ``"cifar10/train"``.
    """

    images: torch.Tensor = attrs.field(converter=_contiguous)
    labels: torch.Tensor | None = attrs.field(converter=_contiguous)
    classes: tuple[str, ...] = attrs.field(converter=tuple)
    name: str = attrs.field(validator=attrs.validators.instance_of(str))

    def __attrs_post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
            raise DataError(f"{self.name}: images must be a uint8 tensor, got {_kind(images)}")
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape)
            raise DataError(f"{self.name}: images must be (N, 1|3, H, W), got {shape}")
        if labels is None:
            if self.classes:
                raise DataError(f"{self.name}: class names {self.classes[:3]}... but no "
                                "labels; an unlabelled dataset has classes=()")
            return
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64:
            raise DataError(f"{self.name}: labels must be an int64 tensor, got {_kind(labels)}")
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"{self.name}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}"
            )
        if len(self.classes) < 1:
            raise DataError(f"{self.name}: no class names")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
            raise DataError(
                f"{self.name}: labels span {int(labels.min())}..{int(labels.max())} "
                f"but there are {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        """Whether the images have labels (an unlabelled dataset is for pretraining only)."""
        return self.labels is not None

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``; 0 when unlabelled)."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Channels per image: 1 (grayscale) or 3 (RGB)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Side of the square images, or ``(H, W)`` when they are not square."""
        height, width = int(self.images.shape[2]), int(self.images.shape[3])
        return height if height == width else (height, width)

    def subset(self, size: int, seed: int) -> ImageDataset:
        """A fixed random subset of ``size`` images, in their original order.

        Args:
            size: images to keep; ``0`` or ``>= len(self)`` returns ``self``.
            seed: the same seed always picks the same images.

        Returns:
            The subset (not stratified).
        """
        if size < 0:
            raise DataError(f"{self.name}: subset size must be >= 0, got {size}")
        if size == 0 or size >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        # Sorting keeps the original order, so a subset of a subset stays predictable.
        index = torch.randperm(len(self), generator=generator)[:size].sort().values
        return self._rows(index)

    def split(self, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
        """A seeded, stratified split: ``(rest, held)``, ``held`` taking ``fraction`` of
        every class (rounded), both in their original order.

        The validation split of a run is ``held`` of the training split; ``rest`` is all
        that pretraining and the probes may fit on.
        """
        if self.labels is None:
            raise DataError(f"{self.name} has no labels, so no validation split can be drawn "
                            "from it; evaluate on a labelled dataset (eval.dataset)")
        rest, held = stratified_split(self.labels, fraction, seed)
        if not len(held) or not len(rest):
            raise DataError(f"{self.name}: a {fraction} split of {len(self)} images leaves "
                            "one side empty")
        return self._take(rest), self._take(held)

    def _take(self, index: torch.Tensor) -> ImageDataset:
        return self._rows(index.sort().values)

    def _rows(self, index: torch.Tensor) -> ImageDataset:
        index = index.to(self.images.device)
        labels = None if self.labels is None else self.labels[index.to(self.labels.device)]
        return attrs.evolve(self, images=self.images[index], labels=labels)

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (population) standard deviation of ``images / 255``.

        Each channel's pixel values are counted (a 256-bin histogram per chunk of
        images), so the sums are exact, memory stays bounded however many images there
        are, and 100k STL-10 images take seconds rather than minutes in float64.

        Returns:
            ``(mean, std)``, each a tuple with one float per channel.
        """
        device = self.images.device
        counts = torch.zeros(self.channels, 256, dtype=torch.int64, device=device)
        for chunk in self.images.split(_STATS_CHUNK):
            for channel in range(self.channels):
                counts[channel] += torch.bincount(chunk[:, channel].reshape(-1), minlength=256)
        values = torch.arange(256, dtype=torch.float64, device=device)
        histogram = counts.to(torch.float64)
        total = histogram.sum(dim=1).clamp_min(1)
        mean = histogram @ values / total
        std = (histogram @ values.square() / total - mean.square()).clamp_min(0).sqrt()
        return tuple((mean / 255).tolist()), tuple((std / 255).tolist())

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with its tensors on ``device``."""
        labels = None if self.labels is None else self.labels.to(device)
        return attrs.evolve(self, images=self.images.to(device), labels=labels)

    def resized(self, size: int) -> ImageDataset:
        """The same dataset at ``size`` x ``size`` (:func:`resize_center_crop`)."""
        if size == 0 or tuple(self.images.shape[2:]) == (size, size):
            return self
        return attrs.evolve(self, images=resize_center_crop(self.images, size))


# Images per chunk when resizing: float32 copies of 1024 3x96x96 images are ~110 MB.
_RESIZE_CHUNK = 1024


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """``(height, width)`` scaled so the shorter side is ``size``, the aspect kept."""
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """``(top, left)`` of the centred ``size`` x ``size`` window of a ``height`` x
    ``width`` image."""
    return (height - size) // 2, (width - size) // 2


def resize_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``(N, C, H, W)`` images so the shorter side is ``size`` (bilinear,
    antialiased), then crop the centre ``size`` x ``size``: nothing is stretched.

    The same rule as the image-folder loader applies to files, for tensors that other
    loaders return, so every dataset of a run can be brought to one size.
    """
    height, width = int(images.shape[2]), int(images.shape[3])
    new_height, new_width = resized_shape(height, width, size)
    top, left = crop_offsets(new_height, new_width, size)
    chunks = []
    for chunk in images.split(_RESIZE_CHUNK):
        scaled = F.interpolate(chunk.float(), size=(new_height, new_width), mode="bilinear",
                               antialias=True, align_corners=False)
        window = scaled[:, :, top:top + size, left:left + size]
        chunks.append(window.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks).contiguous()


def stratified_split(labels: torch.Tensor, fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded split of row indices, stratified so each class keeps its share.

    Args:
        labels: (N,) integer labels.
        fraction: share of each class that goes to the second part, rounded.
        seed: seeds the shuffle.

    Returns:
        ``(rest, held)``: int64 index tensors that partition ``range(N)``.
    """
    labels = labels.cpu().long()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.shape[0], generator=generator)
    # A stable sort by label groups each class while keeping its shuffled order.
    order = order[torch.sort(labels[order], stable=True).indices]
    sorted_labels = labels[order]
    counts = torch.bincount(labels)
    class_start = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(labels.shape[0]) - class_start[sorted_labels]
    held = rank_in_class < torch.round(counts * fraction).long()[sorted_labels]
    return order[~held], order[held]


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


def check_split(split: str, dataset: str) -> None:
    """Raise :class:`DataError` unless ``split`` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' for {dataset}; choose from: {', '.join(SPLITS)}")


def data_root(root: str | Path | None, dataset: str, folder: str) -> Path:
    """The folder to read a dataset from: ``root`` if given, else ``$SSLREG_DATA``.

    Args:
        root: a folder the user gave (``--data-root``), or ``None``.
        dataset: the dataset's display name, for the error message.
        folder: the subfolder the standard archive unpacks to, for the error message.

    Raises:
        DataError: neither ``root`` nor ``$SSLREG_DATA`` is set.
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("SSLREG_DATA")
    if env:
        return Path(env).expanduser()
    raise DataError(
        f"{dataset} needs a data folder: pass --data-root PATH or set $SSLREG_DATA "
        f"to a folder holding {folder}/"
    )


def find_folder(root: Path, folder: str, marker: str) -> Path | None:
    """``root/folder`` if it holds ``marker``, else ``root`` itself if it does, else None.

    Accepting both lets users point at the data folder or at the unpacked archive.
    """
    for candidate in (root / folder, root):
        if (candidate / marker).is_file():
            return candidate
    return None
