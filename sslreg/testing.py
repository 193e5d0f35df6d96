"""Conformance checks every method plugin should pass, for sslreg's tests and yours.

Each check is a function ``check_*(name, backbone=None)`` that raises ``AssertionError``
saying what is wrong; :data:`CHECKS` lists them in order, :func:`check_method` runs them
all, and :func:`conformance_cases` turns them into ``pytest.mark.parametrize`` cases, one
test line per check. In a plugin's tests::

    import pytest
    from sslreg import testing

    @pytest.mark.parametrize("case", testing.conformance_cases("mymethod"))
    def test_conformance(case):
        case()   # mymethod-build, mymethod-step, ..., mymethod-learns

or in one test: ``testing.check_method("mymethod")``. ``testing.conformance_cases()``
without names covers every registered method. These names are a stable API.

Every check runs on 1-channel 28 px images unless given a ``shape``
(:class:`DataShape`); :data:`SHAPES` are the data shapes a method is held to (grey
28 px as Fashion-MNIST, colour 32 px as CIFAR, colour 96 px as STL-10), and
:func:`tiny_backbones` the CPU-sized backbone of every family a method takes::

    @pytest.mark.parametrize("case", testing.conformance_cases(
        "mymethod", shapes=testing.SHAPES, checks=testing.CHEAP_CHECKS))
    def test_conformance_on_every_shape(case):
        case()   # mymethod-build-1ch28px, ..., mymethod-deterministic-3ch96px

The other catalogs have contract checks too (from :mod:`sslreg.contracts`, re-exported
here): ``check_backbone(name)``, ``check_view_policy(name)``, ``check_dataset(name,
root=None)`` and ``check_monitor(name)``, with ``backbone_names()``,
``view_policy_names()``, ``dataset_names()`` and ``monitor_names()`` to parametrise over.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs
import torch

from sslreg.config import RunConfig
from sslreg.contracts import (  # noqa: F401
    backbone_names,
    check_backbone,
    check_dataset,
    check_monitor,
    check_view_policy,
    dataset_names,
    monitor_names,
    view_policy_names,
)
from sslreg.data import ImageDataset
from sslreg.engine.parts import assemble
from sslreg.engine.splits import RunData
from sslreg.interfaces import Clock, Method, StepCall, StepOutput
from sslreg.plugins import load_registry, pm
from sslreg.schedules import Timeline

if TYPE_CHECKING:  # for annotations only: no import cycle through sslreg.config
    from sslreg.registry import Registry

TINY_BACKBONE = "resnet18-narrow"
TINY_VIT = "vit-mini"
CLASS_NAMES = ("cat", "dog", "bird", "fish")


class DataShape(NamedTuple):
    """The images a check runs on: ``channels`` (1 or 3) x ``size`` x ``size`` px."""

    channels: int = 1
    size: int = 28

    @property
    def id(self) -> str:
        return f"{self.channels}ch{self.size}px"


DEFAULT_SHAPE = DataShape(1, 28)
# Fashion-MNIST's grey 28 px, CIFAR's colour 32 px and STL-10's colour 96 px: above
# 32 px the views blur and the ViT patch grows (sslreg.backbones.sizes).
SHAPES = (DEFAULT_SHAPE, DataShape(3, 32), DataShape(3, 96))


def method_names() -> list[str]:
    """Every registered method, for ``pytest.mark.parametrize``."""
    return load_registry().methods.names()


def tiny_images(batch: int = 8, channels: int = 1, size: int = 28, seed: int = 0, *,
                shape: DataShape | None = None) -> torch.Tensor:
    """(batch, C, H, W) random uint8 images; ``shape`` overrides ``channels`` and ``size``."""
    if shape is not None:
        channels, size = shape
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8,
                         generator=generator)


def tiny_backbone(name: str, registry: Registry | None = None) -> str:
    """The CPU-sized backbone a method works with: ``resnet18-narrow`` if it takes a
    convnet, else ``vit-mini`` if it takes a ViT, else the first that fits."""
    registry = registry or load_registry()
    fitting = registry.backbones_for(name, [TINY_BACKBONE, TINY_VIT, *registry.backbones.names()])
    if not fitting:
        families = registry.methods.get(name).backbone_families
        raise AssertionError(f"{name}: no registered backbone fits {families}")
    return fitting[0]


def tiny_backbones(name: str, registry: Registry | None = None) -> list[str]:
    """The CPU-sized backbone of each family ``name`` takes: ``resnet18-narrow`` and/or
    ``vit-mini``."""
    registry = registry or load_registry()
    return registry.backbones_for(name, [TINY_BACKBONE, TINY_VIT])


def build(name: str, *, channels: int = 1, size: int = 28, seed: int = 0,
          backbone: str | None = None, registry: Registry | None = None,
          shape: DataShape | None = None) -> tuple[Method, Any]:
    """The method with its default config and its default view policy, for
    ``channels`` x ``size`` px images (or ``shape``), assembled as the engine assembles
    a run (:func:`sslreg.engine.assemble`): 2 epochs of 4 steps on :func:`tiny_data`."""
    if shape is not None:
        channels, size = shape
    registry = registry or load_registry()
    backbone = backbone or tiny_backbone(name, registry)
    config = RunConfig.build(registry, name, [*CHECK_RUN, f"train.seed={seed}"],
                             backbone=backbone)
    parts = assemble(config, registry, tiny_data(DataShape(channels, size)))
    assert isinstance(parts.method, Method), f"{name}'s factory must return an sslreg.Method"
    assert hasattr(parts.method.backbone, "output_dim"), "the backbone needs an output_dim"
    return parts.method, parts.policy


# The checks' run: 2 epochs of 4 steps of 2 of tiny_data's 8 images.
CHECK_RUN = ("train.epochs=2", "train.batch_size=2")


def tiny_data(shape: DataShape = DEFAULT_SHAPE) -> RunData:
    """8 labelled :func:`tiny_images` as every split of a run, normalised by mean 0.5
    and std 0.25 (round numbers: the checks need no real statistics)."""
    images = ImageDataset(images=tiny_images(shape=shape), labels=tiny_labels(),
                          classes=CLASS_NAMES, name="tiny")
    stats = ((0.5,) * shape.channels, (0.25,) * shape.channels)
    return RunData(train=images, val=images, test=images, stats=stats)


def tiny_labels(batch: int = 8) -> torch.Tensor:
    return torch.arange(batch) % len(CLASS_NAMES)


def clock(method: Method, step: int = 0) -> Clock:
    """The :class:`~sslreg.Clock` the engine would hand ``method`` on ``step`` of a run
    of ``method.context`` (the checks' run: 2 epochs of 4 steps), with the values of
    the method's schedules there."""
    context = method.context
    timeline = Timeline.build(method.schedules(context), context.total_steps,
                              context.steps_per_epoch)
    return timeline.clock(step)


def training_step(method: Method, views: list[torch.Tensor], at: int = 0) -> StepOutput:
    """``method.training_step`` called as the engine calls it on step ``at``: the
    clock, and labels (:func:`tiny_labels`) if it uses them."""
    labels = tiny_labels(len(views[0]))
    output = method.training_step(views, **StepCall.of(method).arguments(labels,
                                                                       clock(method, at)))
    assert isinstance(output, StepOutput), "training_step must return sslreg.StepOutput"
    return output


def step_end(method: Method, at: int = 0) -> None:
    """``method.on_step_end`` called as the engine calls it after step ``at``."""
    StepCall.of(method).end(method, clock(method, at))


def step(method: Method, policy: Any, images: torch.Tensor, seed: int = 0,
         at: int = 0) -> StepOutput:
    """Step ``at``'s forward pass on views of ``images``."""
    views = policy(images, torch.Generator().manual_seed(seed))
    assert len(views) == policy.num_views, "the policy returned the wrong number of views"
    method.train()
    return training_step(method, views, at)


def check_build(name: str, backbone: str | None = None,
                shape: DataShape = DEFAULT_SHAPE) -> None:
    """Builds from its default config on a tiny backbone, and its default view policy
    gives ``num_views`` float views of the whole batch."""
    _, policy = build(name, backbone=backbone, shape=shape)
    views = policy(tiny_images(shape=shape), torch.Generator().manual_seed(0))
    assert len(views) == policy.num_views, f"{name}: the policy returned the wrong views"
    for view in views:
        assert view.is_floating_point() and view.ndim == 4 and len(view) == 8, \
            f"{name}: each view must be a float (B, C, H, W) batch, got {view.shape}"
        assert view.shape[1] == shape.channels, \
            f"{name}: views of {shape.id} images must have {shape.channels} channels, " \
            f"got {view.shape}"


def check_step(name: str, **kwargs: Any) -> StepOutput:
    """Builds, steps on a tiny batch: a finite scalar loss whose gradient reaches the
    backbone, and ``on_step_end`` runs. ``kwargs`` go to :func:`build` (``backbone``,
    ``shape``, ...)."""
    method, policy = build(name, **kwargs)
    shape = kwargs.get("shape") or DataShape(kwargs.get("channels", 1), kwargs.get("size", 28))
    output = step(method, policy, tiny_images(shape=shape))
    assert output.loss.ndim == 0, f"{name}: the loss must be a scalar"
    assert torch.isfinite(output.loss), f"{name}: the loss is not finite ({output.loss})"
    output.loss.backward()
    missing = [key for key, p in method.backbone.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, (f"{name}: no gradient reaches {len(missing)} trainable backbone "
                         f"parameters, e.g. {missing[:3]}")
    step_end(method)
    return output


def check_state_dict_roundtrip(name: str, backbone: str | None = None,
                               shape: DataShape = DEFAULT_SHAPE) -> None:
    """A fresh model loading another's state_dict, saved after a few steps (so queues,
    EMA targets and centres have moved), computes the same features and the
    same next training loss: a resumed run continues where the saved one stood."""
    first, policy = build(name, seed=0, backbone=backbone, shape=shape)
    second, _ = build(name, seed=1, backbone=backbone, shape=shape)
    images = torch.rand(4, shape.channels, shape.size, shape.size)
    first.eval()
    second.eval()
    assert not torch.allclose(first.features(images), second.features(images)), \
        f"{name}: two seeds built identical models"
    _train_a_little(first, policy, shape=shape)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    first.eval()
    second.eval()
    torch.testing.assert_close(first.features(images), second.features(images))
    views = policy(tiny_images(shape=shape), torch.Generator().manual_seed(9))
    # Both continue with step 3, the step after the saved ones.
    saved, loaded = _loss(first, views, at=3).detach(), _loss(second, views, at=3).detach()
    assert torch.allclose(saved, loaded), (
        f"{name}: after a state_dict round trip the next loss is {loaded.item():.6f}, not "
        f"{saved.item():.6f}; keep run state (queues, EMA, centres) in buffers and read "
        "the step from the clock")


def _train_a_little(method: Method, policy: Any, steps: int = 3,
                    shape: DataShape = DEFAULT_SHAPE) -> None:
    """A few Adam steps with ``on_step_end``, fresh views each step."""
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    images = tiny_images(shape=shape)
    for index in range(steps):
        views = policy(images, torch.Generator().manual_seed(index))
        _optimize(method, optimizer, views, at=index)


def check_deterministic(name: str, backbone: str | None = None,
                        shape: DataShape = DEFAULT_SHAPE) -> None:
    """Same seed, same views, same loss."""
    losses = []
    for _ in range(2):
        method, policy = build(name, seed=0, backbone=backbone, shape=shape)
        losses.append(step(method, policy, tiny_images(shape=shape), seed=3).loss.detach())
    torch.testing.assert_close(losses[0], losses[1])


def _loss(method: Method, views: list[torch.Tensor], seed: int = 0,
          at: int = 0) -> torch.Tensor:
    # Reseed so methods that draw inside training_step (masks, dropout) draw the same.
    torch.manual_seed(seed)
    method.train()
    return training_step(method, views, at).loss


def _optimize(method: Method, optimizer: torch.optim.Optimizer, views: list[torch.Tensor],
              at: int, end: bool = True) -> torch.Tensor:
    """Step ``at``: loss, backward, optimizer step and (with ``end``) ``on_step_end``."""
    loss = _loss(method, views, at=at)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if end:
        step_end(method, at)
    return loss.detach()


def check_finite_loss(name: str, backbone: str | None = None, steps: int = 3,
                      shape: DataShape = DEFAULT_SHAPE) -> None:
    """The loss and every parameter stay finite over a few steps of the method's own
    optimizer settings (lr scaled to the batch as the engine does), fresh views each step."""
    from sslreg.engine.optim import build_optimizer

    method, policy = build(name, backbone=backbone, shape=shape)
    spec = load_registry().methods.get(name)
    batch = 16
    optim = spec.optim
    optim = attrs.evolve(optim, lr=optim.lr * batch / 256)  # the peak rate, no warm-up
    optimizer = build_optimizer(method, optim, torch.device("cpu"))
    images = tiny_images(batch, shape=shape)
    for index in range(steps):
        views = policy(images, torch.Generator().manual_seed(index))
        loss = _optimize(method, optimizer, views, at=index)
        assert torch.isfinite(loss), f"{name}: loss {loss.item()} at step {index}"
    bad = [key for key, value in method.state_dict().items()
           if value.is_floating_point() and not torch.isfinite(value).all()]
    assert not bad, f"{name}: non-finite values after {steps} steps in {bad[:5]}"


def check_learns_on_tiny_data(name: str, backbone: str | None = None,
                              steps: int = 10, shape: DataShape = DEFAULT_SHAPE) -> None:
    """A few Adam steps on 32 synthetic images (fixed views) lower the loss.

    The objective is held fixed: ``on_step_end`` is not called and both losses are
    scored from the same starting state (buffers, EMA targets, queues, centers), so only
    the trainable parameters differ. Methods whose targets move while they train (DINO's
    centering, MoCo's queue) would otherwise raise their loss while learning. A backward
    pass with the wrong sign, or an objective the parameters cannot lower, fails here.
    Whether the representation improves (a loss with its sign flipped still lowers
    itself) is :func:`learning_run`'s job, on real data.
    """
    from sslreg.data import synthetic

    method, policy = build(name, backbone=backbone, shape=shape)
    # The synthetic shapes are grey; colour shapes get them on every channel.
    images = synthetic.generate(32, seed=0, image_size=shape.size).images
    images = images.expand(-1, shape.channels, -1, -1).contiguous()
    views = policy(images, torch.Generator().manual_seed(0))
    start = copy.deepcopy(method)
    before = _loss(copy.deepcopy(start), views).item()
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(steps):
        _optimize(method, optimizer, views, at=0, end=False)
    learned = {key for key, p in method.named_parameters() if p.requires_grad}
    start.load_state_dict({key: value for key, value in method.state_dict().items()
                           if key in learned}, strict=False)
    after = _loss(start, views).item()
    assert after < before, (
        f"{name}: {steps} Adam steps on a fixed tiny batch did not lower the loss "
        f"({before:.4f} -> {after:.4f}); check custom backward passes and what the loss "
        "depends on")


def check_state_in_buffers(name: str, backbone: str | None = None,
                           shape: DataShape = DEFAULT_SHAPE) -> None:
    """After a few steps, every tensor the method's modules hold is a parameter or a
    buffer, so the state_dict carries it: a queue kept as a plain tensor attribute (or a
    list of tensors) silently restarts empty on resume."""
    method, policy = build(name, backbone=backbone, shape=shape)
    _train_a_little(method, policy, shape=shape)
    loose = [f"{prefix or type(method).__name__}.{attribute}"
             for prefix, module in method.named_modules()
             for attribute, value in vars(module).items() if _holds_tensors(value)]
    assert not loose, (f"{name}: {', '.join(loose[:3])} holds tensors outside the "
                       "state_dict; register them with register_buffer (or nn.Parameter)")


def _holds_tensors(value: Any) -> bool:
    # Dicts are left out: they are caches keyed by shape or device (e.g. ViT positions).
    if isinstance(value, (list, tuple, collections.deque)):
        return any(isinstance(item, torch.Tensor) for item in value)
    return isinstance(value, torch.Tensor)


# BatchNorm-like layers update these in every training-mode forward pass, by design.
_RUNNING_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _state_buffers(method: Method) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in method.named_buffers()
            if not key.endswith(_RUNNING_STATISTICS)}


def check_step_keeps_state(name: str, backbone: str | None = None,
                           shape: DataShape = DEFAULT_SHAPE) -> None:
    """``training_step`` leaves every buffer but BatchNorm statistics unchanged: queues,
    EMA targets and centres move in ``on_step_end`` (see
    :meth:`sslreg.Method.training_step`), so a loss computed without an optimizer step
    changes nothing."""
    method, policy = build(name, backbone=backbone, shape=shape)
    _train_a_little(method, policy, steps=1, shape=shape)  # so that steady-state branches run too
    before = _state_buffers(method)
    step(method, policy, tiny_images(shape=shape), seed=5, at=1)
    after = _state_buffers(method)
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert not changed, (f"{name}: training_step changed buffers {changed[:3]}; update "
                         "state in on_step_end, after the optimizer step")


def check_uses_every_view(name: str, backbone: str | None = None,
                          shape: DataShape = DEFAULT_SHAPE) -> None:
    """Replacing any one view by other images changes the loss: a method that reads a
    view twice and ignores another fails here. Each loss is computed from the same
    starting state (a copy of the method), so only the view differs. Losses are compared
    exactly: a fresh model's loss may barely move with one of many views (one of SwAV's
    local crops on a ViT moved it by 3e-5 of 8.4), but a view it never reads moves it
    not at all."""
    method, policy = build(name, backbone=backbone, shape=shape)
    views = policy(tiny_images(shape=shape), torch.Generator().manual_seed(0))
    base = _loss(copy.deepcopy(method), views).detach()
    again = _loss(copy.deepcopy(method), views).detach()
    assert torch.equal(base, again), f"{name}: the same views gave two losses"
    generator = torch.Generator().manual_seed(1)
    for index, view in enumerate(views):
        other = torch.randn(view.shape, generator=generator)
        replaced = [*views[:index], other, *views[index + 1:]]
        loss = _loss(copy.deepcopy(method), replaced).detach()
        assert not torch.equal(base, loss), (
            f"{name}: the loss ignores view {index} of {len(views)} (replacing it by "
            "other images leaves the loss unchanged)")


# The conformance checks in order: name -> check(method_name, backbone=None,
# shape=DEFAULT_SHAPE). Stable API: new checks are added at the end.
CHECKS: dict[str, Callable[..., Any]] = {
    "build": check_build,
    "step": check_step,
    "finite_loss": check_finite_loss,
    "state_dict": check_state_dict_roundtrip,
    "deterministic": check_deterministic,
    "learns": check_learns_on_tiny_data,
    "state_in_buffers": check_state_in_buffers,
    "step_keeps_state": check_step_keeps_state,
    "uses_every_view": check_uses_every_view,
}
# The checks that cost about one step each: all but "learns".
CHEAP_CHECKS = ("build", "step", "finite_loss", "state_dict", "deterministic")


def check_method(name: str, backbone: str | None = None,
                 shape: DataShape = DEFAULT_SHAPE) -> None:
    """Every conformance check on one registered method, on ``backbone`` (default: the
    CPU-sized one that fits, see :func:`tiny_backbone`) and ``shape`` images."""
    for check in CHECKS.values():
        check(name, backbone=backbone, shape=shape)


@attrs.frozen
class ConformanceCase:
    """One check on one method; calling it runs the check."""

    method: str
    check: str
    backbone: str | None = None
    shape: DataShape = DEFAULT_SHAPE

    def __call__(self) -> None:
        CHECKS[self.check](self.method, backbone=self.backbone, shape=self.shape)


def conformance_cases(*methods: str, backbone: str | None = None,
                      shapes: Iterable[DataShape] | None = None,
                      checks: Iterable[str] | None = None) -> list[Any]:
    """``pytest.param`` cases, one per (method, check, shape), with ids like
    ``simclr-learns``, or ``simclr-step-3ch96px`` when ``shapes`` are given.

    No names: every registered method. ``shapes`` (default: 1-channel 28 px only) and
    ``checks`` (names in :data:`CHECKS`, default all) narrow or widen the grid. Use with
    ``@pytest.mark.parametrize("case", testing.conformance_cases("mymethod"))``.
    """
    import pytest  # only test code calls this; sslreg itself does not need pytest

    names = methods or tuple(method_names())
    chosen = _known_checks(checks)
    suffix = f"-{backbone}" if backbone else ""
    grid = [(shape, f"-{shape.id}") for shape in shapes] if shapes is not None \
        else [(DEFAULT_SHAPE, "")]
    return [pytest.param(ConformanceCase(name, check, backbone, shape),
                         id=f"{name}-{check}{suffix}{shape_id}")
            for name in names for check in chosen for shape, shape_id in grid]


def _known_checks(checks: Iterable[str] | None) -> list[str]:
    if checks is None:
        return list(CHECKS)
    chosen = list(checks)
    unknown = [check for check in chosen if check not in CHECKS]
    if unknown:
        raise ValueError(f"unknown conformance check '{unknown[0]}'; choose from "
                         f"{', '.join(CHECKS)}")
    return chosen


# "Does it learn" tests (tests/test_learning.py and plugins' own) run the CPU budget of
# this suite, with its tuned settings: exactly the runs of the README's main job, whose
# committed 3-seed table (validation columns) measures the margins the tests assert.
LEARNING_SUITE = "quick"


class LearningResult(NamedTuple):
    """What :func:`learning_run` measured, on the validation split (a learning test
    chooses its margin, so it never reads the test split)."""

    trained: dict[str, float]  # the pretrained backbone's validation metrics
    random_init: dict[str, float]  # the random-init floor's, on the same images
    monitor_warnings: list[str]  # collapse warnings the monitors raised while training


def learning_run(method: str, out: Any, overrides: tuple[str, ...] = (), *, seed: int = 0,
                 backbone: str | None = None, registry: Registry | None = None) -> LearningResult:
    """Pretrain ``method`` as :data:`LEARNING_SUITE`'s CPU budget does (its backbone,
    settings and tuned rate), then ``overrides``, and evaluate it.

    Returns the trained run's validation metrics and the random-init floor's, scored
    the same way on the very same images (a method that learns beats the floor by a
    clear margin), and the collapse monitors' warnings (a healthy run has none). The
    floor is computed once per process for each key.
    """
    from sslreg.engine import floors, pretrain
    from sslreg.suites.runner import backbone_for
    from sslreg.suites.suite import load_suite, suite_sets

    registry = registry or load_registry()
    suite = load_suite(LEARNING_SUITE)
    # Learning is judged on validation: no learning curve, and a token test subset.
    scored = ("eval.curve_every=0", "eval.test_subset=500")
    config = RunConfig.build(registry, method,
                             [*suite_sets(suite, suite.cpu, method, seed), *scored,
                              *overrides],
                             dataset=suite.dataset,
                             backbone=backbone or backbone_for(registry, method, suite.cpu))
    run = pretrain(config, registry, out, progress=False)
    trained = run.read_json(run.result)["val_metrics"]
    warnings = run.read_json(run.train_info).get("monitor_warnings", [])
    floor = floors(config, registry, out)["random init"]["val_metrics"]
    return LearningResult(trained, floor, warnings)


MARGIN_METRICS = {"kNN20": "knn20_acc", "linear": "linear_acc"}


def learning_margins(method: str, seeds: Iterable[int] = (0, 1, 2),
                     overrides: tuple[str, ...] = (), *, backbone: str | None = None,
                     out: Any = None, echo: Callable[[str], None] | None = None
                     ) -> dict[str, dict[str, list[float]]]:
    """:func:`learning_run` for each seed: ``{row: {label: [value per seed]}}`` with rows
    ``method``, ``"random init"`` and ``"gap"`` (method minus floor) and labels of
    :data:`MARGIN_METRICS`, validation accuracies. A learning test's margin is set against
    the gap's spread over seeds. ``echo`` gets one line per seed as it finishes."""
    import tempfile

    rows: dict[str, dict[str, list[float]]] = {
        row: {label: [] for label in MARGIN_METRICS} for row in (method, "random init", "gap")}
    with contextlib.ExitStack() as stack:
        out = out or stack.enter_context(tempfile.TemporaryDirectory())
        for seed in seeds:
            trained, floor, warnings = learning_run(method, out, overrides, seed=seed,
                                                    backbone=backbone)
            for label, key in MARGIN_METRICS.items():
                rows[method][label].append(trained[key])
                rows["random init"][label].append(floor[key])
                rows["gap"][label].append(trained[key] - floor[key])
            if echo:
                echo(f"seed {seed}: " + " | ".join(
                    f"{row} " + " ".join(f"{label} {values[-1]:.4f}"
                                         for label, values in metrics.items())
                    for row, metrics in rows.items()) + f" | monitor warnings {len(warnings)}")
    return rows


def margin_main(argv: list[str] | None = None) -> None:
    """``python -m sslreg.testing --method NAME --seeds 0 1 2``: the seed spread of
    :func:`learning_run` for an installed method (benchmarks/learning_margin.py in the
    sslreg repository runs this too)."""
    import argparse
    import statistics

    parser = argparse.ArgumentParser(
        prog="python -m sslreg.testing",
        description="Seed noise at the learning tests' budget: a method vs its random-init "
                    "floor, on the validation split.")
    parser.add_argument("--method", default="simclr")
    parser.add_argument("--backbone", default=None,
                        help="default: the quick suite's CPU backbone for the method")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra KEY=VALUE, applied after the quick suite's CPU budget "
                             f"(sslreg.testing.LEARNING_SUITE = {LEARNING_SUITE!r})")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    rows = learning_margins(args.method, args.seeds, tuple(args.overrides),
                            backbone=args.backbone, echo=lambda line: print(line, flush=True))
    for row, metrics in rows.items():
        for label, values in metrics.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{row} {label}: mean {statistics.mean(values):.4f} std {spread:.4f} "
                  f"min {min(values):.4f} max {max(values):.4f}")


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    """A context manager: ``with testing.registered(plugin, "name"):`` registers a plugin
    object (a module or an object with hookimpls) under ``name`` for the block, so
    :func:`sslreg.load_registry` sees it there; nothing is installed."""
    from sslreg.plugins import load_plugins

    load_plugins()
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(name=name)


if __name__ == "__main__":
    margin_main()
