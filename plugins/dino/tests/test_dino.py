"""DINO plugin tests: conformance on a convnet and a ViT, the loss against hand-worked
numbers and a plain loop, centering, the teacher-temperature schedule, the frozen
prototypes, attention pictures, and config validation.
"""

import copy
import math
from types import SimpleNamespace

import attrs
import pytest
import torch
from sslreg_dino import DINO, DINOConfig, DINOLoss
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from sslreg import ConfigError, OptimConfig, RunConfig, RunContext, load_registry, testing
from sslreg.backbones import sizes
from sslreg.engine import pretrain
from sslreg.engine.parts import build_policy


def _method(backbone: str = "resnet18-narrow", **options) -> DINO:
    net = load_registry().backbones.create(backbone, in_channels=1, image_size=28)
    return load_registry().build_method("dino", DINOConfig(**options), net)


def test_conformance_on_a_vit():
    testing.check_method("dino", backbone="vit-mini")


def test_registered_with_paper_defaults():
    registry = load_registry()
    spec = registry.methods.get("dino")
    assert spec.plugin == "dino"
    assert (spec.views, spec.objective) == ("multicrop", "dino")
    assert registry.objectives.get("dino").plugin == "dino"
    assert isinstance(registry.objectives.create("dino"), DINOLoss)
    config = spec.config_class()
    assert (config.hidden_dim, config.bottleneck_dim, config.out_dim) == (2048, 256, 4096)
    assert (config.student_temp, config.warmup_teacher_temp, config.teacher_temp) == (
        0.1, 0.04, 0.07)
    assert (config.warmup_teacher_temp_epochs, config.freeze_last_layer_epochs) == (30, 1)
    assert (config.center_momentum, config.base_momentum) == (0.9, 0.996)
    assert spec.view_options(config) == {"crop_scale": (0.14, 1.0),
                                         "local_scale": (0.05, 0.14), "num_local": 6}
    # The ViT recipe: main_dino.py's default crop scales.
    assert spec.policy_options(config, "vit") == {"crop_scale": (0.4, 1.0),
                                                  "local_scale": (0.05, 0.4), "num_local": 6}
    assert config.use_bn_in_head is None and config.evaluate_teacher is False
    assert spec.optim == OptimConfig(name="lars", lr=0.3, weight_decay=1e-6, warmup_epochs=10)


def test_view_options_shape_the_multicrop_views():
    method, policy = testing.build("dino")
    assert policy.num_views == 8
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    assert [tuple(v.shape[-2:]) for v in views] == [(28, 28)] * 2 + [(12, 12)] * 6


@pytest.mark.parametrize(("shape", "local"), [(testing.DataShape(1, 28), 12),
                                              (testing.DataShape(3, 32), 12),
                                              (testing.DataShape(3, 96), 36)])
def test_builds_and_steps_on_a_vit_at_every_image_size(shape, local):
    # At 96 px the ViT patch is 12 px: the old 40 px local crops could not be embedded.
    method, policy = testing.build("dino", backbone="vit-mini", shape=shape)
    assert method.backbone.patch_size == sizes.vit_patch_size(shape.size)
    views = policy(testing.tiny_images(4, shape=shape), torch.Generator().manual_seed(0))
    assert [v.shape[-1] for v in views] == [shape.size] * 2 + [local] * 6
    output = testing.training_step(method, views)
    output.loss.backward()
    assert torch.isfinite(output.loss) and method.backbone.patch_embed.weight.grad is not None


def _policy(overrides, image_size=96, backbone="vit-mini"):
    """The run's view policy as the trainer builds it, for colour images of that size."""
    registry = load_registry()
    config = RunConfig.build(registry, "dino", overrides, backbone=backbone)
    data = SimpleNamespace(channels=3, images=torch.zeros(1, 3, image_size, image_size))
    return build_policy(config, registry, data, ((0.5,) * 3, (0.25,) * 3))


def test_a_local_size_must_be_whole_vit_patches():
    assert _policy(["method.local_size=48"]).local_size == 48
    with pytest.raises(ConfigError, match=r"local_size=40 does not fit 96 px images.*\(12 "
                       r"px\).*one of 12, 24, 36, 48, 60, 72, 84, 96 \(default 36\)"):
        _policy(["method.local_size=40"])
    with pytest.raises(ConfigError, match="local_size=0 must be a positive int"):
        RunConfig.build(load_registry(), "dino", ["method.local_size=0"])


