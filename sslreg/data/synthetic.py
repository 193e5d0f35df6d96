"""A procedurally drawn, deterministic dataset for tests and smoke runs: no files needed.

Ten classes, each a distinct shape (disc, ring, square outline, filled square, plus,
cross, striped discs, triangle, diamond) drawn with random position, size, contrast and
rotation-free jitter, a random distractor blob and pixel noise. It is learnable from raw
pixels (nearest class mean does clearly better than chance) but not trivially.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from sslreg.data.dataset import ImageDataset, check_split

NAME = "synthetic"
SIZES = {"train": 2000, "test": 500}
# Different seeds, so the test images are new draws, not copies of training images.
SEEDS = {"train": 0, "test": 1}
CLASSES = (
    "disc",
    "ring",
    "square",
    "block",
    "plus",
    "cross",
    "hstripes",
    "vstripes",
    "triangle",
    "diamond",
)

Shape = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _shapes() -> tuple[Shape, ...]:
    """One mask function per class: ``(dx, dy, r)`` -> bool mask, all ``(B, H, W)``."""
    radius = lambda dx, dy: (dx.square() + dy.square()).sqrt()  # noqa: E731
    box = lambda dx, dy: torch.maximum(dx.abs(), dy.abs())  # noqa: E731
    return (
        lambda dx, dy, r: radius(dx, dy) < r,
        lambda dx, dy, r: (radius(dx, dy) - r).abs() < 1.3,
        lambda dx, dy, r: (box(dx, dy) - r * 0.85).abs() < 1.0,
        lambda dx, dy, r: box(dx, dy) < r * 0.7,
        lambda dx, dy, r: ((dx.abs() < 1.3) | (dy.abs() < 1.3)) & (box(dx, dy) < r),
        lambda dx, dy, r: ((dx.abs() - dy.abs()).abs() < 1.3) & (box(dx, dy) < r * 0.85),
        lambda dx, dy, r: (radius(dx, dy) < r) & (torch.remainder(dy, 4.0) < 2.0),
        lambda dx, dy, r: (radius(dx, dy) < r) & (torch.remainder(dx, 4.0) < 2.0),
        lambda dx, dy, r: (dy.abs() < r * 0.8) & (dx.abs() < (dy + r * 0.8) * 0.6),
        lambda dx, dy, r: (dx.abs() + dy.abs() - r).abs() < 1.2,
    )


def load(split: str, root: str | Path | None = None) -> ImageDataset:
    """Generate a split: 2,000 train or 500 test images, ``(N, 1, 28, 28)`` uint8.

    Args:
        split: ``"train"`` or ``"test"``.
        root: ignored; nothing is read from disk.

    Raises:
        DataError: unknown split.
    """
    check_split(split, NAME)
    with _one_thread():
        return generate(SIZES[split], seed=SEEDS[split], name=f"{NAME}/{split}")


@contextmanager
def _one_thread() -> Iterator[None]:
    # The tensors are small: on a busy CPU, waking intra-op threads for each of the ~50
    # ops cost seconds where one thread takes 0.2 s.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def generate(count: int, seed: int, image_size: int = 28, name: str = NAME) -> ImageDataset:
    """Draw ``count`` balanced, shuffled images of the ten shapes.

    Args:
        count: number of images.
        seed: seed of the ``torch.Generator``; the same seed gives the same tensors.
        image_size: side of the square images (at least 16 so the shapes fit).
        name: the dataset's name.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(count) % len(CLASSES))[torch.randperm(count, generator=generator)]
    canvas = torch.zeros(count, image_size, image_size)
    scale = image_size / 28
    centre = (image_size - 1) / 2 + (torch.rand(count, 2, generator=generator) - 0.5) * 4 * scale
    radius = (5.0 + 3.0 * torch.rand(count, generator=generator)) * scale
    axis = torch.arange(image_size, dtype=torch.float32)
    dx = axis.view(1, 1, -1) - centre[:, 0].view(-1, 1, 1)
    dy = axis.view(1, -1, 1) - centre[:, 1].view(-1, 1, 1)
    dx, dy = dx.expand_as(canvas), dy.expand_as(canvas)
    for label, shape in enumerate(_shapes()):
        chosen = labels == label
        mask = shape(dx[chosen] / scale, dy[chosen] / scale, radius[chosen, None, None] / scale)
        canvas[chosen] = mask.float()
    pixels = _render(canvas, generator, scale)
    return ImageDataset(images=pixels.unsqueeze(1), labels=labels, classes=CLASSES, name=name)


def _render(masks: torch.Tensor, generator: torch.Generator, scale: float) -> torch.Tensor:
    """Masks -> uint8 images with random contrast, a distractor blob and noise."""
    count, size, _ = masks.shape
    low = 0.25 * torch.rand(count, 1, 1, generator=generator)
    high = 0.6 + 0.4 * torch.rand(count, 1, 1, generator=generator)
    axis = torch.arange(size, dtype=torch.float32)
    spot = torch.rand(count, 2, generator=generator) * (size - 1)
    distance = (axis.view(1, 1, -1) - spot[:, 0, None, None]).square() + (
        axis.view(1, -1, 1) - spot[:, 1, None, None]
    ).square()
    # A soft blob anywhere on the image, so no single pixel gives the class away.
    blob = 0.5 * torch.exp(-distance / (2 * (2.0 * scale) ** 2))
    images = low + (high - low) * masks + blob
    images = images + 0.15 * torch.randn(images.shape, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)
