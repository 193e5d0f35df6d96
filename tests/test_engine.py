"""Optimizers, schedules, checkpoints, resume and divergence."""

import math

import pytest
import torch

from sslreg import CheckpointError, DivergedError, OptimConfig, RunConfig, Schedule
from sslreg.engine import assemble, pretrain
from sslreg.engine import trainer as trainer_module
from sslreg.engine.checkpoint import load_checkpoint, save_checkpoint
from sslreg.engine.optim import LARS, lr_schedule, param_groups
from sslreg.engine.trainer import load_split
from sslreg.runs import RunDir

TINY = ["train.epochs=2", "train.batch_size=32", "train.train_subset=128", "train.log_every=2",
        "eval.train_subset=200", "eval.test_subset=100", "optim.warmup_epochs=0"]


def tiny_config(registry, method="simclr", extra=()):
    return RunConfig.build(registry, method, [*TINY, *extra], dataset="synthetic",
                           backbone="resnet18-narrow")


def test_schedule_warms_up_then_decays_to_zero():
    rates = lr_schedule(OptimConfig(lr=0.4, warmup_epochs=2), batch_size=512,
                        steps_per_epoch=10, epochs=10)
    assert len(rates) == 100
    assert rates[0] == pytest.approx(0.8 / 20) and rates[19] == pytest.approx(0.8)
    assert rates.max() == pytest.approx(0.8)
    assert rates[-1] < 1e-3 and all(rates[20:][i] >= rates[20:][i + 1] for i in range(79))


def test_warmup_is_capped_at_half_the_run():
    rates = lr_schedule(OptimConfig(lr=0.256, warmup_epochs=10), batch_size=256,
                        steps_per_epoch=5, epochs=2)
    assert rates[3] < 0.256 and rates[4] == pytest.approx(0.256) and rates[6] < 0.256


def test_lars_scales_update_by_trust_ratio():
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # norm 5
    weight.grad = torch.tensor([[0.6, 0.8]])  # norm 1
    optimizer = LARS([{"params": [weight], "weight_decay": 0.0, "lars": True}], lr=1.0,
                     momentum=0.0, eta=0.01)
    optimizer.step()
    # trust = eta * |w| / |g| = 0.05, so w <- w - 0.05 g
    torch.testing.assert_close(weight.data, torch.tensor([[3.0 - 0.03, 4.0 - 0.04]]))


def test_biases_and_norms_skip_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.ndim for p in decay["params"]] == [2]
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})

    def failing_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_corrupt_and_mismatched_checkpoints_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*delete it to start over"):
        load_checkpoint(path)
    save_checkpoint(path, {"config_digest": "aaa"})
    with pytest.raises(CheckpointError, match="written for config aaa, not this run's bbb"):
        load_checkpoint(path, expected_digest="bbb")