# --- the loss -------------------------------------------------------------------------

def _entropy(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_loss_on_hand_checkable_logits():
    # Temperatures 1 and logits [log 3, 0] give the distribution (3/4, 1/4).
    loss = DINOLoss(student_temp=1.0)
    half, skewed = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    teacher = [half, skewed]  # q1 = (1/2, 1/2), q2 = (3/4, 1/4)
    student = [half, half, skewed]  # two global crops, one local
    # Pairs (q1, s2), (q1, s3), (q2, s1), (q2, s3); (q1, s1) and (q2, s2) are skipped.
    expected = (math.log(2) + 0.5 * math.log(16 / 3) + math.log(2) + _entropy(0.75)) / 4
    value = loss(student, teacher, teacher_temp=1.0)
    torch.testing.assert_close(value, torch.tensor(expected))
    # Centering shifts the teacher's logits before the softmax: [log 3, 0] - [log 3, 0]
    # makes q2 uniform, and q1 becomes (1/4, 3/4).
    center = torch.tensor([[math.log(3.0), 0.0]])
    expected = (math.log(2) + (0.25 * -math.log(0.75) + 0.75 * -math.log(0.25))
                + math.log(2) + 0.5 * math.log(16 / 3)) / 4
    torch.testing.assert_close(loss(student, teacher, center, 1.0), torch.tensor(expected))


def test_temperatures_divide_the_logits():
    loss = DINOLoss(student_temp=0.5)
    # Student logits [log 3 / 2, 0] / 0.5 -> (3/4, 1/4); teacher [0, 0] -> uniform.
    student = [torch.tensor([[math.log(3.0) / 2, 0.0]])] * 2
    teacher = [torch.zeros(1, 2)] * 2
    expected = 0.5 * math.log(16 / 3)
    torch.testing.assert_close(loss(student, teacher, teacher_temp=0.04),
                               torch.tensor(expected))
    # Teacher [0.04 log 3, 0] at temperature 0.04 -> (3/4, 1/4) against the same student.
    teacher = [torch.tensor([[0.04 * math.log(3.0), 0.0]])] * 2
    torch.testing.assert_close(loss(student, teacher, teacher_temp=torch.tensor(0.04)),
                               torch.tensor(_entropy(0.75)))


def _reference_loss(student, teacher, center, student_temp, teacher_temp) -> torch.Tensor:
    """The paper's algorithm 1, one pair of crops and one sample at a time."""
    total, terms = 0.0, 0
    for g, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == g:
                continue
            pair = 0.0
            for n in range(len(t)):
                q = torch.softmax((t[n] - center[0]) / teacher_temp, dim=0)
                log_p = torch.log_softmax(s[n] / student_temp, dim=0)
                pair += -(q * log_p).sum()
            total += pair / len(t)
            terms += 1
    return total / terms


def test_loss_matches_a_plain_loop():
    generator = torch.Generator().manual_seed(0)
    student = [torch.randn(3, 5, generator=generator) for _ in range(4)]
    teacher = [torch.randn(3, 5, generator=generator) for _ in range(2)]
    center = torch.randn(1, 5, generator=generator)
    value = DINOLoss(0.1)(student, teacher, center, 0.04)
    torch.testing.assert_close(value, _reference_loss(student, teacher, center, 0.1, 0.04))


def test_loss_sends_no_gradient_to_the_teacher_or_the_center():
    student = [torch.randn(4, 6, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(4, 6, requires_grad=True) for _ in range(2)]
    center = torch.zeros(1, 6, requires_grad=True)
    DINOLoss()(student, teacher, center, 0.04).backward()
    assert all(s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher) and center.grad is None


def test_loss_rejects_bad_inputs():
    loss = DINOLoss()
    with pytest.raises(ValueError, match="one shape"):
        loss([torch.zeros(2, 3), torch.zeros(2, 4)], [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="teacher crops"):
        loss([torch.zeros(2, 3)], [torch.zeros(2, 3)] * 2)
    with pytest.raises(ValueError, match="two crops"):
        loss([torch.zeros(2, 3)], [torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="student_temp"):
        DINOLoss(student_temp=0.0)


# --- the head and the step ------------------------------------------------------------

def test_head_has_batch_norm_on_a_convnet_only_unless_told():
    # The paper's ResNet-50 recipe puts BN in the head, its ViT recipe does not.
    def has_bn(method: DINO) -> bool:
        return any(isinstance(m, torch.nn.BatchNorm1d) for m in method.head.modules())

    assert has_bn(_method()) and not has_bn(_method("vit-mini"))
    assert not has_bn(_method(use_bn_in_head=False)) and has_bn(_method("vit-mini",
                                                                        use_bn_in_head=True))
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in _method().head.mlp) == 2


def test_head_normalises_the_bottleneck_and_the_prototypes():
    method = _method(hidden_dim=32, bottleneck_dim=8, out_dim=16, use_bn_in_head=False)
    linears = [m for m in method.head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(128, 32), (32, 32), (32, 8)]
    assert sum(isinstance(m, torch.nn.GELU) for m in method.head.mlp) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in method.head.modules())
    z, logits = method.head(torch.randn(5, 128))
    assert z.shape == (5, 8) and logits.shape == (5, 16) and logits.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    assert logits.abs().max() <= 1 + 1e-6  # cosines: the weight-norm gain is fixed to 1
    # Rescaling a prototype changes nothing: only its direction counts.
    x = torch.randn(5, 128)
    before = method.head(x)[1]
    with torch.no_grad():
        method.head.prototypes.mul_(torch.rand(16, 1) + 0.5)
    torch.testing.assert_close(method.head(x)[1], before)


def test_training_step_is_the_loss_of_student_against_teacher_on_global_crops():
    method, policy = testing.build("dino")
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    # In eval mode batch norm uses running statistics, so crops may pass one at a time.
    method.eval()
    with torch.no_grad():
        method.center.normal_()
        student = [method.head(method.backbone(v))[1] for v in views]  # all 8 crops
        teacher = [method.teacher_head(method.teacher_backbone(v))[1] for v in views[:2]]
    expected = _reference_loss(student, teacher, method.center, 0.1, 0.04)
    output = testing.training_step(method, views)  # step 0: teacher temperature 0.04
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    assert output.embeddings.shape == (8, 256)  # the first global crop's bottleneck
    # The temperature and momentum are the engine's schedules, logged as schedule/*.
    assert set(output.metrics) == {"teacher_entropy"}
    assert 0 < output.metrics["teacher_entropy"] <= math.log(4096) + 1e-4


def test_student_gets_the_gradient_and_the_teacher_follows_by_ema():
    method, policy = testing.build("dino")
    assert not any(p.requires_grad for p in method.teacher_backbone.parameters())
    assert not any(p.requires_grad for p in method.teacher_head.parameters())
    before = [p.clone() for p in method.teacher_head.parameters()]
    output = testing.step(method, policy, testing.tiny_images(), at=1)  # past the freeze
    output.loss.backward()
    assert method.head.prototypes.grad is not None
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(1.0)
    clock = attrs.evolve(testing.clock(method, 1), values={"momentum": 0.996})
    method.on_step_end(clock)
    for old, new, online in zip(before, method.teacher_head.parameters(),
                                method.head.parameters(), strict=True):
        torch.testing.assert_close(new, 0.996 * old + 0.004 * online)


# --- centering, the temperature schedule and the frozen prototypes ---------------------

def test_center_is_an_ema_of_the_teacher_batch_mean():
    method = _method(out_dim=2)
    assert method.center.shape == (1, 2) and "center" in method.state_dict()
    teacher = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # batch mean (2, 3)
    method.update_center(teacher)
    torch.testing.assert_close(method.center, torch.tensor([[0.2, 0.3]]))
    method.update_center(teacher)  # 0.9 * (0.2, 0.3) + 0.1 * (2, 3)
    torch.testing.assert_close(method.center, torch.tensor([[0.38, 0.57]]))


def test_center_moves_after_the_step_from_the_global_crops_teacher_output():
    method, policy = testing.build("dino")
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    method.train()
    output = testing.training_step(method, views)
    torch.testing.assert_close(method.center, torch.zeros_like(method.center))  # not yet
    with torch.no_grad():
        teacher = torch.cat(method.teacher_outputs(views))  # the teacher is unchanged
    output.loss.backward()
    testing.step_end(method)
    torch.testing.assert_close(method.center, 0.1 * teacher.mean(dim=0, keepdim=True))


def _schedule(method: DINO, name: str, context: RunContext) -> torch.Tensor:
    return method.schedules(context)[name].values(context.total_steps)


def test_teacher_temperature_warms_up_linearly_then_stays():
    method = _method()
    paper = RunContext(epochs=100, steps_per_epoch=10)  # the paper: 30 of 100 epochs
    temperatures = _schedule(method, "teacher_temp", paper)[[0, 150, 300, 301, 999]]
    assert temperatures.tolist() == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07])
    short = RunContext(epochs=2, steps_per_epoch=10)  # short: 30% of the run, 6 steps
    assert _schedule(method, "teacher_temp", short)[3] == pytest.approx(0.055)
    method = _method(warmup_teacher_temp_epochs=0)
    assert _schedule(method, "teacher_temp", paper)[0] == pytest.approx(0.07)


