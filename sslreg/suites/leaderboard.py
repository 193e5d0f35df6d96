"""Leaderboards rendered from the run index: one row per method, floors beside them."""

from __future__ import annotations

import base64
import os
import re
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sslreg.errors import SslregError
from sslreg.runs import data_label, open_index
from sslreg.suites.suite import REFERENCE_METRICS, Reference

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

FORMATS = ("md", "csv", "latex", "html")
# Methods that are baselines trained with labels: listed as the ceiling, after the
# self-supervised methods and before the floors.
CEILINGS = ("supervised",)
ACCURACIES = {"linear_acc": "linear", "knn20_acc": "kNN k=20", "knn200_acc": "kNN k=200"}
# Label-efficient probes and fine-tuning (eval.label_fractions, eval.shots,
# eval.finetune_epochs): a column each, only where some row has the metric.
_FRACTION = re.compile(r"linear_(\d+(?:\.\d+)?)pct_acc")
_SHOTS = re.compile(r"shot(\d+)_acc")
# Each run minus the random-init floor of its backbone, seed and readout, in points.
FLOOR_GAPS = {"linear_acc": "linear − floor", "knn20_acc": "kNN20 − floor"}
COSTS = {"wall_time_s": "train s", "images_per_s": "img/s", "peak_memory_mb": "peak MB",
         "mfu": "MFU %"}


# Index columns a page names under its table, so a reader knows where the numbers ran.
PROVENANCE = ("device", "git_commit", "recorded_at")


def provenance(frame: pd.DataFrame, command: str | None = None) -> str:
    """One line: how many runs, on which devices, from which commits, recorded when,
    and the command that rendered the page."""
    runs = frame[frame["status"] != "floor"] if "status" in frame else frame
    if "recorded_at" not in runs or runs.empty:
        return ""
    days = pd.to_datetime(runs["recorded_at"], unit="s").dt.strftime("%Y-%m-%d")
    commits = sorted({(c or "unknown")[:12] for c in runs["git_commit"]})
    line = (f"{len(runs)} runs on {', '.join(sorted(set(runs['device'].dropna())))}; "
            f"sslreg commit {', '.join(commits)}; recorded {min(days)}"
            f"{'' if min(days) == max(days) else ' to ' + max(days)}.")
    return line + (f" Rendered by `{command}`." if command else "")


SPLITS = ("test", "val")


