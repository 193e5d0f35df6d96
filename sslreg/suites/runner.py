"""Run every method of a suite, skip finished runs, isolate failures, print a table;
several workers may share one suite (each run is claimed before it is trained)."""

from __future__ import annotations

import datetime
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import click
import pandas as pd
import torch

from sslreg import distributed
from sslreg.config import RunConfig
from sslreg.engine import assemble, floors, pretrain
from sslreg.engine.device import device_name, resolve_device
from sslreg.engine.evaluate import (
    RANDOM_INIT,
    RAW_PIXELS,
    evaluate_run,
    floor_dir,
    readout_of,
    up_to_date,
)
from sslreg.errors import SslregError
from sslreg.runs import RunDir, RunIndex, add_suite, open_index, write_json
from sslreg.suites.claims import Heartbeat, Worker, log_claim, this_worker
from sslreg.suites.leaderboard import leaderboard_frame, method_readouts, summary
from sslreg.suites.suite import Budget, Suite, suite_sets, variants

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry


def run_suite(suite: Suite, registry: Registry, out: Path, *, progress: bool = True,
              wait: bool = True, worker: Worker | None = None) -> str:
    """Pretrain and evaluate each (method, seed) this worker can claim, score the
    floors, and return the comparison table as Markdown.

    Any number of workers (processes, on one machine or many sharing ``out``) may run
    the same suite: each run, and each set of floors, is claimed in the run index
    before it is touched, so none is done twice; a claim whose worker died expires and
    another worker takes it over, resuming the run from its checkpoint. A worker goes
    through the suite in order, then, with ``wait``, polls until the runs that others
    hold are finished, and returns the table. Without ``wait`` it returns ``""`` when
    others still hold runs (a SLURM job leaves and frees its GPUs).

    Under torchrun the ranks are one worker: rank 0 claims, every rank trains each
    claimed run, rank 0 alone evaluates, records, scores the floors and renders the
    table (the other ranks return ``""`` once it is done).
    """
    jobs, configs, backbones = plan(suite, registry)
    # Under torchrun, join the group now: every choice below is rank 0's.
    topology = (distributed.join(resolve_device(configs[0].train.device))
                if distributed.launched() else distributed.current())
    worker = worker or this_worker()
    tasks = suite_tasks(jobs, configs, backbones, registry, out)
    started = time.perf_counter()
    if topology.is_main:
        open_index(out)  # a missing or damaged index is rebuilt before any claim
    with Heartbeat(out, worker, enabled=topology.is_main) as heartbeat:
        shift = Shift(suite.name, registry, RunIndex(out), progress, worker, heartbeat,
                      started, topology)
        left = shift.work(tasks, wait)
    table = ""
    if topology.is_main:
        trained = sum(1 for task in shift.mine if not task.floors)
        elapsed = time.perf_counter() - started
        if left:
            _say(f"suite {suite.name}: this worker trained {trained} of {len(jobs)} runs in "
                 f"{elapsed:.0f} s and leaves; other workers hold {len(left)} more")
        else:
            _say(f"suite {suite.name} done in {elapsed:.0f} s (this worker trained "
                 f"{trained} of {len(jobs)} runs)")
            table = render_table(leaderboard_frame(out, suite.name,
                                                   readouts=method_readouts(registry)), suite)
    topology.wait_for_main()  # the index is complete when any rank returns
    return table


def plan(suite: Suite, registry: Registry, cuda: bool | None = None) -> tuple[
        list[tuple[str, tuple[str, ...], int]], list[RunConfig], dict[str, str]]:
    """The suite's runs, ``(method, variant, seed)`` in order, their configs (every one
    checked, so a bad suite is refused before any work starts) and each method's
    backbone, for the budget of ``cuda`` (default: whether this machine has a GPU)."""
    budget = suite.budget(torch.cuda.is_available() if cuda is None else cuda)
    methods = suite.select(registry.methods.names())
    if not methods:
        raise SslregError(f"suite {suite.name} matches no registered method "
                          f"(patterns {', '.join(suite.methods)}); see `sslreg methods`")
    backbones = {m: backbone_for(registry, m, budget) for m in methods}
    jobs = [(m, v, s) for m in methods for v in variants(suite, m) for s in suite.seeds]
    configs = [RunConfig.build(registry, m, suite_sets(suite, budget, m, s, v),
                               dataset=suite.dataset, backbone=backbones[m])
               for m, v, s in jobs]
    return jobs, configs, backbones


