"""Bench workers that share a suite: every run trained once, dead workers' runs taken
over and resumed, --workers, the submitit executor, and the faults around them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from sslreg_simclr import SimCLR, SimCLRConfig

from sslreg import MethodSpec, hookimpl, load_registry, testing
from sslreg.cli import cli
from sslreg.runs import RunDir, RunIndex, open_index
from sslreg.suites.claims import Worker, read_claims_log
from sslreg.suites.runner import run_suite
from sslreg.suites.suite import parse_suite

BUDGET = """
backbone = "resnet18-narrow"
set = ["train.epochs=EPOCHS", "train.batch_size=32", "train.train_subset=TRAIN",
       "eval.train_subset=100", "eval.test_subset=50"]
"""


def suite_text(methods, seeds=(0,), epochs=1, train=64, name="tiny"):
    budget = BUDGET.replace("EPOCHS", str(epochs)).replace("TRAIN", str(train))
    return (f'name = "{name}"\ndataset = "synthetic"\nmethods = {json.dumps(methods)}\n'
            f"seeds = {list(seeds)}\n[budget.cpu]{budget}[budget.gpu]{budget}")


# Three methods x two seeds: six runs of a few seconds each.
SIX_RUNS = suite_text(["simclr", "byol", "vicreg"], seeds=(0, 1))
TIMEOUT_S = 300


def worker_env(**extra):
    """The environment of a worker subprocess: this checkout's sslreg, one thread, a
    short poll."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "SSLREG_OFFLINE": "1",
            "SSLREG_POLL_S": "0.5", "PYTHONPATH": os.pathsep.join(sys.path), **extra}


def bench_command(suite_file, out, *more):
    return [sys.executable, "-m", "sslreg", "bench", str(suite_file), "--out", str(out),
            "--quiet", *more]


def start(command, **env):
    return subprocess.Popen(command, env=worker_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process):
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stdout, stderr


def runs_of(out):
    """The trained runs' directories (not the floors')."""
    return sorted(p.parent for p in out.glob("*/config.json")
                  if not p.parent.name.startswith("floor-"))


def claims(run):
    return [e for e in read_claims_log(run) if e["event"] == "claimed"]


def releases(run):
    return [e for e in read_claims_log(run) if e["event"] == "released"]


def event_files(run):
    """TensorBoard event files: one per training session and one for the HParams of
    its evaluation, so a run trained once and evaluated once has two."""
    return list((run / "tb").glob("events.out.tfevents.*"))


def test_workers_in_threads_split_a_suite_and_return_the_same_complete_table(tmp_path):
    """Two workers in one process (each its own claims and heartbeat): the fast check
    of the claim-train-release loop; the subprocess tests below are the real thing."""
    import threading

    suite = parse_suite(suite_text(["simclr", "byol"]))
    registry = load_registry()  # loading plugins is not thread-safe; using them is
    since, tables, errors = time.time(), {}, []

    def work(name):
        try:
            tables[name] = run_suite(suite, registry, tmp_path, progress=False,
                                     worker=Worker(id=name, since=since, poll_s=0.1))
        except BaseException as error:  # reported from the main thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Each returns once every run and floor is recorded: the same, complete table.
    assert tables["a"] == tables["b"] and tables["a"].count("| ok") == 4, tables["a"]
    runs = runs_of(tmp_path)
    assert len(runs) == 2
    for run in runs:
        (claim,) = claims(run)
        assert [r["outcome"] for r in releases(run)] == ["evaluated"]
        assert len(event_files(run)) == 2, run.name
    assert RunIndex(tmp_path).claims() == {}


def test_two_workers_split_a_suite_and_train_every_run_exactly_once(tmp_path):
    (tmp_path / "six.toml").write_text(SIX_RUNS)
    out = tmp_path / "runs"
    workers = [start(bench_command(tmp_path / "six.toml", out)) for _ in range(2)]
    results = [finish(worker) for worker in workers]
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:]
        assert stdout.count("## tiny: synthetic, seeds 0, 1") == 1, stdout  # both print it
        assert "| (random init)" in stdout
    runs = runs_of(out)
    assert len(runs) == 6
    trainers = set()
    for run in runs:
        (claim,) = claims(run)  # claimed once, by one worker, and released evaluated
        assert [r["outcome"] for r in releases(run)] == ["evaluated"]
        assert len(event_files(run)) == 2, run.name  # trained once, evaluated once
        trainers.add(claim["worker"])
    assert len(trainers) == 2, "both workers trained runs"
    assert RunIndex(out).claims() == {} and not list(out.glob("*/lease.json"))
    rows = open_index(out).rows()
    assert sorted(r["status"] for r in rows) == ["evaluated"] * 6 + ["floor"] * 3


