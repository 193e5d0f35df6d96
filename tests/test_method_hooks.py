"""The optional parts of the Method contract: run context, labels, view options,
method-specific evaluation metrics and TensorBoard pictures."""

import re

import attrs
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sslreg import Method, MethodSpec, RunConfig, StepOutput, hookimpl, testing
from sslreg.engine import pretrain
from sslreg.nn import mlp

SEEN: dict = {}


@attrs.frozen
class ProbeConfig:
    flip_p: float = 0.0


class Probe(Method):
    """A tiny method that records what the engine hands it."""

    uses_labels = True

    def __init__(self, config, backbone):
        super().__init__(config, backbone)
        self.head = mlp(backbone.output_dim, 16, 8)

    def setup(self, context):
        super().setup(context)
        SEEN["context"] = context

    def training_step(self, views, labels=None):
        SEEN.setdefault("labels", []).append(labels)
        z = self.head(self.backbone(views[0]))
        return StepOutput(loss=z.pow(2).mean(), embeddings=z.detach())

    def extra_evaluation(self, images, labels):
        return {"test_images_seen": float(len(images))}

    def visualize(self, images):
        return {"inputs": images.sigmoid()}


class ProbePlugin:
    @hookimpl
    def register_methods(self, register):
        register(MethodSpec(name="probe", factory=Probe, config_class=ProbeConfig,
                            paper="-", views="simclr", objective="nt_xent",
                            view_options=lambda c: {"flip_p": c.flip_p}))


def test_engine_feeds_context_labels_view_options_and_collects_extras(tmp_path):
    SEEN.clear()
    with testing.registered(ProbePlugin(), "probe-plugin"):
        from sslreg import load_registry

        registry = load_registry()
        config = RunConfig.build(registry, "probe", [
            "train.epochs=2", "train.batch_size=32", "train.train_subset=96",
            "eval.train_subset=100", "eval.test_subset=50", "method.flip_p=0.25"],
            dataset="synthetic", backbone="resnet18-narrow")
        run = pretrain(config, registry, tmp_path, progress=False)
    context = SEEN["context"]
    assert (context.epochs, context.steps_per_epoch, context.total_steps) == (2, 3, 6)
    assert len(context.class_names) >= 2
    assert len(SEEN["labels"]) == 6
    assert all(labels.shape == (32,) and labels.dtype == torch.int64
               for labels in SEEN["labels"])
    metrics = run.read_json(run.result)["metrics"]
    assert metrics["test_images_seen"] == 50.0
    events = EventAccumulator(str(run.tensorboard)).Reload()
    assert events.Tags()["images"] == ["pictures/inputs"]
    assert [event.step for event in events.Images("pictures/inputs")] == [1, 2]


def test_view_options_reach_the_policy():
    from sslreg.engine.trainer import build_policy
    from sslreg.views.policies import SimCLRViews

    with testing.registered(ProbePlugin(), "probe-plugin"):
        from sslreg import load_registry

        registry = load_registry()
        config = RunConfig.build(registry, "probe", ["method.flip_p=0.25"],
                                 dataset="synthetic")
        train = registry.datasets.get("synthetic").loader("train", None)
        policy = build_policy(config, registry, train, ((0.5,), (0.25,)))
        other = build_policy(attrs.evolve(config, views="byol"), registry, train,
                             ((0.5,), (0.25,)))
    assert isinstance(policy, SimCLRViews) and policy.options.flip_p == 0.25
    assert other.options.flip_p == 0.5  # another policy keeps its own defaults


class VitOnlyPlugin:
    @hookimpl
    def register_methods(self, register):
        register(MethodSpec(name="vit-only", factory=Probe, config_class=ProbeConfig,
                            paper="-", views="simclr", objective="nt_xent",
                            backbone_families=("vit",)))


def test_a_method_refuses_a_backbone_family_it_cannot_use():
    import pytest

    from sslreg import ConfigError, load_registry

    with testing.registered(VitOnlyPlugin(), "vit-only-plugin"):
        registry = load_registry()
        # Every registered ViT, an installed plugin's too (sslreg-timm adds timm/vit_*).
        vits = [spec.name for spec in registry.backbones if spec.family == "vit"]
        assert {"vit-mini", "vit-tiny"} <= set(vits)
        expected = (f"method 'vit-only' needs a vit backbone \\({re.escape(', '.join(vits))}\\); "
                    "got 'resnet18-narrow' \\(convnet\\)")
        with pytest.raises(ConfigError, match=expected):
            RunConfig.build(registry, "vit-only", backbone="resnet18-narrow")
        assert RunConfig.build(registry, "vit-only", backbone="vit-mini").backbone == "vit-mini"
        assert testing.tiny_backbone("vit-only", registry) == "vit-mini"
        assert testing.tiny_backbone("simclr", registry) == "resnet18-narrow"
