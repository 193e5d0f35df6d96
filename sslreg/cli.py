"""The ``sslreg`` command line. Bad input exits non-zero with one line on stderr."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import click

from sslreg.errors import RunInterrupted, SslregError
from sslreg.runs import write_text


class Cli(click.Group):
    """A group that turns :class:`SslregError` into one clear line and exit status 1,
    and a run stopped by a signal into one line and 128 + the signal (143: requeue)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SslregError as error:
            raise click.ClickException(str(error)) from None
        except RunInterrupted as error:
            from sslreg import distributed

            if not distributed.current().is_main:  # under torchrun, rank 0 alone says it
                raise click.exceptions.Exit(error.exit_code) from None
            stopped = click.ClickException(str(error))
            stopped.exit_code = error.exit_code
            raise stopped from None


@click.group(cls=Cli)
@click.version_option(package_name="sslreg")
def cli() -> None:
    """sslreg: a plugin-based experiment registry for self-supervised learning."""


def _registry() -> Any:
    from sslreg.plugins import load_registry

    return load_registry()


@cli.command()
@click.option("--hook", default=None, help="Only the plugins implementing this hook.")
def plugins(hook: str | None) -> None:
    """List plugins, what each registers, and plugins that failed to load."""
    registry = _registry()
    if hook is not None:
        from sslreg.plugins import hook_implementers

        for name in hook_implementers(hook):
            click.echo(name)
        return
    for info in registry.plugins:
        things = ", ".join(_registered(registry, kind, name)
                           for kind, name in info.registered) or "-"
        click.echo(f"{info.name} {info.version or '?'}: {things}")
    for failure in registry.failures:
        click.echo(f"FAILED {failure.name}: {failure.error}")


def _registered(registry: Any, kind: str, name: str) -> str:
    """``view:crop-flip (alias mae)``: the kind, the name, and the names it answers to."""
    aliases = "".join(f" (alias {a})" for a in registry.catalog(kind).aliases_of(name))
    return f"{kind[:-1]}:{name}{aliases}"


@cli.command()
@click.option("--options", "name", default=None, metavar="NAME",
              help="List method NAME's options (`--set method.OPTION=VALUE`): default "
              "and meaning of each.")
def methods(name: str | None) -> None:
    """List the registered methods: name, paper, default views and objective."""
    registry = _registry()
    if name is not None:
        for line in _option_lines(registry.methods.get(name)):
            click.echo(line)
        return
    for spec in registry.methods:
        click.echo(f"{spec.name:<12} {spec.paper}  [views: {spec.views}, "
                   f"objective: {spec.objective}]")
    if not len(registry.methods):
        click.echo("no methods registered; install a method plugin (see README)")


def _option_lines(spec: Any) -> list[str]:
    """One line per field of the method's config: --set key, default, help."""
    from sslreg.fields import describe

    rows = [(f"method.{n}", repr(default), meaning) for n, default, meaning in
            describe(spec.config_class)]
    width = max((len(key) for key, _, _ in rows), default=0)
    values = max((len(value) for _, value, _ in rows), default=0)
    lines = [f"{spec.name}: objective {spec.objective}, views {spec.views}; "
             f"--set KEY=VALUE overrides"]
    lines += [f"  {key:<{width}}  {value:<{values}}  {meaning}".rstrip()
              for key, value, meaning in rows]
    optim = ", ".join(f"{a.name}={getattr(spec.optim, a.name)!r}"
                      for a in attrs.fields(type(spec.optim)))
    return [*lines, f"  optim.*: {optim}"]


@cli.command(name="new-plugin")
@click.argument("name")
@click.option("--dir", "parent", default=".", show_default=True,
              type=click.Path(file_okay=False), help="Where to create sslreg-NAME/.")
def new_plugin(name: str, parent: str) -> None:
    """Write a complete, installable method plugin NAME (a working example method,
    pyproject with the sslreg entry point, README, tests) into DIR/sslreg-NAME."""
    from sslreg.scaffold import new_plugin as scaffold

    written = scaffold(name, Path(parent))
    folder = written[0].parent
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: pip install --no-deps -e {folder} && sslreg methods && "
               f"(cd {folder} && pytest)")


