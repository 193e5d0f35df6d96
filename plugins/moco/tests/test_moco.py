"""MoCo's tests."""

import math

import pytest
import torch
import torch.nn.functional as F
from sslreg_moco import KeyQueue, MoCo, MoCoConfig
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from sslreg import ConfigError, RunConfig, RunContext, load_registry, testing
from sslreg.nn.split_bn import SplitBatchNorm, convert_split_batchnorm, split_count


def _method(**options) -> MoCo:
    net = load_registry().backbones.create("resnet18-narrow", in_channels=1, image_size=28)
    return load_registry().build_method("moco", MoCoConfig(**options), net)


def test_conformance_v3():
    registry = load_registry()
    config = RunConfig.build(registry, "moco", ["method.version=3"])
    assert config.method_config.version == 3
    method = registry.build_method("moco", config.method_config, registry.backbones.create(
        "resnet18-narrow", in_channels=1, image_size=28))
    _, policy = testing.build("moco")
    output = testing.step(method, policy, testing.tiny_images())
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert all(p.grad is None for p in method.key_backbone.parameters())


def test_registered_with_paper_defaults():
    spec = load_registry().methods.get("moco")
    assert spec.plugin == "moco"
    assert (spec.views, spec.objective) == ("simclr", "info_nce")
    config = spec.config_class()
    assert (config.version, config.temperature, config.base_momentum) == (2, 0.2, 0.99)
    assert config.head_sizes == (2048, 128)
    assert MoCoConfig(version=3).base_momentum == 0.99
    assert spec.optim.name == "sgd" and spec.optim.lr == 0.3
    assert config.uses_shuffle_bn and config.bn_splits == 8
    assert not MoCoConfig(version=3).uses_shuffle_bn


