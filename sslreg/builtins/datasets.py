"""Built-in datasets, registered through the same hook a third-party plugin uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sslreg.data import ImageDataset, cifar, digits, idx, imagefolder, stl10, synthetic
from sslreg.hookspecs import hookimpl
from sslreg.specs import DatasetSpec


def _spec(
    name: str, loader: Callable[..., ImageDataset], description: str, **shape: Any
) -> DatasetSpec:
    return DatasetSpec(name=name, loader=loader, description=description, **shape)


def built_in_specs() -> list[DatasetSpec]:
    """The built-in datasets' specs."""
    return [
        _spec("fashion-mnist", idx.load,
              "Zalando Fashion-MNIST, 60k/10k 28x28 grayscale (Xiao et al. 2017)",
              num_classes=10, channels=1, image_size=28),
        _spec("cifar10", cifar.load_cifar10,
              "CIFAR-10, 50k/10k 32x32 RGB (Krizhevsky 2009), python pickle format",
              num_classes=10, channels=3, image_size=32),
        _spec("cifar100", cifar.load_cifar100,
              "CIFAR-100 fine labels, 50k/10k 32x32 RGB (Krizhevsky 2009)",
              num_classes=100, channels=3, image_size=32),
        _spec("stl10", stl10.load,
              "STL-10 labelled splits, 5k/8k 96x96 RGB (Coates et al. 2011), binary format",
              num_classes=10, channels=3, image_size=96),
        _spec("stl10-unlabeled", stl10.load_unlabeled,
              "STL-10's 100k unlabelled 96x96 RGB images as the train split, for "
              "pretraining; evaluate with eval.dataset=stl10",
              num_classes=0, channels=3, image_size=96),
        _spec("imagefolder", imagefolder.load,
              "root/{train,test}/<class>/*.png|jpg (labelled) or root/*.png|jpg (unlabelled, "
              "pretraining only); classes, channels and size come from the files; "
              "image_size=N resizes the shorter side to N and centre-crops",
              needs_root=True),
        _spec("digits", digits.load,
              "scikit-learn's 8x8 handwritten digits, 1500/297 split (seed 0)",
              num_classes=10, channels=1, image_size=8),
        _spec("synthetic", synthetic.load,
              "ten procedurally drawn shapes, 2000/500 28x28 grayscale, no files",
              num_classes=10, channels=1, image_size=28),
    ]  # fmt: skip


@hookimpl
def register_datasets(register: Callable[[Any], None]) -> None:
    """Register the built-in datasets."""
    for spec in built_in_specs():
        register(spec)
