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
from sslreg.suites.leaderboard import gaps_over_floor, leaderboard_frame, method_readouts

METRICS = {"linear_acc": "linear", "knn20_acc": "kNN20"}


def gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, seed): validation accuracy minus the same seed's random-init
    floor on the same backbone and readout, and the accuracy itself."""
    runs = frame[frame["status"] == "evaluated"]
    return pd.DataFrame({
        "method": runs["method"], "seed": runs["seed"],
        **{name: gaps_over_floor(frame, m)[runs.index] for m, name in METRICS.items()},
        **{f"{name} acc": runs[m] for m, name in METRICS.items()}})


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
    frame = leaderboard_frame(args.out, args.suite, split="val",
                              readouts=method_readouts(load_registry()))
    print(margins(gaps(frame)).to_markdown(index=False, disable_numparse=True))


if __name__ == "__main__":
    main()
