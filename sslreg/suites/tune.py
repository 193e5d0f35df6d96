"""Equal tuning: every method of a suite gets the same trials on the validation split.

Each method's learning rate is tried at the same multiples of its own default
(``MULTIPLIERS``, so SGD, LARS and AdamW rates are treated alike); every trial is an
ordinary run of the suite's budget (its own directory, digest and resume), and the
rate with the best validation score is kept. The choice reads validation scores only
(each trial, being an ordinary run, also records its test scores; nothing reads them).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pandas as pd
import torch

from sslreg.engine.device import device_name
from sslreg.suites.leaderboard import leaderboard_frame
from sslreg.suites.runner import run_suite
from sslreg.suites.suite import Suite, Sweep, Tuned

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

KEY = "optim.lr"
MULTIPLIERS = (1.0, 4.0, 16.0)
# The score a trial is chosen by: the mean of the two validation accuracies every
# table reports, so neither the probe nor kNN alone decides.
SCORE = ("val_linear_acc", "val_knn20_acc")


def tuning_suite(suite: Suite, registry: Registry, multipliers: tuple[float, ...]) -> Suite:
    """``suite`` as a sweep of each method's rate (seed 0 only), without any tuned or
    hand-set per-method rates, under the name ``<suite>-tuning``."""
    budgets = {}
    for kind in ("cpu", "gpu"):
        budget = suite.budget(kind == "gpu")
        budgets[kind] = attrs.evolve(budget, tuned=None, tuned_settings=Tuned(),
                                     method={m: _without_key(sets)
                                             for m, sets in budget.method.items()})
    methods = suite.select(registry.methods.names())
    sweeps = tuple(Sweep(key=KEY, values=rates(registry, m, multipliers), methods=(m,))
                   for m in methods)
    return attrs.evolve(suite, name=f"{suite.name}-tuning", seeds=(0,), sweep=sweeps,
                        reference=None, methods=tuple(methods), **budgets)


def rates(registry: Registry, method: str, multipliers: tuple[float, ...]) -> tuple[float, ...]:
    base = registry.methods.get(method).optim.lr
    return tuple(float(f"{base * m:.4g}") for m in multipliers)


def _without_key(sets: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(s for s in sets if not s.startswith(f"{KEY}="))


def tune(suite: Suite, registry: Registry, out: Path,
         multipliers: tuple[float, ...] = MULTIPLIERS, progress: bool = True) -> pd.DataFrame:
    """Run every trial (finished ones are skipped) and return one row per trial with
    its validation score and whether it was chosen."""
    trials = tuning_suite(suite, registry, multipliers)
    run_suite(trials, registry, out, progress=progress)
    frame = leaderboard_frame(out, trials.name)
    frame = frame[frame["status"] != "floor"].copy()
    for column in SCORE:
        if column not in frame:
            frame[column] = float("nan")
    frame["score"] = frame[list(SCORE)].mean(axis=1)
    frame["rate"] = frame["variant"].str.split("=").str[1].astype(float)
    best = frame.dropna(subset=["score"]).groupby("method")["score"].idxmax()
    frame["chosen"] = frame.index.isin(best)
    return frame.sort_values(["method", "rate"]).reset_index(drop=True)


def tuned_toml(frame: pd.DataFrame, suite: Suite, command: str,
               multipliers: tuple[float, ...] = MULTIPLIERS) -> str:
    """The tuned-settings file a suite's budget names with ``tuned = ...``."""
    machine = device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    lines = [f"# Made by `{command}` on {machine}, {datetime.date.today().isoformat()}.",
             f"# Suite {suite.name}, seed 0: each method tried {KEY} at "
             f"{', '.join(f'{m:g}' for m in multipliers)} x its default;",
             "# chosen by the mean of validation linear and kNN k=20 accuracy.", ""]
    for method, trials in frame.groupby("method", sort=True):
        chosen = trials[trials["chosen"]]
        lines.append(f"[method.{method}]")
        if not chosen.empty:
            lines.append(f'set = ["{KEY}={chosen["rate"].iloc[0]:g}"]')
        lines.append(f"trials = {len(trials)}")
        scores = ", ".join(f'"{r:g}" = {_score(s)}' for r, s in zip(trials["rate"],
                                                                   trials["score"],
                                                                   strict=True))
        lines += [f"validation_score = {{ {scores} }}", ""]
    return "\n".join(lines)


def _score(value: float) -> str:
    return "nan" if pd.isna(value) else f"{value:.4f}"


def trials_table(frame: pd.DataFrame) -> str:
    """The trials as Markdown: rate, validation accuracies (percent), status, choice."""
    table = pd.DataFrame({
        "method": frame["method"], KEY: frame["rate"].map(lambda r: f"{r:g}"),
        "val linear": _percent(frame["val_linear_acc"]),
        "val kNN k=20": _percent(frame["val_knn20_acc"]),
        "status": frame["status"].str.slice(0, 40),
        "chosen": frame["chosen"].map({True: "yes", False: ""})})
    return table.to_markdown(index=False, disable_numparse=True)


def _percent(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "-" if pd.isna(v) else f"{v * 100:.1f}")
