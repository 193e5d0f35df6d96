"""The leaderboard's figures: accuracy with its seed spread, accuracy against training
time, and the learning curves (validation kNN accuracy at each evaluated epoch, as the
run index holds them)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sslreg.suites.leaderboard import (  # noqa: E402
    CEILINGS,
    one_raw_pixels_row,
    row_label,
    summary,
)

FIGURES = ("accuracy", "accuracy_vs_time", "learning_curves")


def write_figures(frame: pd.DataFrame, folder: Path | str) -> list[Path]:
    """The PNG figures of a leaderboard frame in ``folder``; a figure with nothing to
    draw (no timed runs, no logged curves) is left out."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = _labelled(one_raw_pixels_row(frame))
    drawn = {"accuracy": accuracy_figure(frame), "accuracy_vs_time": cost_figure(frame),
             "learning_curves": curves_figure(frame)}
    paths = []
    for name, figure in drawn.items():
        if figure is None:
            continue
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(figure)
        paths.append(path)
    return paths


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with their leaderboard label, in the leaderboard's order."""
    variant = frame.get("variant", pd.Series("", index=frame.index)).fillna("")
    labels = [row_label(m, v) for m, v in zip(frame["method"], variant, strict=True)]
    frame = frame.assign(label=labels)
    order = list(dict.fromkeys(summary(frame)["method"]))
    frame = frame.assign(rank=frame["label"].map(order.index))
    if frame.loc[frame["backbone"] != "-", "backbone"].nunique() > 1:
        # each backbone has its own random-init floor: name it
        floor = frame["label"].str.startswith("(") & (frame["backbone"] != "-")
        frame.loc[floor, "label"] = frame.loc[floor, "label"] + " " + frame["backbone"]
    return frame.sort_values(["rank", "label"], kind="stable")


def accuracy_figure(frame: pd.DataFrame) -> plt.Figure:
    """Linear and kNN accuracy per row: the bar is the mean over seeds, dots are the
    seeds; floors grey, the ceiling green."""
    labels = list(dict.fromkeys(frame["label"]))
    figure, axis = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.5))
    for offset, (column, title) in enumerate([("linear_acc", "linear"),
                                              ("knn20_acc", "kNN k=20")]):
        if column not in frame:
            continue
        for row, label in enumerate(labels):
            values = frame.loc[frame["label"] == label, column].dropna() * 100
            if values.empty:
                continue
            y = row + (offset - 0.5) * 0.38
            axis.barh(y, values.mean(), height=0.36, color=_colour(label, offset),
                      label=title if row == 0 else None)
            axis.plot(values, [y] * len(values), "k.", markersize=4)
    axis.set_yticks(range(len(labels)), labels)
    axis.invert_yaxis()
    axis.set_xlabel("test accuracy (%); bars: mean over seeds, dots: seeds")
    axis.legend(loc="lower right")
    axis.grid(axis="x", alpha=0.3)
    return figure


def _colour(label: str, offset: int) -> str:
    if label.startswith("("):
        return ("#bbbbbb", "#dddddd")[offset]
    if label.split(" ")[0] in CEILINGS:
        return ("#4c9a5a", "#8cc99a")[offset]
    return ("#3b6ea8", "#8fb3dc")[offset]


def cost_figure(frame: pd.DataFrame) -> plt.Figure | None:
    """kNN accuracy against training seconds, mean ± std over seeds, per method."""
    if "wall_time_s" not in frame or frame["wall_time_s"].isna().all():
        return None
    runs = frame.dropna(subset=["wall_time_s", "knn20_acc"])
    grouped = runs.groupby("label", sort=False)
    time, accuracy = grouped["wall_time_s"], grouped["knn20_acc"]
    figure, axis = plt.subplots(figsize=(7, 5))
    axis.errorbar(time.mean(), accuracy.mean() * 100, xerr=time.std().fillna(0),
                  yerr=accuracy.std().fillna(0) * 100, fmt="o", capsize=3)
    for label, x, y in zip(time.mean().index, time.mean(), accuracy.mean() * 100,
                           strict=True):
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for label, value in _floors(frame).items():
        axis.axhline(value, color="grey", linestyle="--", linewidth=0.8)
        axis.annotate(label, (axis.get_xlim()[0], value), fontsize=7, color="grey")
    axis.set_xlabel("training time (s)")
    axis.set_ylabel("kNN k=20 test accuracy (%)")
    axis.grid(alpha=0.3)
    return figure


def _floors(frame: pd.DataFrame) -> dict[str, float]:
    floors = frame[frame["label"].str.startswith("(")]
    if "knn20_acc" not in floors:
        return {}
    return (floors.groupby("label")["knn20_acc"].mean() * 100).to_dict()


def curves_figure(frame: pd.DataFrame) -> plt.Figure | None:
    """Validation kNN accuracy after each evaluated epoch, mean over seeds, one line per
    method."""
    curves = {label: curve for label, curve in _curves(frame).items() if len(curve)}
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(7, 5))
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours: methods stay apart
    for number, (label, curve) in enumerate(curves.items()):
        ceiling = label.split(" ")[0] in CEILINGS
        axis.plot(curve.index, curve.values * 100, marker="o", markersize=3, label=label,
                  color="black" if ceiling else colours[number % len(colours)],
                  linestyle="--" if ceiling else ("-", ":")[number // len(colours) % 2])
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation kNN k=20 accuracy (%)")
    axis.legend(fontsize=7, ncol=2)
    axis.grid(alpha=0.3)
    return figure


def _curves(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Per label, the mean over seeds of each run's curve in the index (epoch ->
    validation kNN accuracy)."""
    if "curve" not in frame:
        return {}
    points = [{"label": label, "epoch": epoch, "accuracy": accuracy}
              for label, curve in frame[["label", "curve"]].itertuples(index=False)
              if isinstance(curve, list) for epoch, accuracy in curve]
    if not points:
        return {}
    table = pd.DataFrame(points).groupby(["label", "epoch"])["accuracy"].mean()
    return {label: table[label] for label in dict.fromkeys(frame["label"])
            if label in table.index.get_level_values(0)}
