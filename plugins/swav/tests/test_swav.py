"""SwAV plugin tests."""

import math

import attrs
import pytest
import torch
import torch.nn.functional as F
from sslreg_swav import SwAV, SwAVConfig, SwAVLoss, cosine_scores, sinkhorn, view_options

from sslreg import ConfigError, OptimConfig, RunConfig, RunContext, load_registry, testing


def _method(steps_per_epoch: int = 4, **options) -> SwAV:
    net = load_registry().backbones.create("resnet18-narrow", in_channels=1, image_size=28)
    method = load_registry().build_method("swav", SwAVConfig(**options), net)
    method.setup(RunContext(epochs=2, steps_per_epoch=steps_per_epoch))
    return method


def _views(method: SwAV, seed: int = 0) -> list[torch.Tensor]:
    _, policy = testing.build("swav")
    return policy(testing.tiny_images(), torch.Generator().manual_seed(seed))


# Conformance and registration


def test_conformance_vit():
    testing.check_method("swav", backbone="vit-mini")


@pytest.mark.parametrize(("shape", "local"), [(testing.DataShape(1, 28), 12),
                                              (testing.DataShape(3, 32), 12),
                                              (testing.DataShape(3, 96), 36)])
def test_builds_and_steps_on_a_vit_at_every_image_size(shape, local):
    # At 96 px the ViT patch is 12 px: the old 40 px local crops could not be embedded.
    method, policy = testing.build("swav", backbone="vit-mini", shape=shape)
    views = policy(testing.tiny_images(4, shape=shape), torch.Generator().manual_seed(0))
    assert [v.shape[-1] for v in views] == [shape.size] * 2 + [local] * 6
    output = testing.training_step(method, views)
    output.loss.backward()
    assert torch.isfinite(output.loss) and method.backbone.patch_embed.weight.grad is not None


def test_a_local_size_must_be_whole_vit_patches():
    registry = load_registry()
    config = RunConfig.build(registry, "swav", ["method.local_size=40"], backbone="vit-mini")
    options = registry.methods.get("swav").policy_options(config.method_config, "vit")
    assert options["local_size"] == 40
    with pytest.raises(ConfigError, match=r"local_size=40 does not fit 96 px images.*\(12 "
                       r"px\).*one of 12, 24, 36, 48, 60, 72, 84, 96 \(default 36\)"):
        registry.views.create("swav-multicrop", channels=3, image_size=96, mean=(0.5,) * 3,
                              std=(0.25,) * 3, **options)
    with pytest.raises(ConfigError, match="local_size"):
        RunConfig.build(registry, "swav", ["method.local_size=0"])


def test_registered_with_paper_defaults():
    registry = load_registry()
    spec = registry.methods.get("swav")
    assert spec.plugin == "swav"
    assert (spec.views, spec.objective) == ("swav-multicrop", "swav")
    config = spec.config_class()
    assert (config.temperature, config.epsilon, config.sinkhorn_iterations) == (0.1, 0.05, 3)
    assert (config.proj_hidden_dim, config.proj_dim, config.num_prototypes) == (2048, 128, 3000)
    assert (config.freeze_prototypes_fraction, config.queue_length, config.num_local) == (
        1 / 400, 0, 6)
    assert spec.view_options(config) == {"num_local": 6}
    assert spec.optim == OptimConfig(name="lars", lr=0.6, weight_decay=1e-6, warmup_epochs=0)
    objective = registry.objectives.get("swav")
    assert objective.plugin == "swav" and objective.factory is SwAVLoss
    loss = registry.objectives.create("swav", temperature=0.2)
    assert (loss.temperature, loss.epsilon, loss.sinkhorn_iterations) == (0.2, 0.05, 3)


def test_views_are_swav_multicrop():
    method, policy = testing.build("swav")
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    assert policy.num_views == len(views) == 8
    assert policy.options.crop_scale == (0.14, 1.0) and policy.options.local_scale == (0.05, 0.14)
    assert [v.shape[-1] for v in views] == [28, 28] + [12] * 6
    registry = load_registry()
    config = RunConfig.build(registry, "swav", ["method.num_local=2"])
    assert view_options(config.method_config)["num_local"] == 2


def test_head_architecture():
    method = _method(proj_hidden_dim=64, proj_dim=32, num_prototypes=10)
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (method.backbone.output_dim, 64), (64, 32)]
    assert method.prototypes.weight.shape == (10, 32) and method.prototypes.bias is None
    z = method.embed(torch.randn(4, 1, 28, 28))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))


