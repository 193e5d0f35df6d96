"""The run index: one SQLite database per runs folder, recording every run.

The run directories are the truth; the index is a cache of them with provenance, for
listing and leaderboards. It runs in WAL mode so several ``sslreg bench`` processes can
write at once, and it is rebuilt from the run directories when it is missing or
damaged.

It also holds the **claims** of bench workers that share a suite: which worker trains
which run now, until when (a lease that the worker's heartbeat renews). Each claim is
mirrored in the run directory's ``lease.json``, so a rebuilt index gets back the leases
that are still live and a damaged index does not let a second worker take a run that
another is training.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from sslreg.errors import SslregError
from sslreg.runs.layout import RunDir, write_json

INDEX_NAME = "index.sqlite"
# Bump when the table changes: an index of another version is rebuilt.
SCHEMA_VERSION = 5
# In a run directory: the suites that ran it, each with the run's variant there (the
# swept setting, e.g. "method.temperature=0.1"; "" for a plain run).
SUITES_FILE = "suites.json"
# In a floor's directory (raw pixels, random init): which floor, and what it is keyed by.
FLOOR_FILE = "floor.json"
# ``dataset`` is the pretraining dataset, ``eval_dataset`` the one the run is scored on.
COLUMNS = ("run", "method", "dataset", "eval_dataset", "backbone", "seed", "status", "suites",
           "config_sha256", "config", "git_commit", "versions", "device", "wall_time_s",
           "images_per_s", "peak_memory_mb", "mfu", "metrics", "val_metrics", "curve",
           "recorded_at")
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    {COLUMNS[0]} TEXT PRIMARY KEY, {", ".join(f"{c}" for c in COLUMNS[1:])}
)"""
# One row per run directory a worker holds (a run, or a floor's directory): transient,
# so a new table needs no schema version (older sslreg ignores it).
_CLAIMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    run TEXT PRIMARY KEY, worker TEXT NOT NULL, claimed_at REAL, heartbeat REAL, expires REAL
)"""
# In a claimed directory: the lease's holder and expiry, renewed with every heartbeat.
LEASE_FILE = "lease.json"
# How long a writer waits for another's lock before giving up with one line.
TIMEOUT_S = 60.0
# File systems shared between machines. SQLite's WAL keeps its index in shared memory,
# which processes on different machines do not share (SQLite: "WAL does not work over a
# network filesystem"); there the index uses the rollback journal and file locks.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "glusterfs",
    "fuse.glusterfs", "fuse.ceph", "fuse.sshfs", "9p", "afs", "panfs", "wekafs"})


def timeout_s() -> float:
    """The lock timeout: ``$SSLREG_INDEX_TIMEOUT_S`` (seconds) or :data:`TIMEOUT_S`."""
    return env_seconds("SSLREG_INDEX_TIMEOUT_S", TIMEOUT_S)


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name``, or
    ``default`` when it is unset or empty; anything else is one line."""
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SslregError(f"${name}={text} is not a number of seconds above 0")
    return value


def journal_mode(out: Path) -> str:
    """``wal`` on a local disk (readers never wait for writers), ``delete`` (SQLite's
    rollback journal) on a network file system; ``$SSLREG_INDEX_JOURNAL`` overrides.
    Every process on one runs folder decides the same way, since they all see the same
    file system."""
    chosen = os.environ.get("SSLREG_INDEX_JOURNAL", "").lower()
    if chosen and chosen not in ("wal", "delete"):
        raise SslregError(f"$SSLREG_INDEX_JOURNAL={chosen} is not a journal mode the index "
                          "can use; choose wal or delete")
    if chosen:
        return chosen
    return "delete" if filesystem_type(out) in NETWORK_FILESYSTEMS else "wal"


@functools.cache
def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (its deepest mount point in
    ``/proc/mounts``), or "" where that cannot be read."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    path, deepest, kind = Path(os.path.realpath(path)), -1, ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(fields[1].replace("\\040", " "))
        if (point == path or point in path.parents) and len(point.parts) > deepest:
            deepest, kind = len(point.parts), fields[2]
    return kind