def test_queue_is_a_fifo_that_wraps_around():
    # Each step pushes one batch of 3 keys; the steps done say where the next one goes.
    queue = KeyQueue(length=4, dim=2)
    assert queue.negatives(steps=0, batch=3) is None  # starts empty
    first = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    queue.push(first, steps=0)
    torch.testing.assert_close(queue.negatives(1, 3), F.normalize(first, dim=1))
    queue.push(torch.tensor([[0.0, -1.0], [-5.0, 0.0], [0.0, 7.0]]), steps=1)  # rows 3, 0, 1
    negatives = queue.negatives(2, 3)
    assert negatives.shape == (4, 2)
    torch.testing.assert_close(negatives[[3, 0, 1]],
                               torch.tensor([[0.0, -1.0], [-1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(negatives[2], F.normalize(first[2], dim=0))
    negatives.add_(1.0)  # a copy: changing it leaves the queue alone
    torch.testing.assert_close(queue.keys[3], torch.tensor([0.0, -1.0]))


def test_queue_survives_a_state_dict_round_trip_and_keeps_no_counter():
    queue = KeyQueue(length=4, dim=2)
    queue.push(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), steps=0)
    restored = KeyQueue(length=4, dim=2)
    restored.load_state_dict(queue.state_dict())
    assert list(queue.state_dict()) == ["keys"]
    torch.testing.assert_close(restored.negatives(1, 2), queue.negatives(1, 2))


def test_v2_loss_is_info_nce_against_the_queue_and_keys_are_queued_at_step_end():
    method, policy = testing.build("moco")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    method.queue.push(torch.randn(16, 128), steps=0)  # two steps' keys of 8 images
    queue_before = method.queue.negatives(steps=2, batch=8)
    assert len(queue_before) == 16
    torch.manual_seed(1)  # the key encoder's shuffle
    output = testing.training_step(method, views, at=2)
    q = F.normalize(method.projector(method.backbone(views[0])), dim=1)
    torch.manual_seed(1)
    k = F.normalize(method.keys(views[1]), dim=1)
    # Written out: logits [q.k+, q.queue] / T, the positive at index 0.
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue_before.T], dim=1) / 0.2
    expected = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    torch.testing.assert_close(output.loss, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(method.queue.keys[:16], queue_before)  # not yet queued
    assert not method.queue.keys[16:].any()
    testing.step_end(method, 2)  # after the optimizer step
    torch.testing.assert_close(method.queue.keys[16:24], k)
    bound = math.log(1 + 16) - expected
    torch.testing.assert_close(output.metrics["infonce_bound"], bound, rtol=1e-4, atol=1e-5)


def test_v3_loss_is_symmetric_in_batch_and_scaled_by_two_t():
    method = _method(version=3, proj_hidden_dim=32, proj_dim=16)
    method.train()
    views = [torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28)]
    loss = testing.training_step(method, views).loss
    q1, q2 = (method.predictor(method.projector(method.backbone(v))) for v in views)
    k1, k2 = (method.key_projector(method.key_backbone(v)) for v in views)

    def ctr(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2
        return F.cross_entropy(logits, torch.arange(len(q))) * 2 * 0.2

    torch.testing.assert_close(loss, ctr(q1, k2) + ctr(q2, k1), rtol=1e-4, atol=1e-5)


def test_v3_normalises_each_view_by_its_own_batch():
    """One pass per view, as v3's code does: the queries of view 1 do not depend on the
    images of view 2."""
    method = _method(version=3, proj_hidden_dim=32, proj_dim=16)
    method.train()
    view1, view2 = torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28)
    first = testing.training_step(method, [view1, view2]).embeddings
    second = testing.training_step(method, [view1, view2 * 5 + 1]).embeddings
    torch.testing.assert_close(first, second)


def test_v3_heads_follow_the_backbone_family():
    """moco-v3's builder.py: a ResNet gets a 2-layer projector and a predictor without
    a final BN, a ViT a 3-layer projector and a predictor ending in the affine-free BN."""
    registry = load_registry()
    config = MoCoConfig(version=3, proj_hidden_dim=32, proj_dim=16)
    resnet = _method(version=3, proj_hidden_dim=32, proj_dim=16)
    vit = registry.build_method(
        "moco", config, registry.backbones.create("vit-mini", in_channels=1, image_size=28))

    def linears(head):
        return sum(isinstance(m, nn.Linear) for m in head)

    for method, depth in ((resnet, 2), (vit, 3)):
        assert linears(method.projector) == depth and linears(method.predictor) == 2
        last = method.projector[-1]
        assert isinstance(last, nn.BatchNorm1d) and not last.affine
    assert isinstance(resnet.predictor[-1], nn.Linear)
    assert isinstance(vit.predictor[-1], nn.BatchNorm1d) and not vit.predictor[-1].affine


@pytest.mark.parametrize("shape", [(12, 3), (12, 3, 4, 4)])
def test_split_batchnorm_normalises_each_sub_batch_on_its_own(shape):
    """Training: sub-batch s (rows s, s + 3, ...) is normalised as plain BN would
    normalise it alone, and the running statistics move to the sub-batches' mean.
    Eval: plain BN with the same running statistics."""
    torch.manual_seed(0)
    x = torch.randn(shape) * 2 + 1
    split = SplitBatchNorm(3, num_splits=3)
    with torch.no_grad():
        split.weight.uniform_(0.5, 1.5)
        split.bias.uniform_(-1, 1)
    plain_class = nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d
    plain = [plain_class(3) for _ in range(3)]
    for bn in plain:
        bn.load_state_dict(split.state_dict())  # same names: checkpoints load either way
    out = split(x)
    for s, bn in enumerate(plain):
        torch.testing.assert_close(out[s::3], bn(x[s::3]))
    torch.testing.assert_close(split.running_mean,
                               torch.stack([bn.running_mean for bn in plain]).mean(0))
    torch.testing.assert_close(split.running_var,
                               torch.stack([bn.running_var for bn in plain]).mean(0))
    assert int(split.num_batches_tracked) == 1
    eval_bn = plain_class(3)
    eval_bn.load_state_dict(split.state_dict())
    torch.testing.assert_close(split.eval()(x), eval_bn.eval()(x))


def test_split_count_uses_fewer_sub_batches_when_the_batch_is_small_or_odd():
    assert split_count(256, 8) == 8
    assert split_count(8, 8) == 4  # at least 2 rows per sub-batch
    assert split_count(12, 8) == 6
    assert split_count(7, 8) == 1
    out = SplitBatchNorm(2, num_splits=8)(torch.randn(8, 2))  # 4 sub-batches of 2
    torch.testing.assert_close(out[0::4].mean(0), torch.zeros(2), atol=1e-5, rtol=0)


def test_convert_split_batchnorm_keeps_the_tensors():
    bn = nn.BatchNorm1d(4)
    head = convert_split_batchnorm(nn.Sequential(nn.Linear(2, 4), bn), num_splits=2)
    assert isinstance(head[1], SplitBatchNorm) and head[1].num_splits == 2
    assert head[1].weight is bn.weight and head[1].running_mean is bn.running_mean


def test_shuffle_bn_splits_every_batchnorm_of_both_encoders():
    method = _method()
    assert method.state_dict().keys() == _method(shuffle_bn=False).state_dict().keys()
    for part in (method.backbone, method.projector, method.key_backbone,
                 method.key_projector):
        norms = [m for m in part.modules() if isinstance(m, (_BatchNorm, SplitBatchNorm))]
        assert norms and all(isinstance(m, SplitBatchNorm) for m in norms)
    assert not any(isinstance(m, SplitBatchNorm) for m in _method(version=3).modules())


def test_shuffled_keys_come_back_in_input_order():
    """Key i is image i's, computed in the shuffled batch; the shuffle changes the
    sub-batches, so the keys differ from an unshuffled pass."""
    method = _method()
    method.train()
    view = torch.randn(16, 1, 28, 28)
    torch.manual_seed(0)
    keys = method.keys(view)
    torch.manual_seed(0)
    order = torch.randperm(16)
    with torch.no_grad():
        shuffled = method.key_projector(method.key_backbone(view[order]))
        unshuffled = method.key_projector(method.key_backbone(view))
    torch.testing.assert_close(keys[order], shuffled)
    assert not torch.allclose(keys, unshuffled, atol=1e-3)


def test_key_encoder_follows_the_query_encoder_by_ema():
    method = _method(momentum=0.9)
    before = [p.clone() for p in method.key_backbone.parameters()]
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    testing.step_end(method)  # v2: a constant momentum
    for key, old, query in zip(method.key_backbone.parameters(), before,
                               method.backbone.parameters(), strict=True):
        torch.testing.assert_close(key, 0.9 * old + 0.1 * query)


def test_momentum_schedules_give_the_values_moco_computed_itself_before():
    from sslreg.nn import cosine_momentum

    context = RunContext(epochs=3, steps_per_epoch=5)
    v2 = _method().schedules(context)["momentum"].values(context.total_steps)
    assert v2.tolist() == [0.99] * 15
    v3 = _method(version=3).schedules(context)["momentum"].values(context.total_steps)
    assert v3.tolist() == [cosine_momentum(0.99, (step + 1) / 15) for step in range(15)]


def test_overrides_are_validated():
    registry = load_registry()
    with pytest.raises(ConfigError, match="version"):
        RunConfig.build(registry, "moco", ["method.version=4"])
    with pytest.raises(ConfigError, match="queue_length"):
        RunConfig.build(registry, "moco", ["method.queue_length=0"])
    with pytest.raises(ConfigError, match="momentum"):
        RunConfig.build(registry, "moco", ["method.momentum=1.5"])
    with pytest.raises(ConfigError, match="bn_splits"):
        RunConfig.build(registry, "moco", ["method.bn_splits=0"])
    config = RunConfig.build(registry, "moco", ["method.shuffle_bn=false"]).method_config
    assert not config.uses_shuffle_bn
