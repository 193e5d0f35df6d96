"""Seed noise of the learning test's budget: SimCLR vs a random-init backbone.

Prints kNN (k=20) and linear accuracy for several seeds of both, so the margin that
tests/test_learning.py asserts can be checked against the spread between seeds.

    .venv/bin/python benchmarks/learning_margin.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from sslreg import RunConfig
from sslreg.engine import floors, pretrain
from sslreg.plugins import load_registry

# Keep in step with tests/test_learning.py.
BUDGET = ["train.epochs=2", "train.batch_size=256", "train.train_subset=6000",
          "optim.warmup_epochs=0", "eval.train_subset=5000", "eval.test_subset=2000"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    registry = load_registry()
    trained, random_init = [], []
    with tempfile.TemporaryDirectory() as out:
        for seed in args.seeds:
            config = RunConfig.build(registry, args.method, [*BUDGET, f"train.seed={seed}"],
                                     dataset="fashion-mnist", backbone="resnet18-narrow")
            run = pretrain(config, registry, out, progress=False)
            metrics = run.read_json(run.result)["metrics"]
            floor = floors(config, registry, out)["random init"]
            trained.append(metrics["knn20_acc"])
            random_init.append(floor["knn20_acc"])
            print(f"seed {seed}: {args.method} kNN20 {metrics['knn20_acc']:.4f} "
                  f"linear {metrics['linear_acc']:.4f} | random init kNN20 "
                  f"{floor['knn20_acc']:.4f} linear {floor['linear_acc']:.4f}", flush=True)
    for name, values in ((args.method, trained), ("random init", random_init)):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{name}: kNN20 mean {statistics.mean(values):.4f} std {spread:.4f} "
              f"min {min(values):.4f} max {max(values):.4f}")


if __name__ == "__main__":
    main()