@cli.command()
@click.option("--method", required=True, help="A registered method (see `sslreg methods`).")
@click.option("--dataset", default="fashion-mnist", show_default=True)
@click.option("--backbone", default="resnet18", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=2), default=None)
@click.option("--seed", type=click.IntRange(min=0), default=None)
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--data-root", default=None, help="Folder holding the dataset files.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. method.temperature=0.2 (repeatable).")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint, at "
              "the step it was written (a run without one starts).")
@click.option("--no-eval", is_flag=True, help="Skip the final linear probe and kNN.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def pretrain(method: str, dataset: str, backbone: str, epochs: int | None,
             batch_size: int | None, seed: int | None, device: str | None,
             data_root: str | None, overrides: tuple[str, ...], out: str, resume: bool,
             no_eval: bool, quiet: bool) -> None:
    """Pretrain METHOD, checkpoint every epoch and every train.checkpoint_every (10m by
    default), then evaluate the final checkpoint.

    SIGTERM (a scheduler's pre-emption) or Ctrl-C finishes the current step, writes a
    checkpoint, records the run as interrupted and exits with status 143 after SIGTERM
    (130 after SIGINT): requeue the job with the same command and --resume. A second
    Ctrl-C stops at once, keeping the last checkpoint."""
    from sslreg.config import RunConfig
    from sslreg.engine import pretrain as run_pretrain

    registry = _registry()
    flags = {"train.epochs": epochs, "train.batch_size": batch_size, "train.seed": seed,
             "train.device": device}
    sets = [f"{key}={value}" for key, value in flags.items() if value is not None]
    config = RunConfig.build(registry, method, [*sets, *overrides], dataset=dataset,
                             backbone=backbone, data_root=data_root or "")
    run = run_pretrain(config, registry, Path(out), resume=resume, evaluate=not no_eval,
                       progress=not quiet)
    from sslreg import distributed

    if not distributed.current().is_main:
        return  # under torchrun, rank 0 alone reports the run
    click.echo(f"run directory: {run.path}")
    if run.result.exists():
        _print_result(run.read_json(run.result))


@cli.command(name="eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="A metric-only evaluation key, e.g. eval.shots=1,5,10, "
              "eval.label_fractions=0.01,0.1 or eval.finetune_epochs=5 (repeatable).")
def eval_command(run_dir: str, overrides: tuple[str, ...]) -> None:
    """Evaluate RUN_DIR's final checkpoint (linear probe and kNN, plus the label-efficient
    probes and fine-tuning its eval keys ask for), or score a floor's directory again;
    rewrite result.json (and config.json with --set) and the folder's run index."""
    from sslreg.config import apply_metric_overrides
    from sslreg.engine import evaluate_run
    from sslreg.engine.evaluate import evaluate_floor
    from sslreg.runs import RunDir, open_index
    from sslreg.runs.index import FLOOR_FILE

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise SslregError(f"{run_dir} is not a directory; pass a run directory made by "
                          "`sslreg pretrain`")
    registry = _registry()
    config = apply_metric_overrides(run.load_config(registry), overrides)
    if (run.path / FLOOR_FILE).exists():
        result = evaluate_floor(run, registry, config)
    else:
        result = evaluate_run(run, registry, config=config)
    open_index(run.path.parent).record(run)
    _print_result(result)
    click.echo(f"wrote {run.result}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Where to write (default: RUN_DIR/export).")
@click.option("--format", "formats", multiple=True, metavar="NAME",
              help="sslreg, torchvision or timm (repeatable; default: every format the "
              "backbone has).")
def export(run_dir: str, out: str | None, formats: tuple[str, ...]) -> None:
    """Write RUN_DIR's evaluated backbone alone (safetensors, and torchvision's or timm's
    key names where that library has the architecture) with a model card."""
    from sslreg.engine.export import export_run

    for path in export_run(run_dir, _registry(), out, formats):
        click.echo(f"wrote {path}")


