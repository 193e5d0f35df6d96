"""Claims in the run index: atomic, expiring, surviving a damaged index; a locked index
waits, then says so in one line; a rebuild drops the rows of deleted directories."""

import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from sslreg import SslregError
from sslreg.cli import cli
from sslreg.runs import RunDir, RunIndex, open_index, write_json


def fake_run(out, name):
    run = RunDir(out / name)
    write_json(run.config, {"method": "simclr", "dataset": "synthetic", "backbone": "tiny",
                            "train": {"seed": 0}})
    write_json(run.train_info, {"status": "trained"})
    write_json(run.result, {"metrics": {"knn20_acc": 0.5, "linear_acc": 0.6}})
    return run


def test_a_claim_is_exclusive_until_released_or_expired(tmp_path):
    index = open_index(tmp_path)
    assert index.claim(["a", "b"], "w1", lease_s=60) == (True, None)
    assert index.claim(["b"], "w2", lease_s=60) == (False, "w1")
    # All or nothing: w2 gets neither c nor b while w1 holds b.
    assert index.claim(["c", "b"], "w2", lease_s=60) == (False, "w1")
    assert set(index.claims()) == {"a", "b"}
    assert json.loads((tmp_path / "a" / "lease.json").read_text())["worker"] == "w1"
    assert index.release(["a"], "w1")
    assert not (tmp_path / "a" / "lease.json").exists()
    assert index.claim(["a"], "w2", lease_s=60) == (True, None)
    # A lease that was not renewed expires, and the next worker takes it over.
    assert index.claim(["d"], "w1", lease_s=0.2) == (True, None)
    time.sleep(0.3)
    assert index.claim(["d"], "w2", lease_s=60) == (True, "w1")
    assert index.renew(["d", "b"], "w1", lease_s=60) == ["d"]  # w1 lost d, keeps b
    assert index.claims()["b"][0] == "w1"


