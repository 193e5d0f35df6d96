"""Does an SSL run care whether the ResNet's residual branches start at zero?

Runs a method as the learning tests do (the quick suite's CPU budget and tuned rate)
on ``resnet18-narrow`` and on the same network with ``zero_init_residual=True``, and
prints the validation accuracies of both beside their random-init floors:

    .venv/bin/python benchmarks/zero_init_residual.py --method simclr --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile

from sslreg import BackboneSpec, hookimpl, testing
from sslreg.backbones import ResNet18

ZERO_INIT = "resnet18-narrow-zero-init"


class ZeroInitPlugin:
    @hookimpl
    def register_backbones(self, register):
        register(BackboneSpec(
            name=ZERO_INIT, description="resnet18-narrow, residual branches start at 0",
            factory=lambda in_channels, image_size: ResNet18(
                in_channels, width=16, stem_stride=2, zero_init_residual=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    with testing.registered(ZeroInitPlugin(), "zero-init"), \
            tempfile.TemporaryDirectory() as out:
        for backbone in ("resnet18-narrow", ZERO_INIT):
            for seed in args.seeds:
                trained, floor, _ = testing.learning_run(args.method, out, seed=seed,
                                                         backbone=backbone)
                print(f"{backbone} seed {seed}: {args.method} val linear "
                      f"{trained['linear_acc']:.4f} kNN20 {trained['knn20_acc']:.4f} | "
                      f"random init linear {floor['linear_acc']:.4f} kNN20 "
                      f"{floor['knn20_acc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
