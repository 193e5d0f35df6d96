"""MAE plugin tests: conformance, patchify and masking, the loss, the decoder and config."""

import math

import pytest
import torch
from sslreg_mae import (
    MAE,
    MAEConfig,
    MAEDecoder,
    MaskedReconstructionLoss,
    patchify,
    random_masking,
    unpatchify,
    visible_count,
)

from sslreg import ConfigError, OptimConfig, RunConfig, load_registry


def _method(**options) -> MAE:
    torch.manual_seed(0)
    net = load_registry().backbones.create("vit-mini", in_channels=1, image_size=28)
    return load_registry().build_method("mae", MAEConfig(**options), net)


def test_registered_with_paper_defaults():
    registry = load_registry()
    spec = registry.methods.get("mae")
    assert spec.plugin == "mae"
    assert (spec.views, spec.objective, spec.backbone_families) == ("crop-flip", "mae", ("vit",))
    config = spec.config_class()
    assert (config.mask_ratio, config.norm_pix_loss) == (0.75, True)
    assert (config.decoder_dim, config.decoder_depth, config.decoder_heads) == (128, 2, 4)
    assert spec.optim == OptimConfig(name="adamw", lr=1.5e-4, weight_decay=0.05,
                                     betas=(0.9, 0.95), warmup_epochs=40)
    assert registry.objectives.get("mae").plugin == "mae"
    assert isinstance(registry.objectives.create("mae"), MaskedReconstructionLoss)


def test_refuses_a_convnet():
    with pytest.raises(ConfigError, match="vit"):
        RunConfig.build(load_registry(), "mae", backbone="resnet18-narrow")


def test_patchify_layout_and_round_trip():
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = patchify(image, 2)  # (1, 4, 4): row-major patches, row-major pixels
    torch.testing.assert_close(patches[0], torch.tensor([[0.0, 1, 4, 5], [2, 3, 6, 7],
                                                         [8, 9, 12, 13], [10, 11, 14, 15]]))
    # Channels are last within a patch, as the MAE code.
    rgb = torch.stack([image[0, 0], 100 + image[0, 0], 200 + image[0, 0]])[None]
    assert patchify(rgb, 2)[0, 0].tolist() == [0, 100, 200, 1, 101, 201, 4, 104, 204,
                                               5, 105, 205]
    images = torch.randn(3, 3, 28, 28)
    torch.testing.assert_close(unpatchify(patchify(images, 4), 4, (7, 7)), images)


def test_visible_count_follows_the_paper():
    assert visible_count(49, 0.75) == 12  # int(49 * 0.25)
    assert visible_count(64, 0.75) == 16
    assert visible_count(49, 0.999) == 1 and visible_count(49, 1e-9) == 48


def test_masking_keeps_the_right_tokens_and_restores_order():
    tokens = torch.randn(5, 49, 8)
    visible, mask, restore = random_masking(tokens, 0.75, torch.Generator().manual_seed(0))
    assert visible.shape == (5, 12, 8)
    assert mask.shape == (5, 49) and (mask.sum(dim=1) == 37).all()
    for row in restore:  # a permutation of the patch indices
        assert sorted(row.tolist()) == list(range(49))
    shuffle = restore.argsort(dim=1)  # the shuffle that ``restore`` undoes
    shuffled = tokens.gather(1, shuffle.unsqueeze(-1).expand(-1, -1, 8))
    torch.testing.assert_close(shuffled[:, :12], visible)  # kept first, as the paper
    torch.testing.assert_close(shuffled.gather(1, restore.unsqueeze(-1).expand(-1, -1, 8)),
                               tokens)
    kept = shuffle[:, :12]
    assert (mask.gather(1, kept) == 0).all()
    # Each sample draws its own mask.
    assert not torch.equal(mask[0], mask[1])


def test_loss_on_hand_checkable_patches():
    target = torch.tensor([[[1.0, 3.0], [5.0, 5.0]]])  # (B=1, L=2, P=2)
    pred = torch.tensor([[[0.0, 0.0], [9.0, 9.0]]])
    mask = torch.tensor([[1.0, 0.0]])  # patch 0 masked, patch 1 visible
    raw = MaskedReconstructionLoss(norm_pix_loss=False)
    torch.testing.assert_close(raw(pred, target, mask), torch.tensor(5.0))  # (1 + 9) / 2
    # Patch 0 standardised: mean 2, unbiased variance 2 -> (-1, 1) / sqrt(2 + 1e-6).
    normalised = MaskedReconstructionLoss(norm_pix_loss=True)
    torch.testing.assert_close(normalised(pred, target, mask), torch.tensor(1 / (2 + 1e-6)))
    # The visible patch's prediction does not count.
    other = pred.clone()
    other[0, 1] = torch.tensor([-50.0, 7.0])
    torch.testing.assert_close(raw(other, target, mask), raw(pred, target, mask))
    torch.testing.assert_close(normalised(other, target, mask), normalised(pred, target, mask))


