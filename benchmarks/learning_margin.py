"""Seed noise at the learning tests' budget: a method vs its random-init floor.

Runs ``sslreg.testing.learning_run`` (the quick suite's CPU budget, with the method's
tuned rate) for several seeds and prints validation kNN20 and linear accuracy of the
method and of the random-init floor, then the per-seed gap, so the margin a learning
test asserts can be set against the spread between seeds:

    .venv/bin/python benchmarks/learning_margin.py --method simclr --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from sslreg import testing

METRICS = {"kNN20": "knn20_acc", "linear": "linear_acc"}


def _stats(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"mean {statistics.mean(values):.4f} std {spread:.4f} "
            f"min {min(values):.4f} max {max(values):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default=None,
                        help="default: the quick suite's CPU backbone for the method")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra KEY=VALUE, applied after the quick suite's CPU budget "
                             f"(sslreg.testing.LEARNING_SUITE = {testing.LEARNING_SUITE!r})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows: dict[str, dict[str, list[float]]] = {
        row: {label: [] for label in METRICS} for row in (args.method, "random init", "gap")}
    with tempfile.TemporaryDirectory() as out:
        for seed in args.seeds:
            trained, floor, warnings = testing.learning_run(
                args.method, out, tuple(args.overrides), seed=seed, backbone=args.backbone)
            for label, key in METRICS.items():
                rows[args.method][label].append(trained[key])
                rows["random init"][label].append(floor[key])
                rows["gap"][label].append(trained[key] - floor[key])
            print(f"seed {seed}: " + " | ".join(
                f"{row} " + " ".join(f"{label} {values[-1]:.4f}" for label, values in
                                     metrics.items()) for row, metrics in rows.items())
                  + f" | monitor warnings {len(warnings)}", flush=True)
    for row, metrics in rows.items():
        for label, values in metrics.items():
            print(f"{row} {label}: {_stats(values)}")


if __name__ == "__main__":
    main()
