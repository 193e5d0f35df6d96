"""SimCLR learns: a short CPU run on real Fashion-MNIST beats a random-init backbone.

The budget is ``sslreg.testing.LEARNING_BUDGET``; ``benchmarks/learning_margin.py``
measured it (3 seeds, 2-core CPU): SimCLR kNN20 0.683 ± 0.015, random init
0.473 ± 0.013. The asserted margin, 0.10, is about seven seed standard deviations yet
half the measured gap.
"""

from sslreg import testing

MARGIN = 0.10


def test_simclr_beats_random_init_on_fashion_mnist(tmp_path):
    trained, random_init, warnings = testing.learning_run("simclr", tmp_path)
    assert not warnings, warnings
    assert trained["knn20_acc"] > random_init["knn20_acc"] + MARGIN, (trained, random_init)
    assert trained["linear_acc"] > random_init["linear_acc"] + MARGIN, (trained, random_init)
