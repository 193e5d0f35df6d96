"""Bench workers that share a suite: who this process is, and the heartbeat of its claims.

Any number of ``sslreg bench SUITE --out DIR`` processes split a suite's runs. Each run
(and each set of floors) is claimed in the run index before a worker touches it, under a
lease that a background thread renews every quarter lease. A worker that dies stops
renewing; once its lease expires another worker takes the run over and resumes it from
its checkpoint. Every claim leaves lines in the claimed directory's ``claims.jsonl``:
who claimed it, from which epoch, and how it ended.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import click

from sslreg.runs import RunIndex
from sslreg.runs.index import env_seconds

# A claim lives this long without a heartbeat: long enough that a busy machine's
# heartbeat is never late, short enough that a dead worker's run waits at most a minute.
LEASE_S = 60.0
# How often a worker with nothing to claim looks again.
POLL_S = 5.0
# In a claimed directory: one JSON line per claim and per release.
CLAIMS_LOG = "claims.jsonl"


@attrs.frozen
class Worker:
    """One bench worker. ``since``: a failure recorded from this time on is final for
    it; an older one (from an earlier ``sslreg bench``) is tried again, as a re-run of a
    suite always did."""

    id: str
    since: float
    lease_s: float = LEASE_S
    poll_s: float = POLL_S


def this_worker() -> Worker:
    """This process as a worker, named ``host:pid:random``. ``$SSLREG_BENCH_SINCE``
    (set by ``--workers`` and ``--executor`` for the workers they start) makes workers
    of one launch agree on which failures are final; ``$SSLREG_LEASE_S`` and
    ``$SSLREG_POLL_S`` shorten the lease and the poll (tests)."""
    return Worker(id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
                  since=env_seconds("SSLREG_BENCH_SINCE", time.time()),
                  lease_s=env_seconds("SSLREG_LEASE_S", LEASE_S),
                  poll_s=env_seconds("SSLREG_POLL_S", POLL_S))


def log_claim(directory: Path, worker: Worker, event: str, **details: Any) -> None:
    """Append one line to the directory's claims log (one short append: lines of
    several workers do not interleave)."""
    line = json.dumps({"time": round(time.time(), 3), "worker": worker.id, "event": event,
                       **details}, sort_keys=True)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / CLAIMS_LOG, "a") as log:
        log.write(line + "\n")


def read_claims_log(directory: Path) -> list[dict[str, Any]]:
    """The claims log of a directory, oldest first (empty when it has none)."""
    path = directory / CLAIMS_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Heartbeat:
    """Renews a worker's leases from a daemon thread, every quarter lease, so a lease
    expires only when the worker is dead or stuck. Use as a context manager; ``hold``
    and ``drop`` say which directories the worker holds. Disabled on torchrun ranks
    other than 0 (rank 0 claims for all of them)."""

    def __init__(self, out: Path, worker: Worker, enabled: bool = True) -> None:
        self.index, self.worker, self.enabled = RunIndex(out), worker, enabled
        self.held: set[str] = set()
        self.lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sslreg-heartbeat",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.worker.lease_s)

    def hold(self, names: list[str]) -> None:
        with self._lock:
            self.held.update(names)

    def drop(self, names: list[str]) -> None:
        with self._lock:
            self.held.difference_update(names)

    def beat(self) -> None:
        """Renew every held lease once; say so once per directory another worker took.
        ``drop`` waits for a beat in progress, so a released claim is never renewed."""
        with self._lock:
            names = sorted(self.held)
            lost = self.index.renew(names, self.worker.id, self.worker.lease_s) if names else []
        for name in lost:
            if name not in self.lost:
                self.lost.add(name)
                # Only after an index was rebuilt without the lease file (a window of
                # milliseconds) or a worker stalled past its lease: both then train it.
                click.echo(f"warning: another worker holds {name}, which this worker "
                           "is working on (its lease expired or the index was replaced)",
                           err=True)

    def _run(self) -> None:
        while not self._stop.wait(self.worker.lease_s / 4):
            try:
                self.beat()
            except Exception as error:  # a missed beat is retried; the lease has slack
                click.echo(f"warning: heartbeat failed ({type(error).__name__}: {error}); "
                           "retrying", err=True)
