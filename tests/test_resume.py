"""Runs that lose nothing beyond minutes: mid-epoch checkpoints (train.checkpoint_every),
a clean stop on SIGTERM / SIGINT, exact resume after real SIGKILLs, and the faults of
docs/reliability.md (a kill inside a checkpoint write, a full disk, a non-finite loss).

Run as a script, this file is ``sslreg`` with faults put in (see :func:`_faulty_main`):
the subprocess tests start it and kill it."""

import errno
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sslreg import (
    CheckpointError,
    ConfigError,
    DivergedError,
    RunConfig,
    RunInterrupted,
    WriteError,
    testing,
)
from sslreg.config import checkpoint_cadence
from sslreg.engine import pretrain
from sslreg.engine import trainer as trainer_module
from sslreg.engine.checkpoint import load_checkpoint
from sslreg.plugins import load_registry
from sslreg.runs import RunDir
from sslreg.runs.index import open_index

# 4 epochs of 4 steps: 64 synthetic images, batch 16.
TINY = ["train.epochs=4", "train.batch_size=16", "train.train_subset=64",
        "train.log_every=2", "optim.warmup_epochs=0"]
EPOCHS, STEPS_PER_EPOCH = 4, 4
STEPS = EPOCHS * STEPS_PER_EPOCH


def tiny_config(registry, method="simclr", extra=(), backbone="resnet18-narrow"):
    return RunConfig.build(registry, method, [*TINY, *extra], dataset="synthetic",
                           backbone=backbone)


def train(registry, config, out, **options):
    return pretrain(config, registry, out, evaluate=False, progress=False, **options)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run here on one thread, like the processes of :func:`start`: a CPU
    convolution's sums depend on how many threads split them, so runs are bit-exact
    only at the same thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def straight(one_thread, tmp_path_factory):
    """SimCLR's tiny run, never interrupted (the checkpoint cadence changes nothing)."""
    registry = load_registry()
    return train(registry, tiny_config(registry), tmp_path_factory.mktemp("straight"))


