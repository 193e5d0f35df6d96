"""Memory and load time of STL-10's unlabelled split (``stl10-unlabeled``).

Writes a file of the real format and size (``stl10_binary/unlabeled_X.bin``,
100,000 x 3 x 96 x 96 uint8, random pixels, 2.76 GB) under a temporary folder in /tmp,
loads it through the registry as a run would, prints the bytes held, the load time and
the peak resident memory of the process, then deletes the file.

    OMP_NUM_THREADS=1 PYTHONPATH=.:$(ls -d plugins/* | tr '\\n' ':') \\
        python benchmarks/stl10_unlabeled.py [--images 100000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from sslreg import load_registry
from sslreg.data import load_dataset
from sslreg.data.stl10 import SIDE, UNLABELED_FILE

# Images written per chunk, so writing the file needs little memory.
_WRITE_CHUNK = 5000


def write_file(path: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "wb") as stream:
        for start in range(0, count, _WRITE_CHUNK):
            rows = min(_WRITE_CHUNK, count - start)
            stream.write(rng.integers(0, 256, (rows, 3, SIDE, SIDE), dtype=np.uint8).tobytes())


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    count = parser.parse_args().images
    root = Path(tempfile.mkdtemp(prefix="stl10-unlabeled-", dir="/tmp"))
    try:
        (root / "stl10_binary").mkdir()
        write_file(root / "stl10_binary" / UNLABELED_FILE, count)
        registry = load_registry()
        before = peak_rss_gb()
        started = time.perf_counter()
        data = load_dataset(registry, "stl10-unlabeled", "train", root)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        data.channel_stats()
        stats_seconds = time.perf_counter() - started
        held = data.images.numel() * data.images.element_size() / 1e9
        print(f"{len(data)} images {tuple(data.images.shape[1:])} uint8: {held:.2f} GB held "
              f"(expected {count * 3 * SIDE * SIDE / 1e9:.2f} GB); loaded in {seconds:.1f} s; "
              f"channel statistics in {stats_seconds:.1f} s; peak resident memory "
              f"{peak_rss_gb():.2f} GB ({before:.2f} GB before loading)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