def test_only_one_of_many_racing_claimers_wins(tmp_path):
    open_index(tmp_path)
    start, won = threading.Barrier(8), []

    def race(worker):
        start.wait()  # every claimer at once, each on its own connection
        won.append(RunIndex(tmp_path).claim(["run"], worker, 60)[0])

    threads = [threading.Thread(target=race, args=(f"w{k}",)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]


def test_a_damaged_index_keeps_its_live_claims_so_no_run_is_taken_twice(tmp_path):
    for name in ("a", "b"):
        fake_run(tmp_path, name)
    index = open_index(tmp_path)
    assert index.claim(["a"], "trainer", lease_s=60)[0]
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    # Another worker comes along: the index is rebuilt, with the claim of run a back.
    other = open_index(tmp_path)
    assert other.claim(["a"], "newcomer", lease_s=60) == (False, "trainer")
    assert sorted(r["run"] for r in other.rows()) == ["a", "b"]  # nothing lost
    assert len(list(tmp_path.glob("index.sqlite.damaged-*"))) == 1  # kept aside
    assert index.renew(["a"], "trainer", lease_s=60) == []  # the trainer keeps its lease


def test_workers_finding_the_index_damaged_at_once_replace_it_once(tmp_path):
    for name in ("a", "b", "c"):
        fake_run(tmp_path, name)
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    errors = []

    def look():
        try:
            assert len(open_index(tmp_path).rows()) == 3
        except BaseException as error:  # reported below, from the main thread
            errors.append(error)

    threads = [threading.Thread(target=look) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # One moved the damaged file aside and rebuilt; none moved the fresh index aside.
    assert len(list(tmp_path.glob("index.sqlite.damaged-*"))) == 1


def test_a_damaged_index_found_by_a_claim_is_rebuilt_and_the_claim_made(tmp_path):
    fake_run(tmp_path, "a")
    index = open_index(tmp_path)
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"index.sqlite{suffix}").unlink(missing_ok=True)
    assert index.claim(["a"], "w1", lease_s=60) == (True, None)
    assert [r["run"] for r in index.rows()] == ["a"]


HOLD_LOCK = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT OR REPLACE INTO claims VALUES ('held', 'x', 0, 0, 0)")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("COMMIT")
"""


def hold_lock(path, seconds):
    """Another process holding the index's write lock for ``seconds``."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_locked_index_is_waited_for_then_refused_in_one_line(tmp_path, monkeypatch):
    fake_run(tmp_path, "a")
    index = open_index(tmp_path)
    holder = hold_lock(index.path, 1.5)
    started = time.perf_counter()
    assert index.claim(["a"], "w1", lease_s=60) == (True, None)  # waited, then claimed
    assert time.perf_counter() - started > 1.0
    holder.wait(timeout=60)
    monkeypatch.setenv("SSLREG_INDEX_TIMEOUT_S", "0.5")
    holder = hold_lock(index.path, 5)
    try:
        with pytest.raises(SslregError, match="stayed locked by another process for 0.5 s"):
            index.claim(["b"], "w1", lease_s=60)
        assert [r["run"] for r in index.rows()] == ["a"]  # readers are not blocked
        assert index.release(["a"], "w1") is False  # a release never raises
    finally:
        holder.kill()
        holder.wait()
    assert index.claims()["a"][0] == "w1"  # its lease expires by itself
    with sqlite3.connect(index.path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_bench_on_a_locked_index_exits_with_one_line_and_loses_nothing(tmp_path, monkeypatch):
    fake_run(tmp_path, "finished-before")
    index = open_index(tmp_path)
    suite = tmp_path / "tiny.toml"
    budget = ('backbone = "resnet18-narrow"\nset = ["train.epochs=1", "train.batch_size=32", '
              '"train.train_subset=64", "eval.train_subset=100", "eval.test_subset=50"]\n')
    suite.write_text('name = "tiny"\ndataset = "synthetic"\nmethods = ["simclr"]\nseeds = [0]\n'
                     f"[budget.cpu]\n{budget}[budget.gpu]\n{budget}")
    monkeypatch.setenv("SSLREG_INDEX_TIMEOUT_S", "0.5")
    holder = hold_lock(index.path, 20)
    try:
        ran = CliRunner().invoke(cli, ["bench", str(suite), "--out", str(tmp_path), "--quiet"])
    finally:
        holder.kill()
        holder.wait()
    assert ran.exit_code == 1, ran.output
    (line,) = [line for line in ran.output.splitlines() if line.startswith("Error:")]
    assert "stayed locked by another process" in line and "Traceback" not in ran.output
    assert [r["run"] for r in open_index(tmp_path).rows()] == ["finished-before"]
    assert not list(tmp_path.glob("simclr-*")) and not list(tmp_path.glob("*.damaged-*"))


def test_a_rebuild_drops_the_rows_of_deleted_run_directories(tmp_path):
    import shutil

    for name in ("a", "b"):
        fake_run(tmp_path, name)
    index = open_index(tmp_path)
    shutil.rmtree(tmp_path / "b")
    assert sorted(r["run"] for r in index.rows()) == ["a", "b"]  # listed until rebuilt
    ran = CliRunner().invoke(cli, ["runs", "--out", str(tmp_path), "--rebuild"])
    assert ran.exit_code == 0 and "rebuilt the index from 1 run directories" in ran.output
    assert [r["run"] for r in index.rows()] == ["a"]


def test_a_rebuild_takes_back_live_leases_and_leaves_expired_ones(tmp_path):
    from sslreg.runs.index import write_lease

    fake_run(tmp_path, "a")
    fake_run(tmp_path, "b")
    write_lease(tmp_path / "a", "alive", time.time() + 60)
    write_lease(tmp_path / "b", "dead", time.time() - 1)
    index = open_index(tmp_path)  # none yet: built from the directories
    assert {run: worker for run, (worker, _) in index.claims().items()} == {"a": "alive"}
    assert index.claim(["b"], "next", lease_s=60) == (True, "dead")
    assert RunIndex(tmp_path).claim(["a"], "next", lease_s=60) == (False, "alive")


def test_on_a_network_file_system_the_index_uses_the_rollback_journal(tmp_path, monkeypatch):
    from sslreg.runs import index as index_module

    assert index_module.filesystem_type(tmp_path) not in index_module.NETWORK_FILESYSTEMS
    assert index_module.journal_mode(tmp_path) == "wal"
    monkeypatch.setattr(index_module, "filesystem_type", lambda path: "nfs4")
    fake_run(tmp_path, "a")
    index = open_index(tmp_path)
    with sqlite3.connect(index.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert index.claim(["a"], "w1", 60) == (True, None)
    assert index.claim(["a"], "w2", 60) == (False, "w1")
    monkeypatch.setenv("SSLREG_INDEX_JOURNAL", "memory")
    with pytest.raises(SslregError, match="choose wal or delete"):
        index.rows()


def test_a_bad_lease_or_timeout_in_the_environment_is_one_line(tmp_path, monkeypatch):
    from sslreg.suites.claims import this_worker

    monkeypatch.setenv("SSLREG_LEASE_S", "soon")
    with pytest.raises(SslregError, match=r"\$SSLREG_LEASE_S=soon is not a number of seconds"):
        this_worker()
    monkeypatch.setenv("SSLREG_LEASE_S", "5")
    assert this_worker().lease_s == 5.0
    monkeypatch.setenv("SSLREG_INDEX_TIMEOUT_S", "0")
    with pytest.raises(SslregError, match="above 0"):
        open_index(tmp_path)
