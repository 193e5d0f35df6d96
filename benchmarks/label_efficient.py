"""Time the label-efficient probes: what they add to one run's evaluation on this machine.

Two sizes, each with 1% and 10% of every class and 1, 5 and 10 images per class, on 5
fixed label subsets per setting (``eval.label_fractions=0.01,0.1 eval.shots=1,5,10``):

* the quick suite's evaluation: a finished run's own features (``--run DIR``, a
  quick-suite run directory: 5 000 training, 2 000 validation and 10 000 test images),
  beside the linear probe and kNN that every evaluation already runs;
* full Fashion-MNIST: 512-d random ReLU features of the images (784 pixels -> 512, as
  ``benchmarks/eval_speed.py``), 54 000 training images, the 6 000-image validation
  split carved from them as ``eval.val_fraction=0.1`` does, and the 10 000 test images.

Run: ``python benchmarks/label_efficient.py --run RUN_DIR --fashion-mnist DIR
[--output FILE]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch

from eval_speed import fashion_mnist_relu  # benchmarks/ is the script's own folder
from sslreg.data.dataset import stratified_split
from sslreg.engine.device import device_name
from sslreg.engine.splits import EVAL_SUBSET_SEED, LABEL_SUBSET_SEED
from sslreg.evaluation import evaluate_splits, extract_features, label_efficient_probes

SETTINGS = [("1%", {"fractions": (0.01,)}), ("10%", {"fractions": (0.1,)}),
            ("1-shot", {"shots": (1,)}), ("5-shot", {"shots": (5,)}),
            ("10-shot", {"shots": (10,)})]
SUBSETS = 5
Split = tuple[torch.Tensor, torch.Tensor]


def run_features(run_dir: Path) -> tuple[dict[str, Split], str]:
    """The train, val and test features of a finished run at its own evaluation sizes."""
    from sslreg.engine.checkpoint import load_checkpoint
    from sslreg.engine.splits import load_run_data
    from sslreg.engine.trainer import build_method
    from sslreg.plugins import load_registry
    from sslreg.runs import RunDir

    registry = load_registry()
    run = RunDir(run_dir)
    config = run.load_config(registry)
    data = load_run_data(config, registry)
    method = build_method(config, registry, data)
    method.load_state_dict(load_checkpoint(run.checkpoint)["model"])
    method.eval()
    splits = data.evaluation(config)
    features = {name: (extract_features(method.features, split.images, mean=data.stats[0],
                                         std=data.stats[1]), split.labels)
                for name, split in splits.items()}
    return features, f"{config.method} on {config.backbone}, {run.path.name}"


def full_size(root: Path) -> dict[str, Split]:
    train_x, train_y, test_x, test_y = fashion_mnist_relu(root, 512)
    rest, held = stratified_split(train_y, 0.1, 0)
    return {"train": (train_x[rest], train_y[rest]), "val": (train_x[held], train_y[held]),
            "test": (test_x, test_y)}


def time_probes(features: dict[str, Split]) -> list[tuple[str, float, float]]:
    """(setting, seconds, test accuracy) for each label-efficient setting."""
    rows = []
    for label, setting in SETTINGS:
        started = time.perf_counter()
        (result,) = label_efficient_probes(
            *features["train"], features["val"], features["test"], num_classes=10,
            count=SUBSETS, seed=LABEL_SUBSET_SEED, **setting).values()
        rows.append((label, time.perf_counter() - started, result.test_accuracy))
    return rows


def time_protocol(features: dict[str, Split]) -> float:
    """Seconds of what every evaluation already runs on these features: the linear
    probe and kNN k=20, 200 on the validation and test splits."""
    started = time.perf_counter()
    evaluate_splits(*features["train"], {"val": features["val"], "test": features["test"]},
                    num_classes=10, seed=EVAL_SUBSET_SEED)
    return time.perf_counter() - started


def table(title: str, features: dict[str, Split]) -> str:
    sizes = ", ".join(f"{name} {len(y)}" for name, (_, y) in features.items())
    width = features["train"][0].shape[1]
    base = time_protocol(features)
    rows = time_probes(features)
    total = sum(seconds for _, seconds, _ in rows)
    lines = [f"### {title}", "", f"{width}-d features; {sizes} images.", "",
             "| setting | seconds (5 subsets) | test accuracy (mean of 5) |",
             "|:--|--:|--:|"]
    lines += [f"| {label} | {seconds:.1f} | {accuracy * 100:.1f} |"
              for label, seconds, accuracy in rows]
    lines += [f"| **all five** | **{total:.1f}** | |", "",
              f"The linear probe and kNN that every evaluation already runs on these "
              f"features: {base:.1f} s. The label-efficient probes add {total:.1f} s.", ""]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a quick-suite run folder")
    parser.add_argument("--fashion-mnist", type=Path, required=True, metavar="DIR")
    parser.add_argument("--output", type=Path, help="also write the tables here (Markdown)")
    args = parser.parse_args()
    features, source = run_features(args.run)
    parts = ["## Label-efficient probes: seconds per run (CPU)", "",
             table(f"Quick-suite evaluation sizes ({source})", features),
             table("Full Fashion-MNIST (random ReLU features of the images)",
                   full_size(args.fashion_mnist))]
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    command = " ".join(["python", *sys.argv])
    parts.append(f"Made by `OMP_NUM_THREADS={threads} {command}` on "
                 f"{device_name(torch.device('cpu'))} ({os.cpu_count()} CPU cores, no GPU), "
                 f"torch {torch.__version__}, {datetime.date.today().isoformat()}.\n")
    if args.output:
        args.output.write_text("\n".join(parts))
        print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