class RunIndex:
    """The index of the runs under ``out`` (``out/index.sqlite``)."""

    def __init__(self, out: Path | str, path: Path | None = None) -> None:
        self.out = Path(out)
        self.path = path or self.out / INDEX_NAME  # another path: a rebuild in progress

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that waits up to :func:`timeout_s` for another writer's lock,
        then raises one clear :class:`SslregError` (nothing written is lost: the
        transaction that waited is rolled back). A missing index is first rebuilt
        from the run directories, never started empty."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.path == self.out / INDEX_NAME and not self.path.exists():
            open_index(self.out)
        wait = timeout_s()
        connection = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            connection.execute(f"PRAGMA journal_mode = {journal_mode(self.out)}")
            yield connection
        except sqlite3.OperationalError as error:
            if _locked(error):
                raise SslregError(f"the run index {self.path} stayed locked by another "
                                  f"process for {wait:g} s; is a stuck sslreg process "
                                  "holding it? (raise $SSLREG_INDEX_TIMEOUT_S to wait "
                                  "longer)") from None
            raise
        finally:
            connection.close()

    def record(self, run: RunDir, status: str | None = None) -> dict[str, Any]:
        """Insert or replace the row of ``run`` from its files; returns the row."""
        row = row_for(run, status)
        with self.connect() as connection:
            _ensure_schema(connection)
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) "
                               f"VALUES ({', '.join('?' * len(COLUMNS))})",
                               [row[c] for c in COLUMNS])
            connection.execute("COMMIT")
        return row

    def rows(self) -> list[dict[str, Any]]:
        """Every recorded run, oldest first, with JSON columns decoded."""
        with self.connect() as connection:
            _ensure_schema(connection)
            cursor = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM runs "
                                        "ORDER BY recorded_at, run")
            return [_decoded(dict(zip(COLUMNS, values, strict=True))) for values in cursor]

    def rebuild(self) -> int:
        """Record every run directory under ``out`` afresh, drop the rows of directories
        that are gone, and take back the live leases of the directories' ``lease.json``;
        returns how many runs."""
        runs = sorted(p.parent for p in self.out.glob("*/config.json"))
        for path in runs:
            self.record(RunDir(path))
        with self.transaction() as connection:
            names = [row[0] for row in connection.execute("SELECT run FROM runs")]
            # Checked now, not against the listing above: a run recorded meanwhile stays.
            gone = [n for n in names if not (self.out / n / "config.json").exists()]
            connection.executemany("DELETE FROM runs WHERE run = ?", [(n,) for n in gone])
            for path in sorted(self.out.glob(f"*/{LEASE_FILE}")):
                lease, now = read_lease(path.parent), time.time()
                if lease and lease["expires"] > now:
                    connection.execute("INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?, ?)",
                                       (path.parent.name, lease["worker"], now, now,
                                        lease["expires"]))
        return len(runs)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed when the block ends, rolled
        back if it raises."""
        with self.connect() as connection:
            _ensure_schema(connection)
            connection.execute("BEGIN IMMEDIATE")
            yield connection  # an exception here closes the connection: a rollback
            connection.execute("COMMIT")

    def state(self, run: str) -> dict[str, Any] | None:
        """``status``, ``recorded_at`` and ``suites`` of ``run``'s row, or None."""
        def query() -> dict[str, Any] | None:
            with self.connect() as connection:
                _ensure_schema(connection)
                row = connection.execute("SELECT status, recorded_at, suites FROM runs "
                                         "WHERE run = ?", (run,)).fetchone()
            if row is None:
                return None
            return {"status": row[0], "recorded_at": row[1],
                    "suites": json.loads(row[2]) if row[2] else {}}

        return self._repairing(query)

    def claim(self, names: list[str], worker: str, lease_s: float) -> tuple[bool, str | None]:
        """Claim the directories ``names`` for ``worker`` for ``lease_s`` seconds, all
        or none, in one transaction. Returns ``(True, None)``, ``(True, previous)``
        when taking over an expired lease of ``previous``, or ``(False, holder)`` when
        another worker holds a live lease on one of them."""
        def attempt() -> tuple[bool, str | None]:
            now = time.time()
            with self.transaction() as connection:
                previous = None
                for name in names:
                    holder, live = _holder(connection, self.out / name, name, now)
                    if holder not in (None, worker):
                        if live:
                            return False, holder
                        previous = holder
                for name in names:
                    # The lease file first: a rebuild that happens before the commit still
                    # finds it (see docs/architecture.md, claims).
                    write_lease(self.out / name, worker, now + lease_s)
                    connection.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                                       (name, worker, now, now, now + lease_s))
                return True, previous

        return self._repairing(attempt)

    def renew(self, names: list[str], worker: str, lease_s: float) -> list[str]:
        """Extend ``worker``'s leases on ``names`` (re-inserting a claim a rebuilt index
        lost); returns the names another worker holds now. When the index cannot be
        written the lease files alone are renewed, so a rebuild still sees them."""
        now = time.time()
        try:
            with self.transaction() as connection:
                lost = [n for n in names if _holder(connection, self.out / n, n, now)[0]
                        not in (None, worker)]
                for name in (n for n in names if n not in lost):
                    write_lease(self.out / name, worker, now + lease_s)
                    connection.execute(
                        "INSERT INTO claims VALUES (?, ?, ?, ?, ?) ON CONFLICT(run) DO UPDATE "
                        "SET heartbeat = excluded.heartbeat, expires = excluded.expires",
                        (name, worker, now, now, now + lease_s))
            return lost
        except (SslregError, sqlite3.DatabaseError):
            lost = []
            for name in names:
                lease = read_lease(self.out / name)
                if lease and lease["worker"] != worker and lease["expires"] > now:
                    lost.append(name)
                else:
                    write_lease(self.out / name, worker, now + lease_s)
            return lost

    def release(self, names: list[str], worker: str) -> bool:
        """Drop ``worker``'s claims on ``names``; never raises (an unreleased lease
        expires by itself). Returns whether the index was updated."""
        for name in names:
            lease = read_lease(self.out / name)
            if lease and lease["worker"] == worker:
                (self.out / name / LEASE_FILE).unlink(missing_ok=True)
        try:
            with self.transaction() as connection:
                connection.executemany("DELETE FROM claims WHERE run = ? AND worker = ?",
                                       [(name, worker) for name in names])
            return True
        except (SslregError, sqlite3.Error, OSError):
            return False

    def claims(self) -> dict[str, tuple[str, float]]:
        """Every live claim: ``{directory: (worker, expires)}``."""
        def query() -> dict[str, tuple[str, float]]:
            with self.connect() as connection:
                _ensure_schema(connection)
                rows = connection.execute("SELECT run, worker, expires FROM claims "
                                          "WHERE expires > ?", (time.time(),))
                return {run: (worker, expires) for run, worker, expires in rows}

        return self._repairing(query)

    def _repairing(self, operation: Callable[[], Any]) -> Any:
        """``operation``, run again once on a rebuilt index if this one is damaged."""
        try:
            return operation()
        except sqlite3.DatabaseError:
            open_index(self.out)  # moves the damaged file aside and rebuilds
            return operation()


