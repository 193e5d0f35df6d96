"""``sslreg bench SUITE --executor slurm``: a suite's workers as a SLURM job array.

Through submitit (the optional ``slurm`` dependency group). Each array task is a bench
worker like any other (:func:`sslreg.suites.runner.run_suite`): it claims runs in the run
index, so the jobs split the suite between them, and it leaves, freeing its GPUs, when
it finds nothing more to claim. The last job to finish sees the suite complete and
prints the table. A job with several processes (``--gpus-per-job 4``) is one torch
distributed group, as torchrun would start it: every run it claims is trained on all of
its GPUs. Pre-emption and time limits: SLURM signals the job first (USR2), the run being
trained stops after its step with a checkpoint (:class:`Preemption`), its claim is
released, submitit requeues the job, and whichever worker claims the run next resumes
it. ``--executor local`` is the same path with submitit's
local executor (processes on this machine), which the tests use.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import click

from sslreg.engine.interrupt import StopRequest
from sslreg.errors import RunInterrupted, SslregError

INSTALL = "pip install 'sslreg[slurm]' (or pip install 'submitit>=1.5')"
# How long before the time limit SLURM warns a job (submitit requeues it then): the
# run's last checkpoint is at most an epoch old, so this need only cover the exit.
SIGNAL_DELAY_S = 120


@attrs.frozen(kw_only=True)
class ExecutorOptions:
    """What each job asks for; ``None`` leaves it to the cluster's default."""

    cluster: str = "slurm"
    jobs: int | None = None
    partition: str | None = None
    time_min: int = 240
    gpus_per_job: int | None = None
    processes_per_job: int | None = None
    mem_gb: int | None = None
    folder: str | None = None

    @property
    def gpus(self) -> int:
        """One GPU per job on SLURM unless told; none with the local executor."""
        if self.gpus_per_job is not None:
            return self.gpus_per_job
        return 1 if self.cluster == "slurm" else 0

    @property
    def processes(self) -> int:
        """One process per GPU (a torch distributed group of them), at least one."""
        return self.processes_per_job or max(1, self.gpus)


class BenchJob:
    """One array task: a bench worker on ``suite`` in ``out`` that does not wait for
    other jobs' runs. Submitit pickles it and calls it in the job."""

    def __init__(self, suite: str, out: str, since: float) -> None:
        self.suite, self.out, self.since = suite, out, since

    def __call__(self) -> str:
        import submitit

        environment = submitit.JobEnvironment()
        if environment.num_tasks > 1:  # the job's processes form one group, as torchrun's
            # CUDA_VISIBLE_DEVICES stays whole: each rank takes cuda:LOCAL_RANK.
            submitit.helpers.TorchDistributedEnvironment().export(
                set_cuda_visible_devices=False)
        os.environ["SSLREG_BENCH_SINCE"] = repr(self.since)
        from sslreg.plugins import load_registry
        from sslreg.suites.runner import run_suite
        from sslreg.suites.suite import load_suite

        with Preemption() as preemption:
            try:
                table = run_suite(load_suite(self.suite), load_registry(), Path(self.out),
                                  progress=False, wait=False)
            except RunInterrupted:
                if not preemption.warned:
                    raise  # a plain SIGTERM (scancel): stopped with a checkpoint, no requeue
                preemption.requeue()
                return ""  # a process other than rank 0: submitit requeues from rank 0
        if table:
            click.echo(table)  # into the job's log: the suite is complete
        return table

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit when the job is pre-empted or near its time limit: requeue
        the same worker. Nothing needs saving here: the run being trained has written
        its checkpoint (:class:`Preemption`), its claim is released as the worker exits,
        and whichever worker claims it next (this one, requeued, or another) resumes it."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class Preemption:
    """SLURM's warning before a pre-emption or the time limit (USR2, which submitit
    answers by requeueing the job at once) made gentler: a run in training finishes its
    step and writes a checkpoint first, as on SIGTERM, so the requeued job loses
    nothing; between runs the job is requeued at once. A plain SIGTERM (``scancel``)
    stops the run the same way but does not requeue."""

    def __init__(self) -> None:
        self.warned = False
        self._submitit: Any = None

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self._submitit = signal.signal(signal.SIGUSR2, self)
        return self

    def __exit__(self, *_exc: Any) -> None:
        if self._submitit is not None:
            signal.signal(signal.SIGUSR2, self._submitit)

    def __call__(self, number: int, frame: Any) -> None:
        self.warned = True
        training = signal.getsignal(signal.SIGTERM)
        if isinstance(training, StopRequest):
            training(signal.SIGTERM, frame)  # stop after this step, with a checkpoint
        else:
            self.requeue(number, frame)

    def requeue(self, number: int = signal.SIGUSR2, frame: Any = None) -> None:
        """submitit's own handler: checkpoint the job (:meth:`BenchJob.checkpoint`),
        requeue it and exit (on rank 0; it returns on the other ranks)."""
        if callable(self._submitit):
            self._submitit(number, frame)


