"""How much of a short run's gain over the random-init floor is BN statistics alone?

The random-init floor scores a fresh network in eval mode, whose BatchNorm layers still
hold their initial running statistics (mean 0, variance 1); a trained network's were
fitted to the data. This scores the same fresh network twice on the validation split,
as the quick suite's CPU budget does: as the floor is, and after re-estimating every
BN layer's running statistics on the run's pretraining images (no weight changes):

    .venv/bin/python benchmarks/bn_floor.py --method simclr --seeds 0 1 2
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from sslreg import RunConfig, load_registry, testing
from sslreg.engine.evaluate import score
from sslreg.engine.parts import build_method
from sslreg.engine.splits import load_run_data
from sslreg.suites.runner import backbone_for
from sslreg.suites.suite import load_suite, suite_sets


@torch.no_grad()
def recalibrate(model: nn.Module, images: torch.Tensor, mean, std, batch: int = 256) -> None:
    """Running statistics = the plain average over ``images`` (BN momentum None)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    for start in range(0, len(images), batch):
        model((images[start:start + batch].float() / 255 - mean_t) / std_t)
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    registry = load_registry()
    suite = load_suite(testing.LEARNING_SUITE)
    for seed in args.seeds:
        config = RunConfig.build(registry, args.method,
                                 list(suite_sets(suite, suite.cpu, args.method, seed)),
                                 dataset=suite.dataset,
                                 backbone=backbone_for(registry, args.method, suite.cpu))
        data = load_run_data(config, registry)
        torch.manual_seed(seed)  # the initialisation the run and its floor start from
        method = build_method(config, registry, data).eval()
        before = score(method.features, config, data)["val"]
        recalibrate(method.backbone, data.pretraining(config).images, *data.stats)
        after = score(method.features, config, data)["val"]
        print(f"{config.backbone} seed {seed}: floor val linear {before['linear_acc']:.4f} "
              f"kNN20 {before['knn20_acc']:.4f} | BN recalibrated linear "
              f"{after['linear_acc']:.4f} kNN20 {after['knn20_acc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