def leaderboard_frame(out: Path | str, suite: str, split: str = "test",
                      readouts: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per recorded run of ``suite``, its floors among them (status ``floor``),
    with the accuracies of ``split``: ``test`` for tables, ``val`` for choosing (the
    other split's accuracies are kept as ``val_*`` columns when ``split`` is test).

    ``readouts`` (:func:`method_readouts`) adds a ``readout`` column, so each run is
    paired with the random-init floor read the same way (a floor's variant)."""
    if split not in SPLITS:
        raise SslregError(f"unknown split '{split}'; choose from: {', '.join(SPLITS)}")
    rows = [r for r in open_index(out).rows() if suite in r["suites"]]
    if not rows:
        raise SslregError(f"no runs of suite '{suite}' are recorded under {out}; run "
                          f"`sslreg bench {suite} --out {out}` first")
    frame = pd.DataFrame([_run_record(row, suite, split) for row in rows])
    if readouts is not None:
        floor = frame["status"] == "floor"
        frame["readout"] = frame["variant"].where(
            floor, frame["method"].map(lambda m: readouts.get(m, "")))
    return frame


def method_readouts(registry: Registry) -> dict[str, str]:
    """``{method: readout}``, "" for the backbone's own output (:attr:`Method.readout`),
    as floors name their readout in their variant."""
    readouts = {name: getattr(registry.methods.get(name).factory, "readout", "backbone")
                for name in registry.methods.names()}
    return {name: "" if r == "backbone" else r for name, r in readouts.items()}


def summary(frame: pd.DataFrame, reference: Reference | None = None,
            trials: dict[str, int] | None = None) -> pd.DataFrame:
    """Mean (± std over seeds) per method, variant and backbone: the self-supervised
    methods best first (by linear accuracy), then the ceiling, then the floors; with the
    seeds counted, the tuning trials each method had (``trials``, from the suite's
    tuned-settings file), the published numbers beside ours where ``reference`` has
    them, each method's gap over the random-init floor (mean ± std of the per-seed
    differences, in points; a gap within its std is no evidence of learning), and the
    status of any run that did not finish."""
    frame = one_raw_pixels_row(frame.assign(
        variant=frame.get("variant", pd.Series("", index=frame.index)).fillna("")))
    grouped = frame.groupby(["method", "variant", "backbone"], sort=False)
    table = pd.DataFrame(index=grouped.size().index)
    table["seeds"] = grouped["seed"].nunique()
    if "data" in frame and frame["data"].str.contains("→").any():
        # Pretrained on one dataset, scored on another: the table says which.
        table["data"] = grouped["data"].agg(lambda s: ", ".join(sorted(set(s))))
    if trials:
        methods = table.index.get_level_values("method")
        table["trials"] = [str(trials[m]) if m in trials else "-" for m in methods]
    for column, title in {**ACCURACIES, **label_efficient_columns(frame)}.items():
        if column in frame and frame[column].notna().any():
            table[title] = grouped[column].agg(mean_std(column))
    if reference is not None:
        _add_reference(table, grouped, reference)
    for column, title in FLOOR_GAPS.items():
        gaps = gaps_over_floor(frame, column)
        if gaps.notna().any():
            table[title] = gaps.groupby([frame["method"], frame["variant"],
                                         frame["backbone"]], sort=False).agg(signed_mean_std)
    for column, title in COSTS.items():
        if column in frame and frame[column].notna().any():
            table[title] = grouped[column].agg(mean_std(column))
    table["status"] = grouped["status"].agg(
        lambda s: "ok" if s.isin(["evaluated", "floor"]).all()
        else "; ".join(sorted(set(s) - {"evaluated"})))
    order = _order(grouped)
    table = table.reset_index().iloc[order]
    table["method"] = [row_label(m, v) for m, v in zip(table["method"], table["variant"],
                                                     strict=True)]
    return table.drop(columns="variant").reset_index(drop=True)


def label_efficient_columns(frame: pd.DataFrame) -> dict[str, str]:
    """``{metric: title}`` of the label-efficient metrics in ``frame``: fractions
    (``1% linear``), then shots (``5-shot``), each ascending, then ``fine-tune``."""
    fractions = sorted((float(m[1]), m[0]) for m in map(_FRACTION.fullmatch, frame.columns)
                       if m)
    shots = sorted((int(m[1]), m[0]) for m in map(_SHOTS.fullmatch, frame.columns) if m)
    columns = {name: f"{value:g}% linear" for value, name in fractions}
    columns.update({name: f"{value}-shot" for value, name in shots})
    if "finetune_acc" in frame:
        columns["finetune_acc"] = "fine-tune"
    return columns


def gaps_over_floor(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per run, ``column`` minus that of the random-init floor with the same backbone,
    seed and, where the frame has a ``readout`` column, readout (NaN for floors, and
    where no single such floor is recorded)."""
    if column not in frame:
        return pd.Series(float("nan"), index=frame.index)
    key = [c for c in ("backbone", "seed", "readout") if c in frame]
    floors = frame[frame["method"] == "(random init)"]
    counts = floors.groupby(key)[column].count()
    means = floors.groupby(key)[column].mean()
    keys = list(zip(*(frame[c] for c in key), strict=True))
    floor = [means[k] if counts.get(k, 0) == 1 else float("nan") for k in keys]
    gaps = frame[column] - pd.Series(floor, index=frame.index)
    return gaps.where(~frame["method"].str.startswith("("))


def signed_mean_std(values: pd.Series) -> str:
    """'+mean' or '+mean ± std' of accuracy differences, in points."""
    values = values.dropna() * 100
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.mean():+.1f}"
    return f"{values.mean():+.1f} ± {values.std():.1f}"


def one_raw_pixels_row(frame: pd.DataFrame) -> pd.DataFrame:
    """Raw pixels need no backbone: scored beside each backbone, they are one row."""
    pixels = frame["method"] == "(raw pixels)"
    if not pixels.any():
        return frame
    frame = frame.assign(backbone=frame["backbone"].where(~pixels, "-"))
    return frame[~(pixels & frame.duplicated(["method", "seed"]))]


def _order(grouped: Any) -> list[int]:
    """Row positions: methods by mean linear accuracy (best first), ceiling, floors."""
    keys = list(grouped.size().index)
    linear = grouped["linear_acc"].mean() if "linear_acc" in grouped.obj else None

    def rank(position: int) -> tuple[int, float]:
        method = keys[position][0]
        kind = 2 if method.startswith("(") else 1 if method in CEILINGS else 0
        score = linear.iloc[position] if linear is not None else float("nan")
        return kind, -score if pd.notna(score) else float("inf")

    return sorted(range(len(keys)), key=rank)


def row_label(method: str, variant: str) -> str:
    label = f"{method} (ceiling)" if method in CEILINGS else method
    return f"{label} [{variant}]" if variant else label


def document(frame: pd.DataFrame, fmt: str, title: str, reference: Reference | None,
             figures: list[Path], folder: Path | None = None,
             command: str | None = None, trials: dict[str, int] | None = None) -> str:
    """The leaderboard as a page: a heading, the table, where the reference numbers come
    from, and the figures (Markdown links relative to ``folder``, the page's own folder;
    the HTML page carries the PNGs inside it). CSV and LaTeX are the bare table."""
    table = render(frame, fmt, reference, trials)
    if fmt in ("csv", "latex"):
        return table
    source = f"Reference: {reference.source}" if reference else ""
    made = provenance(frame, command)
    if fmt == "md":
        links = [f"![{p.stem}]({os.path.relpath(p, folder or Path.cwd())})" for p in figures]
        parts = [f"## {title}", table, source, made, *links]
        return "\n\n".join(part for part in parts if part)
    images = "\n".join(embedded(p) for p in figures)
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{escape(title)}'
            f"</title></head>\n<body>\n<h1>{escape(title)}</h1>\n{table}\n"
            f"<p>{escape(source)}</p>\n<p>{escape(made)}</p>\n{images}\n</body></html>")


def embedded(path: Path) -> str:
    """An <img> carrying the PNG itself, so the HTML page is one self-contained file."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{path.stem}" src="data:image/png;base64,{data}"></p>'


def _add_reference(table: pd.DataFrame, grouped: Any, reference: Reference) -> None:
    """``ref X`` (the published number) and ``Δ X`` (ours minus it), in points."""
    methods = table.index.get_level_values("method")
    for name, metric in REFERENCE_METRICS.items():
        published = [reference.results.get(m, {}).get(name) for m in methods]
        if all(p is None for p in published):
            continue
        ours = grouped[metric].mean() * 100 if metric in grouped.obj else None
        table[f"ref {name}"] = [f"{p:.1f}" if p is not None else "-" for p in published]
        table[f"Δ {name}"] = [
            f"{o - p:+.1f}" if p is not None and ours is not None and pd.notna(o) else "-"
            for o, p in zip(ours if ours is not None else [None] * len(published),
                            published, strict=True)]


def render(frame: pd.DataFrame, fmt: str, reference: Reference | None = None,
           trials: dict[str, int] | None = None) -> str:
    if fmt not in FORMATS:
        raise SslregError(f"unknown format '{fmt}'; choose from: {', '.join(FORMATS)}")
    table = summary(frame, reference, trials)
    if fmt == "md":
        return table.to_markdown(index=False, disable_numparse=True)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "latex":
        return table.to_latex(index=False, escape=True)
    return table.to_html(index=False, border=0)


def _run_record(row: dict[str, Any], suite: str, split: str) -> dict[str, Any]:
    metrics = row["metrics"] if split == "test" else row["val_metrics"]
    return {"method": row["method"], "variant": row["suites"][suite], "run": row["run"],
            "backbone": row["backbone"], "seed": row["seed"],
            "data": data_label(row["dataset"] or "", row["eval_dataset"]),
            "status": row["status"], **metrics, "curve": row["curve"],
            **{f"val_{key}": value for key, value in row["val_metrics"].items()},
            **{column: row[column] for column in COSTS},
            **{column: row[column] for column in PROVENANCE}}


def mean_std(column: str):
    """A pandas aggregator: 'mean' or 'mean ± std' over seeds, accuracies in percent."""
    def cell(values: pd.Series) -> str:
        values = values.dropna()
        if values.empty:
            return "-"
        percent = column.endswith("_acc") or column == "mfu"
        scale, digits = (100.0, 1) if percent else (1.0, 0)
        mean = values.mean() * scale
        if len(values) == 1:
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {values.std() * scale:.{digits}f}"

    return cell