def test_a_checkpoint_from_before_the_schedules_is_refused_in_one_line(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": 1, "config_digest": "aaa", "model": {}}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, expected_digest="aaa")
    message = str(error.value)
    assert "\n" not in message
    assert message == (f"checkpoint {path} is format 1, from before the engine kept its "
                       "schedules; this sslreg cannot resume or evaluate it: train the run "
                       "again (delete it or use another --out), or use the sslreg that wrote it")


@pytest.mark.parametrize(("schedule", "expected"), [
    (Schedule.constant(0.3), [0.3] * 5),
    # A warm-up over 2.5 steps: s / 2.5 of the way, then the end value.
    (Schedule.linear(0.04, 0.07, steps=2.5), [0.04, 0.052, 0.064, 0.07, 0.07]),
    (Schedule.linear(0.04, 0.07, steps=0), [0.07] * 5),
    # DINO's weight decay: 0.04 on the first step, 0.4 on the last, cosine between.
    (Schedule.cosine(0.04, 0.4), [0.4 - 0.36 * (1 + math.cos(math.pi * s / 4)) / 2
                                  for s in range(5)]),
    # An EMA momentum for the state after step s: t = (s + 1) / n, 1 after the last.
    (Schedule.cosine(0.996, 1.0, after_step=True),
     [1 - 0.004 * (1 + math.cos(math.pi * (s + 1) / 5)) / 2 for s in range(5)]),
])
def test_a_schedule_equals_its_formula_at_every_step(schedule, expected):
    values = schedule.values(5)
    assert values.dtype == torch.float64 and len(values) == 5
    assert values.tolist() == pytest.approx(expected, abs=1e-15)


def test_cosine_schedules_start_and_end_where_declared():
    wd = Schedule.cosine(0.04, 0.4).values(1000)
    assert wd[0].item() == pytest.approx(0.04, abs=1e-16) and wd[-1].item() == 0.4
    assert wd[500].item() == pytest.approx(0.22 - 0.18 * math.cos(math.pi * 500 / 999))
    assert Schedule.cosine(0.04, 0.4).values(1).tolist() == pytest.approx([0.04])  # one step


def _weights(run):
    return load_checkpoint(run.checkpoint)["model"]


def test_interrupted_run_resumes_to_the_same_weights(registry, tmp_path,
                                                     interrupt_second_epoch):
    config = tiny_config(registry)
    straight = pretrain(config, registry, tmp_path / "a", evaluate=False, progress=False)
    with interrupt_second_epoch():
        pretrain(config, registry, tmp_path / "b", evaluate=False, progress=False)
    interrupted = RunDir.for_config(tmp_path / "b", config)
    assert load_checkpoint(interrupted.checkpoint)["epoch"] == 1
    resumed = pretrain(config, registry, tmp_path / "b", resume=True, evaluate=False,
                       progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_learning_curve_is_logged_each_epoch_and_survives_resume(registry, tmp_path,
                                                                  interrupt_second_epoch):
    config = tiny_config(registry, extra=["eval.curve_every=1", "eval.curve_images=100"])
    straight = pretrain(config, registry, tmp_path / "a", evaluate=False, progress=False)
    curve = straight.read_json(straight.train_info)["curve"]
    assert [epoch for epoch, _ in curve] == [1, 2]
    assert all(0 <= accuracy <= 1 for _, accuracy in curve)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight.tensorboard)).Reload()
    logged = [(e.step, round(e.value, 5)) for e in events.Scalars("curve/knn_acc")]
    assert logged == [tuple(point) for point in curve]
    # The last point is the kNN of the final weights on the curve's fixed images.
    trainer = trainer_module.build_trainer(assemble(config, registry), registry, straight)
    trainer_module.restore(trainer)
    trainer.setup.method.eval()
    again = trainer_module.curve_point(trainer.logbook.curve, trainer.setup.method.features,
                                       trainer.setup.device)
    assert round(again, 5) == curve[-1][1]
    # Interrupted after epoch 1 and resumed: the same curve.
    with interrupt_second_epoch():
        pretrain(config, registry, tmp_path / "b", evaluate=False, progress=False)
    resumed = pretrain(config, registry, tmp_path / "b", resume=True, evaluate=False,
                       progress=False)
    assert resumed.read_json(resumed.train_info)["curve"] == curve


def test_model_flops_per_image_count_the_backbone_over_every_view(registry, tmp_path):
    from sslreg.backbones.flops import forward_flops
    from sslreg.engine.mfu import mfu

    config = tiny_config(registry, extra=["train.epochs=1"])
    run = pretrain(config, registry, tmp_path, evaluate=False, progress=False)
    info = run.read_json(run.train_info)
    data = load_split(config, registry, "train")
    backbone = registry.backbones.create("resnet18-narrow", in_channels=data.channels,
                                         image_size=data.images.shape[-1])
    forward = forward_flops(backbone, data.channels, data.images.shape[-1])
    # SimCLR: two full-size views, forward + backward taken as 3 x forward.
    assert info["model_flops_per_image"] == round(3 * 2 * forward)
    assert info["mfu"] is None  # a CPU has no bf16 peak in the table: no guessed MFU
    assert mfu(1000.0, 3 * 2 * forward, peak=1e12) == 1000.0 * 6 * forward / 1e12


def test_compile_switch_compiles_the_backbone_in_place(registry, tmp_path):
    from sslreg.engine.trainer import build_trainer

    compiled_config = tiny_config(registry, extra=["train.compile=true"])
    eager = build_trainer(assemble(tiny_config(registry), registry), registry,
                          RunDir(tmp_path / "a"))
    compiled = build_trainer(assemble(compiled_config, registry), registry,
                             RunDir(tmp_path / "b"))
    eager, compiled = eager.setup.method, compiled.setup.method
    assert getattr(eager.backbone, "_compiled_call_impl", None) is None
    assert compiled.backbone._compiled_call_impl is not None
    # Checkpoints of compiled and eager runs stay interchangeable.
    assert list(compiled.state_dict()) == list(eager.state_dict())