# Sinkhorn-Knopp


def _loop_sinkhorn(scores: list[list[float]], epsilon: float, iterations: int) -> list[list]:
    """The paper's algorithm written with plain loops over a B x K list of lists."""
    b, k = len(scores), len(scores[0])
    q = [[math.exp(scores[i][j] / epsilon) for i in range(b)] for j in range(k)]  # K x B
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        for j in range(k):  # every prototype's mass to 1/K
            row = sum(q[j])
            q[j] = [x / row / k for x in q[j]]
        for i in range(b):  # every sample's mass to 1/B
            column = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / column / b
    return [[q[j][i] * b for j in range(k)] for i in range(b)]  # B x K


def test_sinkhorn_matches_a_plain_loop_on_4x3():
    scores = [[0.9, 0.1, -0.2], [0.8, 0.3, 0.0], [0.7, -0.5, 0.4], [0.95, 0.2, 0.1]]
    for iterations in (1, 3):
        expected = torch.tensor(_loop_sinkhorn(scores, 0.5, iterations))
        torch.testing.assert_close(sinkhorn(torch.tensor(scores), 0.5, iterations), expected)
    expected = torch.tensor(_loop_sinkhorn(scores, 0.05, 3), dtype=torch.float32)
    torch.testing.assert_close(sinkhorn(torch.tensor(scores), 0.05, 3), expected)


def test_sinkhorn_marginals():
    scores = F.normalize(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    q = sinkhorn(scores, epsilon=0.5, iterations=3)
    # Each sample's code is a distribution (exact after the last column rescaling)...
    torch.testing.assert_close(q.sum(dim=1), torch.ones(12))
    assert (q >= 0).all()
    # ...and the prototypes are used equally, B/K each (exact as the rounds go on).
    torch.testing.assert_close(q.sum(dim=0), torch.full((4,), 3.0), atol=0.05, rtol=0)
    many = sinkhorn(scores, epsilon=0.5, iterations=200)
    torch.testing.assert_close(many.sum(dim=0), torch.full((4,), 3.0))
    torch.testing.assert_close(many.sum(dim=1), torch.ones(12))


def test_sinkhorn_spreads_identical_samples_over_prototypes():
    # Every sample prefers prototype 0: a plain softmax would collapse onto it, the
    # equipartition gives each of the 2 prototypes half of each sample.
    scores = torch.tensor([[1.0, -1.0]] * 4)
    torch.testing.assert_close(sinkhorn(scores), torch.full((4, 2), 0.5))
    assert torch.softmax(scores / 0.05, dim=1)[:, 0].min() > 0.99


def test_sinkhorn_is_a_float32_target_without_gradient():
    scores = torch.randn(6, 5, requires_grad=True)
    q = sinkhorn(scores.bfloat16())
    assert q.dtype == torch.float32 and not q.requires_grad
    # Shifting every score by a constant changes nothing (the max is subtracted first).
    torch.testing.assert_close(sinkhorn(scores + 3.0), sinkhorn(scores))


# The swapped-prediction loss


def test_loss_on_hand_checkable_scores():
    loss = SwAVLoss(temperature=0.1, epsilon=0.05)
    agree = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])  # sample 0 -> prototype 0, 1 -> 1
    swapped = agree.flip(1)
    # Both global crops' codes are ~one-hot (off-diagonal sigma(-40) ~ 4e-18). Each is
    # predicted by the other global crop, p = sigma(20): -log p = log(1 + e^-20), and by
    # the local crop, which prefers the other prototype: -log sigma(-20) = 20 +
    # log(1 + e^-20). Averaged over the 2 predicting crops, then the 2 assigned crops:
    expected = 10.0 + math.log1p(math.exp(-20.0))
    torch.testing.assert_close(loss([agree, agree, swapped]), torch.tensor(expected))
    # Uniform scores: uniform codes and predictions, cross-entropy log K.
    flat = torch.zeros(3, 4)
    torch.testing.assert_close(loss([flat, flat, flat, flat]), torch.tensor(math.log(4)))


def _reference_loss(scores, temperature=0.1, epsilon=0.05, iterations=3):
    """Paper eq. 1-2 written pair by pair."""
    total, pairs = 0.0, 0
    for i in range(2):
        q = torch.tensor(_loop_sinkhorn(scores[i].tolist(), epsilon, iterations))
        for v in range(len(scores)):
            if v != i:
                p = torch.softmax(scores[v] / temperature, dim=1)
                total = total - (q * p.log()).sum(dim=1).mean()
                pairs += 1
    return total / pairs


