"""The conformance suite from sslreg.testing, over every registered method, and the kit's
own API: each check a function, the pytest parametrisation, failures that say why."""

import attrs
import pytest
import torch
import torch.nn.functional as F
from sslreg_moco import MoCo
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
    checks = len(testing.CHECKS)
    assert len(cases) == 2 * checks and cases[checks].id == "byol-build"
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
                                    "deterministic", "learns", "state_in_buffers",
                                    "step_keeps_state", "uses_every_view"]
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
        return StepOutput(loss=self.objective(z1, z2), embeddings=z1.detach())


class InfiniteSimCLR(SimCLR):
    def training_step(self, views):
        output = super().training_step(views)
        return StepOutput(loss=output.loss * float("inf"), embeddings=output.embeddings)


class StemWithoutGradientSimCLR(SimCLR):
    """Runs the backbone's stem under no_grad: a gradient reaches the backbone, but not
    every parameter of it."""

    def training_step(self, views):
        with torch.no_grad():
            x = self.backbone.stem(torch.cat(views))
        features = self.backbone.pool(self.backbone.stages(x)).flatten(1)
        z1, z2 = self.projector(features).chunk(2)
        return StepOutput(loss=self.objective(z1, z2), embeddings=z1.detach())


class OneViewTwiceSimCLR(SimCLR):
    """Reads its first view twice and never the second."""

    def training_step(self, views):
        return super().training_step([views[0], views[0]])


class PlainTensorQueueMoCo(MoCo):
    """Keeps its negatives in a plain tensor attribute: the state_dict misses them, so a
    resumed run restarts with an empty queue."""

    def __init__(self, config, backbone, objective):
        super().__init__(config, backbone, objective)
        self.negatives = torch.zeros(0, config.head_sizes[1])

    def _v2_step(self, query_view, key_view, clock):
        q = self.projector(self.backbone(query_view))
        k = self.keys(key_view)
        loss = self.objective(q, k, self.negatives if len(self.negatives) else None)
        self.new_keys = k.detach()
        return StepOutput(loss=loss, embeddings=q.detach())

    def on_step_end(self, clock):
        self.negatives = torch.cat([F.normalize(self.new_keys, dim=1), self.negatives])[:64]
        self.new_keys = None
        super().on_step_end(clock)


class QueueInStepMoCo(MoCo):
    """Pushes its keys during training_step instead of on_step_end."""

    def _v2_step(self, query_view, key_view, clock):
        output = super()._v2_step(query_view, key_view, clock)
        self.queue.push(self._pending_keys, clock.step)
        self._pending_keys = None
        return output


BROKEN = {"ascending": ("simclr", AscendingSimCLR), "infinite": ("simclr", InfiniteSimCLR),
          "stem-frozen": ("simclr", StemWithoutGradientSimCLR),
          "one-view": ("simclr", OneViewTwiceSimCLR),
          "plain-queue": ("moco", PlainTensorQueueMoCo),
          "queue-in-step": ("moco", QueueInStepMoCo)}


class BrokenMethodsPlugin:
    """Registers each broken method with the spec of the real method it subclasses."""

    @hookimpl
    def register_methods(self, register):
        methods = load_registry().methods
        for name, (base, factory) in BROKEN.items():
            register(attrs.evolve(methods.get(base), name=name, factory=factory, plugin=None))


@pytest.fixture
def broken_methods():
    with testing.registered(BrokenMethodsPlugin(), "broken-methods"):
        yield


def test_a_sign_error_fails_learns_on_tiny_data(broken_methods):
    testing.check_step("ascending")  # one step cannot tell
    with pytest.raises(AssertionError, match="ascending: 10 Adam steps on a fixed tiny "
                       "batch did not lower the loss"):
        testing.check_learns_on_tiny_data("ascending")


def test_a_non_finite_loss_fails_finite_loss(broken_methods):
    with pytest.raises(AssertionError, match="infinite: loss inf at step 0"):
        testing.check_finite_loss("infinite")


def test_a_frozen_part_of_the_backbone_fails_step(broken_methods):
    with pytest.raises(AssertionError, match=r"stem-frozen: no gradient reaches 3 trainable "
                       r"backbone parameters, e.g. \['stem.0.weight'"):
        testing.check_step("stem-frozen")


def test_an_ignored_view_fails_uses_every_view(broken_methods):
    testing.check_step("one-view")  # a finite loss with gradients everywhere
    with pytest.raises(AssertionError, match="one-view: the loss ignores view 1 of 2"):
        testing.check_uses_every_view("one-view")


def test_a_queue_in_a_plain_tensor_fails_state_in_buffers_and_state_dict(broken_methods):
    with pytest.raises(AssertionError, match="plain-queue: PlainTensorQueueMoCo.negatives "
                       "holds tensors outside the state_dict"):
        testing.check_state_in_buffers("plain-queue")
    with pytest.raises(AssertionError, match="plain-queue: after a state_dict round trip "
                       "the next loss is"):
        testing.check_state_dict_roundtrip("plain-queue")


def test_a_queue_pushed_in_training_step_fails_step_keeps_state(broken_methods):
    with pytest.raises(AssertionError, match=r"queue-in-step: training_step changed buffers "
                       r"\['queue.keys'\]"):
        testing.check_step_keeps_state("queue-in-step")
