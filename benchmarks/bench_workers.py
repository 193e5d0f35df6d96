"""Wall time of one suite run by 1, 2 and 4 local bench workers (`sslreg bench SUITE
--workers N`), each from an empty runs folder, and a check that every run was trained
exactly once (one claim in its claims.jsonl, released `evaluated`; two TensorBoard event
files: one training session, one evaluation).

    python benchmarks/bench_workers.py --workers 1 2 4 1 --threads 1 1 1 2 \\
        --out /tmp/bench-workers --write benchmarks/results/bench-workers-cpu.md

``--threads`` is OMP_NUM_THREADS per worker, one value per ``--workers`` value.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

# Six runs (3 methods x 2 seeds) of about 10-20 s each on a 2-core CPU, on Fashion-MNIST.
BUDGET = """
backbone = "resnet18-narrow"
set = ["train.epochs=1", "train.batch_size=256", "train.train_subset=2048",
       "eval.train_subset=2000", "eval.val_subset=500", "eval.test_subset=1000"]
"""
SUITE = f"""
name = "workers"
dataset = "fashion-mnist"
methods = ["simclr", "byol", "vicreg"]
seeds = [0, 1]
[budget.cpu]{BUDGET}[budget.gpu]{BUDGET}"""


def claims_log(directory: Path) -> list[dict]:
    path = directory / "claims.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def check(out: Path) -> dict:
    """Runs, whether each was trained once, and how many each worker trained."""
    runs = sorted(p.parent for p in out.glob("*/config.json")
                  if not p.parent.name.startswith("floor-"))
    once, by_worker = True, collections.Counter()
    for run in runs:
        log = claims_log(run)
        claimed = [e for e in log if e["event"] == "claimed"]
        outcomes = [e["outcome"] for e in log if e["event"] == "released"]
        events = list((run / "tb").glob("events.out.tfevents.*"))
        once &= len(claimed) == 1 and outcomes == ["evaluated"] and len(events) == 2
        by_worker.update(e["worker"] for e in claimed)
    return {"runs": len(runs), "once": once, "per_worker": sorted(by_worker.values())}


def measure(workers: int, threads: int, suite: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "sslreg", "bench", str(suite), "--out", str(out),
               "--workers", str(workers), "--quiet"]
    load_before = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {"workers": workers, "threads": threads, "wall": wall, "cpu": cpu,
            "load": (load_before, os.getloadavg()[0]), **check(out),
            "command": f"OMP_NUM_THREADS={threads} sslreg bench SUITE --out DIR "
                       f"--workers {workers} --quiet"}


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def report(rows: list[dict], command: str) -> str:
    base = rows[0]["wall"]
    lines = ["| workers | threads each | wall s | vs first | CPU s (user+sys) | runs | "
             "each trained once | runs per worker | load avg 1 min before → after |",
             "|---:|---:|---:|---:|---:|---:|:--|:--|:--|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['threads']} | {r['wall']:.0f} | "
                     f"{base / r['wall']:.2f}x | {r['cpu']:.0f} | {r['runs']} | "
                     f"{'yes' if r['once'] else 'NO'} | {', '.join(map(str, r['per_worker']))} | "
                     f"{r['load'][0]:.1f} → {r['load'][1]:.1f} |")
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, no GPU"
               if not torch.cuda.is_available() else torch.cuda.get_device_name())
    return "\n".join([
        "## Bench workers sharing one suite (CPU)", "",
        f"Made by `{command}` on {datetime.date.today().isoformat()}: {machine}, "
        f"torch {torch.__version__}, Python {platform.python_version()}.", "",
        "The suite (6 runs: simclr, byol, vicreg x seeds 0, 1 on Fashion-MNIST):", "",
        "```toml" + SUITE + "```", "", *lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1, 1])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-workers"))
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    if len(args.threads) != len(args.workers):
        raise SystemExit("give one --threads value per --workers value")
    args.out.mkdir(parents=True, exist_ok=True)
    suite = args.out / "workers.toml"
    suite.write_text(SUITE)
    rows = []
    for workers, threads in zip(args.workers, args.threads, strict=True):
        rows.append(measure(workers, threads, suite, args.out / f"w{workers}"))
        print(json.dumps(rows[-1]), flush=True)
    text = report(rows, " ".join(["python", *sys.argv]))
    print(text)
    if args.write:
        args.write.write_text(text)


if __name__ == "__main__":
    main()
