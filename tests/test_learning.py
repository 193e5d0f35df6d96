"""Every registered method against the fair random-init floor on real Fashion-MNIST, and
two broken methods that must not learn.

Each run is one of the README's main job (``sslreg.testing.LEARNING_SUITE``: the quick
suite's CPU budget, 46 steps, with the method's tuned rate), seed 0, scored on the
validation split against the random-init floor of its backbone read the way the method
reads its features. The runs are deterministic on the CPU, so seed 0 here is seed 0 of
the committed 3-seed table (benchmarks/results/quick.md and quick-val.md, made on the
2-core AMD EPYC machine, 2026-12-03), and ``benchmarks/learning_gaps.py --out DIR``
printed, per method, the smallest per-seed validation gap over the floor and the seed
spread:

* A margin is half the smallest per-seed gap, asserted where that gap exceeds two
  standard deviations of the method's accuracy over seeds.
* A metric with no such margin is asserted only to be above the floor (0.0), where seed
  0 is: that is seed-0 evidence, within the seed spread, not a ranking.
* ``BELOW_FLOOR`` methods did not clear the floor on both metrics at seed 0; their test
  is a strict expected failure, so the day one of them learns at this budget, it says so.

Of the two negative controls, SimSiam without its stop-gradient collapses as it should;
SimCLR with shuffled positives does not stay at the floor (it matches SimCLR), a
strict expected failure that says this budget cannot yet tell contrastive learning
from whatever any training run gains over a fresh network.
"""

from __future__ import annotations

import pytest
import torch
from sslreg_simclr import SimCLR, SimCLRConfig

from sslreg import MethodSpec, hookimpl, load_registry, testing

# method -> (linear margin, kNN20 margin), fractions; see the module docstring. In
# comments: the smallest per-seed validation gaps (points) and the seed std.
MARGINS: dict[str, tuple[float, float]] = {
    "vicreg": (0.026, 0.028),  # linear +5.2 (std 0.3), kNN20 +5.6 (std 0.8)
    "supervised": (0.021, 0.025),  # +4.1 (1.2), +5.1 (0.4)
    "rotnet": (0.0, 0.016),  # +1.8 (1.1), +3.3 (0.3)
    "barlow_twins": (0.015, 0.0),  # +3.0 (0.8), -0.0 (0.2)
    "moco": (0.0, 0.0),  # +2.6 (1.9), -1.2 (0.5)
    "simclr": (0.0, 0.0),  # +1.7 (2.1), -3.1 (1.6)
}
# method -> what seed 0 measured: below the floor on a metric, or collapse warnings.
BELOW_FLOOR: dict[str, str] = {
    "byol": "46 steps: below the floor (linear -1.1, kNN20 -2.9 points at seed 0)",
    "dino": "46 steps: below the floor (linear -2.5, kNN20 -4.2 at seed 0)",
    "swav": "46 steps: kNN20 below the floor (-3.3 at seed 0)",
    "simsiam": "46 steps: kNN20 below the floor (-0.1 at seed 0)",
    "mae": "46 steps: linear below the floor (-0.4 at seed 0; kNN20 +4.3)",
    "clip": "at its tuned rate the collapse monitors warn and zero-shot is 9.8%",
}


def _cases() -> list:
    cases = []
    for name in load_registry().methods.names():
        marks = [pytest.mark.slow]
        if name in BELOW_FLOOR:
            marks.append(pytest.mark.xfail(strict=True, reason=BELOW_FLOOR[name]))
        cases.append(pytest.param(name, marks=marks, id=name))
    return cases


@pytest.mark.parametrize("method", _cases())
def test_method_beats_the_fair_random_init_floor_on_validation(method, tmp_path):
    trained, floor, warnings = testing.learning_run(method, tmp_path)
    linear, knn = MARGINS.get(method, (0.0, 0.0))
    assert trained["linear_acc"] > floor["linear_acc"] + linear, (trained, floor)
    assert trained["knn20_acc"] > floor["knn20_acc"] + knn, (trained, floor)
    assert not warnings, warnings
    if method == "clip":  # class-name captions: zero-shot well above chance (0.1)
        assert trained["zero_shot_acc"] > 0.4, trained


@pytest.mark.slow
def test_simsiam_without_stop_gradient_collapses_and_its_monitor_says_so(tmp_path):
    trained, floor, warnings = testing.learning_run("simsiam", tmp_path,
                                                    ("method.stop_gradient=false",))
    assert warnings, "the collapse monitors did not flag SimSiam without stop-gradient"
    assert trained["knn20_acc"] < floor["knn20_acc"], (trained, floor)


class ShuffledPositives(SimCLR):
    """SimCLR whose second view belongs to another image: the 'positives' carry no
    information about their anchor."""

    def training_step(self, views: list[torch.Tensor]):
        order = torch.randperm(len(views[1]), generator=torch.Generator().manual_seed(0))
        return super().training_step([views[0], views[1][order.to(views[1].device)]])


class ShuffledPlugin:
    @hookimpl
    def register_methods(self, register):
        spec = load_registry().methods.get("simclr")
        register(MethodSpec(name="simclr-shuffled", factory=ShuffledPositives,
                            config_class=SimCLRConfig, paper="-", views="simclr",
                            objective="nt_xent", optim=spec.optim))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "at 46 steps SimCLR with shuffled positives scores validation linear 75.7 / kNN20 "
    "72.2, as high as SimCLR itself (76.3 / 71.9) over the floor's 73.4 / 68.5: at this "
    "budget a gain over the random-init floor is not yet evidence of contrastive "
    "learning"))
def test_simclr_with_positives_shuffled_across_the_batch_stays_near_the_floor(tmp_path):
    from sslreg.bench.suite import load_suite

    tuned = load_suite(testing.LEARNING_SUITE).cpu.tuned_settings.sets.get("simclr", ())
    with testing.registered(ShuffledPlugin(), "shuffled-positives"):
        trained, floor, _ = testing.learning_run("simclr-shuffled", tmp_path, tuned)
    linear, knn = MARGINS["simclr"]  # what real SimCLR must clear, at the same rate
    assert trained["linear_acc"] < floor["linear_acc"] + linear, (trained, floor)
    assert trained["knn20_acc"] < floor["knn20_acc"] + knn, (trained, floor)
