"""Time the frozen-backbone evaluation at full Fashion-MNIST scale (60k train, 10k test).

Default: synthetic 512-d features of 10 overlapping classes (see
:func:`clustered_features`). ``--fashion-mnist DIR``: random ReLU features of the real
images (784 pixels -> 512), a harder case for the linear probe's optimiser, as
correlated as pooled CNN features and far from separable.

Run: ``python benchmarks/eval_speed.py [--threads N] [--fashion-mnist DIR]``
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from sslreg.evaluation import evaluate_features, knn_predict_many, linear_probe

T = TypeVar("T")
Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def clustered_features(
    n: int, dim: int, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, dim) backbone-like features and their (n,) labels.

    Gaussian class clusters in a 64-d latent space, lifted to ``dim`` by a fixed random
    map and a ReLU: non-negative and strongly correlated, like pooled CNN features.
    """
    fixed = torch.Generator().manual_seed(0)  # the same classes for train and test
    centres = torch.randn(num_classes, 64, generator=fixed)
    lift = torch.randn(64, dim, generator=fixed) / 8
    labels = torch.randint(num_classes, (n,), generator=generator)
    # Centres at 0.35 against unit noise keep the classes overlapping.
    latent = 0.35 * centres[labels] + torch.randn(n, 64, generator=generator)
    return torch.relu(latent @ lift + 0.1 * torch.randn(n, dim, generator=generator)), labels


def synthetic(train: int, test: int, dim: int) -> Features:
    generator = torch.Generator().manual_seed(1)
    train_x, train_y = clustered_features(train, dim, 10, generator)
    test_x, test_y = clustered_features(test, dim, 10, generator)
    return train_x, train_y, test_x, test_y


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as file:
        return np.frombuffer(file.read(), np.uint8, offset=offset)


def fashion_mnist_relu(root: Path, dim: int) -> Features:
    """Random ReLU features relu(pixels @ R - 0.5) of Fashion-MNIST, R fixed (784, dim)."""
    projection = torch.randn(784, dim, generator=torch.Generator().manual_seed(0)) / 28
    out = []
    for prefix in ("train", "t10k"):
        images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 784)
        labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz", 8)
        pixels = torch.from_numpy(images.astype(np.float32) / 255)
        out += [torch.relu(pixels @ projection - 0.5), torch.from_numpy(labels.astype(np.int64))]
    return out[0], out[1], out[2], out[3]


def timed(label: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"{label:<18} {time.perf_counter() - start:6.1f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--fashion-mnist", type=Path, default=None, metavar="DIR",
                        help="use random ReLU features of the real images in DIR")
    parser.add_argument("--train", type=int, default=60_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.fashion_mnist:
        train_x, train_y, test_x, test_y = fashion_mnist_relu(args.fashion_mnist, args.dim)
    else:
        train_x, train_y, test_x, test_y = synthetic(args.train, args.test, args.dim)
    print(f"{tuple(train_x.shape)} train, {tuple(test_x.shape)} test, "
          f"{torch.get_num_threads()} CPU threads")
    probe = timed("linear_probe", linear_probe, train_x, train_y, test_x, test_y,
                  num_classes=10)
    print(f"  acc={probe.accuracy:.4f} weight_decay={probe.weight_decay:g} holdout="
          + ", ".join(f"{wd:g}: {acc:.4f}" for wd, acc in probe.holdout_accuracy.items()))
    timed("knn k=20 and 200", knn_predict_many, train_x, train_y, test_x, num_classes=10,
          ks=(20, 200), temperatures=(0.07, 0.1))
    results = timed("evaluate_features", evaluate_features, train_x, train_y, test_x, test_y,
                    num_classes=10)
    print("  " + ", ".join(f"{key}={value:.4g}" for key, value in results.items()))


if __name__ == "__main__":
    main()