def test_loss_averages_over_all_masked_patches():
    # Sample 0 masks one patch (error 4), sample 1 two (errors 1 and 1): (4 + 1 + 1) / 3.
    target = torch.zeros(2, 2, 1)
    pred = torch.tensor([[[2.0], [9.0]], [[1.0], [-1.0]]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    loss = MaskedReconstructionLoss(norm_pix_loss=False)(pred, target, mask)
    torch.testing.assert_close(loss, torch.tensor(2.0))


def test_normalised_target_is_per_patch():
    target = torch.randn(2, 6, 12) * 5 + 3
    pred = torch.randn(2, 6, 12)
    mask = torch.ones(2, 6)
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    expected = (pred - (target - mean) / std).pow(2).mean()
    torch.testing.assert_close(MaskedReconstructionLoss()(pred, target, mask), expected)
    # Shifting and scaling a patch leaves its normalised target unchanged.
    moved = target.clone()
    moved[0, 2] = moved[0, 2] * 4 - 7
    torch.testing.assert_close(MaskedReconstructionLoss()(pred, moved, mask), expected)


def _decode(decoder: MAEDecoder, tokens: torch.Tensor, shuffle: torch.Tensor,
            keep: int) -> torch.Tensor:
    """Decode ``tokens`` (1, L, D) whose first ``keep`` in ``shuffle`` order are visible."""
    cls = torch.ones(1, 1, tokens.shape[-1])
    visible = tokens[:, shuffle[:keep]]
    return decoder(torch.cat([cls, visible], dim=1), shuffle.argsort()[None], (2, 2))


def test_decoder_puts_tokens_back_in_place():
    torch.manual_seed(0)
    decoder = MAEDecoder(encoder_dim=8, dim=16, depth=1, heads=2, patch_pixels=4)
    tokens = torch.randn(1, 4, 8)
    # Patches 2 and 0 visible, in either order, masked 1 and 3 in either order: the
    # restored sequence, hence the prediction of every patch, is the same.
    first = _decode(decoder, tokens, torch.tensor([2, 0, 1, 3]), keep=2)
    second = _decode(decoder, tokens, torch.tensor([0, 2, 3, 1]), keep=2)
    assert first.shape == (1, 4, 4)
    torch.testing.assert_close(first, second)
    # A different visible set changes the predictions.
    third = _decode(decoder, tokens, torch.tensor([1, 3, 0, 2]), keep=2)
    assert not torch.allclose(first, third)


def test_encoder_sees_only_visible_patches_and_loss_matches_reference():
    method = _method()
    seen = []
    encode = method.backbone.encode
    method.backbone.encode = lambda tokens: seen.append(tokens.shape) or encode(tokens)
    images = torch.randn(4, 1, 28, 28)
    torch.manual_seed(5)
    loss = method.training_step([images]).loss
    assert seen == [(4, 12, 128)]  # 12 of the 49 patches, [CLS] added inside encode
    torch.manual_seed(5)
    pred, mask, _ = method.reconstruct(images)
    target = patchify(images, 4)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    error = (pred - (target - mean) / (var + 1e-6).sqrt()).pow(2).mean(-1)
    torch.testing.assert_close(loss, (error * mask).sum() / mask.sum())


def test_features_pool_all_patch_tokens_without_masking():
    method = _method().eval()
    images = torch.randn(3, 1, 28, 28)
    tokens = method.backbone.forward_tokens(images)  # (3, 1 + 49, 128)
    torch.testing.assert_close(method.features(images), tokens[:, 1:].mean(dim=1))
    torch.testing.assert_close(method.features(images), method.features(images))


def test_visualize_gives_fixed_pictures_in_unit_range():
    method = _method().eval()
    images = torch.randn(8, 1, 28, 28)
    pictures = method.visualize(images)
    assert set(pictures) == {"masked", "reconstruction"}
    for picture in pictures.values():
        assert picture.shape == (8, 1, 28, 28)
        assert picture.min() >= 0 and picture.max() <= 1
    torch.testing.assert_close(method.visualize(images), pictures)  # the same mask each time


@pytest.mark.parametrize(("override", "field"), [
    ("method.mask_ratio=1.0", "mask_ratio"),
    ("method.mask_ratio=0", "mask_ratio"),
    ("method.norm_pix_loss=maybe", "norm_pix_loss"),
    ("method.decoder_dim=30", "decoder_dim"),
    ("method.decoder_heads=3", "decoder_heads"),
    ("method.decoder_depth=0", "decoder_depth"),
])
def test_overrides_are_validated(override, field):
    with pytest.raises(ConfigError, match=field):
        RunConfig.build(load_registry(), "mae", [override], backbone="vit-mini")


def test_overrides_apply():
    config = RunConfig.build(load_registry(), "mae", ["method.mask_ratio=0.5",
                                                      "method.norm_pix_loss=false"],
                             backbone="vit-mini")
    assert config.method_config.mask_ratio == 0.5
    assert config.method_config.norm_pix_loss is False
    assert math.isclose(config.optim.betas[1], 0.95)
