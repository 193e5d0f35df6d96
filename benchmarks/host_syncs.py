"""Host synchronisations per training step, for every registered method.

Run: ``OMP_NUM_THREADS=1 python benchmarks/host_syncs.py [--methods simclr,byol]
[--device cpu|cuda] [--batch-size 64] [--backbone NAME] [--steps 5] [--warmup 2]
[--data-root DIR] [--out FILE.md]``.

For each method, builds the engine's own trainer (``sslreg.engine.assemble``, then
``sslreg.engine.trainer.build_trainer``) at the method's default settings and optimizer,
takes ``--warmup`` steps through the engine's ``train_step`` as ``run_epoch`` takes them
(a batch of rows from ``epoch_batches``, its images and labels gathered on the device),
then counts the host synchronisations of the next ``--steps`` steps:

- on every device, the aten ops that make the host wait for a GPU
  (``sslreg.syncs.count_host_syncs``; on the CPU it counts what would wait on a GPU);
- on CUDA also CUDA's own count, the warnings of ``torch.cuda.set_sync_debug_mode("warn")``
  (``sslreg.syncs.cuda_sync_warnings``).

The backbone is the method's default: ``resnet18`` (the CLI's default), or ``vit-tiny``
for a method that takes only a ViT (the fmnist suite's pair); ``--backbone`` names one
for every method that takes it (the others are left out, and the output says so). Images
are Fashion-MNIST's training images from ``--data-root`` (the folder holding its IDX
files, e.g. /usr/share/datasets/fashion-mnist), else sslreg's synthetic 1x28x28 shapes,
as the tests use: the image size is the data's.

Prints a Markdown table (method | backbone | device | steps | dispatch-counted syncs per
step | CUDA sync warnings per step | ops seen) and writes it, with the command line and
the machine, to ``--out``. Exits 1, with one line on stderr, if any method synchronises
per step; a test of the engine (tests/test_host_syncs.py) holds every method to zero.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import math
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import attrs
import torch

from sslreg.config import RunConfig
from sslreg.data.synthetic import generate
from sslreg.engine.device import device_name
from sslreg.engine.parts import assemble
from sslreg.engine.splits import RunData
from sslreg.engine.trainer import Trainer, build_trainer, epoch_batches, train_step
from sslreg.plugins import load_registry
from sslreg.registry import Registry
from sslreg.runs import RunDir
from sslreg.syncs import HostSyncs, count_host_syncs, cuda_sync_warnings, optimizer_host_tensors

# The CLI's default backbone, or the fmnist suite's ViT for methods that take only a ViT.
DEFAULT_BACKBONES = ("resnet18", "vit-tiny")
# Images in the training pool per batch: a short epoch, so the steps cross an epoch end
# only when many are asked for.
POOL_BATCHES = 4


@attrs.frozen
class Measurement:
    """One method's counts over ``steps`` steps; ``warnings`` is None off CUDA."""

    method: str
    backbone: str
    device: str
    steps: int
    dispatch: HostSyncs
    warnings: HostSyncs | None

    @property
    def syncs(self) -> bool:
        return self.dispatch.count > 0 or bool(self.warnings and self.warnings.count)


def default_backbone(registry: Registry, method: str) -> str:
    return registry.backbones_for(method, DEFAULT_BACKBONES)[0]


def run_config(registry: Registry, method: str, backbone: str, batch: int, device: str,
               steps: int, data_root: str | None = None) -> RunConfig:
    """The method's defaults at this batch, with a schedule long enough for ``steps``."""
    epochs = math.ceil(steps / POOL_BATCHES)
    overrides = [f"train.batch_size={batch}", f"train.device={device}",
                 f"train.epochs={epochs}"]
    if data_root is None:
        return RunConfig.build(registry, method, overrides, backbone=backbone,
                               dataset="synthetic")
    return RunConfig.build(registry, method,
                           [*overrides, f"train.train_subset={POOL_BATCHES * batch}"],
                           backbone=backbone, dataset="fashion-mnist", data_root=data_root)


def synthetic_data(batch: int) -> RunData:
    """``POOL_BATCHES`` batches of sslreg's synthetic 1x28x28 shapes as every split."""
    images = generate(POOL_BATCHES * batch, seed=0, name="synthetic/host-syncs")
    return RunData(train=images, val=images, test=images, stats=images.channel_stats())


def make_trainer(config: RunConfig, registry: Registry, data: RunData | None,
                 folder: Path) -> Trainer:
    """The engine's trainer (``data`` None: the config's dataset, loaded as a run does);
    build_trainer writes nothing, the run directory is only named."""
    return build_trainer(assemble(config, registry, data), registry, RunDir(folder))


def engine_steps(trainer: Trainer) -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """A function taking one step as ``run_epoch`` does, and the trainer's optimizer.

    The one function here that reads the Trainer's fields (its setup's images, labels,
    method and optimizer, and the progress record's step).
    """
    setup = trainer.setup
    views_rng = torch.Generator(device=setup.device).manual_seed(1)
    rows = itertools.chain.from_iterable(epoch_batches(setup, epoch)
                                         for epoch in itertools.count())
    setup.method.train()

    def step() -> None:
        index = next(rows)
        labels = None if setup.labels is None else setup.labels[index]
        train_step(trainer, setup.images[index], labels, views_rng)
        trainer.progress.step += 1  # as run_epoch: the schedule is read at progress.step

    return step, setup.optimizer


