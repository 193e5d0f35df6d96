"""Conformance checks every method plugin should pass, for sslreg's tests and yours.

In a plugin's tests::

    import pytest
    from sslreg import testing

    @pytest.mark.parametrize("method", ["mymethod"])
    def test_conformance(method):
        testing.check_method(method)

or run them over every registered method with ``testing.method_names()``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

from sslreg.config import RunConfig
from sslreg.interfaces import Method, RunContext, StepOutput
from sslreg.plugins import load_registry, pm

TINY_BACKBONE = "resnet18-narrow"
TINY_VIT = "vit-mini"
CLASS_NAMES = ("cat", "dog", "bird", "fish")


def method_names() -> list[str]:
    """Every registered method, for ``pytest.mark.parametrize``."""
    return load_registry().methods.names()


def tiny_images(batch: int = 8, channels: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8,
                         generator=generator)


def tiny_backbone(name: str, registry: Any = None) -> str:
    """The CPU-sized backbone a method works with: ``resnet18-narrow`` if it takes a
    convnet, else ``vit-mini`` if it takes a ViT, else the first that fits."""
    registry = registry or load_registry()
    families = registry.methods.get(name).backbone_families
    for backbone in (TINY_BACKBONE, TINY_VIT, *registry.backbones.names()):
        if families is None or registry.backbones.get(backbone).family in families:
            return backbone
    raise AssertionError(f"{name}: no registered backbone fits {families}")


def build(name: str, *, channels: int = 1, size: int = 28, seed: int = 0,
          backbone: str | None = None, registry: Any = None) -> tuple[Method, Any]:
    """The method with its default config and its default view policy."""
    registry = registry or load_registry()
    backbone = backbone or tiny_backbone(name, registry)
    config = RunConfig.build(registry, name, backbone=backbone)
    torch.manual_seed(seed)
    net = registry.backbones.create(backbone, in_channels=channels, image_size=size)
    method = registry.methods.get(name).factory(config.method_config, net)
    assert isinstance(method, Method), f"{name}'s factory must return an sslreg.Method"
    assert hasattr(method.backbone, "output_dim"), "the backbone needs an output_dim"
    method.setup(RunContext(epochs=2, steps_per_epoch=4, channels=channels, image_size=size,
                            class_names=CLASS_NAMES))
    spec = registry.methods.get(name)
    options = spec.view_options(config.method_config) if spec.view_options else {}
    policy = registry.views.create(config.views_name(registry), channels=channels,
                                   image_size=size, mean=(0.5,) * channels,
                                   std=(0.25,) * channels, **options)
    return method, policy


def tiny_labels(batch: int = 8) -> torch.Tensor:
    return torch.arange(batch) % len(CLASS_NAMES)


def step(method: Method, policy: Any, images: torch.Tensor, seed: int = 0) -> StepOutput:
    """One training step's forward pass on views of ``images``."""
    views = policy(images, torch.Generator().manual_seed(seed))
    assert len(views) == policy.num_views, "the policy returned the wrong number of views"
    method.train()
    if method.uses_labels:
        output = method.training_step(views, labels=tiny_labels(len(images)))
    else:
        output = method.training_step(views)
    assert isinstance(output, StepOutput), "training_step must return sslreg.StepOutput"
    return output


def check_step(name: str, **kwargs: Any) -> StepOutput:
    """Builds, steps on a tiny batch: a finite scalar loss whose gradient reaches the
    backbone, and ``on_step_end`` runs."""
    method, policy = build(name, **kwargs)
    output = step(method, policy, tiny_images(channels=kwargs.get("channels", 1)))
    assert output.loss.ndim == 0, f"{name}: the loss must be a scalar"
    assert torch.isfinite(output.loss), f"{name}: the loss is not finite ({output.loss})"
    output.loss.backward()
    grads = [p.grad for p in method.backbone.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads), \
        f"{name}: no gradient reaches the backbone"
    method.on_step_end(0.5)
    return output


def check_state_dict_roundtrip(name: str, backbone: str | None = None) -> None:
    """A fresh model loading another's state_dict computes the same features."""
    first, _ = build(name, seed=0, backbone=backbone)
    second, _ = build(name, seed=1, backbone=backbone)
    images = torch.rand(4, 1, 28, 28)
    first.eval()
    second.eval()
    assert not torch.allclose(first.features(images), second.features(images)), \
        f"{name}: two seeds built identical models"
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    torch.testing.assert_close(first.features(images), second.features(images))


def check_deterministic(name: str, backbone: str | None = None) -> None:
    """Same seed, same views, same loss."""
    losses = []
    for _ in range(2):
        method, policy = build(name, seed=0, backbone=backbone)
        losses.append(step(method, policy, tiny_images(), seed=3).loss.detach())
    torch.testing.assert_close(losses[0], losses[1])


def check_method(name: str, backbone: str | None = None) -> None:
    """Every conformance check on one registered method, on ``backbone`` (default: the
    CPU-sized one that fits, see :func:`tiny_backbone`)."""
    check_step(name, backbone=backbone)
    check_state_dict_roundtrip(name, backbone)
    check_deterministic(name, backbone)


# A short CPU budget on real data for "does it learn" tests (tests/test_learning.py
# and plugins' own); benchmarks/learning_margin.py measures its seed noise.
LEARNING_BUDGET = ("train.epochs=2", "train.batch_size=256", "train.train_subset=6000",
                   "optim.warmup_epochs=0", "eval.train_subset=5000", "eval.test_subset=2000")


class LearningResult(NamedTuple):
    """What :func:`learning_run` measured."""

    trained: dict[str, float]  # the pretrained backbone's evaluation metrics
    random_init: dict[str, float]  # the random-init floor's, on the same images
    monitor_warnings: list[str]  # collapse warnings the monitors raised while training


def learning_run(method: str, out: Any, overrides: tuple[str, ...] = (), *, seed: int = 0,
                 dataset: str = "fashion-mnist", backbone: str | None = None,
                 registry: Any = None) -> LearningResult:
    """Pretrain ``method`` on ``LEARNING_BUDGET`` (then ``overrides``) and evaluate it.

    Returns the trained run's metrics and the random-init floor's, scored on the very
    same evaluation images (a method that learns beats the floor by a clear margin),
    and the collapse monitors' warnings (a healthy run has none).
    """
    from sslreg.engine import floors, pretrain

    registry = registry or load_registry()
    config = RunConfig.build(registry, method, [*LEARNING_BUDGET, *overrides,
                                                f"train.seed={seed}"],
                             dataset=dataset,
                             backbone=backbone or tiny_backbone(method, registry))
    run = pretrain(config, registry, out, progress=False)
    trained = run.read_json(run.result)["metrics"]
    warnings = run.read_json(run.train_info).get("monitor_warnings", [])
    return LearningResult(trained, floors(config, registry, out)["random init"], warnings)


@contextlib.contextmanager
def registered(plugin: object, name: str) -> Iterator[None]:
    """Register a plugin object (a module or a class with hookimpls) for a test."""
    from sslreg.plugins import load_plugins

    load_plugins()
    pm.register(plugin, name=name)
    try:
        yield
    finally:
        pm.unregister(name=name)
