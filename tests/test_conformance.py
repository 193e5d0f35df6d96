"""The conformance suite from sslreg.testing, over every registered method, and the kit's
own API: each check a function, the pytest parametrisation, failures that say why."""

import attrs
import pytest
import torch
from sslreg_simclr import SimCLR

from sslreg import StepOutput, hookimpl, load_registry, testing


@pytest.mark.parametrize("case", testing.conformance_cases())
def test_method_conforms(case):
    case()


# The shape-dependent checks on every data shape and every backbone family a method
# takes. The 1-channel 28 px cases on the default backbone are test_method_conforms's;
# "deterministic" and "finite_loss" do not depend on the shape and cost most, so they
# run at 28 px only (benchmarks/data_shapes.py trains every method at every shape).
SHAPE_CHECKS = ("build", "step", "state_dict")


def _cases_on_every_shape():
    cases = []
    for name in testing.method_names():
        default = testing.tiny_backbone(name)
        for backbone in testing.tiny_backbones(name):
            shapes = [shape for shape in testing.SHAPES
                      if (shape, backbone) != (testing.DEFAULT_SHAPE, default)]
            cases += testing.conformance_cases(name, backbone=backbone, shapes=shapes,
                                               checks=SHAPE_CHECKS)
    return cases


@pytest.mark.parametrize("case", _cases_on_every_shape())
def test_method_conforms_on_every_data_shape(case):
    case()


def test_every_builtin_method_is_covered():
    assert {"simclr", "byol"} <= set(testing.method_names())


def test_cases_are_one_per_method_and_check_in_order():
    cases = testing.conformance_cases("simclr", "byol")
    assert [case.id for case in cases[:6]] == [
        "simclr-build", "simclr-step", "simclr-finite_loss", "simclr-state_dict",
        "simclr-deterministic", "simclr-learns"]
    assert len(cases) == 12 and cases[6].id == "byol-build"
    assert cases[0].values == (testing.ConformanceCase("simclr", "build"),)
    vit = testing.conformance_cases("simclr", backbone="vit-mini")
    assert vit[0].id == "simclr-build-vit-mini" and vit[0].values[0].backbone == "vit-mini"


def test_cases_name_their_data_shape():
    cases = testing.conformance_cases("simclr", backbone="vit-mini", shapes=testing.SHAPES,
                                      checks=("build", "step"))
    assert [case.id for case in cases] == [
        "simclr-build-vit-mini-1ch28px", "simclr-build-vit-mini-3ch32px",
        "simclr-build-vit-mini-3ch96px", "simclr-step-vit-mini-1ch28px",
        "simclr-step-vit-mini-3ch32px", "simclr-step-vit-mini-3ch96px"]
    assert cases[2].values[0].shape == testing.DataShape(3, 96)
    with pytest.raises(ValueError, match="unknown conformance check 'stp'; choose from build"):
        testing.conformance_cases("simclr", checks=("stp",))


def test_checks_run_at_the_shape_they_are_given(monkeypatch):
    seen = []
    real_step = testing.step

    def recording_step(method, policy, images, seed=0):
        seen.append(tuple(images.shape[1:]))
        return real_step(method, policy, images, seed)

    monkeypatch.setattr(testing, "step", recording_step)
    testing.ConformanceCase("simclr", "step", "vit-mini", testing.DataShape(3, 96))()
    testing.check_step("simclr")  # the stable default: 1-channel 28 px
    assert seen == [(3, 96, 96), (1, 28, 28)]
    assert testing.tiny_backbones("simclr") == ["resnet18-narrow", "vit-mini"]
    assert testing.tiny_backbones("mae") == ["vit-mini"]


def test_each_check_is_a_public_function():
    assert list(testing.CHECKS) == ["build", "step", "finite_loss", "state_dict",
                                    "deterministic", "learns"]
    assert testing.CHECKS["learns"] is testing.check_learns_on_tiny_data
    assert all(callable(check) for check in testing.CHECKS.values())


class ReversedGradient(torch.autograd.Function):
    """A custom backward with the wrong sign (a gradient-reversal layer left in)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class AscendingSimCLR(SimCLR):
    """Gradient reaches the backbone and the loss is finite, but optimising climbs it."""

    def training_step(self, views):
        z = self.projector(self.backbone(torch.cat(views)))  # (2N, proj_dim)
        z1, z2 = ReversedGradient.apply(z).chunk(2)
        return StepOutput(loss=self.criterion(z1, z2), embeddings=z1.detach())


class InfiniteSimCLR(SimCLR):
    def training_step(self, views):
        output = super().training_step(views)
        return StepOutput(loss=output.loss * float("inf"), embeddings=output.embeddings)


class BrokenMethodsPlugin:
    def __init__(self, spec):
        self.spec = spec

    @hookimpl
    def register_methods(self, register):
        for name, factory in (("ascending", AscendingSimCLR), ("infinite", InfiniteSimCLR)):
            register(attrs.evolve(self.spec, name=name, factory=factory, plugin=None))


@pytest.fixture
def broken_methods():
    with testing.registered(BrokenMethodsPlugin(load_registry().methods.get("simclr")),
                            "broken-methods"):
        yield


def test_a_sign_error_fails_learns_on_tiny_data(broken_methods):
    testing.check_step("ascending")  # one step cannot tell
    with pytest.raises(AssertionError, match="ascending: 10 Adam steps on a fixed tiny "
                       "batch did not lower the loss"):
        testing.check_learns_on_tiny_data("ascending")


def test_a_non_finite_loss_fails_finite_loss(broken_methods):
    with pytest.raises(AssertionError, match="infinite: loss inf at step 0"):
        testing.check_finite_loss("infinite")
