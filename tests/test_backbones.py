"""Backbones: shapes, small-image stem, FLOPs as stated in the registry."""

import pytest
import torch

from sslreg.backbones import ResNet18, forward_flops


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet18-narrow", 128)])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_output_shape(registry, name, dim, channels, size):
    net = registry.backbones.create(name, in_channels=channels, image_size=size)
    assert net.output_dim == dim
    assert net(torch.rand(2, channels, size, size)).shape == (2, dim)


def test_small_image_stem_has_no_maxpool():
    net = ResNet18(1)
    stem = net.stem[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())


def test_stated_flops_match_the_count(registry):
    for name, flops, stated in [("resnet18", 911.6e6, "0.91 GFLOPs"),
                                ("resnet18-narrow", 15.27e6, "15.3 MFLOPs")]:
        net = registry.backbones.create(name, in_channels=1, image_size=28)
        assert forward_flops(net, 1, 28) == pytest.approx(flops, rel=1e-3)
        assert stated in registry.backbones.get(name).description
