"""The Python API: what the command line does, for notebooks and scripts.

Every function takes plain values, returns objects a notebook works with (a :class:`Run`,
a ``torch.nn.Module``, ``pandas.DataFrame``s) and refuses bad input with the command
line's one-line message, as an :class:`sslreg.SslregError`. Each loads the installed
plugins itself unless given a ``registry`` (:func:`sslreg.load_registry`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from sslreg.config import RunConfig, spelled
from sslreg.errors import SslregError
from sslreg.runs import RunDir

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from sslreg.registry import Registry

Overrides = Mapping[str, Any] | Sequence[str]


@attrs.frozen
class Run:
    """One run directory: its config, and its scores once evaluated."""

    path: Path = attrs.field(converter=Path)
    config: RunConfig

    @property
    def result(self) -> dict[str, Any] | None:
        """``result.json``: ``metrics`` (test), ``val_metrics`` and provenance; ``None``
        until the run is evaluated."""
        run = RunDir(self.path)
        return run.read_json(run.result) if run.result.exists() else None

    @property
    def metrics(self) -> dict[str, float]:
        """Test-split scores, for tables (empty until evaluated)."""
        return (self.result or {}).get("metrics", {})

    @property
    def val_metrics(self) -> dict[str, float]:
        """Validation-split scores, the ones to choose on (empty until evaluated)."""
        return (self.result or {}).get("val_metrics", {})

    @property
    def train_info(self) -> dict[str, Any]:
        """``train.json``: status, epochs done, wall time, images/s, device."""
        run = RunDir(self.path)
        return run.read_json(run.train_info) if run.train_info.exists() else {}


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from sslreg.plugins import load_registry

    return load_registry()


def _set_strings(overrides: Overrides) -> list[str]:
    """``{"method.temperature": 0.2}`` or ``["method.temperature=0.2"]`` as ``--set``
    strings (tuples and lists joined with commas)."""
    if isinstance(overrides, str):
        raise SslregError(f"overrides must be a mapping or a list of 'section.key=value' "
                          f"strings, got the string {overrides!r}")
    if isinstance(overrides, Mapping):
        return [f"{key}={spelled(value)}" for key, value in overrides.items()]
    return list(overrides)


def configure(method: str, *, dataset: str = "fashion-mnist", backbone: str = "resnet18",
              data_root: str = "", epochs: int | None = None, batch_size: int | None = None,
              seed: int | None = None, device: str | None = None,
              overrides: Overrides = (), registry: Registry | None = None) -> RunConfig:
    """The checked config ``sslreg pretrain`` would build from the same options."""
    flags = {"train.epochs": epochs, "train.batch_size": batch_size, "train.seed": seed,
             "train.device": device}
    sets = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return RunConfig.build(_registry(registry), method, [*sets, *_set_strings(overrides)],
                           dataset=dataset, backbone=backbone, data_root=data_root)


def pretrain(method: str, *, dataset: str = "fashion-mnist", backbone: str = "resnet18",
             data_root: str = "", epochs: int | None = None, batch_size: int | None = None,
             seed: int | None = None, device: str | None = None,
             overrides: Overrides = (), out: Path | str = "runs", resume: bool = False,
             evaluate: bool = True, progress: bool = False,
             registry: Registry | None = None) -> Run:
    """Pretrain ``method`` (then evaluate it, unless ``evaluate=False``), as
    ``sslreg pretrain``; returns the :class:`Run`."""
    from sslreg.engine import pretrain as run_pretrain

    registry = _registry(registry)
    config = configure(method, dataset=dataset, backbone=backbone, data_root=data_root,
                       epochs=epochs, batch_size=batch_size, seed=seed, device=device,
                       overrides=overrides, registry=registry)
    run = run_pretrain(config, registry, Path(out), resume=resume, evaluate=evaluate,
                       progress=progress)
    return Run(run.path, config)


def load_run(path: Run | Path | str, registry: Registry | None = None) -> Run:
    """The run in directory ``path``."""
    if isinstance(path, Run):
        return path
    run = RunDir(path)
    if not run.path.is_dir():
        raise SslregError(f"{path} is not a directory; pass a run directory made by "
                          "`sslreg pretrain`")
    return Run(run.path, run.load_config(_registry(registry)))


def evaluate(run: Run | Path | str, registry: Registry | None = None) -> dict[str, Any]:
    """Score a run's final checkpoint (linear probe and kNN) as ``sslreg eval``; writes
    and returns ``result.json``."""
    from sslreg.engine import evaluate_run

    registry = _registry(registry)  # plugins loaded once for both steps
    return evaluate_run(RunDir(load_run(run, registry).path), registry)


def load_backbone(run: Run | Path | str, *, device: str = "cpu",
                  registry: Registry | None = None) -> nn.Module:
    """The backbone a finished run was evaluated with, final weights, in eval mode; it
    maps normalised images (see the run's model card, ``sslreg export``) to features."""
    from sslreg.engine.export import load_backbone as load

    return load(_path(run), _registry(registry), device=device)


def export(run: Run | Path | str, out: Path | str | None = None,
           formats: Sequence[str] = (), registry: Registry | None = None) -> list[Path]:
    """Write an evaluated run's backbone and model card, as ``sslreg export``; returns
    the files written (default folder: the run's ``export/``)."""
    from sslreg.engine.export import export_run

    return export_run(_path(run), _registry(registry), out, tuple(formats))


def _path(run: Run | Path | str) -> Path:
    return run.path if isinstance(run, Run) else Path(run)


def read_index(out: Path | str = "runs") -> pd.DataFrame:
    """The run index of a runs folder, one row per run (floors too): provenance, cost,
    and every score, test under its own name and validation as ``val_<name>``."""
    import pandas as pd

    from sslreg.runs import open_index

    _runs_folder(out)
    rows = []
    for row in open_index(out).rows():
        scores = {**row.pop("metrics"), **{f"val_{k}": v
                                           for k, v in row.pop("val_metrics").items()}}
        row.pop("config")
        rows.append({**row, **scores})
    return pd.DataFrame(rows)


def _runs_folder(out: Path | str) -> None:
    if not Path(out).is_dir():
        raise SslregError(f"runs folder {out} does not exist; pass the folder "
                          "`sslreg pretrain` or `sslreg bench` wrote to")


def run_suite(suite: str = "quick", out: Path | str = "runs", *, progress: bool = False,
              registry: Registry | None = None) -> pd.DataFrame:
    """Run every method of ``suite`` (a built-in name or a TOML file), as
    ``sslreg bench``; returns its leaderboard."""
    from sslreg.suites import load_suite
    from sslreg.suites import run_suite as run

    registry = _registry(registry)
    run(load_suite(suite), registry, Path(out), progress=progress)
    return leaderboard(suite, out, registry=registry)


def leaderboard(suite: str = "quick", out: Path | str = "runs", *, split: str = "test",
                registry: Registry | None = None) -> pd.DataFrame:
    """``suite``'s leaderboard as a DataFrame: the table ``sslreg leaderboard`` renders
    (mean ± std over seeds as text, the ceiling, the floors)."""
    from sslreg.suites.leaderboard import leaderboard_frame, method_readouts, summary

    _runs_folder(out)
    name, reference, trials = suite_reference(suite)
    frame = leaderboard_frame(out, name, split,
                              readouts=method_readouts(_registry(registry)))
    return summary(frame, reference if split == "test" else None, trials)


def render_leaderboard(suite: str = "quick", out: Path | str = "runs", *,
                       format: str = "md", split: str = "test",
                       registry: Registry | None = None) -> str:
    """The leaderboard as text: ``md``, ``csv``, ``latex`` or ``html``."""
    from sslreg.suites.leaderboard import FORMATS, document, leaderboard_frame, method_readouts

    if format not in FORMATS:
        raise SslregError(f"unknown format '{format}'; choose from: {', '.join(FORMATS)}")
    _runs_folder(out)
    name, reference, trials = suite_reference(suite)
    frame = leaderboard_frame(out, name, split,
                              readouts=method_readouts(_registry(registry)))
    title = f"{name}: leaderboard" + (" (validation split)" if split == "val" else "")
    return document(frame, format, title, reference if split == "test" else None, [],
                    trials=trials)


def suite_reference(suite: str) -> tuple[str, Any, dict[str, int] | None]:
    """The suite's name in the index, its reference table and the tuning trials of
    this machine's budget, when ``suite`` is a built-in suite or a TOML file; any other
    name is looked up in the index as it is."""
    import torch

    from sslreg.suites.suite import builtin_suites, load_suite

    if suite in builtin_suites() or suite.endswith(".toml"):
        loaded = load_suite(suite)
        budget = loaded.budget(torch.cuda.is_available())
        return loaded.name, loaded.reference, budget.tuned_settings.trials
    return suite, None, None
