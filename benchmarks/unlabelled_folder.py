"""Write Fashion-MNIST training images as PNG files into one flat folder (no class
folders, so no labels), for a run that pretrains on an unlabelled folder and is scored
on the labelled Fashion-MNIST.

The images come from the part of the training split that is not the run's validation
split (the same fraction and seed as ``eval.val_fraction``'s default), so nothing the
run is validated on is pretrained on.

    PYTHONPATH=.:$(ls -d plugins/* | tr '\\n' ':') \\
        python benchmarks/unlabelled_folder.py /tmp/fmnist-unlabelled --images 6000
    sslreg pretrain --method simclr --dataset imagefolder --data-root /tmp/fmnist-unlabelled \\
        --set eval.dataset=fashion-mnist --backbone resnet18-narrow --epochs 2 \\
        --batch-size 256 --set eval.train_subset=5000 --set eval.val_subset=2000 \\
        --out /tmp/unlabelled-runs
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from sslreg import load_registry
from sslreg.config import EvalConfig
from sslreg.data import load_dataset
from sslreg.engine.splits import VAL_SEED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--images", type=int, default=6000)
    args = parser.parse_args()
    train = load_dataset(load_registry(), "fashion-mnist", "train")
    rest, _validation = train.split(EvalConfig().val_fraction, seed=VAL_SEED)
    chosen = rest.subset(args.images, seed=1)
    args.folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(chosen.images):
        Image.fromarray(image[0].numpy()).save(args.folder / f"{i:05d}.png")
    print(f"wrote {len(chosen)} unlabelled {chosen.image_size} px PNG files to {args.folder}")


if __name__ == "__main__":
    main()