def test_a_killed_workers_claim_expires_and_another_worker_resumes_its_run(tmp_path):
    (tmp_path / "one.toml").write_text(suite_text(["simclr"], epochs=4, train=256))
    out = tmp_path / "runs"
    first = start(bench_command(tmp_path / "one.toml", out), SSLREG_LEASE_S="2")
    try:
        deadline = time.time() + TIMEOUT_S
        while not list(out.glob("simclr-*/checkpoint.pt")) and time.time() < deadline:
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)  # mid-run, holding its claim
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    (run,) = runs_of(out)
    killed = json.loads((run / "lease.json").read_text())["worker"]
    info = RunDir(run).read_json(RunDir(run).train_info)
    assert info["status"] == "running" and 1 <= info["epochs_done"] < 4
    code, stdout, stderr = finish(start(bench_command(tmp_path / "one.toml", out),
                                        SSLREG_LEASE_S="2"))
    assert code == 0, stderr[-3000:]
    assert f"taking over from {killed} (its lease expired)" in stderr
    assert "| simclr" in stdout
    dead, taker = claims(run)
    assert dead["worker"] == killed and taker["took_over"] == killed
    assert taker["epochs_done"] >= 1, "the run was resumed, not started over"
    assert [r["outcome"] for r in releases(run)] == ["evaluated"]  # the dead one never was
    info = RunDir(run).read_json(RunDir(run).train_info)
    assert (info["epochs_done"], info["steps"]) == (4, 4 * 256 // 32)


def test_the_workers_option_starts_n_workers_and_prints_the_table_once(tmp_path):
    (tmp_path / "four.toml").write_text(suite_text(["simclr", "byol"], seeds=(0, 1)))
    out = tmp_path / "runs"
    code, stdout, stderr = finish(start(bench_command(tmp_path / "four.toml", out,
                                                      "--workers", "2")))
    assert code == 0, stderr[-3000:]
    assert stdout.count("## tiny: synthetic, seeds 0, 1") == 1, stdout
    assert "started 2 workers" in stderr and "[w0] " in stderr and "[w1] " in stderr
    assert stderr.count("suite tiny done") == 2  # each worker saw the suite complete
    runs = runs_of(out)
    assert len(runs) == 4 and all(len(claims(run)) == 1 for run in runs)


@pytest.mark.slow
def test_a_worker_killed_under_the_workers_option_loses_nothing(tmp_path):
    """One of two workers is killed while it holds a claim: the other takes its run
    over once the lease expires and finishes the suite; the table is printed and the
    command fails, naming the dead worker."""
    (tmp_path / "two.toml").write_text(suite_text(["simclr", "byol"], epochs=4, train=256))
    out = tmp_path / "runs"
    parent = start(bench_command(tmp_path / "two.toml", out, "--workers", "2"),
                   SSLREG_LEASE_S="2")
    try:
        deadline = time.time() + TIMEOUT_S
        while len(list(out.glob("*/checkpoint.pt"))) < 2 and time.time() < deadline:
            assert parent.poll() is None, parent.communicate()[1][-3000:]
            time.sleep(0.05)
        held = [json.loads(p.read_text())["worker"] for p in out.glob("*/lease.json")]
        victim = held[0]
        os.kill(int(victim.split(":")[1]), signal.SIGKILL)
    except BaseException:
        parent.kill()
        raise
    code, stdout, stderr = finish(parent)
    assert code == 1 and "1 of 2 workers failed" in stderr, stderr[-3000:]
    assert "status -9" in stderr and "Traceback" not in stderr
    assert stdout.count("| simclr") == 1 and stdout.count("| byol") == 1, stdout
    runs = runs_of(out)
    assert all(r["status"] == "evaluated" for r in open_index(out).rows()
               if r["status"] != "floor")
    (taken,) = [run for run in runs if len(claims(run)) == 2]
    dead, taker = claims(taken)
    assert dead["worker"] == victim and taker["took_over"] == victim
    assert taker["epochs_done"] >= 1


def test_workers_spread_over_the_visible_gpus_and_share_the_cores(monkeypatch):
    from sslreg.suites.workers import gpu_slots
    from sslreg.suites.workers import worker_env as env_of

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpu_slots() == ["3", "5"]
    assert [env_of(k, 3, ["3", "5"], 1.0)["CUDA_VISIBLE_DEVICES"] for k in range(3)] == \
        ["3", "5", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots() == []  # every GPU hidden: CPU workers
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    env = env_of(1, 4, [], 12.5)
    assert env["OMP_NUM_THREADS"] == "2" and env["SSLREG_BENCH_SINCE"] == "12.5"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert env_of(1, 4, [], 12.5)["OMP_NUM_THREADS"] == "3"  # the user's choice stays


def test_the_submitit_local_executor_splits_the_suite_between_its_jobs(tmp_path):
    pytest.importorskip("submitit")
    (tmp_path / "four.toml").write_text(suite_text(["simclr", "byol"], seeds=(0, 1)))
    out = tmp_path / "runs"
    code, stdout, stderr = finish(start(bench_command(tmp_path / "four.toml", out,
                                                      "--executor", "local", "--jobs", "2",
                                                      "--time", "10")))
    assert code == 0, stderr[-3000:]
    assert stdout.count("## tiny: synthetic, seeds 0, 1") == 1, stdout
    assert "submitted 2 local jobs" in stderr
    runs = runs_of(out)
    assert len(runs) == 4 and all(len(claims(run)) == 1 for run in runs)
    # Two jobs, two worker processes: their logs are where the submitter said.
    logs = list((out / "slurm").glob("*_0_log.err"))
    assert len(logs) == 2 and any("suite tiny" in log.read_text() for log in logs)


@pytest.mark.slow
def test_an_executor_job_of_two_processes_trains_each_run_on_both(tmp_path):
    """--processes-per-job 2: the job's processes form one torch distributed group, as
    torchrun's would (gloo on the CPU); rank 0 claims, both train, rank 0 records."""
    pytest.importorskip("submitit")
    (tmp_path / "two.toml").write_text(suite_text(["simclr", "byol"]))
    out = tmp_path / "runs"
    code, stdout, stderr = finish(start(bench_command(tmp_path / "two.toml", out,
                                                      "--executor", "local", "--jobs", "1",
                                                      "--processes-per-job", "2",
                                                      "--time", "10")))
    assert code == 0, stderr[-3000:]
    assert "1 local jobs" in stderr and "2 process(es)" in stderr
    assert stdout.count("| simclr") == 1 and stdout.count("| byol") == 1, stdout
    for run in runs_of(out):
        assert len(claims(run)) == 1
        info = RunDir(run).read_json(RunDir(run).train_info)
        assert info["device"].startswith("2 x cpu"), info["device"]


@pytest.mark.slow
def test_a_preempted_executor_job_is_requeued_and_resumes_its_run(tmp_path):
    """SIGUSR2 is what SLURM sends before pre-empting (submitit's signal): the run
    finishes its step and checkpoints there (recorded as interrupted), the job is
    requeued as a new process, and the run resumes from that step."""
    pytest.importorskip("submitit")
    (tmp_path / "one.toml").write_text(suite_text(["simclr"], epochs=4, train=256))
    out = tmp_path / "runs"
    submitter = start(bench_command(tmp_path / "one.toml", out, "--executor", "local",
                                    "--jobs", "1", "--time", "10"))
    try:
        deadline = time.time() + TIMEOUT_S
        while not list(out.glob("simclr-*/checkpoint.pt")) and time.time() < deadline:
            assert submitter.poll() is None, submitter.communicate()[1][-3000:]
            time.sleep(0.05)
        (run,) = runs_of(out)
        worker = json.loads((run / "lease.json").read_text())["worker"]
        os.kill(int(worker.split(":")[1]), signal.SIGUSR2)
    except BaseException:
        submitter.kill()
        raise
    code, stdout, stderr = finish(submitter)
    assert code == 0, stderr[-3000:]
    assert "| simclr" in stdout
    first, second = claims(run)
    assert first["worker"] == worker and second["worker"] != worker
    # The stop was mid-epoch or at an epoch end; either way after the first epoch.
    assert second["status"] == "interrupted" and second["steps"] >= 256 // 32, second
    assert [r["outcome"] for r in releases(run)] == ["stopped: RunInterrupted", "evaluated"]
    info = RunDir(run).read_json(RunDir(run).train_info)
    assert (info["epochs_done"], info["steps"]) == (4, 4 * 256 // 32)


def test_slurm_options_become_the_job_arrays_sbatch_lines(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from sslreg.suites.executor import ExecutorOptions, make_executor

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    options = ExecutorOptions(partition="gpu", time_min=90, gpus_per_job=4, mem_gb=64, jobs=3)
    executor = make_executor(options, "quick", tmp_path / "jobs")
    script = _make_sbatch_string(command="python -m submitit", folder=tmp_path / "jobs",
                                 map_count=3, **executor._executor.parameters)
    for line in ("--partition=gpu", "--time=90", "--gpus-per-node=4", "--mem=64GB",
                 "--ntasks-per-node=4", "--array=0-2%3", "--requeue", "--signal=USR2@120",
                 "--job-name=sslreg-quick"):
        assert f"#SBATCH {line}" in script, script


def test_executor_mistakes_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "one.toml").write_text(suite_text(["simclr"]))
    suite, out = str(tmp_path / "one.toml"), str(tmp_path / "runs")
    runner = CliRunner()
    for args, reason in [
        (["--partition", "gpu"], "--partition only applies with --executor slurm"),
        (["--workers", "2", "--executor", "local"], "choose one"),
        (["--executor", "local", "--partition", "gpu"], "--executor local has none"),
    ]:
        ran = runner.invoke(cli, ["bench", suite, "--out", out, *args])
        assert ran.exit_code != 0 and reason in ran.output, ran.output
        assert len(ran.output.strip().splitlines()) == 1, ran.output
    monkeypatch.setitem(sys.modules, "submitit", None)  # not installed
    ran = runner.invoke(cli, ["bench", suite, "--out", out, "--executor", "slurm"])
    assert ran.exit_code != 0 and "pip install 'sslreg[slurm]'" in ran.output, ran.output
    assert len(ran.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # refused before anything was written


class HookRaisingPlugin:
    """Methods whose hooks raise: ``setup`` (also called when a floor reads features the
    method's way) and ``on_step_end`` (during training)."""

    @hookimpl
    def register_methods(self, register):
        class SetupRaises(SimCLR):
            def setup(self, context):
                raise RuntimeError("setup hook broken")

        class StepEndRaises(SimCLR):
            def on_step_end(self, progress):
                raise ValueError("on_step_end hook broken")

        for name, factory in (("setup-raises", SetupRaises), ("step-raises", StepEndRaises)):
            register(MethodSpec(name=name, factory=factory, config_class=SimCLRConfig,
                                paper="-", views="simclr", objective="nt_xent"))


def test_a_plugin_raising_in_a_hook_is_recorded_and_not_retried_by_the_other_workers(
        tmp_path):
    suite = parse_suite(suite_text(["simclr", "setup-raises", "step-raises"]))
    since = time.time()
    with testing.registered(HookRaisingPlugin(), "hook-raising"):
        first = Worker(id="a", since=since, poll_s=0.1)
        table = run_suite(suite, load_registry(), tmp_path, progress=False, worker=first)
        rows = {r["method"]: r["status"] for r in open_index(tmp_path).rows()}
        assert rows["simclr"] == "evaluated"
        assert rows["setup-raises"] == "crashed: RuntimeError: setup hook broken"
        assert rows["step-raises"] == "crashed: ValueError: on_step_end hook broken"
        assert "crashed: RuntimeError: setup hook broken" in table and "| (random init)" in table
        # Another worker of the same launch finds the failures final: nothing to do.
        again = run_suite(suite, load_registry(), tmp_path, progress=False,
                          worker=Worker(id="b", since=since, poll_s=0.1))
        assert again == table
        broken = [p for p in tmp_path.glob("*-raises-*") if p.is_dir()]
        assert len(broken) == 2 and all(len(claims(p)) == 1 for p in broken)
        # A later `sslreg bench` tries a failed run again, as it always did.
        run_suite(suite, load_registry(), tmp_path, progress=False,
                  worker=Worker(id="c", since=time.time(), poll_s=0.1))
        assert all(len(claims(p)) == 2 for p in broken)
        (simclr,) = [p for p in runs_of(tmp_path) if p.name.startswith("simclr-")]
        assert len(claims(simclr)) == 1  # finished runs are never claimed again


def test_a_deleted_run_directory_is_trained_again_and_the_rest_are_kept(tmp_path):
    import shutil

    suite = parse_suite(suite_text(["simclr", "byol"]))
    run_suite(suite, load_registry(), tmp_path, progress=False)
    deleted, kept = runs_of(tmp_path)
    before = kept.joinpath("result.json").stat().st_mtime_ns
    shutil.rmtree(deleted)  # the index still lists it as evaluated
    assert deleted.name in {r["run"] for r in open_index(tmp_path).rows()}
    table = run_suite(suite, load_registry(), tmp_path, progress=False)
    assert deleted.joinpath("result.json").exists() and len(claims(deleted)) == 1
    assert kept.joinpath("result.json").stat().st_mtime_ns == before
    assert len(claims(kept)) == 1
    rows = [r for r in open_index(tmp_path).rows() if r["status"] != "floor"]
    assert sorted(r["status"] for r in rows) == ["evaluated", "evaluated"]
    assert "| simclr" in table and "| byol" in table
