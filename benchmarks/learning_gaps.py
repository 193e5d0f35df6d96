"""Per-seed validation gaps of every method over its fair random-init floor, from a runs
folder's index, and the learning-test margins they support (tests/test_learning.py):

    .venv/bin/python benchmarks/learning_gaps.py --out /tmp/bq --suite quick

A margin is half the smallest per-seed gap, given only where that smallest gap exceeds
two standard deviations of the method's own accuracy over seeds; otherwise the method
is reported as not clear of its floor at this budget.
"""

from __future__ import annotations

import argparse

import pandas as pd

from sslreg import load_registry
from sslreg.bench.leaderboard import leaderboard_frame

METRICS = {"linear_acc": "linear", "knn20_acc": "kNN20"}


def gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed): validation accuracy minus the same seed's random-init
    floor on the same backbone and readout (a floor's variant names a readout other
    than the backbone's output)."""
    registry = load_registry()
    readouts = {name: getattr(registry.methods.get(name).factory, "readout", "backbone")
                for name in registry.methods.names()}
    readouts = {name: "" if r == "backbone" else r for name, r in readouts.items()}
    floors = frame[frame["method"] == "(random init)"]
    runs = frame[frame["status"] == "evaluated"]
    keyed = floors.set_index(["backbone", "variant", "seed"])
    rows = []
    for _, run in runs.iterrows():
        floor = keyed.loc[(run["backbone"], readouts.get(run["method"], ""), run["seed"])]
        rows.append({"method": run["method"], "seed": run["seed"],
                     **{name: run[m] - floor[m] for m, name in METRICS.items()},
                     **{f"{name} acc": run[m] for m, name in METRICS.items()}})
    return pd.DataFrame(rows)


def margins(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for method, seeds in table.groupby("method"):
        row = {"method": method, "seeds": len(seeds)}
        for name in METRICS.values():
            smallest, spread = seeds[name].min(), seeds[f"{name} acc"].std()
            clear = len(seeds) > 1 and smallest > 2 * spread
            row[f"{name} min gap"] = f"{smallest * 100:+.1f}"
            row[f"{name} std"] = f"{spread * 100:.1f}"
            row[f"{name} margin"] = f"{smallest / 2:.3f}" if clear else "not clear"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the runs folder the suite ran in")
    parser.add_argument("--suite", default="quick")
    args = parser.parse_args()
    frame = leaderboard_frame(args.out, args.suite, split="val")
    frame = frame.assign(variant=frame["variant"].fillna(""))
    print(margins(gaps(frame)).to_markdown(index=False, disable_numparse=True))


if __name__ == "__main__":
    main()