def test_existing_run_is_not_overwritten(registry, tmp_path):
    config = tiny_config(registry, extra=["train.epochs=1"])
    run = pretrain(config, registry, tmp_path, evaluate=False, progress=False)
    before = run.checkpoint.read_bytes()
    with pytest.raises(Exception, match="already exists; pass --resume"):
        pretrain(config, registry, tmp_path, evaluate=False, progress=False)
    assert run.checkpoint.read_bytes() == before


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(registry, tmp_path, monkeypatch):
    config = tiny_config(registry)
    original = trainer_module.train_step

    def poisoned(trainer, batch, labels, views_rng):
        output = original(trainer, batch, labels, views_rng)
        if trainer.progress.epoch == 1:
            output = type(output)(loss=output.loss * math.nan, embeddings=output.embeddings)
        return output

    monkeypatch.setattr(trainer_module, "train_step", poisoned)
    with pytest.raises(DivergedError,
                       match="non-finite.*last good checkpoint \\(epoch 1, step 4\\)"):
        pretrain(config, registry, tmp_path, evaluate=False, progress=False)
    run = RunDir.for_config(tmp_path, config)
    state = load_checkpoint(run.checkpoint)
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert run.read_json(run.train_info)["status"] == "diverged"


def test_run_writes_config_events_and_result(registry, tmp_path):
    config = tiny_config(registry, "byol", ["train.epochs=1"])
    run = pretrain(config, registry, tmp_path, progress=False)
    assert RunConfig.from_dict(run.read_json(run.config), registry) == config
    result = run.read_json(run.result)
    assert set(result["metrics"]) >= {"linear_acc", "knn20_acc", "knn200_acc"}
    assert result["checkpoint_epoch"] == 1
    assert set(result["provenance"]) == {"git_commit", "versions", "recorded_at"}
    info = run.read_json(run.train_info)
    assert info["status"] == "trained" and info["images_per_s"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run.tensorboard)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/images_per_s", "monitor/rankme",
            "monitor/embedding_std"} <= tags
    # The projector: test features with class names and image sprites.
    assert "test_features" in (run.tensorboard / "projector_config.pbtxt").read_text()
    (metadata,) = run.tensorboard.glob("*/test_features/metadata.tsv")
    test = load_split(config, registry, "test")
    names = metadata.read_text().split("\n")[: len(test.labels[:5])]
    assert names == [test.classes[y] for y in test.labels[:5].tolist()]
    assert list(metadata.parent.glob("sprite.png"))


def test_adamw_takes_the_configured_betas_and_eps():
    from sslreg.engine.optim import build_optimizer

    model = torch.nn.Linear(3, 2)
    config = OptimConfig(name="adamw", betas=(0.9, 0.95), eps=1e-6)
    optimizer = build_optimizer(model, config, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert all(group["betas"] == (0.9, 0.95) for group in optimizer.param_groups)
    assert all(group["eps"] == 1e-6 for group in optimizer.param_groups)
    with pytest.raises(ValueError, match="eps"):
        OptimConfig(eps=0)


def test_a_run_is_evaluated_again_after_its_method_config_gained_a_key(registry, tmp_path):
    """Its directory is named by the digest its checkpoint was written under; a key
    added to the method's config since (DINO's and SwAV's local_size) changes the digest
    recomputed from config.json, not the run. Another run's checkpoint is refused."""
    import json
    import shutil

    from sslreg.engine import evaluate_run

    config = tiny_config(registry, extra=["train.epochs=1"])
    run = pretrain(config, registry, tmp_path, evaluate=False, progress=False)
    stored = json.loads(run.config.read_text())
    stored["method_config"]["temperature"] = 0.25  # as if a default had been added
    run.config.write_text(json.dumps(stored))
    assert run.load_config(registry).digest() != config.digest()
    assert "linear_acc" in evaluate_run(run, registry)["metrics"]
    other = RunDir(tmp_path / "simclr-synthetic-resnet18-narrow-seed0-00000000")
    other.path.mkdir()
    shutil.copy(run.config, other.config)
    shutil.copy(run.checkpoint, other.checkpoint)
    with pytest.raises(CheckpointError, match="was written for config"):
        evaluate_run(other, registry)
