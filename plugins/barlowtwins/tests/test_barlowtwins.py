"""Barlow Twins' tests; the loss itself is checked on hand-computable inputs in the
core's tests/test_objectives.py."""

import pytest
import torch

from sslreg import ConfigError, RunConfig, load_registry, testing


def test_registered_with_paper_defaults():
    spec = load_registry().methods.get("barlow_twins")
    assert spec.plugin == "barlowtwins"
    assert (spec.views, spec.objective) == ("byol", "barlow_twins")
    config = spec.config_class()
    assert (config.lambda_offdiag, config.proj_hidden_dim, config.proj_dim) == (5e-3, 2048, 2048)
    assert spec.optim.name == "lars"


def test_projector_has_three_layers():
    method, _ = testing.build("barlow_twins")
    linears = [m for m in method.projector if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [2048, 2048, 2048]


def test_loss_is_the_written_out_cross_correlation_objective():
    method, policy = testing.build("barlow_twins")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    loss = method.training_step(views).loss
    z1, z2 = (method.projector(method.backbone(v)) for v in views)
    n = len(z1)
    a = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
    b = (z2 - z2.mean(0)) / z2.std(0, unbiased=False)
    c = a.T @ b / n
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    torch.testing.assert_close(loss, on_diag + 5e-3 * off_diag, rtol=1e-3, atol=1e-3)


def test_overrides_are_validated():
    registry = load_registry()
    config = RunConfig.build(registry, "barlow_twins", ["method.lambda_offdiag=0.01"])
    assert config.method_config.lambda_offdiag == 0.01
    with pytest.raises(ConfigError, match="lambda_offdiag"):
        RunConfig.build(registry, "barlow_twins", ["method.lambda_offdiag=-1"])
    with pytest.raises(ConfigError, match="proj_dim"):
        RunConfig.build(registry, "barlow_twins", ["method.proj_dim=0"])
