import pytest
import torch
from sslreg_simclr import SimCLRConfig

from sslreg import ConfigError, RunConfig, load_registry, testing


def test_registered_with_paper_defaults():
    spec = load_registry().methods.get("simclr")
    assert spec.plugin == "simclr"
    assert spec.config_class().temperature == 0.5
    assert spec.optim.name == "lars"


def test_loss_is_nt_xent_of_projections():
    method, policy = testing.build("simclr")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    z = method.projector(method.backbone(torch.cat(views)))
    expected = method.objective(*z.chunk(2))
    torch.testing.assert_close(method.training_step(views).loss, expected)


def test_temperature_override_is_validated():
    registry = load_registry()
    config = RunConfig.build(registry, "simclr", ["method.temperature=0.2"])
    assert config.method_config.temperature == 0.2
    with pytest.raises(ConfigError, match="temperature"):
        RunConfig.build(registry, "simclr", ["method.temperature=-1"])


def test_projector_shape():
    net = load_registry().backbones.create("resnet18-narrow", in_channels=1, image_size=28)
    method = load_registry().build_method("simclr", SimCLRConfig(proj_dim=32), net)
    assert method.projector(torch.randn(4, net.output_dim)).shape == (4, 32)
