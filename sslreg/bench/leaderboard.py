"""Leaderboards rendered from the run index: one row per method, floors beside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from sslreg.engine.evaluate import floors_path
from sslreg.errors import SslregError
from sslreg.runs import RunDir, open_index

FORMATS = ("md", "csv", "latex", "html")
ACCURACIES = {"linear_acc": "linear", "knn20_acc": "kNN k=20", "knn200_acc": "kNN k=200"}
COSTS = {"wall_time_s": "train s", "images_per_s": "img/s", "peak_memory_mb": "peak MB"}


def leaderboard_frame(out: Path | str, suite: str) -> pd.DataFrame:
    """One row per recorded run of ``suite`` (and one per floor it was scored beside)."""
    rows = [r for r in open_index(out).rows() if suite in r["suites"]]
    if not rows:
        raise SslregError(f"no runs of suite '{suite}' are recorded under {out}; run "
                          f"`sslreg bench {suite} --out {out}` first")
    records = [_run_record(row) for row in rows]
    return pd.DataFrame(records + _floor_records(Path(out), rows))


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean (± std over seeds) per (method, backbone), runs then floors, with the seeds
    counted and the status of any run that did not finish."""
    grouped = frame.groupby(["method", "backbone"], sort=False)
    table = pd.DataFrame(index=grouped.size().index)
    table["seeds"] = grouped["seed"].nunique()
    for column, title in {**ACCURACIES, **COSTS}.items():
        if column in frame and frame[column].notna().any():
            table[title] = grouped[column].agg(mean_std(column))
    table["status"] = grouped["status"].agg(
        lambda s: "ok" if s.isin(["evaluated", "floor"]).all()
        else "; ".join(sorted(set(s) - {"evaluated"})))
    return table.reset_index()


def render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt not in FORMATS:
        raise SslregError(f"unknown format '{fmt}'; choose from: {', '.join(FORMATS)}")
    table = summary(frame)
    if fmt == "md":
        return table.to_markdown(index=False)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "latex":
        return table.to_latex(index=False, escape=True)
    return table.to_html(index=False, border=0)


def _run_record(row: dict[str, Any]) -> dict[str, Any]:
    return {"method": row["method"], "backbone": row["backbone"], "seed": row["seed"],
            "status": row["status"], **row["metrics"],
            **{column: row[column] for column in COSTS}}


def _floor_records(out: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cached floors (``out/floors``) scored with the same dataset, backbone, seed
    and evaluation protocol as the suite's runs."""
    records, seen = [], set()
    for row in rows:
        config = json.loads(row["config"])
        e = config.get("eval", {})
        path = floors_path(out, config["dataset"], config["backbone"], config["train"]["seed"],
                           (e.get("train_subset"), e.get("test_subset"),
                            e.get("holdout_fraction")))
        if path in seen or not path.exists():
            continue
        seen.add(path)
        for name, metrics in RunDir(path.parent).read_json(path).items():
            records.append({"method": f"({name})", "backbone": config["backbone"],
                            "seed": config["train"]["seed"], "status": "floor", **metrics})
    return records


def mean_std(column: str):
    """A pandas aggregator: 'mean' or 'mean ± std' over seeds, accuracies in percent."""
    def cell(values: pd.Series) -> str:
        values = values.dropna()
        if values.empty:
            return "-"
        scale, digits = (100.0, 1) if column.endswith("_acc") else (1.0, 0)
        mean = values.mean() * scale
        if len(values) == 1:
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {values.std() * scale:.{digits}f}"

    return cell
