import attrs
import pytest
import torch
import torch.nn.functional as F
from sslreg_simsiam import SimSiam, SimSiamConfig

from sslreg import ConfigError, OptimConfig, RunConfig, load_registry, testing


def _method(**options) -> SimSiam:
    net = load_registry().backbones.create("resnet18-narrow", in_channels=1, image_size=28)
    return load_registry().build_method("simsiam", SimSiamConfig(**options), net)


def test_registered_with_paper_defaults():
    spec = load_registry().methods.get("simsiam")
    assert spec.plugin == "simsiam"
    assert (spec.views, spec.objective) == ("simclr", "negative_cosine")
    config = spec.config_class()
    assert (config.proj_hidden_dim, config.proj_dim, config.pred_hidden_dim) == (2048, 2048, 512)
    assert config.stop_gradient is True
    assert spec.optim == OptimConfig(name="sgd", lr=0.5, weight_decay=1e-5, momentum=0.9,
                                     warmup_epochs=0)


def test_heads_follow_the_cifar_architecture():
    method = _method(proj_hidden_dim=64, proj_dim=32, pred_hidden_dim=8)
    net = method.backbone
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(net.output_dim, 64), (64, 32)]
    # BN on the projector's output, with no affine parameters and no bias before it.
    assert isinstance(method.projector[-1], torch.nn.BatchNorm1d)
    assert not method.projector[-1].affine and linears[-1].bias is None
    assert method.predictor(torch.randn(4, 32)).shape == (4, 32)
    assert method.predictor[0].out_features == 8
    assert not isinstance(method.predictor[-1], torch.nn.BatchNorm1d)


def test_symmetric_loss_on_hand_checkable_tensors():
    method = _method()
    p1 = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z2 = torch.tensor([[0.0, 3.0], [2.0, 2.0]])  # cos 0 and 1: D(p1, z2) = -0.5
    p2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z1 = torch.tensor([[-1.0, 0.0], [0.0, 5.0]])  # cos -1 and 1: D(p2, z1) = 0
    loss = method.symmetric_loss(p1, p2, z1, z2)
    torch.testing.assert_close(loss, torch.tensor(-0.25))  # 0.5 * -0.5 + 0.5 * 0


def _leaf_loss(stop_gradient: bool) -> tuple[torch.Tensor, ...]:
    method = _method(stop_gradient=stop_gradient)
    p1, p2, z1, z2 = (torch.randn(4, 6, generator=torch.Generator().manual_seed(i),
                                  requires_grad=True) for i in range(4))
    method.symmetric_loss(p1, p2, z1, z2).backward()
    return p1, p2, z1, z2


def test_stop_gradient_blocks_the_target_branch():
    p1, p2, z1, z2 = _leaf_loss(stop_gradient=True)
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    # Switched off, the same loss sends gradient into the targets too.
    _, _, z1, z2 = _leaf_loss(stop_gradient=False)
    assert z1.grad.abs().sum() > 0 and z2.grad.abs().sum() > 0


def _reference_grads(method, views, stop: bool) -> list[torch.Tensor]:
    """Backbone gradients of 0.5 D(p1, z2) + 0.5 D(p2, z1), written out plainly."""
    method.zero_grad()
    z1, z2 = (method.projector(method.backbone(v)) for v in views)
    p1, p2 = method.predictor(z1), method.predictor(z2)
    t1, t2 = (z1.detach(), z2.detach()) if stop else (z1, z2)
    loss = -0.5 * (F.cosine_similarity(p1, t2).mean() + F.cosine_similarity(p2, t1).mean())
    loss.backward()
    return [p.grad.clone() for p in method.backbone.parameters()]


def test_training_step_gradient_is_the_stopped_reference():
    method, policy = testing.build("simsiam")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    stopped = _reference_grads(method, views, stop=True)
    unstopped = _reference_grads(method, views, stop=False)
    method.zero_grad()
    method.training_step(views).loss.backward()
    for grad, param in zip(stopped, method.backbone.parameters(), strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a, b, rtol=1e-3, atol=1e-5)
               for a, b in zip(stopped, unstopped, strict=True))


def test_overrides_are_validated():
    registry = load_registry()
    config = RunConfig.build(registry, "simsiam", ["method.stop_gradient=false"])
    assert config.method_config.stop_gradient is False
    with pytest.raises(ConfigError, match="stop_gradient"):
        RunConfig.build(registry, "simsiam", ["method.stop_gradient=maybe"])
    with pytest.raises(ConfigError, match="pred_hidden_dim"):
        RunConfig.build(registry, "simsiam", ["method.pred_hidden_dim=0"])
    with pytest.raises(ValueError):
        attrs.evolve(SimSiamConfig(), proj_dim=-3)