# Options that only a job scheduler reads (--executor).
EXECUTOR_OPTIONS = ("jobs", "partition", "time_min", "gpus_per_job", "processes_per_job",
                    "mem_gb", "slurm_folder")


@cli.command()
@click.argument("suite", default="quick")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--table", "table_file", type=click.Path(dir_okay=False),
              help="Also write the table, with the command and machine, to this file.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Start N workers on this machine that split the suite's runs (one GPU "
              "each, round-robin, where there are GPUs).")
@click.option("--executor", type=click.Choice(["slurm", "local"]), default=None,
              help="Submit the suite's workers as a job array through submitit: slurm, or "
              "local (the same path on this machine).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="--executor: how many jobs in the array (default: one per run).")
@click.option("--partition", default=None, help="--executor slurm: the partition.")
@click.option("--time", "time_min", type=click.IntRange(min=1), default=None,
              help="--executor: minutes per job (default 240; requeued at the limit).")
@click.option("--gpus-per-job", type=click.IntRange(min=0), default=None,
              help="--executor: GPUs per job (default: 1 on SLURM, 0 locally); a run "
              "claimed by a job trains on all of them.")
@click.option("--processes-per-job", type=click.IntRange(min=1), default=None,
              help="--executor: processes per job, one torch distributed group (default: "
              "one per GPU, at least 1).")
@click.option("--mem-gb", type=click.IntRange(min=1), default=None,
              help="--executor: memory per job in GB (default: the cluster's).")
@click.option("--slurm-folder", type=click.Path(file_okay=False), default=None,
              help="--executor: where submitit keeps job files and logs (default: OUT/slurm).")
@click.option("--no-table", is_flag=True, hidden=True)  # a worker of --workers: the parent prints
def bench(suite: str, out: str, quiet: bool, table_file: str | None, workers: int | None,
          executor: str | None, no_table: bool, **scheduling: Any) -> None:
    """Pretrain and evaluate every method of SUITE (a name or a TOML file); print a table.

    Any number of `sslreg bench SUITE --out DIR` processes, here or on machines sharing
    DIR, split the suite's runs: each run is claimed before it is trained, and each
    worker prints the table once every run is done. Runs under torchrun too: every
    process trains each run, rank 0 claims, evaluates, writes and prints."""
    from sslreg import distributed
    from sslreg.suites import load_suite
    from sslreg.suites.runner import provenance

    _check_bench_options(workers, executor, scheduling)
    started = time.perf_counter()
    loaded = load_suite(suite)
    table, failed = _bench(suite, loaded, out, quiet, workers, executor, scheduling)
    if not distributed.current().is_main or no_table:
        return  # under torchrun, rank 0 alone prints and writes the table
    if table:
        click.echo(table)
    if table and table_file:
        how = f" --workers {workers}" if workers else ""
        how += f" --executor {executor}" if executor else ""
        command = f"sslreg bench {suite} --out {out}{how} --table {table_file}"
        note = provenance(command, time.perf_counter() - started)
        write_text(Path(table_file), f"{table}\n\n{note}\n")
        click.echo(f"wrote {table_file}")
    if failed:
        raise SslregError(f"{len(failed)} of {workers} workers failed ({', '.join(failed)}); "
                          "their lines are above, prefixed [wK]")


def _bench(suite: str, loaded: Any, out: str, quiet: bool, workers: int | None,
           executor: str | None, scheduling: dict[str, Any]) -> tuple[str, list[str]]:
    """Run the suite as this one worker, as ``workers`` local ones or as executor jobs;
    returns the table and the local workers that failed."""
    from sslreg.suites import run_suite
    from sslreg.suites.runner import leaderboard_frame, method_readouts, plan, render_table

    registry = _registry()
    if not (workers or executor):
        return run_suite(loaded, registry, Path(out), progress=not quiet), []
    runs = len(plan(loaded, registry)[0])  # a bad suite is refused before any worker
    if executor:
        from sslreg.suites.executor import ExecutorOptions, submit_suite

        options = ExecutorOptions(cluster=executor, folder=scheduling.pop("slurm_folder"),
                                  time_min=scheduling.pop("time_min") or 240, **scheduling)
        return submit_suite(suite, loaded.name, out, runs, options), []
    from sslreg.suites.workers import run_local_workers

    statuses = run_local_workers(suite, out, workers)
    failed = [f"w{k} exited with status {code}" for k, code in enumerate(statuses) if code]
    try:
        frame = leaderboard_frame(out, loaded.name, readouts=method_readouts(registry))
    except SslregError:
        if not failed:
            raise
        return "", failed  # every worker failed before recording a run: say that instead
    return render_table(frame, loaded), failed


def _check_bench_options(workers: int | None, executor: str | None,
                         scheduling: dict[str, Any]) -> None:
    """Refuse combinations that cannot mean anything, in one line each."""
    from sslreg import distributed

    given = [f"--{k.replace('_min', '').replace('_', '-')}" for k in EXECUTOR_OPTIONS
             if scheduling.get(k) is not None]
    if given and not executor:
        raise SslregError(f"{', '.join(given)} only applies with --executor slurm (or local)")
    if workers and executor:
        raise SslregError("--workers starts workers on this machine and --executor submits "
                          "them as jobs; choose one (--jobs sets how many jobs)")
    if (workers or executor) and distributed.launched():
        raise SslregError("under torchrun, sslreg bench is one worker; start several "
                          "torchrun commands (or --executor with --gpus-per-job) instead")
    if executor == "local" and scheduling.get("partition"):
        raise SslregError("--partition is a SLURM option; --executor local has none")


@cli.command()
@click.argument("suite", default="quick")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs folder the suite ran in.")
@click.option("--format", "fmt", default="md", show_default=True,
              help="md, csv, latex or html (a page with the figures inside).")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False),
              help="Also write the PNG figures to this folder (linked from Markdown).")
