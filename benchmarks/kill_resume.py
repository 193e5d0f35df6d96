"""SIGKILL and resume against a run never stopped, on real Fashion-MNIST.

For each method: one ``sslreg pretrain`` process runs to the end; another run of the
same config is killed with SIGKILL at seeded random moments (after its first mid-epoch
checkpoint each time) and restarted with ``--resume`` until it finishes. The table
compares the two: the largest difference of any weight and optimizer value (0 means
bit-identical), their linear and kNN accuracies on the validation split, the wall time
of each, and the training steps redone after the kills.

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
            "eval.test_subset=1000", "eval.knn_k=20"]


def command(method: str, out: Path, every: int, resume: bool) -> list[str]:
    backbone = "vit-mini" if method == "mae" else "resnet18-narrow"
    sets = [part for item in SETTINGS + [f"train.checkpoint_every={every}"]
            for part in ("--set", item)]
    return [sys.executable, "-m", "sslreg", "pretrain", "--method", method,
            "--backbone", backbone, "--seed", "0", "--out", str(out), "--quiet",
            *sets, *(["--resume"] if resume else [])]


def straight_run(method: str, out: Path, every: int) -> tuple[RunDir, float]:
    started = time.perf_counter()
    subprocess.run(command(method, out, every, False), check=True, capture_output=True)
    return only_run(out), time.perf_counter() - started


def killed_run(method: str, out: Path, every: int, kills: int,
               moments: random.Random) -> tuple[RunDir, float, int]:
    """The run killed ``kills`` times, then finished; returns it, its wall time and the
    steps it trained that a checkpoint did not keep (redone after a kill)."""
    started, redone = time.perf_counter(), 0
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
        steps_then = steps_logged(out)
        process.send_signal(signal.SIGKILL)
        process.wait()
        redone += max(0, steps_then - saved_step(out))
    return only_run(out), time.perf_counter() - started, redone


def only_run(out: Path) -> RunDir:
    runs = [p for p in out.iterdir() if (p / "config.json").exists()]
    if len(runs) != 1:
        raise SystemExit(f"expected one run in {out}, found {len(runs)}")
    return RunDir(runs[0])


def checkpoint_time(out: Path) -> float:
    found = list(out.glob("*/checkpoint.pt"))
    return found[0].stat().st_mtime_ns if found else 0.0


def saved_step(out: Path) -> int:
    return int(load_checkpoint(only_run(out).checkpoint).get("step", 0))


def steps_logged(out: Path) -> int:
    """The last optimizer step the run's TensorBoard events reached (its progress)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(only_run(out).tensorboard)).Reload()
    steps = [s.step for tag in events.Tags()["scalars"] for s in events.Scalars(tag)]
    return max(steps, default=0)


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
             "| val linear / kNN20, killed | wall s, straight | wall s, killed | steps redone |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as folder:
            a, b = Path(folder, "straight"), Path(folder, "killed")
            a.mkdir(), b.mkdir()
            straight, straight_s = straight_run(method, a, args.every)
            killed, killed_s, redone = killed_run(method, b, args.every, args.kills, moments)
            lines.append(f"| {method} | {largest_difference(straight, killed):g} | "
                         f"{scores(straight)} | {scores(killed)} | {straight_s:.0f} | "
                         f"{killed_s:.0f} | {redone} |")
        print(lines[-1], flush=True)
    text = "\n".join([
        f"# SIGKILL and resume against a run never stopped ({args.kills} kills per run)", "",
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python "
        f"benchmarks/kill_resume.py --methods {args.methods} --kills {args.kills} --every "
        f"{args.every}`, {time.strftime('%Y-%m-%d')}, {platform.processor() or 'CPU'} "
        f"({os.cpu_count()} cores), torch {torch.__version__}. Fashion-MNIST, "
        f"{', '.join(SETTINGS)}, `train.checkpoint_every={args.every}` (steps), seed 0; "
        "kills at seeded random moments after a new checkpoint. Accuracies on the "
        "validation split.", "", *lines, ""])
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
