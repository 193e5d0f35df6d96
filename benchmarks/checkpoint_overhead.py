"""What a mid-epoch checkpoint costs: the write (state dicts, random streams, torch.save,
fsync, rename) beside one training step, and the share of training time it takes at a
cadence of ``train.checkpoint_every``.

Run: ``python benchmarks/checkpoint_overhead.py [--method simclr] [--backbones
resnet18-narrow,resnet18] [--batch-size 256] [--writes 5] [--steps 2] [--every 10m]
[--device auto]``. Synthetic 1x28x28 images (no files); the checkpoint goes to a
temporary folder on the file system of ``$TMPDIR``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sslreg.config import RunConfig, checkpoint_cadence
from sslreg.engine import assemble
from sslreg.engine import trainer as trainer_module
from sslreg.plugins import load_registry
from sslreg.runs import RunDir


def measure(method: str, backbone: str, batch_size: int, writes: int, steps: int,
            device: str) -> dict[str, float]:
    """Median seconds of a mid-epoch checkpoint write and of a training step."""
    registry = load_registry()
    config = RunConfig.build(registry, method, [
        f"train.batch_size={batch_size}", f"train.train_subset={batch_size * 2}",
        f"train.device={device}"], dataset="synthetic", backbone=backbone)
    with tempfile.TemporaryDirectory() as folder:
        parts = assemble(config, registry)
        trainer = trainer_module.build_trainer(parts, registry, RunDir(Path(folder)))
        setup = trainer.setup
        generator = torch.Generator(setup.device).manual_seed(0)
        batch = setup.images[:batch_size]
        labels = None if setup.labels is None else setup.labels[:batch_size]
        step_times = [_timed(lambda: trainer_module.train_step(
            trainer, batch, labels, generator), setup.device) for _ in range(steps + 1)]
        trainer.progress.epoch_step = 1  # a mid-epoch checkpoint, with the view generator
        write_times = [_timed(lambda: trainer_module.checkpoint(
            trainer, generator), setup.device) for _ in range(writes + 1)]
        size = setup.run.checkpoint.stat().st_size
    return {"write_s": statistics.median(write_times[1:]),
            "step_s": statistics.median(step_times[1:]), "mb": size / 1e6}


def _timed(work, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbones", default="resnet18-narrow,resnet18")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--writes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--every", default="10m", help="train.checkpoint_every to price")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    steps_apart, seconds_apart = checkpoint_cadence(args.every)
    print(f"| backbone | checkpoint MB | write s | step s (batch {args.batch_size}) "
          f"| share of training at {args.every} |")
    print("|---|---|---|---|---|")
    for backbone in args.backbones.split(","):
        found = measure(args.method, backbone, args.batch_size, args.writes, args.steps,
                        args.device)
        apart = seconds_apart or steps_apart * found["step_s"]
        share = f"{found['write_s'] / (apart + found['write_s']):.2%}" if apart else "-"
        print(f"| {backbone} | {found['mb']:.1f} | {found['write_s']:.3f} | "
              f"{found['step_s']:.3f} | {share} |")


if __name__ == "__main__":
    main()