def count_steps(trainer: Trainer, device: torch.device, steps: int,
                warmup: int) -> tuple[HostSyncs, HostSyncs | None]:
    """The host synchronisations of ``steps`` steps after ``warmup`` uncounted ones:
    the dispatch count, and on CUDA the sync debug mode's (None elsewhere)."""
    step, optimizer = engine_steps(trainer)
    for _ in range(warmup):  # first-step work: optimizer state, lazy buffers
        step()
    cuda = device.type == "cuda"
    with contextlib.ExitStack() as stack:
        # The optimizer's CPU step counts exist from its first step on.
        dispatch = stack.enter_context(count_host_syncs(
            "cuda" if cuda else None, host_tensors=optimizer_host_tensors(optimizer)))
        warned = stack.enter_context(cuda_sync_warnings()) if cuda else None
        for _ in range(steps):
            step()
    return dispatch, warned


def measure(registry: Registry, method: str, backbone: str, *, batch: int, device: str,
            steps: int, warmup: int, data_root: str | None, folder: Path) -> Measurement:
    config = run_config(registry, method, backbone, batch, device, warmup + steps, data_root)
    data = synthetic_data(batch) if data_root is None else None
    trainer = make_trainer(config, registry, data, folder)
    dispatch, warned = count_steps(trainer, torch.device(device), steps, warmup)
    return Measurement(method, backbone, device, steps, dispatch, warned)


def per_step(count: int, steps: int) -> str:
    return f"{count / steps:g}"


def row(m: Measurement) -> str:
    warned = "—" if m.warnings is None else per_step(m.warnings.count, m.steps)
    seen = [m.dispatch.describe()]
    if m.warnings is not None and m.warnings.count:
        seen.append(f"CUDA warnings at {m.warnings.describe()}")
    return (f"| {m.method} | {m.backbone} | {m.device} | {m.steps} | "
            f"{per_step(m.dispatch.count, m.steps)} | {warned} | {'; '.join(seen)} |")


# Said under every table: what the dispatch count leaves out, and why.
NOTE = ("Not counted: the step counts that torch's non-fused AdamW (clip and mae on the "
        "CPU) keeps as CPU scalars and reads with .item() each step; they stay on the CPU "
        "in a GPU run too, where the engine uses the fused AdamW, which reads none "
        "(sslreg.syncs.optimizer_host_tensors). On the CPU the dispatch count stands in "
        "for a GPU's: it counts the ops that would make the host wait there, but cannot "
        "see copies between the CPU and a GPU; on CUDA the sync warnings are CUDA's own "
        "count.")

HEADER = ["| method | backbone | device | steps | dispatch-counted syncs per step | "
          "CUDA sync warnings per step | ops seen |",
          "| --- | --- | --- | ---: | ---: | ---: | --- |"]


def provenance(args: argparse.Namespace) -> str:
    threads = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " \
        if "OMP_NUM_THREADS" in os.environ else ""
    command = threads + "python " + shlex.join(["benchmarks/host_syncs.py", *sys.argv[1:]])
    data = f"Fashion-MNIST from {args.data_root}" if args.data_root else \
        "synthetic 1x28x28 shapes"
    return (f"Measured {datetime.date.today().isoformat()} on "
            f"{device_name(torch.device(args.device))} of a {os.cpu_count()}-core machine, "
            f"torch {torch.__version__}, batch {args.batch_size}, {data}; counted over "
            f"{args.steps} steps after {args.warmup} warm-up steps; command: `{command}`.")


def chosen(registry: Registry, args: argparse.Namespace) -> tuple[list[tuple[str, str]],
                                                                     list[str]]:
    """(method, backbone) pairs to measure, and the methods ``--backbone`` does not fit."""
    names = args.methods.split(",") if args.methods else registry.methods.names()
    if not args.backbone:
        return [(name, default_backbone(registry, name)) for name in names], []
    fits = [name for name in names if registry.backbones_for(name, [args.backbone])]
    return [(name, args.backbone) for name in fits], [n for n in names if n not in fits]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="", help="comma-separated; default: all")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="",
                        help=f"default: the first of {', '.join(DEFAULT_BACKBONES)} "
                             "the method takes")
    parser.add_argument("--steps", type=int, default=5, help="counted steps")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted steps first")
    parser.add_argument("--data-root", default=None,
                        help="Fashion-MNIST's folder; default: synthetic images")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    registry = load_registry()
    pairs, left_out = chosen(registry, args)
    lines = list(HEADER)
    print("\n".join(lines), flush=True)
    measured = []
    with tempfile.TemporaryDirectory() as folder:
        for method, backbone in pairs:
            measured.append(measure(registry, method, backbone, batch=args.batch_size,
                                    device=args.device, steps=args.steps,
                                    warmup=args.warmup, data_root=args.data_root,
                                    folder=Path(folder) / method))
            lines.append(row(measured[-1]))
            print(lines[-1], flush=True)
    notes = [f"Left out, not taking {args.backbone}: {', '.join(left_out)}."] if left_out \
        else []
    if args.out:
        text = ["# Host synchronisations per training step", "", provenance(args), "",
                *lines, "", NOTE, "", *notes]
        args.out.write_text("\n".join(text).rstrip() + "\n")
    for note in notes:
        print(note)
    syncing = [m.method for m in measured if m.syncs]
    if syncing:
        print(f"host_syncs: {', '.join(syncing)} synchronise with the host every step",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
