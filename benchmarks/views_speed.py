"""Throughput of SimCLR two-view generation: 512 uint8 1x28x28 (Fashion-MNIST-sized) images.

Run: ``python benchmarks/views_speed.py [--batch 512] [--repeats 50] [--threads N]``.
Prints source images per second (each yields 2 views) and milliseconds per batch, on
the CPU and, when there is one, on the GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sslreg.views import SimCLRViews

FASHION_MNIST = {"mean": (0.2860,), "std": (0.3530,)}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, batch: int, repeats: int) -> list[float]:
    """Seconds per call of a SimCLR policy on ``batch`` random images, after warm-up."""
    policy = SimCLRViews(channels=1, image_size=28, **FASHION_MNIST)
    generator = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8, device=device)
    for _ in range(5):  # warm-up: allocator, kernels, caches
        policy(images, generator)
    _synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy(images, generator)
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def report(name: str, batch: int, seconds: list[float]) -> None:
    median, best = statistics.median(seconds), min(seconds)
    print(
        f"{name}: {batch / median:,.0f} images/s median ({median * 1e3:.2f} ms per batch), "
        f"{batch / best:,.0f} images/s best ({best * 1e3:.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"SimCLR 2 views, batch {args.batch} x 1x28x28 uint8, torch {torch.__version__}")
    cpu = f"cpu ({torch.get_num_threads()} threads)"
    report(cpu, args.batch, measure(torch.device("cpu"), args.batch, args.repeats))
    if torch.cuda.is_available():
        name = f"cuda ({torch.cuda.get_device_name()})"
        report(name, args.batch, measure(torch.device("cuda"), args.batch, args.repeats))


if __name__ == "__main__":
    main()