# Statuses of a run that failed; recorded with its reason, e.g. "crashed: RuntimeError: ...".
FAILED = ("failed", "crashed")


@attrs.frozen
class Task:
    """One piece of a suite: a run to train, or the floors of one (backbone, readout,
    seed) to score; ``dirs`` are the directories claimed together."""

    label: str
    dirs: tuple[RunDir, ...]
    config: RunConfig
    variant: str = ""
    floors: bool = False

    @property
    def names(self) -> list[str]:
        return [d.path.name for d in self.dirs]


def suite_tasks(jobs: list[tuple[str, tuple[str, ...], int]], configs: list[RunConfig],
                backbones: dict[str, str], registry: Registry, out: Path) -> list[Task]:
    """The suite's runs in order, then its floors."""
    tasks = [Task(f"[{n}/{len(jobs)}] {m} {', '.join(v) + ' ' if v else ''}seed {s} on "
                  f"{backbones[m]}", (RunDir.for_config(out, c),), c, ", ".join(v))
             for n, ((m, v, s), c) in enumerate(zip(jobs, configs, strict=True), 1)]
    return tasks + [floor_task(c, registry, out) for c in floor_configs(configs, registry)]


def floor_task(config: RunConfig, registry: Registry, out: Path) -> Task:
    """Raw pixels and random init for ``config``'s backbone, readout and seed, claimed
    together (the raw-pixels floor is shared: its claim makes a second worker wait for
    it rather than score it again)."""
    parts = assemble(config, registry)  # the floors' directories name its readout
    dirs = tuple(floor_dir(out, parts, kind)[0] for kind in (RAW_PIXELS, RANDOM_INIT))
    return Task(f"floors: raw pixels and random init ({config.backbone}, {config.method}'s "
                f"readout), seed {config.train.seed}", dirs, config, floors=True)


