"""Time the label-efficient probes: what they add to one run's evaluation on this machine.

Two sizes, each with 1% and 10% of every class and 1, 5 and 10 images per class, on 5
fixed label subsets per setting (``eval.label_fractions=0.01,0.1 eval.shots=1,5,10``):

* the quick suite's evaluation: a finished run's own features (``--run DIR``, a
  quick-suite run directory: 5 000 training, 2 000 validation and 10 000 test images),
  beside the linear probe and kNN that every evaluation already runs;
* full Fashion-MNIST: 512-d random ReLU features of the images (784 pixels -> 512, as
  ``benchmarks/eval_speed.py``), 54 000 training images, the 6 000-image validation
  split carved from them as ``eval.val_fraction=0.1`` does, and the 10 000 test images.

Each time is the best and the median wall-clock seconds of ``--repeats`` runs (3), and
the best CPU seconds of this process: the machine this was written on is shared, and
other processes' work adds wall-clock time (one thread: CPU seconds are about the wall
time of a quiet machine).

Run: ``python benchmarks/label_efficient.py --run RUN_DIR --fashion-mnist DIR
[--repeats N] [--output FILE]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
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
    from sslreg.engine.parts import build_method
    from sslreg.engine.splits import load_run_data
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


def seconds(function: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """(best wall, median wall, best CPU) seconds of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return min(wall), statistics.median(wall), min(cpu)


def probes(features: dict[str, Split], setting: dict) -> float:
    """One setting's test accuracy (mean of the subsets)."""
    (result,) = label_efficient_probes(
        *features["train"], features["val"], features["test"], num_classes=10,
        count=SUBSETS, seed=LABEL_SUBSET_SEED, **setting).values()
    return result.test_accuracy


def protocol(features: dict[str, Split]) -> None:
    """What every evaluation already runs on these features: the linear probe and kNN
    k=20, 200 on the validation and test splits."""
    evaluate_splits(*features["train"], {"val": features["val"], "test": features["test"]},
                    num_classes=10, seed=EVAL_SUBSET_SEED)


def table(title: str, features: dict[str, Split], repeats: int) -> str:
    sizes = ", ".join(f"{name} {len(y)}" for name, (_, y) in features.items())
    width = features["train"][0].shape[1]
    base = seconds(lambda: protocol(features), repeats)
    rows = [(label, *seconds(lambda s=setting: probes(features, s), repeats),
             probes(features, setting)) for label, setting in SETTINGS]
    total = [sum(row[i] for row in rows) for i in (1, 2, 3)]
    lines = [f"### {title}", "", f"{width}-d features; {sizes} images.", "",
             f"| setting | wall s, best of {repeats} | wall s, median | CPU s, best | "
             f"test accuracy (mean of {SUBSETS} subsets) |", "|:--|--:|--:|--:|--:|"]
    lines += [f"| {label} | {b:.1f} | {m:.1f} | {c:.1f} | {accuracy * 100:.1f} |"
              for label, b, m, c, accuracy in rows]
    lines += [f"| **all five** | **{total[0]:.1f}** | **{total[1]:.1f}** | "
              f"**{total[2]:.1f}** | |", "",
              f"The linear probe and kNN that every evaluation already runs on these "
              f"features: {base[0]:.1f} s wall (median {base[1]:.1f} s), {base[2]:.1f} CPU "
              f"s. The label-efficient probes add {total[0]:.1f} s wall (median "
              f"{total[1]:.1f} s), {total[2]:.1f} CPU s.", ""]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a quick-suite run folder")
    parser.add_argument("--fashion-mnist", type=Path, required=True, metavar="DIR")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per number")
    parser.add_argument("--output", type=Path, help="also write the tables here (Markdown)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    features, source = run_features(args.run)
    parts = ["## Label-efficient probes: seconds per run (CPU)", "",
             table(f"Quick-suite evaluation sizes ({source})", features, args.repeats),
             table("Full Fashion-MNIST (random ReLU features of the images)",
                   full_size(args.fashion_mnist), args.repeats)]
    threads = os.environ.get("OMP_NUM_THREADS", "default")
    command = " ".join(["python", *sys.argv])
    parts.append(f"Made by `OMP_NUM_THREADS={threads} {command}` on "
                 f"{device_name(torch.device('cpu'))} ({os.cpu_count()} CPU cores, no GPU), "
                 f"torch {torch.__version__}, {datetime.date.today().isoformat()}; the "
                 f"machine's 1-minute load average was {load_before:.1f} before and "
                 f"{os.getloadavg()[0]:.1f} after (other processes share its 2 cores).\n")
    if args.output:
        args.output.write_text("\n".join(parts))
        print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