def _old_teacher_temperature(config: DINOConfig, steps: int, warmup_steps: float) -> float:
    """The temperature as DINO computed it from its own step counter before the clock:
    float32 on the device."""
    done = torch.tensor(steps, dtype=torch.long)
    progress = ((done.float() / warmup_steps).clamp(max=1.0) if warmup_steps > 0
                else done.new_ones((), dtype=torch.float32))
    return float(config.warmup_teacher_temp
                 + (config.teacher_temp - config.warmup_teacher_temp) * progress)


def test_schedules_give_the_values_dino_computed_itself_before():
    # So results do not drift: the momentum is the very float of cosine_momentum at
    # (step + 1) / total, the temperature the old float32 value to float32 rounding.
    from sslreg.nn import cosine_momentum

    method = _method()
    context = RunContext(epochs=10, steps_per_epoch=7)  # warm-up 3 epochs, 21 steps
    momentum = _schedule(method, "momentum", context)
    temperature = _schedule(method, "teacher_temp", context)
    for step in (0, 1, 10, 20, 21, 22, 50, 69):
        assert momentum[step].item() == cosine_momentum(0.996, (step + 1) / 70)
        assert temperature[step].item() == pytest.approx(
            _old_teacher_temperature(method.config, step, 21.0), rel=3e-7, abs=0)