def assert_same(a, b, where="checkpoint"):
    """Bit-for-bit equality of two checkpoint parts: every tensor ``torch.equal``."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for number, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{number}]")
    else:
        assert a == b, where


def assert_same_weights(expected: RunDir, actual: RunDir):
    a, b = load_checkpoint(expected.checkpoint), load_checkpoint(actual.checkpoint)
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"]) == (EPOCHS, STEPS)
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")


class Crash(Exception):
    """Stands in for a process that died: nothing after it runs."""


def crash_before_step(monkeypatch, step):
    """Training raises :class:`Crash` when ``step`` steps are done; undo() restores."""
    original = trainer_module.train_step

    def crashing(trainer, *args):
        if trainer.progress.step == step:
            raise Crash
        return original(trainer, *args)

    monkeypatch.setattr(trainer_module, "train_step", crashing)
    return lambda: monkeypatch.setattr(trainer_module, "train_step", original)


# --- train.checkpoint_every -------------------------------------------------------------

@pytest.mark.parametrize("text, cadence", [
    ("500", (500, 0.0)), ("0", (0, 0.0)), ("30s", (0, 30.0)), ("10m", (0, 600.0)),
    ("1.5h", (0, 5400.0))])
def test_checkpoint_every_is_steps_or_a_time(text, cadence):
    assert checkpoint_cadence(text) == cadence


@pytest.mark.parametrize("bad", ["10x", "-5", "m", "10 minutes", "1e3"])
def test_checkpoint_every_refuses_other_spellings_in_one_line(registry, bad):
    with pytest.raises(ConfigError) as error:
        RunConfig.build(registry, "simclr", [f"train.checkpoint_every={bad}"])
    message = str(error.value)
    assert message.startswith(f"bad value train.checkpoint_every={bad!r}")
    assert "a step count (500), a time (30s, 10m, 1h) or 0" in message and "\n" not in message


def test_checkpoint_every_stays_out_of_the_digest(registry):
    config = RunConfig.build(registry, "simclr")
    assert config.train.checkpoint_every == "10m"
    # The digest of simclr's defaults before the key existed: run directories keep names.
    assert config.digest() == "7145c95516fe"
    other = RunConfig.build(registry, "simclr", ["train.checkpoint_every=7"])
    assert other.digest() == config.digest()
    assert RunConfig.from_dict(other.to_dict(), registry) == other


# --- exact resume inside an epoch ---------------------------------------------------------

# Methods whose steps draw from torch's global random streams (MoCo's shuffled BN, MAE's
# masks) were not resumed exactly before the streams were checkpointed, even at epoch ends;
# they run every time, every other registered method with the slow tests.
QUICK = ("simclr", "moco", "mae")


def _every_method():
    return [name if name in QUICK else pytest.param(name, marks=pytest.mark.slow)
            for name in testing.method_names()]


@pytest.mark.parametrize("method", _every_method())
def test_a_crash_inside_an_epoch_resumes_to_the_same_weights(registry, tmp_path, monkeypatch,
                                                             straight, method):
    backbone = testing.tiny_backbones(method, registry)[0]
    config = tiny_config(registry, method, ["train.checkpoint_every=2"], backbone)
    reference = straight if method == "simclr" else train(registry, config, tmp_path / "a")
    undo = crash_before_step(monkeypatch, 7)  # checkpoints at steps 2, 4 (epoch end), 6
    with pytest.raises(Crash):
        train(registry, config, tmp_path / "b")
    undo()
    run = RunDir.for_config(tmp_path / "b", config)
    state = load_checkpoint(run.checkpoint)
    assert (state["epoch"], state["epoch_step"], state["step"]) == (1, 2, 6)
    resumed = train(registry, config, tmp_path / "b", resume=True)
    assert_same_weights(reference, resumed)
    a, b = (r.read_json(r.train_info) for r in (reference, resumed))
    assert a["steps"] == b["steps"] == STEPS and a["monitor_warnings"] == b["monitor_warnings"]


def test_a_checkpoint_whose_schedules_do_not_fit_the_run_is_refused_in_one_line(
        registry, tmp_path, monkeypatch):
    from sslreg.engine.checkpoint import save_checkpoint

    config = tiny_config(registry, "byol", ["train.checkpoint_every=2"])  # lr and momentum
    undo = crash_before_step(monkeypatch, 3)
    with pytest.raises(Crash):
        train(registry, config, tmp_path)
    undo()
    run = RunDir.for_config(tmp_path, config)
    state = load_checkpoint(run.checkpoint)
    assert sorted(state["schedules"]) == ["lr", "momentum"]
    assert all(len(table) == STEPS for table in state["schedules"].values())
    # As if the data had changed under the same config: 12 steps saved, 16 in the run.
    state["schedules"]["momentum"] = state["schedules"]["momentum"][:12]
    save_checkpoint(run.checkpoint, {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(CheckpointError) as error:
        train(registry, config, tmp_path, resume=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"checkpoint {run.checkpoint} does not fit")
    assert ("its schedule 'momentum' has 12 steps where this run has 16 (epochs x steps per "
            "epoch); resume with the data it was written with, or start over") in message


def test_time_cadence_writes_mid_epoch_checkpoints_and_changes_nothing(registry, tmp_path,
                                                                      monkeypatch, straight):
    config = tiny_config(registry, extra=["train.checkpoint_every=0.001s"])
    written = []
    original = trainer_module.save_checkpoint

    def recording(path, state):
        written.append((state["epoch"], state["epoch_step"]))
        original(path, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", recording)
    every_step = train(registry, config, tmp_path / "a")
    monkeypatch.setattr(trainer_module, "save_checkpoint", original)
    # After every step: 3 mid-epoch checkpoints, then the epoch end, in every epoch.
    assert written == sorted([(e, s) for e in range(EPOCHS) for s in (1, 2, 3)]
                             + [(e, 0) for e in range(1, EPOCHS + 1)])
    assert every_step.path.name == straight.path.name  # the same digest
    assert_same_weights(straight, every_step)


# --- SIGTERM and SIGINT -------------------------------------------------------------------

def signal_during_step(monkeypatch, step, *numbers):
    """Send ``numbers`` to this process while step ``step`` + 1 runs."""
    original = trainer_module.train_step

    def signalled(trainer, *args):
        output = original(trainer, *args)
        if trainer.progress.step == step:
            for number in numbers:
                os.kill(os.getpid(), number)
        return output

    monkeypatch.setattr(trainer_module, "train_step", signalled)
    return lambda: monkeypatch.setattr(trainer_module, "train_step", original)


def test_sigterm_finishes_the_step_checkpoints_and_records_interrupted(registry, tmp_path,
                                                                       monkeypatch, straight):
    config = tiny_config(registry)  # 10m: no mid-epoch checkpoint but the stop's
    before = signal.getsignal(signal.SIGTERM)
    undo = signal_during_step(monkeypatch, 5, signal.SIGTERM)
    with pytest.raises(RunInterrupted) as stopped:
        train(registry, config, tmp_path / "b")
    undo()
    assert stopped.value.exit_code == 143 and signal.getsignal(signal.SIGTERM) is before
    assert "interrupted by SIGTERM at step 6 (epoch 2, step 2 of 4)" in str(stopped.value)
    run = RunDir.for_config(tmp_path / "b", config)
    state = load_checkpoint(run.checkpoint)
    assert (state["epoch"], state["epoch_step"], state["step"]) == (1, 2, 6)
    assert run.read_json(run.train_info)["status"] == "interrupted"
    assert [row["status"] for row in open_index(tmp_path / "b").rows()] == ["interrupted"]
    resumed = train(registry, config, tmp_path / "b", resume=True)
    assert_same_weights(straight, resumed)
    assert [row["status"] for row in open_index(tmp_path / "b").rows()] == ["trained"]


def test_sigterm_during_the_last_step_of_an_epoch_stops_at_its_end(registry, tmp_path,
                                                                   monkeypatch):
    config = tiny_config(registry)
    signal_during_step(monkeypatch, 3, signal.SIGINT)  # the 4th step ends epoch 1
    with pytest.raises(RunInterrupted, match="by SIGINT at step 4 \\(the end of epoch 1\\)") \
            as stopped:
        train(registry, config, tmp_path)
    assert stopped.value.exit_code == 130
    state = load_checkpoint(RunDir.for_config(tmp_path, config).checkpoint)
    assert (state["epoch"], state["epoch_step"], state["step"]) == (1, 0, 4)


SUITE = """
name = "stop"
dataset = "synthetic"
methods = ["simclr", "byol"]
seeds = [0]
[budget.cpu]
backbone = "resnet18-narrow"
set = ["train.epochs=2", "train.batch_size=16", "train.train_subset=64"]
[budget.gpu]
backbone = "resnet18-narrow"
set = ["train.epochs=2", "train.batch_size=16", "train.train_subset=64"]
"""


def test_sigterm_stops_a_suite_instead_of_going_on_to_its_next_run(registry, tmp_path,
                                                                    monkeypatch):
    from sslreg.suites import load_suite, run_suite

    (tmp_path / "stop.toml").write_text(SUITE)
    signal_during_step(monkeypatch, 1, signal.SIGTERM)
    with pytest.raises(RunInterrupted, match="by SIGTERM at step 2"):
        run_suite(load_suite(str(tmp_path / "stop.toml")), registry, tmp_path / "runs",
                  progress=False)
    rows = open_index(tmp_path / "runs").rows()
    # byol runs first; simclr never started.
    assert [(row["method"], row["status"]) for row in rows] == [("byol", "interrupted")]
    assert [path.name for path in (tmp_path / "runs").glob("simclr-*")] == []


def test_a_second_ctrl_c_stops_at_once_keeping_the_last_checkpoint(registry, tmp_path,
                                                                  monkeypatch):
    config = tiny_config(registry, extra=["train.checkpoint_every=1"])
    signal_during_step(monkeypatch, 5, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt) as stopped:
        train(registry, config, tmp_path)
    assert not isinstance(stopped.value, RunInterrupted)
    state = load_checkpoint(RunDir.for_config(tmp_path, config).checkpoint)
    assert state["step"] == 5  # step 6 was not checkpointed: the second Ctrl-C won


# --- faults -------------------------------------------------------------------------------

def full_disk_on(monkeypatch, module, name, when):
    """``module.name`` (a writer) raises ENOSPC, after writing part of its output to the
    handle it was given, when ``when(*args)`` holds."""
    original = getattr(module, name)

    def writer(*args, **kwargs):
        if when(*args):
            handle = args[1] if len(args) > 1 else None
            if hasattr(handle, "write"):
                handle.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, writer)
    return lambda: monkeypatch.setattr(module, name, original)


def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(registry, tmp_path,
                                                                    monkeypatch, straight):
    config = tiny_config(registry, extra=["train.checkpoint_every=1"])
    undo = full_disk_on(monkeypatch, torch, "save",
                        lambda state, handle: state["step"] == 7)
    with pytest.raises(WriteError) as error:
        train(registry, config, tmp_path / "b")
    undo()
    run = RunDir.for_config(tmp_path / "b", config)
    message = str(error.value)
    assert "\n" not in message and "No space left on device" in message
    assert f"cannot write checkpoint {run.checkpoint}" in message
    assert "previous checkpoint is kept" in message and "--resume" in message
    assert load_checkpoint(run.checkpoint)["step"] == 6
    assert sorted(p.name for p in run.path.iterdir()) == [
        "checkpoint.pt", "config.json", "tb", "train.json"]  # no half-written file
    (row,) = open_index(tmp_path / "b").rows()
    assert row["status"].startswith(f"failed: cannot write checkpoint {run.checkpoint}")
    resumed = train(registry, config, tmp_path / "b", resume=True)
    assert_same_weights(straight, resumed)


def test_an_index_that_cannot_be_written_does_not_hide_why_a_run_stopped(registry, tmp_path,
                                                                         monkeypatch, capsys):
    from sslreg.runs.index import RunIndex

    config = tiny_config(registry, extra=["train.checkpoint_every=1"])
    full_disk_on(monkeypatch, torch, "save", lambda state, handle: state["step"] == 2)

    def refused(self, run, status=None):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(RunIndex, "record", refused)
    with pytest.raises(WriteError, match="No space left on device"):
        train(registry, config, tmp_path)
    run = RunDir.for_config(tmp_path, config)
    assert (f"warning: {run.path.name} is not recorded in the run index (database or disk "
            "is full); `sslreg runs --rebuild`") in capsys.readouterr().err
    monkeypatch.undo()
    assert load_checkpoint(run.checkpoint)["step"] == 1
    assert open_index(tmp_path).rebuild() == 1  # the directory is the truth


def test_disk_full_while_writing_result_json_is_one_line_and_resumable(registry, tmp_path,
                                                                      monkeypatch):
    from click.testing import CliRunner

    from sslreg.cli import cli
    from sslreg.runs import layout

    command = ["pretrain", "--method", "simclr", "--dataset", "synthetic", "--backbone",
               "resnet18-narrow", "--epochs", "1", "--batch-size", "16", "--quiet",
               "--set", "train.train_subset=64", "--set", "eval.train_subset=200",
               "--set", "eval.test_subset=100", "--out", str(tmp_path)]
    original = layout.Path.write_text

    def full(path, text, *args, **kwargs):
        if path.name.startswith(".result.json."):
            original(path, text[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(path, text, *args, **kwargs)

    monkeypatch.setattr(layout.Path, "write_text", full)
    failed = CliRunner().invoke(cli, command)
    monkeypatch.undo()
    assert failed.exit_code == 1, failed.output
    (line,) = failed.stderr.strip().splitlines()
    assert "result.json (No space left on device); the previous file is kept; free space, " \
           "then continue with --resume" in line and "Traceback" not in failed.output
    (run,) = [RunDir(p) for p in tmp_path.iterdir() if p.is_dir()]
    assert not run.result.exists() and not list(run.path.glob(".*.tmp"))
    assert run.read_json(run.train_info)["status"] == "trained"
    assert load_checkpoint(run.checkpoint)["epoch"] == 1
    (row,) = open_index(tmp_path).rows()
    assert row["status"].startswith("failed: cannot write") and "result.json" in row["status"]
    again = CliRunner().invoke(cli, [*command, "--resume"])
    assert again.exit_code == 0, again.output
    assert run.result.exists() and open_index(tmp_path).rows()[0]["status"] == "evaluated"


def test_a_non_finite_loss_stops_keeping_the_last_good_checkpoint(registry, tmp_path,
                                                                 monkeypatch):
    config = tiny_config(registry, extra=["train.checkpoint_every=1"])
    original = trainer_module.train_step

    def poisoned(trainer, batch, labels, views_rng):
        output = original(trainer, batch, labels, views_rng)
        if trainer.progress.step >= 6:  # the 7th step's loss and every later one
            output = type(output)(loss=output.loss * math.nan, embeddings=output.embeddings)
        return output

    monkeypatch.setattr(trainer_module, "train_step", poisoned)
    with pytest.raises(DivergedError) as error:
        train(registry, config, tmp_path)
    run = RunDir.for_config(tmp_path, config)
    assert str(error.value).startswith(
        "the loss became non-finite before step 7; the last good checkpoint (epoch 1, "
        f"step 6) is kept at {run.checkpoint}")
    state = load_checkpoint(run.checkpoint)
    assert state["step"] == 6
    assert all(torch.isfinite(t).all() for t in state["model"].values()
               if t.is_floating_point())
    assert run.read_json(run.train_info)["status"] == "diverged"
    assert [row["status"] for row in open_index(tmp_path).rows()] == ["diverged"]


def test_resume_removes_what_a_killed_writer_left(registry, tmp_path):
    config = tiny_config(registry, extra=["train.epochs=1"])
    run = train(registry, config, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = run.path / f".checkpoint.pt.{dead}.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = run.path / f".train.json.{os.getpid()}.tmp"  # a writer still running
    live.write_text("{")
    train(registry, config, tmp_path, resume=True)
    assert not stale.exists() and live.exists()


# --- real signals to a real process ---------------------------------------------------------

FAULTS = Path(__file__).resolve()
COMMAND = ["pretrain", "--method", "simclr", "--dataset", "synthetic", "--backbone",
           "resnet18-narrow", "--batch-size", "16", "--quiet", "--no-eval",
           *[part for item in TINY if not item.startswith("train.batch_size")
             for part in ("--set", item)]]


def start(out, *extra, env=None):
    """``sslreg pretrain`` (this file as a script, see _faulty_main) in a new process."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "SSLREG_OFFLINE": "1",
                   "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.Popen([sys.executable, str(FAULTS), *COMMAND, "--out", str(out),
                             *extra], env=environment, cwd=out.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoints(process, path, count, timeout=120):
    """Wait until ``path`` has been replaced ``count`` times (or the process ended)."""
    seen, last = 0, _identity(path)
    deadline = time.monotonic() + timeout
    while seen < count and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
        now = _identity(path)
        if now != last:
            seen, last = seen + 1, now
    assert time.monotonic() < deadline, "no progress"