def open_index(out: Path | str) -> RunIndex:
    """The index of ``out``, rebuilt from the run directories if it is missing,
    damaged or of another schema version (a damaged file is kept aside)."""
    index = RunIndex(out)
    if index.path.exists() and _healthy(index):
        return index
    # One process at a time replaces an index: a second one that also found it damaged
    # must not move the first one's fresh rebuild aside.
    with _exclusive(index.path.with_name(f"{INDEX_NAME}.lock")):
        if index.path.exists() and _healthy(index):
            return index  # another process replaced it while this one waited
        if index.path.exists():
            aside = index.path.with_name(f"{INDEX_NAME}.damaged-{time.time_ns()}")
            index.path.rename(aside)
            wal = Path(f"{index.path}-wal")
            if wal.exists():  # it may hold committed rows: kept beside the damaged file
                wal.rename(f"{aside}-wal")
            Path(f"{index.path}-shm").unlink(missing_ok=True)
        _rebuild_into_place(index)
    return index


def _rebuild_into_place(index: RunIndex) -> None:
    """Rebuild under a temporary name, then rename it into place: other processes see
    no index (and wait for this one) or a whole one, never a half-built one."""
    fresh = RunIndex(index.out, index.path.with_name(f"{INDEX_NAME}.rebuild-{os.getpid()}"))
    for suffix in ("", "-wal", "-shm"):  # left by a rebuild that was killed
        Path(f"{fresh.path}{suffix}").unlink(missing_ok=True)
    fresh.rebuild()  # its last connection closed: the WAL is merged into the file
    os.replace(fresh.path, index.path)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (and threads) while the block
    runs; ``flock`` is emulated with POSIX locks on NFS, so it holds across machines."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (not POSIX): no other process to exclude here
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_lease(directory: Path, worker: str, expires: float) -> None:
    """Mirror a claim in its directory, so a rebuilt index can take it back."""
    write_json(directory / LEASE_FILE, {"worker": worker, "expires": expires})


def read_lease(directory: Path) -> dict[str, Any] | None:
    """The directory's lease (``worker``, ``expires``), or None if it has none or an
    unreadable one."""
    try:
        lease = json.loads((directory / LEASE_FILE).read_text())
        return lease if isinstance(lease.get("expires"), (int, float)) else None
    except (OSError, ValueError, AttributeError):
        return None


def _holder(connection: sqlite3.Connection, directory: Path, name: str,
            now: float) -> tuple[str | None, bool]:
    """Who holds ``name`` and whether the lease is live: the index's claim, else the
    directory's lease file (the index may have been rebuilt since it was written)."""
    row = connection.execute("SELECT worker, expires FROM claims WHERE run = ?",
                             (name,)).fetchone()
    if row is not None and row[1] > now:
        return row[0], True
    lease = read_lease(directory)
    if lease is not None and lease["expires"] > now:
        return lease["worker"], True
    if row is not None:
        return row[0], False
    return (lease["worker"], False) if lease is not None else (None, False)