@attrs.define
class Shift:
    """One worker's pass through a suite's tasks: claim, do, release, and wait."""

    suite: str
    registry: Registry
    index: RunIndex
    progress: bool
    worker: Worker
    heartbeat: Heartbeat
    started: float
    topology: distributed.Topology
    mine: list[Task] = attrs.field(factory=list)

    @property
    def out(self) -> Path:
        return self.index.out

    def work(self, tasks: list[Task], wait: bool) -> list[Task]:
        """Do every task this worker can claim, in order, then look again at the ones
        other workers held, polling (with ``wait``) until none is left; without ``wait``
        it leaves after a pass that found nothing to claim. Returns the tasks left.

        A pass always follows this worker's last release, so of two workers finishing
        the last two runs at once, the later to release sees both finished: a suite
        never ends with every worker gone and nobody having seen it complete."""
        pending, first, waiting = list(tasks), True, False
        while pending:
            claimed = False
            for task in list(pending):
                state, other = self.topology.main_value(
                    self.claim(task) if self.topology.is_main else None)
                if first or state == "mine":
                    _say(self.line(task, state, other))
                if state == "mine":
                    claimed = True
                    self.mine.append(task)
                    self.do(task)
                if state != "busy":
                    pending.remove(task)
            first = False
            if claimed or not pending:
                continue
            if not wait:
                break
            if not waiting:
                _say(f"waiting for {len(pending)} more held by other workers (polling every "
                     f"{self.worker.poll_s:g} s)")
                waiting = True
            time.sleep(self.worker.poll_s)
        return pending

    def claim(self, task: Task) -> tuple[str, str | None]:
        """``("done", None)``, ``("busy", holder)`` or ``("mine", previous holder)``:
        finished tasks are left alone, and a claimed one is checked again, since
        another worker may have finished it just before."""
        if self.finished(task):
            return "done", None
        claimed, other = self.index.claim(task.names, self.worker.id, self.worker.lease_s)
        if not claimed:
            return "busy", other
        if self.finished(task):
            self.index.release(task.names, self.worker.id)
            return "done", None
        self.heartbeat.hold(task.names)
        for directory in task.dirs:
            log_claim(directory.path, self.worker, "claimed", took_over=other,
                      **_progress_of(directory))
        return "mine", other

    def finished(self, task: Task) -> bool:
        """Scored and recorded as part of this suite (the files, since a deleted run
        directory is not finished, and the index, which the table is made from), or
        failed since this worker began (an older failure is tried again)."""
        states = [self.index.state(name) for name in task.names]
        if all(d.result.exists() and s is not None and s["status"] in ("evaluated", "floor")
               and self.suite in s["suites"] and self.fresh(task, d)
               for d, s in zip(task.dirs, states, strict=True)):
            return True
        state = states[0]
        return (not task.floors and state is not None and state["status"].startswith(FAILED)
                and state["recorded_at"] >= self.worker.since)

    @staticmethod
    def fresh(task: Task, run: RunDir) -> bool:
        """Whether ``run``'s result holds the metrics the suite asks for (a suite that
        adds label-efficient probes evaluates its finished runs again)."""
        try:
            result = run.read_json(run.result)
        except SslregError:
            return False
        raw_pixels = task.floors and run is task.dirs[0]  # floor_task puts raw pixels first
        return up_to_date(result, task.config, finetuned=not raw_pixels)

    def do(self, task: Task) -> None:
        """Train (or score) the claimed task, then release it however that ended."""
        outcome = "stopped"
        try:
            if not task.floors:
                outcome = _run_one(task.config, self.registry, self.out, self.progress,
                                   (self.suite, task.variant), self.topology)
            elif self.topology.is_main:  # evaluation only: rank 0 alone
                floors(task.config, self.registry, self.out, suite=self.suite)
                outcome = "scored"
        except BaseException as error:
            outcome = f"stopped: {type(error).__name__}"
            raise
        finally:
            if self.topology.is_main:
                self.heartbeat.drop(task.names)
                self.index.release(task.names, self.worker.id)
                for directory in task.dirs:
                    log_claim(directory.path, self.worker, "released", outcome=outcome)

    def line(self, task: Task, state: str, other: str | None) -> str:
        if state == "done":
            return f"{task.label}: finished"
        if state == "busy":
            return f"{task.label}: held by worker {other}"
        took = f", taking over from {other} (its lease expired)" if other else ""
        return f"{task.label} ({time.perf_counter() - self.started:.0f} s elapsed{took})"


def _progress_of(run: RunDir) -> dict[str, Any]:
    """Where a claimed run stands (its train.json), for the claims log."""
    if not run.train_info.exists():
        return {}
    try:
        info = run.read_json(run.train_info)
    except SslregError:
        return {}
    return {key: info.get(key) for key in ("status", "epochs_done", "steps")}


def floor_configs(configs: list[RunConfig], registry: Registry) -> list[RunConfig]:
    """One config per (backbone, readout, seed): the first run's that reads features
    that way (so its floors are scored exactly as those runs are). A config whose method
    cannot even be built is left out: its run fails and is recorded on its own."""
    chosen: dict[tuple[str, str, int], RunConfig] = {}
    for config in configs:
        try:
            readout = readout_of(config, registry)
        except Exception:  # a broken plugin must not stop the suite's other floors
            continue
        chosen.setdefault((config.backbone, readout, config.train.seed), config)
    return list(chosen.values())