def test_on_a_vit_weight_decay_rises_on_the_papers_cosine_from_0_04_to_0_4():
    from sslreg.engine.trainer import build_timeline

    registry = load_registry()
    config = RunConfig.build(registry, "dino", ["optim.name=adamw", "optim.weight_decay=0.04",
                                                "train.epochs=3"], backbone="vit-mini")
    method = registry.build_method("dino", config.method_config, registry.backbones.create(
        "vit-mini", in_channels=1, image_size=28))
    assert isinstance(method, DINO)
    method.setup(RunContext(epochs=3, steps_per_epoch=5))
    timeline = build_timeline(config, method, steps_per_epoch=5)
    decay = timeline.tables["weight_decay"] * config.optim.weight_decay  # as the engine sets it
    assert decay[0].item() == pytest.approx(0.04, abs=1e-15)
    assert decay[14].item() == pytest.approx(0.4, abs=1e-15)
    assert decay[7].item() == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi / 2)) / 2)
    assert decay[3].item() == pytest.approx(0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * 3 / 14))
                                            / 2)
    # The paper's ResNet-50 keeps its weight decay constant: no schedule on a convnet.
    assert "weight_decay" not in _method().schedules(RunContext())


def _prototype_grad(method: DINO, policy, step: int) -> torch.Tensor | None:
    method.zero_grad(set_to_none=True)
    testing.step(method, policy, testing.tiny_images(), at=step).loss.backward()
    return method.head.prototypes.grad


def test_prototypes_are_frozen_for_the_first_epoch():
    method, policy = testing.build("dino")
    method.setup(RunContext(epochs=100, steps_per_epoch=2))  # 1 epoch = 2 steps
    for step in range(2):
        assert _prototype_grad(method, policy, step) is None
        assert any(p.grad is not None for p in method.head.mlp.parameters())
        testing.step_end(method, step)
    # The global step decides, so a resumed run freezes as an uninterrupted one.
    assert _prototype_grad(method, policy, 2) is not None
    assert method.prototypes_frozen(testing.clock(method, 1))
    assert not method.prototypes_frozen(testing.clock(method, 2))


# --- evaluation and pictures ----------------------------------------------------------

