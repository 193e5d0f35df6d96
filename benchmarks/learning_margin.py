"""Seed noise at the learning tests' budget: a method vs a random-init backbone.

Prints kNN (k=20) and linear accuracy of several seeds of both, so the margin a
learning test asserts can be set against the spread between seeds:

    .venv/bin/python benchmarks/learning_margin.py --method simclr --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from sslreg import testing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default=None, help="default: testing.tiny_backbone")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra KEY=VALUE after sslreg.testing.LEARNING_BUDGET")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = {args.method: [], "random init": []}
    with tempfile.TemporaryDirectory() as out:
        for seed in args.seeds:
            trained, floor, warnings = testing.learning_run(
                args.method, out, tuple(args.overrides), seed=seed, backbone=args.backbone)
            rows[args.method].append(trained["knn20_acc"])
            rows["random init"].append(floor["knn20_acc"])
            print(f"seed {seed}: {args.method} kNN20 {trained['knn20_acc']:.4f} linear "
                  f"{trained['linear_acc']:.4f} | random init kNN20 {floor['knn20_acc']:.4f} "
                  f"linear {floor['linear_acc']:.4f} | monitor warnings {len(warnings)}",
                  flush=True)
    for name, values in rows.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name}: kNN20 mean {statistics.mean(values):.4f} std {spread:.4f} "
              f"min {min(values):.4f} max {max(values):.4f}")


if __name__ == "__main__":
    main()