def test_loss_matches_the_pairwise_reference():
    generator = torch.Generator().manual_seed(1)
    scores = [F.normalize(torch.randn(5, 7, generator=generator), dim=1) for _ in range(4)]
    torch.testing.assert_close(SwAVLoss()(scores), _reference_loss(scores).float())


def test_two_global_crops_alone_predict_each_other():
    agree = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    # num_local=0: each global crop's code is predicted by the other one only.
    expected = math.log1p(math.exp(-20.0))
    torch.testing.assert_close(SwAVLoss()([agree, agree]), torch.tensor(expected))
    method = _method(num_local=0)
    method.train()
    _, policy = testing.build("swav")
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))[:2]
    assert torch.isfinite(testing.training_step(method, views).loss)


def test_codes_take_no_gradient_and_predictions_do():
    scores = [torch.randn(4, 3, requires_grad=True) for _ in range(3)]
    SwAVLoss()(scores).backward()
    assert all(s.grad.abs().sum() > 0 for s in scores)
    # Only through the predictions: the loss with fixed codes has the same gradient.
    fixed = [s.detach().clone().requires_grad_() for s in scores]
    codes = [sinkhorn(s) for s in scores[:2]]
    total = 0
    for i, q in enumerate(codes):
        others = [v for v in range(3) if v != i]
        total = total + sum(-(q * torch.log_softmax(fixed[v] / 0.1, 1)).sum(1).mean()
                            for v in others) / 2
    (total / 2).backward()
    for s, f in zip(scores, fixed, strict=True):
        torch.testing.assert_close(s.grad, f.grad)


def test_loss_refuses_bad_input():
    with pytest.raises(ValueError, match="temperature"):
        SwAVLoss(temperature=0)
    with pytest.raises(ValueError, match="sinkhorn_iterations"):
        SwAVLoss(sinkhorn_iterations=0)
    with pytest.raises(ValueError, match="crops"):
        SwAVLoss()([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="same shape"):
        SwAVLoss()([torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4)])


# The method's special steps


def test_training_step_is_the_loss_of_the_normalised_crops():
    method = _method()
    method.train()
    views = _views(method)
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)  # off the sphere: the step puts it back
    output = testing.training_step(method, views)
    weight = method.prototypes.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(len(weight)))
    z_global = method.embed(torch.cat(views[:2]))
    z_local = method.embed(torch.cat(views[2:]))
    z = torch.cat([z_global, z_local])
    scores = list((z @ weight.T).split(len(views[0])))
    torch.testing.assert_close(output.loss, method.objective(scores))
    torch.testing.assert_close(output.embeddings, z_global[: len(views[0])])
    assert not output.embeddings.requires_grad