def test_features_are_the_student_backbone_or_the_teacher_on_request():
    images = torch.rand(3, 1, 28, 28)
    method = _method()
    method.eval()
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.1)
    torch.testing.assert_close(method.features(images), method.backbone(images))
    teacher = attrs.evolve(method.config, evaluate_teacher=True)
    method.config = teacher
    torch.testing.assert_close(method.features(images), method.teacher_backbone(images))


def _buffers(module: torch.nn.Module, suffix: str) -> list[torch.Tensor]:
    return [b.clone() for name, b in module.named_buffers() if name.endswith(suffix)]


def test_teacher_keeps_its_own_batch_norm_statistics():
    method, policy = testing.build("dino")  # resnet18-narrow, BN in the head, 6 local crops
    images = testing.tiny_images()
    teachers = (method.teacher_backbone, method.teacher_head)
    for step in range(3):
        testing.step(method, policy, images, seed=step, at=step)
        before = [_buffers(m, "") for m in teachers]
        testing.step_end(method, step)
        # The EMA update moves the parameters and leaves the teacher's buffers alone.
        for module, old in zip(teachers, before, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(_buffers(module, ""), old,
                                                           strict=True))
    # The teacher's statistics come from its own passes: one per step over the global
    # crops, against the student backbone's two (global crops, then local crops).
    assert {int(n) for n in _buffers(method.teacher_backbone, "num_batches_tracked")} == {3}
    assert {int(n) for n in _buffers(method.backbone, "num_batches_tracked")} == {6}
    for teacher, student in ((method.teacher_backbone, method.backbone),
                             (method.teacher_head, method.head)):
        for a, b in zip(_buffers(teacher, "running_mean"), _buffers(student, "running_mean"),
                        strict=True):
            assert not torch.allclose(a, b)
    # The evaluated teacher normalises with those statistics, not the student's.
    method.config = attrs.evolve(method.config, evaluate_teacher=True)
    method.eval()
    x = torch.rand(4, 1, 28, 28)
    with_student_stats = copy.deepcopy(method.teacher_backbone)
    for target, source in zip(with_student_stats.buffers(), method.backbone.buffers(),
                              strict=True):
        target.copy_(source)
    with torch.no_grad():
        torch.testing.assert_close(method.features(x), method.teacher_backbone(x))
        assert not torch.allclose(method.features(x), with_student_stats(x))


def test_visualize_draws_cls_attention_on_a_vit_only():
    method = _method("vit-mini")
    method.eval()
    pictures = method.visualize(torch.randn(3, 1, 28, 28))
    assert set(pictures) == {"attention", "attention_heads"}
    assert pictures["attention"].shape == (3, 1, 28, 28)
    assert pictures["attention_heads"].shape == (3 * 4, 1, 28, 28)  # vit-mini: 4 heads
    for maps in pictures.values():
        assert maps.min() == 0 and maps.max() == 1
        # One value per 4x4 patch (nearest upsampling of the 7x7 grid).
        torch.testing.assert_close(maps, maps[..., ::4, ::4].repeat_interleave(4, -1)
                                   .repeat_interleave(4, -2))
    assert _method().visualize(torch.randn(3, 1, 28, 28)) == {}


def test_engine_logs_the_attention_pictures(tmp_path):
    registry = load_registry()
    config = RunConfig.build(registry, "dino", [
        "train.epochs=1", "train.batch_size=32", "train.train_subset=64",
        "eval.train_subset=100", "eval.test_subset=50", "method.num_local=2",
        "method.out_dim=64", "method.hidden_dim=64"],
        dataset="synthetic", backbone="vit-mini")
    run = pretrain(config, registry, tmp_path, progress=False)
    events = EventAccumulator(str(run.tensorboard)).Reload()
    assert sorted(events.Tags()["images"]) == ["pictures/attention",
                                               "pictures/attention_heads"]
    assert [event.step for event in events.Images("pictures/attention")] == [1]


# --- configuration --------------------------------------------------------------------

def test_overrides_are_validated():
    registry = load_registry()
    config = RunConfig.build(registry, "dino", ["method.num_local=2",
                                                "method.teacher_temp=0.04"])
    assert (config.method_config.num_local, config.method_config.teacher_temp) == (2, 0.04)
    for bad in ("num_local=-1", "num_local=33", "teacher_temp=0", "out_dim=0",
                "center_momentum=1", "base_momentum=1.5", "warmup_teacher_temp_epochs=-1",
                "evaluate_teacher=maybe"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            RunConfig.build(registry, "dino", [f"method.{bad}"])