def add_suite(run: RunDir, suite: str, variant: str = "") -> None:
    """Note in the run directory that ``suite`` ran it, as which variant (so a rebuild
    knows)."""
    write_json(run.path / SUITES_FILE, {"suites": {**_suites_of(run), suite: variant}})


def row_for(run: RunDir, status: str | None = None) -> dict[str, Any]:
    """The index row of one run directory, from its JSON files."""
    config_text = run.config.read_text() if run.config.exists() else "{}"
    config = json.loads(config_text)
    info = _optional_json(run, run.train_info)
    result = _optional_json(run, run.result)
    train = config.get("train", {})
    state = status or ("evaluated" if result else info.get("status", "created"))
    floor = _optional_json(run, run.path / FLOOR_FILE)
    made = {**provenance(), **result.get("provenance", {})}
    method, backbone = config.get("method"), config.get("backbone")
    if floor:  # a floor is scored, not trained: its row names the floor
        method, backbone, state = f"({floor['floor']})", floor["backbone"], "floor"
    return {
        "run": run.path.name, "method": method,
        "dataset": config.get("dataset"),
        "eval_dataset": config.get("eval", {}).get("dataset") or config.get("dataset"),
        "backbone": backbone,
        "seed": floor.get("seed", train.get("seed")), "status": state,
        "suites": json.dumps(_suites_of(run)),
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "config": config_text, "git_commit": made["git_commit"],
        "versions": json.dumps(made["versions"]),
        "device": info.get("device"), "wall_time_s": info.get("wall_time_s"),
        "images_per_s": info.get("images_per_s"), "peak_memory_mb": info.get("peak_memory_mb"),
        "mfu": info.get("mfu"),
        "metrics": json.dumps(result.get("metrics", {})),
        "val_metrics": json.dumps(result.get("val_metrics", {})),
        "curve": json.dumps(info.get("curve", [])), "recorded_at": made["recorded_at"],
    }


def provenance() -> dict[str, Any]:
    """Where and when a result is made: sslreg's commit, the distributions' versions and
    the time. ``result.json`` keeps it, so re-recording an old result (a suite reusing
    it, an index rebuild) does not stamp it with today's commit; a run without a result
    is described as of its recording."""
    return {"git_commit": git_commit(), "versions": versions(), "recorded_at": time.time()}


@functools.cache
def git_commit() -> str | None:
    """The commit of the sslreg checkout, when it is one (with ``+dirty`` if edited)."""
    source = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=source, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty.strip() else commit


@functools.cache
def versions() -> dict[str, str]:
    """sslreg's version and every plugin distribution's, by distribution name."""
    found = {"sslreg": _version("sslreg")}
    for entry in metadata.entry_points(group="sslreg"):
        if entry.dist is not None:
            found[entry.dist.name] = entry.dist.version
    return dict(sorted(found.items()))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _suites_of(run: RunDir) -> dict[str, str]:
    suites = _optional_json(run, run.path / SUITES_FILE).get("suites", {})
    if isinstance(suites, list):  # the first layout: names only
        return dict.fromkeys(suites, "")
    return dict(sorted(suites.items()))


def _optional_json(run: RunDir, path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return run.read_json(path)
    except SslregError:
        return {}


def _ensure_schema(connection: sqlite3.Connection) -> None:
    connection.execute(_SCHEMA)
    connection.execute(_CLAIMS_SCHEMA)
    # Setting the version takes the write lock: only when it changes, so readers (a
    # leaderboard, a polling worker) never wait behind a writer.
    if connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _healthy(index: RunIndex) -> bool:
    """Whether the index can be used as it is. A locked index is not damaged: its lock
    outlasting the timeout raises :meth:`RunIndex.connect`'s one line instead."""
    try:
        with index.connect() as connection:
            if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return False
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            return version in (0, SCHEMA_VERSION) and _has_columns(connection)
    except sqlite3.DatabaseError:
        return False


def _locked(error: sqlite3.OperationalError) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _has_columns(connection: sqlite3.Connection) -> bool:
    names = [row[1] for row in connection.execute("PRAGMA table_info(runs)")]
    return not names or names == list(COLUMNS)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for column in ("suites", "versions", "metrics", "val_metrics"):
        row[column] = json.loads(row[column]) if row[column] else {}
    row["curve"] = json.loads(row["curve"]) if row["curve"] else []
    return row
