"""Backbones: shapes, small-image stem, FLOPs as stated in the registry."""

import math

import pytest
import torch

from sslreg.backbones import ResNet18, forward_flops


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet18-narrow", 128),
                                       ("vit-tiny", 192), ("vit-mini", 128)])
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
                                ("resnet18-narrow", 15.27e6, "15.3 MFLOPs"),
                                ("vit-tiny", 531.1e6, "0.53 GFLOPs"),
                                ("vit-mini", 78.8e6, "79 MFLOPs")]:
        net = registry.backbones.create(name, in_channels=1, image_size=28)
        assert forward_flops(net, 1, 28) == pytest.approx(flops, rel=1e-3)
        assert stated in registry.backbones.get(name).description


def test_sincos_positions_by_hand():
    from sslreg.backbones.vit import sincos_positions

    table = sincos_positions(2, 3, 4)  # frequencies (1,); [sin row, cos row, sin col, cos col]
    assert table.shape == (6, 4)
    row, col = 1, 2  # token 5
    expected = torch.tensor([math.sin(row), math.cos(row), math.sin(col), math.cos(col)])
    torch.testing.assert_close(table[5], expected)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_positions(2, 2, 6)


def test_vit_token_access_is_consistent():
    from sslreg.backbones import ViT

    torch.manual_seed(0)
    net = ViT(1, 28, embed_dim=32, depth=2, heads=2).eval()
    images = torch.rand(3, 1, 28, 28)
    tokens = net.embed(images)
    assert tokens.shape == (3, 49, 32)
    full = net.forward_tokens(images)
    assert full.shape == (3, 50, 32)
    torch.testing.assert_close(net(images), full[:, 0])
    torch.testing.assert_close(net.encode(tokens), full)
    # A subset of tokens (MAE's visible patches) runs through the same blocks.
    assert net.encode(tokens[:, :12]).shape == (3, 13, 32)
    attention = net.last_self_attention(images)
    assert attention.shape == (3, 2, 50, 50)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 2, 50))


def test_vit_attention_weights_match_the_fused_kernel():
    from sslreg.backbones.vit import Attention

    torch.manual_seed(0)
    attention = Attention(16, heads=2)
    x = torch.randn(2, 5, 16)
    _, _, v = attention._qkv(x)
    by_hand = (attention.weights(x) @ v).transpose(1, 2).flatten(2)
    torch.testing.assert_close(attention(x), attention.proj(by_hand))


def test_vit_takes_smaller_crops_and_refuses_off_grid_sizes():
    from sslreg.backbones import ViT

    net = ViT(1, 28, embed_dim=32, depth=1, heads=2)
    assert net(torch.rand(2, 1, 12, 12)).shape == (2, 32)  # a multi-crop local view
    with pytest.raises(ValueError, match="multiple of the patch size 4"):
        net(torch.rand(2, 1, 30, 30))


# Pixels off the rows and columns (0, 1, 15, 16, 17) that a zero-init-residual ResNet's
# stride-2 shortcuts sample: a fresh backbone that sees the whole image answers them.
INTERIOR = [(r, c) for r in (3, 6, 9, 12, 20, 23, 26) for c in (3, 6, 9, 12, 20, 23, 26)]


def blind_pixels(net: torch.nn.Module, pixels: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pixels whose change leaves the eval-mode features of a fixed image unchanged."""
    torch.manual_seed(1)
    image = torch.rand(1, 1, 28, 28)
    batch = image.repeat(len(pixels) + 1, 1, 1, 1)
    for row, (r, c) in enumerate(pixels, 1):
        batch[row, 0, r, c] += 1.0
    with torch.no_grad():
        features = net.eval()(batch)
    changed = (features[1:] - features[:1]).abs().amax(dim=1) > 1e-6
    return [p for p, moved in zip(pixels, changed.tolist(), strict=True) if not moved]


@pytest.mark.parametrize("name", ["resnet18", "resnet18-narrow", "vit-tiny", "vit-mini"])
def test_a_fresh_backbone_in_eval_mode_answers_interior_pixels(registry, name):
    torch.manual_seed(0)
    net = registry.backbones.create(name, in_channels=1, image_size=28)
    assert blind_pixels(net, INTERIOR) == []


def test_zero_init_residual_reads_only_the_shortcut_pixels():
    """The degenerate floor the default avoids: every residual branch outputs 0."""
    torch.manual_seed(0)
    net = ResNet18(1, width=16, stem_stride=2, zero_init_residual=True)
    assert blind_pixels(net, INTERIOR) == INTERIOR
    every = [(r, c) for r in range(28) for c in range(28)]
    assert len(every) - len(blind_pixels(net, every)) == 25  # rows/cols 0, 1, 15, 16, 17
