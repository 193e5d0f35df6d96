"""Run every method of a suite, skip finished runs, isolate failures, print a table."""

from __future__ import annotations

import datetime
import os
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import click
import pandas as pd
import torch

from sslreg import distributed
from sslreg.bench.leaderboard import leaderboard_frame, method_readouts, summary
from sslreg.bench.suite import Budget, Suite, suite_sets, variants
from sslreg.config import RunConfig
from sslreg.engine import floors, pretrain
from sslreg.engine.device import device_name, resolve_device
from sslreg.engine.evaluate import evaluate_run, readout_of, up_to_date
from sslreg.errors import SslregError
from sslreg.runs import RunDir, add_suite, open_index, write_json


def run_suite(suite: Suite, registry: Any, out: Path, *, progress: bool = True) -> str:
    """Pretrain and evaluate each (method, seed); return the comparison table as Markdown.

    Under torchrun every rank trains every run, in the same order; rank 0 alone
    evaluates, records the runs, scores the floors and renders the table (the other
    ranks return ``""`` once it is done).
    """
    budget = suite.budget(torch.cuda.is_available())
    methods = suite.select(registry.methods.names())
    if not methods:
        raise SslregError(f"suite {suite.name} matches no registered method "
                          f"(patterns {', '.join(suite.methods)}); see `sslreg methods`")
    backbones = {m: backbone_for(registry, m, budget) for m in methods}
    jobs = [(m, v, s) for m in methods for v in variants(suite, m) for s in suite.seeds]
    configs = [RunConfig.build(registry, m, suite_sets(suite, budget, m, s, v),
                               dataset=suite.dataset, backbone=backbones[m])
               for m, v, s in jobs]  # every config is checked before the first run
    if distributed.launched():  # join torchrun's group now: every choice below is rank 0's
        distributed.init(resolve_device(configs[0].train.device))
    started = time.perf_counter()
    for number, (job, config) in enumerate(zip(jobs, configs, strict=True), 1):
        method, variant, seed = job
        label = ", ".join(variant)
        _say(f"[{number}/{len(jobs)}] {method} {label + ' ' if label else ''}seed {seed} "
             f"on {backbones[method]} ({time.perf_counter() - started:.0f} s elapsed)")
        _run_one(config, registry, out, progress, (suite.name, label))
    table = ""
    if distributed.is_main():  # evaluation only, no training: rank 0 alone
        for config in floor_configs(configs, registry):
            _say(f"floors: raw pixels and random init ({config.backbone}, "
                 f"{config.method}'s readout), seed {config.train.seed}")
            floors(config, registry, out, suite=suite.name)
        _say(f"suite {suite.name} done in {time.perf_counter() - started:.0f} s")
        table = render_table(leaderboard_frame(out, suite.name,
                                               readouts=method_readouts(registry)), suite)
    distributed.wait_for_main()  # the index is complete when any rank returns
    return table


def floor_configs(configs: list[RunConfig], registry: Any) -> list[RunConfig]:
    """One config per (backbone, readout, seed): the first run's that reads features
    that way (so its floors are scored exactly as those runs are)."""
    chosen: dict[tuple[str, str, int], RunConfig] = {}
    for config in configs:
        readout = readout_of(config, registry)
        chosen.setdefault((config.backbone, readout, config.train.seed), config)
    return list(chosen.values())


def backbone_for(registry: Any, method: str, budget: Budget) -> str:
    """The budget's backbone, or its ViT one for methods that only take a ViT."""
    families = registry.methods.get(method).backbone_families
    for backbone in (budget.backbone, budget.vit_backbone):
        if backbone and (families is None or registry.backbones.get(backbone).family
                         in families):
            return backbone
    raise SslregError(f"the suite's budget has no backbone for method '{method}' (it needs "
                      f"a {' or '.join(families or ())} backbone); set vit_backbone in "
                      "[budget.cpu] and [budget.gpu]")


def _run_one(config: RunConfig, registry: Any, out: Path, progress: bool,
             suite: tuple[str, str]) -> None:
    """Pretrain and evaluate one run (unless finished before) and record it in the
    index; ``suite`` is the suite's name and the run's variant in it. A finished run
    whose result lacks metrics the config asks for (label-efficient probes,
    fine-tuning) is evaluated again, not retrained."""
    run = RunDir.for_config(out, config)
    main = distributed.is_main()
    try:
        # Finished runs are skipped on a re-run. Rank 0 decides, so every rank trains the
        # same runs; the others wait here while it evaluates the previous run.
        if not distributed.main_value(run.result.exists()):
            pretrain(config, registry, out, resume=True, progress=progress)
        elif main and not up_to_date(run.read_json(run.result), config):
            _say(f"  evaluating {run.path.name} again for the metrics it lacks")
            evaluate_run(run, registry, config=config)
        if not main:
            return  # rank 0 evaluated the run and records it
        run.read_json(run.result)
    except SslregError as error:
        _say(f"  {config.method} failed: {error}")
        if main:
            _record_failure(run, config, suite, f"failed: {error}")
        return
    except Exception as error:  # one broken method must not stop the suite
        _say(f"  {config.method} crashed: {type(error).__name__}: {error}")
        _say(traceback.format_exc(limit=3))
        if main:
            _record_failure(run, config, suite, f"crashed: {type(error).__name__}: {error}")
        return
    add_suite(run, *suite)
    open_index(out).record(run)
    link_tensorboard(out, suite[0], run)


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
    if distributed.is_main():  # one voice under torchrun
        click.echo(message, err=True)


def provenance(command: str, seconds: float) -> str:
    """One line saying how and where a table was made, for files that keep it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = distributed.describe(device_name(device))  # "2 x ..." under torchrun
    return (f"Made by `{command}` in {seconds:.0f} s on {where} "
            f"({os.cpu_count()} CPU cores), torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}.")
