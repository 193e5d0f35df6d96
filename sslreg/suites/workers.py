"""``sslreg bench SUITE --workers N``: N bench workers on this machine sharing one suite.

Each worker is an ordinary ``sslreg bench SUITE --out DIR`` process (so it claims runs
exactly as workers started by hand or on other machines do). Where GPUs are visible the
workers are spread over them round-robin, one ``CUDA_VISIBLE_DEVICES`` each; on a CPU
machine they share the cores. Their lines are relayed prefixed ``[wK]``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

import click


def gpu_slots() -> list[str]:
    """The GPUs to spread workers over: ``$CUDA_VISIBLE_DEVICES``'s list when it is set
    (so a user's choice, or a scheduler's, is kept), else every GPU torch sees; empty on
    a CPU machine."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device.strip() for device in visible.split(",") if device.strip()]
    import torch

    return [str(number) for number in range(torch.cuda.device_count())]


def worker_env(number: int, count: int, slots: list[str], since: float) -> dict[str, str]:
    """Worker ``number``'s environment: its GPU, or its share of the CPU cores when
    there is no GPU and ``OMP_NUM_THREADS`` is not set (N workers each using every core
    would slow all of them down)."""
    env = {**os.environ, "SSLREG_BENCH_SINCE": repr(since), "PYTHONUNBUFFERED": "1"}
    if slots:
        env["CUDA_VISIBLE_DEVICES"] = slots[number % len(slots)]
    elif "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // count))
    return env


def run_local_workers(suite: str, out: str, count: int) -> list[int]:
    """Start ``count`` workers on ``suite``, relay their lines, and return their exit
    statuses once every one has ended. A SIGTERM or Ctrl-C here is passed on to them,
    so each interrupts its run (kept for a later resume) and releases its claim."""
    since, slots = time.time(), gpu_slots()
    command = [sys.executable, "-m", "sslreg", "bench", suite, "--out", out, "--quiet",
               "--no-table"]
    workers = [subprocess.Popen(command, env=worker_env(k, count, slots, since),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
               for k in range(count)]
    where = [f"GPU {slots[k % len(slots)]}" if slots else "CPU" for k in range(count)]
    click.echo(f"started {count} workers: " + ", ".join(
        f"w{k} (pid {w.pid}, {where[k]})" for k, w in enumerate(workers)), err=True)
    relays = [threading.Thread(target=_relay, args=(w.stdout, f"[w{k}] "), daemon=True)
              for k, w in enumerate(workers)]
    for relay in relays:
        relay.start()

    def forward(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    interrupted = False
    try:
        while any(worker.poll() is None for worker in workers):
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:  # wait for the workers to stop: no orphans
                interrupted = True
                forward(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for relay in relays:
            relay.join(timeout=5)
    if interrupted:
        raise KeyboardInterrupt
    return [worker.returncode for worker in workers]


def _relay(stream: IO[str], prefix: str) -> None:
    for line in stream:
        click.echo(prefix + line.rstrip("\n"), err=True)
