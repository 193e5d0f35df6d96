"""Every registered method on every data shape: does it train, and how fast is a step?

Run: ``OMP_NUM_THREADS=1 python benchmarks/data_shapes.py [--batch 16] [--steps 5]
[--shapes 1x28,3x32,3x64,3x96] [--no-folder] [--out benchmarks/results/data-shapes-cpu.md]``.

For each method x shape (channels x side px), on the backbone the quick suite's CPU
budget gives the method (``resnet18-narrow``, or ``vit-mini`` for ViT-only methods),
builds the method and its default view policy as :func:`sslreg.testing.build` does,
then takes one warm-up step and ``--steps`` timed training steps on random uint8 images
(views, forward, backward, the method's own optimizer at its peak rate, ``on_step_end``),
on the CPU. The last shape of each method is an ImageFolder of photos of mixed sizes and
aspect ratios, colour and grey, written to a temporary folder and loaded by the
``imagefolder`` loader at ``image_size=64`` (shorter side resized, centre-cropped).
Prints (and writes with ``--out``) a Markdown table: method, backbone, shape,
pass/fail with the first line of the error, median step time in ms.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs
import numpy as np
import torch
from PIL import Image

from sslreg import load_registry, testing
from sslreg.data import imagefolder
from sslreg.engine.device import device_name
from sslreg.engine.optim import build_optimizer
from sslreg.suites.runner import backbone_for
from sslreg.suites.suite import load_suite


def parse_shapes(text: str) -> list[testing.DataShape]:
    """``"1x28,3x96"`` -> [DataShape(1, 28), DataShape(3, 96)]."""
    shapes = []
    for item in text.split(","):
        channels, _, size = item.strip().partition("x")
        shapes.append(testing.DataShape(int(channels), int(size)))
    return shapes


def mixed_photos(count: int = 32) -> torch.Tensor:
    """``count`` images of 40-90 px a side (one in four grey), written as PNG/JPEG files
    to a temporary flat folder and read back by the imagefolder loader at 64 px."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for index in range(count):
            height, width = rng.integers(40, 91, size=2)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels[..., 0] if index % 4 == 3 else pixels)
            image.save(Path(folder) / f"{index}.{'jpg' if index % 2 else 'png'}")
        return imagefolder.load("train", folder, image_size=64).images


def time_steps(name: str, backbone: str, shape: testing.DataShape, batch: int,
               steps: int, images: torch.Tensor | None = None) -> list[float]:
    """Seconds per training step after one warm-up step; raises what the method raises."""
    method, policy = testing.build(name, backbone=backbone, shape=shape)
    spec = load_registry().methods.get(name)
    optim = spec.optim
    optim = attrs.evolve(optim, lr=optim.lr * batch / 256)  # the engine's linear scaling
    optimizer = build_optimizer(method, optim, torch.device("cpu"))
    images = testing.tiny_images(batch, shape=shape) if images is None else images[:batch]
    # The clock runs over these steps, so schedules (EMA momentum) move as in a run.
    method.setup(attrs.evolve(method.context, epochs=1, steps_per_epoch=steps + 1))
    method.train()
    seconds = []
    for index in range(steps + 1):
        start = time.perf_counter()
        views = policy(images, torch.Generator().manual_seed(index))
        output = testing.training_step(method, views, at=index)  # labels if it uses them
        if not torch.isfinite(output.loss):
            raise FloatingPointError(f"loss {output.loss.item()} at step {index}")
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        testing.step_end(method, index)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def measure(name: str, backbone: str, shape: testing.DataShape, batch: int,
            steps: int, images: torch.Tensor | None = None) -> tuple[str, str]:
    """(result, median ms) for one row; an error becomes its first line."""
    try:
        seconds = time_steps(name, backbone, shape, batch, steps, images)
    except Exception as error:  # a benchmark row reports any failure, never stops
        first_line = (str(error).splitlines() or [""])[0][:120].replace("|", "/")
        return f"fail: {type(error).__name__}: {first_line}", "-"
    return "pass", f"{statistics.median(seconds) * 1e3:.0f}"


NOTE = ("Each method runs on its CPU-budget backbone here; "
        "tests/test_conformance.py::test_method_conforms_on_every_data_shape runs every "
        "method on each backbone family it takes at 1x28, 3x32 and 3x96 px, and "
        "tests/test_data_sources.py pretrains and evaluates every method on an "
        "ImageFolder of mixed-size photos resized to 32, 64 and 96 px. Step times on this "
        "shared 2-core machine vary "
        "by tens of percent between runs: read them as costs, not a ranking.")


def provenance(args: argparse.Namespace) -> str:
    command = "OMP_NUM_THREADS=1 python " + shlex.join(["benchmarks/data_shapes.py",
                                                         *sys.argv[1:]])
    return (f"Measured {datetime.date.today().isoformat()} on "
            f"{device_name(torch.device('cpu'))} of a {os.cpu_count()}-core machine, "
            f"torch {torch.__version__}, "
            f"batch {args.batch}, median of {args.steps} steps after 1 warm-up; "
            f"command: `{command}`.")


def table(args: argparse.Namespace) -> list[str]:
    registry = load_registry()
    budget = load_suite("quick").cpu
    lines = ["| method | backbone | shape | result | median step (ms) |",
             "| --- | --- | --- | --- | ---: |"]
    sources = [(f"{shape.channels}x{shape.size} px", shape, None) for shape in args.shapes]
    if args.folder:
        photos = mixed_photos(max(32, args.batch))
        sources.append(("ImageFolder, mixed sizes -> 3x64 px", testing.DataShape(3, 64), photos))
    for name in registry.methods.names():
        backbone = backbone_for(registry, name, budget)
        for label, shape, images in sources:
            result, median = measure(name, backbone, shape, args.batch, args.steps, images)
            lines.append(f"| {name} | {backbone} | {label} | {result} | {median} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--shapes", type=parse_shapes, default="1x28,3x32,3x64,3x96")
    parser.add_argument("--no-folder", dest="folder", action="store_false",
                        help="leave out the ImageFolder of mixed-size photos")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    rows = table(args)
    text = "\n".join(["# Every method on every data shape (CPU)", "", provenance(args), "",
                      NOTE, "", *rows, ""])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