def backbone_for(registry: Registry, method: str, budget: Budget) -> str:
    """The budget's backbone, or its ViT one for methods that only take a ViT."""
    fitting = registry.backbones_for(
        method, [name for name in (budget.backbone, budget.vit_backbone) if name])
    if fitting:
        return fitting[0]
    families = registry.methods.get(method).backbone_families
    raise SslregError(f"the suite's budget has no backbone for method '{method}' (it needs "
                      f"a {' or '.join(families or ())} backbone); set vit_backbone in "
                      "[budget.cpu] and [budget.gpu]")


def _run_one(config: RunConfig, registry: Registry, out: Path, progress: bool,
             suite: tuple[str, str], topology: distributed.Topology) -> str:
    """Pretrain and evaluate one run (unless finished before) and record it in the
    index; ``suite`` is the suite's name and the run's variant in it. A finished run
    whose result lacks metrics the config asks for (label-efficient probes,
    fine-tuning) is evaluated again, not retrained. Returns how it ended:
    ``evaluated``, ``finished before`` or the failure recorded."""
    run = RunDir.for_config(out, config)
    main = topology.is_main
    try:
        # Finished runs are skipped on a re-run. Rank 0 decides, so every rank trains the
        # same runs; the others wait here while it evaluates the previous run.
        finished = topology.main_value(run.result.exists())
        if not finished:
            pretrain(config, registry, out, resume=True, progress=progress)
        elif main and not up_to_date(run.read_json(run.result), config):
            _say(f"  evaluating {run.path.name} again for the metrics it lacks")
            evaluate_run(run, registry, config=config)
        if not main:
            return "trained"  # rank 0 evaluated the run and records it
        run.read_json(run.result)
    except SslregError as error:
        _say(f"  {config.method} failed: {error}")
        return _record_failure(run, config, suite, f"failed: {error}") if main else "failed"
    except Exception as error:  # one broken method must not stop the suite
        _say(f"  {config.method} crashed: {type(error).__name__}: {error}")
        _say(traceback.format_exc(limit=3))
        status = f"crashed: {type(error).__name__}: {error}"
        return _record_failure(run, config, suite, status) if main else "crashed"
    add_suite(run, *suite)
    open_index(out).record(run)
    link_tensorboard(out, suite[0], run)
    return "finished before" if finished else "evaluated"


def _record_failure(run: RunDir, config: RunConfig, suite: tuple[str, str],
                    status: str) -> str:
    """Keep a failed run in the index with its reason (its config is written if the run
    failed before its directory was made)."""
    if not run.config.exists():
        write_json(run.config, config.to_dict())
    add_suite(run, *suite)
    open_index(run.path.parent).record(run, status=status)
    return status


def link_tensorboard(out: Path, suite: str, run: RunDir) -> None:
    """Give ``out/tensorboard/SUITE/RUN`` the run's TensorBoard files, so one logdir per
    suite compares its runs (scalars, HParams, projector). Hard links cost no space;
    where the file system refuses them the files are copied."""
    target = out / "tensorboard" / suite / run.path.name
    for source in run.tensorboard.rglob("*"):
        if source.is_dir():
            continue
        destination = target / source.relative_to(run.tensorboard)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.unlink(missing_ok=True)
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)


def render_table(frame: pd.DataFrame, suite: Suite) -> str:
    """The suite's leaderboard from the run index (what ``sslreg leaderboard`` renders),
    as Markdown under a heading."""
    header = (f"## {suite.name}: {suite.dataset}, seeds "
              f"{', '.join(map(str, suite.seeds))}\n\n")
    trials = suite.budget(torch.cuda.is_available()).tuned_settings.trials
    table = summary(frame, suite.reference, trials)
    return header + table.to_markdown(index=False, disable_numparse=True)


def _say(message: str) -> None:
    if distributed.current().is_main:  # one voice under torchrun
        click.echo(message, err=True)


def provenance(command: str, seconds: float) -> str:
    """One line saying how and where a table was made, for files that keep it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = distributed.current().describe(device_name(device))  # "2 x ..." under torchrun
    return (f"Made by `{command}` in {seconds:.0f} s on {where} "
            f"({os.cpu_count()} CPU cores), torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}.")