@click.option("--output", "output", type=click.Path(dir_okay=False),
              help="Write the leaderboard to this file instead of printing it.")
@click.option("--split", default="test", show_default=True,
              help="test (tables) or val (the validation split that choices read).")
def leaderboard(suite: str, out: str, fmt: str, plot_dir: str | None,
                output: str | None, split: str) -> None:
    """Render SUITE's leaderboard from the run index: mean ± std over seeds per method,
    cost columns, the ceiling and the floors, and published numbers where the suite
    quotes them."""
    from sslreg.suites.leaderboard import FORMATS, document, leaderboard_frame, method_readouts

    if fmt not in FORMATS:
        raise SslregError(f"unknown format '{fmt}'; choose from: {', '.join(FORMATS)}")
    if not Path(out).is_dir():
        raise SslregError(f"runs folder {out} does not exist; pass --out to the folder "
                          "`sslreg bench` wrote to")
    from sslreg.api import suite_reference

    name, reference, trials = suite_reference(suite)
    frame = leaderboard_frame(out, name, split, readouts=method_readouts(_registry()))
    folder = Path(output).parent if output else None
    with tempfile.TemporaryDirectory(prefix="sslreg-figures-") as scratch:
        # The HTML page embeds the figures, so it draws them even without --plot.
        figures = _figures(frame, plot_dir or (scratch if fmt == "html" else None))
        command = " ".join(["sslreg", *sys.argv[1:]])
        title = f"{name}: leaderboard" + (" (validation split)" if split == "val" else "")
        # Published numbers are test accuracies: they sit beside the test split only.
        text = document(frame, fmt, title, reference if split == "test" else None, figures,
                        folder, command, trials)
    if output:
        write_text(Path(output), text + "\n")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


@cli.command()
@click.argument("suite", default="quick")
@click.option("--out", default="runs/tuning", show_default=True,
              type=click.Path(file_okay=False), help="Where the trial runs go.")