def test_scores_stay_float32_under_bf16_autocast():
    z = F.normalize(torch.randn(6, 8), dim=1)
    prototypes = F.normalize(torch.randn(5, 8), dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = cosine_scores(z, prototypes)
        method = _method()
        method.train()
        loss = testing.training_step(method, _views(method)).loss
    assert scores.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(scores, z @ prototypes.T)
    assert torch.isfinite(loss)


def test_prototypes_frozen_for_their_share_of_the_run():
    method = _method(steps_per_epoch=3, freeze_prototypes_fraction=0.5)  # 3 of 6 steps
    assert method.freeze_steps == 3
    method.train()
    views = _views(method)
    for step in range(5):
        method.zero_grad(set_to_none=True)
        output = testing.training_step(method, views, at=step)
        output.loss.backward()
        frozen = step < 3
        assert (method.prototypes.weight.grad is None) == frozen, step
        assert output.metrics["prototypes_frozen"] == float(frozen)
        assert all(p.grad is not None for p in method.backbone.parameters())
        testing.step_end(method, step)


def test_freeze_steps_scale_with_the_run():
    method = _method()
    # The batch-256 reference script: 400 epochs of 5005 steps, the first 5005 frozen.
    method.setup(RunContext(epochs=400, steps_per_epoch=5005))
    assert method.freeze_steps == 5005
    method.setup(RunContext(epochs=2, steps_per_epoch=23))  # 46 steps: 0.115 rounds to 0
    assert method.freeze_steps == 0 and not method.prototypes_frozen(testing.clock(method))
    method = _method(freeze_prototypes_fraction=0.05)
    method.setup(RunContext(epochs=10, steps_per_epoch=100))
    assert method.freeze_steps == 50
    method = _method(freeze_prototypes_fraction=1)
    assert method.freeze_steps == 8  # _method's run: 2 epochs of 4 steps
    assert all(method.prototypes_frozen(testing.clock(method, step)) for step in range(8))


def test_freezing_follows_the_global_step_so_a_resumed_run_freezes_alike():
    # Nothing counts steps inside SwAV: a fresh model at step 3 is where a resumed one is.
    first = _method(steps_per_epoch=3, freeze_prototypes_fraction=0.5)
    assert first.prototypes_frozen(testing.clock(first, 2))
    assert not first.prototypes_frozen(testing.clock(first, 3))
    assert "step_count" not in first.state_dict() and "queue_filled" not in first.state_dict()


def test_queue_enqueue_dequeue():
    method = _method(proj_dim=2, num_prototypes=3, queue_length=5, queue_start_epoch=0)
    assert method.queue.shape == (2, 5, 2)
    batches = [torch.arange(4.0).view(2, 2, 1).expand(2, 2, 2) + 10 * n for n in range(3)]
    for batch in batches[:2]:
        method.enqueue(batch)
    # Pushes of 2 rows from step 0 on: 4 rows after two steps, 5 (all) after three.
    assert not method.queue_full(testing.clock(method, 2), batch=2)
    method.enqueue(batches[2])
    assert method.queue_full(testing.clock(method, 3), batch=2)
    # Newest first; the oldest sample of the first batch fell off the end.
    expected_rows = [20, 21, 10, 11, 0]  # global crop 0's first coordinate
    assert method.queue[0, :, 0].tolist() == expected_rows
    assert method.queue[1, :, 0].tolist() == [r + 2 for r in expected_rows]


def test_queue_starts_after_its_epoch_and_is_used_only_for_codes():
    method = _method(steps_per_epoch=2, queue_length=16, queue_start_epoch=1,
                     num_prototypes=20)
    method.train()
    queue_used = []
    for step in range(5):  # batches of 8: the queue is full after 2 steps of filling
        output = testing.training_step(method, _views(method, seed=step), at=step)
        queue_used.append(output.metrics["queue_in_use"].item())
        testing.step_end(method, step)
    # Steps 0-1: before the queue's epoch; 2-3: filling; 4: full and used.
    assert queue_used == [0, 0, 0, 0, 1]
    assert "queue" in method.state_dict() and method.queue.abs().sum(dim=-1).all()
    assert not method.queue.requires_grad
    # With the queue, codes come from Sinkhorn over queue + batch; predictions are
    # unchanged, so the loss is the criterion with the queue's scores.
    views = _views(method, seed=5)
    output = testing.training_step(method, views, at=5)
    weight = method.prototypes.weight
    z = torch.cat([method.embed(torch.cat(views[:2])), method.embed(torch.cat(views[2:]))])
    scores = list((z @ weight.T).split(8))
    queue_scores = [method.queue[i] @ weight.T for i in range(2)]
    torch.testing.assert_close(output.loss, method.objective(scores, queue_scores))
    assert not torch.allclose(output.loss, method.objective(scores))
    codes = method.objective.codes(scores[0], queue_scores[0])
    torch.testing.assert_close(codes, sinkhorn(torch.cat([queue_scores[0], scores[0]]))[-8:])


def test_no_queue_by_default():
    method = _method()
    assert method.queue.shape == (2, 0, 128)
    clock = testing.clock(method, 7)
    assert not method.queue_started(clock) and not method.queue_full(clock, batch=8)


def test_overrides_are_validated():
    registry = load_registry()
    config = RunConfig.build(registry, "swav", ["method.queue_length=3840",
                                                "method.num_prototypes=500"])
    assert (config.method_config.queue_length, config.method_config.num_prototypes) == (3840, 500)
    for bad in ("temperature=0", "epsilon=-1", "num_prototypes=1", "queue_length=-5",
                "num_local=33", "freeze_prototypes_fraction=soon",
                "freeze_prototypes_fraction=1.5", "sinkhorn_iterations=0"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            RunConfig.build(registry, "swav", [f"method.{bad}"])
    with pytest.raises(ValueError):
        attrs.evolve(SwAVConfig(), proj_dim=0)
