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