def make_executor(options: ExecutorOptions, name: str, folder: Path) -> Any:
    """A submitit executor for ``options`` (SLURM or local), its parameters set."""
    try:
        import submitit
    except ImportError:
        raise SslregError(f"--executor {options.cluster} needs submitit, an optional "
                          f"dependency: {INSTALL}") from None
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    except RuntimeError as error:  # submitit's "Could not detect srun" off a cluster
        raise SslregError(f"--executor {options.cluster} cannot submit from this machine "
                          f"({error}); --executor local runs the same jobs here, "
                          "--workers N runs plain workers") from None
    parameters: dict[str, Any] = {
        "name": f"sslreg-{name}", "timeout_min": options.time_min, "nodes": 1,
        "gpus_per_node": options.gpus, "tasks_per_node": options.processes,
    }
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    if options.cluster == "slurm":
        parameters.update(slurm_signal_delay_s=SIGNAL_DELAY_S,
                          slurm_additional_parameters={"requeue": True})
        if options.partition:
            parameters["slurm_partition"] = options.partition
        if options.jobs:
            parameters["slurm_array_parallelism"] = options.jobs
    executor.update_parameters(**parameters)
    return executor


def submit_suite(suite: str, name: str, out: str, runs: int,
                 options: ExecutorOptions) -> str:
    """Submit ``options.jobs`` workers (default: one per run) on ``suite``, wait for
    every one, and return the suite's table. A failed job, or runs left unfinished
    when every job has ended, is one line (after the table, if there is one)."""
    folder = Path(options.folder or Path(out) / "slurm").absolute()
    executor = make_executor(options, name, folder)
    suite_arg = str(Path(suite).absolute()) if Path(suite).is_file() else suite
    since = time.time()
    count = options.jobs or runs
    jobs = executor.submit_array([BenchJob(suite_arg, str(Path(out).absolute()), since)
                                  for _ in range(count)])
    click.echo(f"submitted {count} {options.cluster} jobs ({jobs[0].job_id.split('_')[0]}"
               f"...), {options.processes} process(es) and {options.gpus} GPU(s) each; "
               f"logs in {folder}", err=True)
    tables, failures = [], []
    for job in jobs:
        try:
            tables.append(job.results()[0])  # rank 0's, where a job has several processes
        except Exception as error:  # submitit raises the job's own error as text
            last = str(error).strip().splitlines()[-1:] or ["?"]
            failures.append(f"job {job.job_id} failed ({last[0][:200]}); its log: "
                            f"{job.paths.stderr}")
    table = next((t for t in tables if t), "")
    if failures:
        if table:
            click.echo(table)
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise SslregError(failures[0] + more)
    if not table:
        raise SslregError(f"every job ended with runs of suite {name} unfinished (a job "
                          f"killed without a requeue holds them until its lease expires); "
                          "run the same command again to finish them")
    return table
