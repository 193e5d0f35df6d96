"""The run index: one SQLite database per runs folder, recording every run.

The run directories are the truth; the index is a cache of them with provenance, for
listing and leaderboards. It runs in WAL mode so several ``sslreg bench`` processes can
write at once, and it is rebuilt from the run directories when it is missing or
damaged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
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


class RunIndex:
    """The index of the runs under ``out`` (``out/index.sqlite``)."""

    def __init__(self, out: Path | str) -> None:
        self.out = Path(out)
        self.path = self.out / INDEX_NAME

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        self.out.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout = 60000")
            connection.execute("PRAGMA journal_mode = WAL")
            yield connection
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
        """Record every run directory under ``out`` afresh; returns how many."""
        runs = sorted(p.parent for p in self.out.glob("*/config.json"))
        for path in runs:
            self.record(RunDir(path))
        return len(runs)


def open_index(out: Path | str) -> RunIndex:
    """The index of ``out``, rebuilt from the run directories if it is missing,
    damaged or of another schema version (a damaged file is kept aside)."""
    index = RunIndex(out)
    if not index.path.exists():
        index.rebuild()
    elif not _healthy(index):
        aside = index.path.with_name(f"{INDEX_NAME}.damaged-{int(time.time())}")
        index.path.rename(aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{index.path}{suffix}").unlink(missing_ok=True)
        index.rebuild()
    return index


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
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _healthy(index: RunIndex) -> bool:
    try:
        with index.connect() as connection:
            if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return False
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            return version in (0, SCHEMA_VERSION) and _has_columns(connection)
    except sqlite3.DatabaseError:
        return False


def _has_columns(connection: sqlite3.Connection) -> bool:
    names = [row[1] for row in connection.execute("PRAGMA table_info(runs)")]
    return not names or names == list(COLUMNS)


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    for column in ("suites", "versions", "metrics", "val_metrics"):
        row[column] = json.loads(row[column]) if row[column] else {}
    row["curve"] = json.loads(row["curve"]) if row["curve"] else []
    return row
