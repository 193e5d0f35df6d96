"""The optional parts of the Method contract: run context, labels, view options,
method-specific evaluation metrics and TensorBoard pictures."""

import re

import attrs
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sslreg import Method, MethodSpec, RunConfig, Schedule, StepOutput, hookimpl, testing
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
    from sslreg.engine.parts import build_policy
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


# --- the clock and schedules ---------------------------------------------------------------

class Clocked(Method):
    """Declares schedules and reads the clock in both step hooks."""

    def __init__(self, config, backbone):
        super().__init__(config, backbone)
        self.head = mlp(backbone.output_dim, 16, 8)

    def schedules(self, context):
        return {"temp": Schedule.linear(1.0, 2.0, steps=3),
                "weight_decay": Schedule.cosine(1.0, 10.0)}

    def training_step(self, views, clock):
        SEEN.setdefault("step", []).append(clock)
        z = self.head(self.backbone(views[0]))
        return StepOutput(loss=z.pow(2).mean() * clock["temp"], embeddings=z.detach())

    def on_step_end(self, clock):
        SEEN.setdefault("end", []).append(clock)


class Legacy(Method):
    """A third-party method written before the clock: no clock, progress at the end, and
    a ``labels`` parameter it never asked for (no uses_labels)."""

    def __init__(self, config, backbone):
        super().__init__(config, backbone)
        self.head = mlp(backbone.output_dim, 16, 8)

    def training_step(self, views, labels=None):
        SEEN.setdefault("labels", []).append(labels)
        z = self.head(self.backbone(views[0]))
        return StepOutput(loss=z.pow(2).mean(), embeddings=z.detach())

    def on_step_end(self, progress):
        SEEN.setdefault("progress", []).append(progress)


class ClockPlugin:
    @hookimpl
    def register_methods(self, register):
        for name, factory in (("clocked", Clocked), ("legacy", Legacy)):
            register(MethodSpec(name=name, factory=factory, config_class=ProbeConfig,
                                paper="-", views="simclr", objective="nt_xent"))


def _clock_run(tmp_path, name):
    SEEN.clear()
    with testing.registered(ClockPlugin(), "clock-plugin"):
        from sslreg import load_registry

        registry = load_registry()
        config = RunConfig.build(registry, name, [
            "train.epochs=2", "train.batch_size=32", "train.train_subset=96",
            "optim.name=adamw", "optim.weight_decay=0.05"],
            dataset="synthetic", backbone="resnet18-narrow")
        return pretrain(config, registry, tmp_path, evaluate=False, progress=False)


def test_the_engine_hands_both_step_hooks_the_clock_with_the_schedules(tmp_path):
    from sslreg.engine.checkpoint import load_checkpoint

    run = _clock_run(tmp_path, "clocked")  # 2 epochs of 3 steps
    seen = SEEN["step"]
    assert SEEN["end"] == seen  # the same clock after the optimizer step
    assert [(c.step, c.epoch, c.epoch_step, c.total_steps) for c in seen] == [
        (s, s // 3, s % 3, 6) for s in range(6)]
    assert [c.progress for c in seen] == [(s + 1) / 6 for s in range(6)]
    assert [c["temp"] for c in seen] == [1.0, 1 + 1 / 3, 1 + 2 / 3, 2.0, 2.0, 2.0]
    assert seen[0]["weight_decay"] == 1.0 and seen[-1]["weight_decay"] == 10.0
    # The engine applies "weight_decay" to the decayed group as a factor of optim's.
    state = load_checkpoint(run.checkpoint)
    decays = [group["weight_decay"] for group in state["optimizer"]["param_groups"]]
    assert decays == [0.05 * 10.0, 0.0]
    assert set(state["schedules"]) == {"lr", "temp", "weight_decay"}
    assert all(len(table) == 6 for table in state["schedules"].values())


def test_a_method_written_before_the_clock_gets_progress_and_no_labels(tmp_path):
    _clock_run(tmp_path, "legacy")
    assert SEEN["progress"] == [(s + 1) / 6 for s in range(6)]
    assert SEEN["labels"] == [None] * 6  # labels only for a method with uses_labels


def test_a_schedule_may_not_take_the_engines_name(tmp_path):
    import pytest

    from sslreg import PluginError

    original = Clocked.schedules
    Clocked.schedules = lambda self, context: {"lr": Schedule.constant(1.0)}
    try:
        with pytest.raises(PluginError, match=r"method 'clocked': schedule names \['lr'\] "
                                              "are the engine's"):
            _clock_run(tmp_path, "clocked")
    finally:
        Clocked.schedules = original