@click.option("--write", "write_file", type=click.Path(dir_okay=False),
              help="Write the chosen settings (a tuned-settings TOML a suite's budget names "
              "with tuned = ...) to this file.")
@click.option("--table", "table_file", type=click.Path(dir_okay=False),
              help="Also write the trials table (Markdown) to this file.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def tune(suite: str, out: str, write_file: str | None, table_file: str | None,
         quiet: bool) -> None:
    """Give every method of SUITE the same learning-rate trials (1, 4 and 16 times its
    default, seed 0, the suite's budget), choose on the validation split, print the
    trials and the chosen settings."""
    from sslreg.suites import load_suite
    from sslreg.suites.tune import trials_table, tuned_toml
    from sslreg.suites.tune import tune as run_tuning

    loaded = load_suite(suite)
    frame = run_tuning(loaded, _registry(), Path(out), progress=not quiet)
    command = " ".join(["sslreg", *sys.argv[1:]])
    table = trials_table(frame)
    click.echo(table)
    settings = tuned_toml(frame, loaded, command)
    click.echo(settings)
    if write_file:
        write_text(Path(write_file), settings)
        click.echo(f"wrote {write_file}", err=True)
    if table_file:
        write_text(Path(table_file), f"## {loaded.name}: tuning trials\n\n{table}\n\n"
                   f"Made by `{command}`.\n")
        click.echo(f"wrote {table_file}", err=True)


def _figures(frame: Any, folder: str | None) -> list[Path]:
    if folder is None:
        return []
    from sslreg.suites.plots import write_figures

    return write_figures(frame, folder)


@cli.command()
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs folder.")
@click.option("--method", help="Only runs of this method.")
@click.option("--suite", help="Only runs that this suite ran.")
@click.option("--status", help="Only runs with this status (evaluated, trained, running, "
              "interrupted, diverged, failed...).")
@click.option("--rebuild", is_flag=True, help="Rebuild the index from the run directories.")
def runs(out: str, method: str | None, suite: str | None, status: str | None,
         rebuild: bool) -> None:
    """List the recorded runs of a runs folder, with provenance and final metrics."""
    from sslreg.runs import open_index

    if not Path(out).is_dir():
        raise SslregError(f"runs folder {out} does not exist; pass --out to the folder "
                          "`sslreg pretrain` or `sslreg bench` wrote to")
    index = open_index(out)
    if rebuild:
        click.echo(f"rebuilt the index from {index.rebuild()} run directories", err=True)
    rows = [r for r in index.rows()
            if (method is None or r["method"] == method)
            and (suite is None or suite in r["suites"])
            and (status is None or r["status"].split(":")[0] == status)]
    if not rows:
        click.echo("no runs match")
        return
    click.echo(runs_table(rows))


def runs_table(rows: list[dict]) -> str:
    import pandas as pd

    frame = pd.DataFrame([{
        "run": r["run"], "status": r["status"][:40], "seed": r["seed"],
        "linear": r["metrics"].get("linear_acc"), "kNN20": r["metrics"].get("knn20_acc"),
        "train s": r["wall_time_s"], "img/s": r["images_per_s"], "device": r["device"],
        "commit": (r["git_commit"] or "-")[:12],
    } for r in rows])
    return frame.to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _print_result(result: dict[str, Any]) -> None:
    """Test metrics (for tables), then validation metrics (for choosing), one a line."""
    if "eval_dataset" in result:
        click.echo(f"pretrained on {result['pretrain_dataset']}, "
                   f"evaluated on {result['eval_dataset']}")
    for split, metrics in (("test", result["metrics"]), ("val", result.get("val_metrics", {}))):
        for key, value in metrics.items():
            shown = f"{value:.4f}" if isinstance(value, float) else value
            click.echo(f"{split} {key}: {shown}")


def main() -> None:
    from sslreg.plugins import add_commands

    for failure in add_commands(cli):
        print(f"warning: plugin {failure.name}: {failure.error}", file=sys.stderr)
    cli()
