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

from sslreg.bench.leaderboard import COSTS, summary
from sslreg.bench.suite import Budget, Suite, suite_sets, variants
from sslreg.config import RunConfig
from sslreg.engine import floors, pretrain
from sslreg.engine.device import device_name
from sslreg.errors import SslregError
from sslreg.runs import RunDir, add_suite, open_index, write_json


def run_suite(suite: Suite, registry: Any, out: Path, *, progress: bool = True) -> str:
    """Pretrain and evaluate each (method, seed); return the comparison table as Markdown."""
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
    rows = []
    started = time.perf_counter()
    for number, (job, config) in enumerate(zip(jobs, configs, strict=True), 1):
        method, variant, seed = job
        label = ", ".join(variant)
        _say(f"[{number}/{len(jobs)}] {method} {label + ' ' if label else ''}seed {seed} "
             f"on {backbones[method]} ({time.perf_counter() - started:.0f} s elapsed)")
        row = _run_one(config, registry, out, progress, (suite.name, label))
        rows.append({"backbone": backbones[method], "variant": label, **row})
    for backbone in dict.fromkeys(backbones.values()):
        method = next(m for m in methods if backbones[m] == backbone)
        for seed in suite.seeds:
            _say(f"floors: raw pixels and random init ({backbone}), seed {seed}")
            config = RunConfig.build(registry, method, suite_sets(suite, budget, method, seed),
                                     dataset=suite.dataset, backbone=backbone)
            for name, metrics in floors(config, registry, out).items():
                rows.append({"method": f"({name})", "backbone": backbone, "seed": seed,
                             "status": "floor", **metrics})
    _say(f"suite {suite.name} done in {time.perf_counter() - started:.0f} s")
    return render_table(pd.DataFrame(rows), suite)


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
             suite: tuple[str, str]) -> dict[str, Any]:
    """Pretrain and evaluate one run (unless finished before); ``suite`` is the suite's
    name and the run's variant in it."""
    run = RunDir.for_config(out, config)
    row: dict[str, Any] = {"method": config.method, "seed": config.train.seed}
    try:
        if not run.result.exists():  # finished runs are skipped on a re-run
            pretrain(config, registry, out, resume=True, progress=progress)
        result = run.read_json(run.result)
        info = run.read_json(run.train_info)
    except SslregError as error:
        _say(f"  {config.method} failed: {error}")
        return {**row, "status": _record_failure(run, config, suite, f"failed: {error}")}
    except Exception as error:  # one broken method must not stop the suite
        _say(f"  {config.method} crashed: {type(error).__name__}: {error}")
        _say(traceback.format_exc(limit=3))
        status = f"crashed: {type(error).__name__}: {error}"
        return {**row, "status": _record_failure(run, config, suite, status)}
    add_suite(run, *suite)
    open_index(out).record(run)
    link_tensorboard(out, suite[0], run)
    return {**row, "status": "evaluated", **result["metrics"],
            **{key: info.get(key) for key in COSTS}}


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
    """The leaderboard of this session's rows, as Markdown under a heading."""
    header = (f"## {suite.name}: {suite.dataset}, seeds "
              f"{', '.join(map(str, suite.seeds))}\n\n")
    table = summary(frame, suite.reference)
    return header + table.to_markdown(index=False, disable_numparse=True)


def _say(message: str) -> None:
    click.echo(message, err=True)


def provenance(command: str, seconds: float) -> str:
    """One line saying how and where a table was made, for files that keep it."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return (f"Made by `{command}` in {seconds:.0f} s on {device_name(device)} "
            f"({os.cpu_count()} CPU cores), torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}.")