def _identity(path):
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns


def finish(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, err


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(registry, tmp_path,
                                                                      straight):
    """Five processes: killed (SIGKILL) inside a checkpoint write, at seeded random
    moments after a checkpoint, and between two epochs; the last finishes. The final
    weights and optimizer are those of a run never interrupted."""
    config = tiny_config(registry, extra=["train.checkpoint_every=1"])
    out = tmp_path / "killed"
    out.mkdir()
    run = RunDir.for_config(out, config)
    moments = random.Random(0)
    # Each process moves at most about one epoch on, so all four die before the end.
    for attempt, fault in enumerate(["in-write", "random", "between-epochs", "random"]):
        extra = ["--set", "train.checkpoint_every=1"] + (["--resume"] if attempt else [])
        if fault == "random":
            process = start(out, *extra)
            wait_for_checkpoints(process, run.checkpoint, moments.randint(1, 2))
            time.sleep(moments.uniform(0, 0.3))  # a step takes about 0.1 s here
            process.send_signal(signal.SIGKILL)
        else:
            process = start(out, *extra, env={"SSLREG_TEST_KILL": fault})
        code, err = finish(process)
        assert code == -signal.SIGKILL, err[-2000:]
        state = load_checkpoint(run.checkpoint)  # whatever happened, it loads
        if fault == "in-write":  # the first checkpoint stands, the second is half there
            assert state["step"] == 1
            assert list(run.path.glob(".checkpoint.pt.*.tmp")), "no half-written checkpoint"
        if fault == "between-epochs":  # the epoch's checkpoint, but not its train.json
            assert state["epoch_step"] == 0
            info = run.read_json(run.train_info) if run.train_info.exists() else {}
            assert info.get("epochs_done", 0) < state["epoch"]
    code, err = finish(start(out, "--set", "train.checkpoint_every=1", "--resume"))
    assert code == 0, err[-2000:]
    assert not list(run.path.glob(".*.tmp"))
    assert_same_weights(straight, run)
    assert run.read_json(run.train_info)["status"] == "trained"


@pytest.mark.slow
def test_sigterm_exits_143_records_interrupted_and_resumes_exactly(registry, tmp_path,
                                                                   straight):
    config = tiny_config(registry)
    out = tmp_path / "stopped"
    out.mkdir()
    run = RunDir.for_config(out, config)
    process = start(out)
    wait_for_checkpoints(process, run.checkpoint, 1)  # epoch 1's end: inside training
    time.sleep(0.15)  # into epoch 2 (a step takes about 0.1 s here)
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 143, err[-2000:]
    (line,) = err.strip().splitlines()
    assert "interrupted by SIGTERM at step" in line and "continue with --resume" in line
    stopped_at = int(line.split(" at step ")[1].split()[0])
    state = load_checkpoint(run.checkpoint)
    assert state["step"] == stopped_at >= STEPS_PER_EPOCH
    assert run.read_json(run.train_info)["status"] == "interrupted"
    assert [row["status"] for row in open_index(out).rows()] == ["interrupted"]
    code, err = finish(start(out, "--resume"))
    assert code == 0, err[-2000:]
    assert_same_weights(straight, run)


def _tool(name):
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else shutil.which(name)


def _rank_pids(parent, count, timeout=60):
    """The process ids of torchrun's ``count`` workers, by rank (from their RANK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ranks = {}
        for tasks in Path(f"/proc/{parent}/task").glob("*/children"):
            for pid in tasks.read_text().split():
                try:  # a short-lived child may be gone already
                    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                rank = [item for item in environment if item.startswith(b"RANK=")]
                if rank:
                    ranks[int(rank[0][5:])] = int(pid)
        if len(ranks) == count:
            return [ranks[rank] for rank in range(count)]
        time.sleep(0.1)
    raise AssertionError("torchrun's workers did not start")


@pytest.mark.slow
def test_under_torchrun_a_sigterm_to_one_rank_stops_every_rank_at_one_step(tmp_path):
    """Two gloo processes; SIGTERM reaches rank 1 only. Rank 0 stops at the same step
    (or they would deadlock) and writes the checkpoint with both ranks' random streams;
    torchrun resuming it ends with the weights of a two-process run never stopped."""
    torchrun, sslreg = _tool("torchrun"), _tool("sslreg")
    if torchrun is None or sslreg is None or not Path("/proc/self/task").exists():
        pytest.skip("needs torchrun, the sslreg script and Linux's /proc")
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", sslreg,
               *COMMAND]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLREG_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}

    def launch(out, *extra):
        return subprocess.Popen([*command, "--out", str(out), *extra], env=env,
                                cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    reference = launch(tmp_path / "straight")  # meanwhile: its 2 processes start alike
    stopped = launch(tmp_path / "stopped")
    run = RunDir.for_config(tmp_path / "stopped", tiny_config(load_registry()))
    _, second = _rank_pids(stopped.pid, 2)
    wait_for_checkpoints(stopped, run.checkpoint, 1, timeout=240)  # the end of epoch 1
    time.sleep(0.15)
    os.kill(second, signal.SIGTERM)
    code, said = finish(stopped, timeout=240)
    assert code != 0 and said.count("interrupted by SIGTERM at step") == 1, said[-3000:]
    assert "exitcode  : 143" in said  # torchrun names the first rank to leave
    stopped_at = int(said.split("interrupted by SIGTERM at step ")[1].split()[0])
    code, err = finish(reference, timeout=240)
    assert code == 0, err[-3000:]
    straight = RunDir(tmp_path / "straight" / run.path.name)
    state = load_checkpoint(run.checkpoint)
    assert state["step"] == stopped_at >= STEPS_PER_EPOCH and len(state["random"]) == 2
    assert run.read_json(run.train_info)["status"] == "interrupted"
    code, err = finish(launch(tmp_path / "stopped", "--resume"), timeout=240)
    assert code == 0, err[-3000:]
    assert_same_weights(straight, run)


def _faulty_main():
    """``sslreg`` with the fault $SSLREG_TEST_KILL put in: ``in-write`` kills the process
    (SIGKILL) halfway through writing its second checkpoint; ``between-epochs`` kills it
    after its first epoch-end checkpoint, before train.json says so."""
    import io

    from sslreg.cli import main

    fault = os.environ.get("SSLREG_TEST_KILL")
    if fault == "in-write":
        calls, save = [], torch.save

        def half_then_die(state, handle):
            calls.append(1)
            if len(calls) < 2:
                return save(state, handle)
            buffer = io.BytesIO()
            save(state, buffer)
            handle.write(buffer.getvalue()[:buffer.tell() // 2])
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die
    elif fault == "between-epochs":
        checkpoint = trainer_module.checkpoint

        def then_die(trainer, views_rng=None):
            checkpoint(trainer, views_rng)
            if trainer.progress.epoch_step == 0:  # an epoch's end
                os.kill(os.getpid(), signal.SIGKILL)

        trainer_module.checkpoint = then_die
    sys.argv[0] = "sslreg"
    main()


if __name__ == "__main__":
    _faulty_main()
