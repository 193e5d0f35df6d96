"""SimCLR learns: a short CPU run on real Fashion-MNIST beats a random-init backbone.

Budget and margin come from ``benchmarks/learning_margin.py`` (3 seeds, 2-core CPU):
SimCLR kNN20 0.683 ± 0.015, random init 0.473 ± 0.013. The asserted margin, 0.10, is
about seven seed standard deviations yet half the measured gap.
"""

from sslreg import RunConfig
from sslreg.engine import floors, pretrain

BUDGET = ["train.epochs=2", "train.batch_size=256", "train.train_subset=6000",
          "optim.warmup_epochs=0", "eval.train_subset=5000", "eval.test_subset=2000"]
MARGIN = 0.10


def test_simclr_beats_random_init_on_fashion_mnist(registry, tmp_path):
    config = RunConfig.build(registry, "simclr", BUDGET, dataset="fashion-mnist",
                             backbone="resnet18-narrow")
    run = pretrain(config, registry, tmp_path, progress=False)
    trained = run.read_json(run.result)["metrics"]
    random_init = floors(config, registry, tmp_path)["random init"]
    assert trained["knn20_acc"] > random_init["knn20_acc"] + MARGIN, (trained, random_init)
    assert trained["linear_acc"] > random_init["linear_acc"] + MARGIN, (trained, random_init)
