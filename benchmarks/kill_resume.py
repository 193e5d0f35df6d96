"""SIGKILL and resume against a run never stopped, on real Fashion-MNIST.

For each method: one ``sslreg pretrain`` process runs to the end; another run of the
same config is killed with SIGKILL at seeded random moments (after its first mid-epoch
checkpoint each time) and restarted with ``--resume`` until it finishes. The table
compares the two: the largest difference of any weight and optimizer value (0 means
bit-identical), their linear and kNN accuracies on the validation split, and the wall
time of each (the killed run's includes its restarts and the steps it redid).

Run: ``OMP_NUM_THREADS=1 python benchmarks/kill_resume.py [--methods simclr,byol,mae]
[--kills 3] [--every 5] [--out FILE]`` (needs the Debian package
``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sslreg.engine.checkpoint import load_checkpoint
from sslreg.runs import RunDir

# A small budget that still takes several checkpoints per epoch.
SETTINGS = ["train.epochs=2", "train.batch_size=64", "train.train_subset=2048",
            "eval.test_subset=1000"]


def command(method: str, out: Path, every: int, resume: bool) -> list[str]:
    backbone = "vit-mini" if method == "mae" else "resnet18-narrow"
    sets = [part for item in SETTINGS + [f"train.checkpoint_every={every}"]
            for part in ("--set", item)]
    return [sys.executable, "-m", "sslreg", "pretrain", "--method", method,
            "--backbone", backbone, "--seed", "0", "--out", str(out), "--quiet",
            *sets, *(["--resume"] if resume else [])]


def straight_run(method: str, out: Path, every: int) -> tuple[RunDir, float]:
    started = time.perf_counter()
    done = subprocess.run(command(method, out, every, False), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{method}: the straight run failed: {done.stderr[-2000:]}")
    return only_run(out), time.perf_counter() - started


def killed_run(method: str, out: Path, every: int, kills: int,
               moments: random.Random) -> tuple[RunDir, float]:
    """The run killed ``kills`` times, then finished; returns it and its wall time."""
    started = time.perf_counter()
    for attempt in range(kills + 1):
        process = subprocess.Popen(command(method, out, every, attempt > 0),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if attempt == kills:
            _, err = process.communicate()
            if process.returncode:
                raise SystemExit(f"{method}: the last resume failed: {err.decode()[-2000:]}")
            break
        before = checkpoint_time(out)
        while checkpoint_time(out) == before and process.poll() is None:
            time.sleep(0.05)
        time.sleep(moments.uniform(0.0, 2.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    return only_run(out), time.perf_counter() - started


def only_run(out: Path) -> RunDir:
    runs = [p for p in out.iterdir() if (p / "config.json").exists()]
    if len(runs) != 1:
        raise SystemExit(f"expected one run in {out}, found {len(runs)}")
    return RunDir(runs[0])


def checkpoint_time(out: Path) -> float:
    found = list(out.glob("*/checkpoint.pt"))
    return found[0].stat().st_mtime_ns if found else 0.0


def largest_difference(a: RunDir, b: RunDir) -> float:
    """The largest absolute difference of any tensor in the two final checkpoints'
    model and optimizer states."""
    left, right = load_checkpoint(a.checkpoint), load_checkpoint(b.checkpoint)
    worst = 0.0
    for key in ("model", "optimizer"):
        for x, y in zip(tensors(left[key]), tensors(right[key]), strict=True):
            worst = max(worst, (x.double() - y.double()).abs().max().item() if x.numel() else 0)
    return worst


def tensors(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in sorted(state, key=str) for t in tensors(state[key])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in tensors(item)]
    return []


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path(
            "/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "CPU"


def scores(run: RunDir) -> str:
    metrics = run.read_json(run.result)["val_metrics"]
    return f"{100 * metrics['linear_acc']:.2f} / {100 * metrics['knn20_acc']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="simclr,byol,mae")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--every", type=int, default=5, help="train.checkpoint_every, steps")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    moments = random.Random(0)
    lines = ["| method | largest weight/optimizer difference | val linear / kNN20, straight "
             "| val linear / kNN20, killed | wall s, straight | wall s, killed |",
             "| --- | --- | --- | --- | --- | --- |"]
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as folder:
            a, b = Path(folder, "straight"), Path(folder, "killed")
            a.mkdir(), b.mkdir()
            straight, straight_s = straight_run(method, a, args.every)
            killed, killed_s = killed_run(method, b, args.every, args.kills, moments)
            lines.append(f"| {method} | {largest_difference(straight, killed):g} | "
                         f"{scores(straight)} | {scores(killed)} | {straight_s:.0f} | "
                         f"{killed_s:.0f} |")
        print(lines[-1], flush=True)
    text = "\n".join([
        f"# SIGKILL and resume against a run never stopped ({args.kills} kills per run)", "",
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python "
        f"benchmarks/kill_resume.py --methods {args.methods} --kills {args.kills} --every "
        f"{args.every}`, {time.strftime('%Y-%m-%d')}, {cpu_name()} ({os.cpu_count()} "
        f"cores, load average {os.getloadavg()[0]:.1f} at the end), torch "
        f"{torch.__version__}. Fashion-MNIST, "
        f"{', '.join(SETTINGS)}, `train.checkpoint_every={args.every}` (steps), seed 0; "
        "kills at seeded random moments after a new checkpoint. Accuracies on the "
        "validation split.", "", *lines, ""])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
