"""Batched view policies and their ops: determinism, per-sample randomness, exact special
cases, shapes, validation and registration."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F

from sslreg import load_registry
from sslreg.backbones import sizes
from sslreg.config import RunConfig
from sslreg.errors import ConfigError, UnknownNameError
from sslreg.interfaces import ViewPolicy
from sslreg.views import (
    BYOLViews,
    CropFlipViews,
    MultiCropViews,
    SimCLRViews,
    SwAVMultiCropViews,
    normalize,
    ops,
)

MNIST_STATS = {"mean": (0.5,), "std": (0.25,)}
RGB_STATS = {"mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, channels, size, size), generator=generator(seed)).to(
        torch.uint8
    )


def float_images(batch: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, size, size, generator=generator(seed))


POLICIES = [
    (SimCLRViews, 1, 28, MNIST_STATS),
    (SimCLRViews, 3, 32, RGB_STATS),
    (SimCLRViews, 3, 40, RGB_STATS),  # > 32 px: blur on
    (BYOLViews, 1, 28, MNIST_STATS),
    (BYOLViews, 3, 32, RGB_STATS),
]


@pytest.mark.parametrize(("policy_class", "channels", "size", "stats"), POLICIES)
def test_policy_outputs_are_normalised_float_views(policy_class, channels, size, stats):
    policy = policy_class(channels=channels, image_size=size, **stats)
    assert isinstance(policy, ViewPolicy)
    images = uint8_images(4, channels, size)
    views = policy(images, generator())
    assert len(views) == policy.num_views == 2
    for view in views:
        assert view.shape == (4, channels, size, size)
        assert view.dtype == torch.float32
        assert torch.isfinite(view).all()
    lowest = min((0 - m) / s for m, s in zip(stats["mean"], stats["std"], strict=True))
    highest = max((1 - m) / s for m, s in zip(stats["mean"], stats["std"], strict=True))
    assert views[0].min() >= lowest - 1e-4 and views[0].max() <= highest + 1e-4


def test_policy_resamples_other_input_sizes_to_image_size():
    policy = SimCLRViews(channels=3, image_size=24, **RGB_STATS)
    views = policy(uint8_images(4, 3, 36), generator())
    assert all(view.shape == (4, 3, 24, 24) for view in views)


@pytest.mark.parametrize("policy_class", [SimCLRViews, BYOLViews])
def test_same_seed_same_views_and_other_seed_other_views(policy_class):
    policy = policy_class(channels=3, image_size=32, **RGB_STATS)
    images = uint8_images(4, 3, 32)
    first = policy(images, generator(7))
    again = policy(images, generator(7))
    other = policy(images, generator(8))
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(first[0], other[0])
    assert not torch.allclose(first[0], first[1])  # the two views differ


def test_identical_images_in_a_batch_get_different_views():
    policy = SimCLRViews(channels=1, image_size=28, **MNIST_STATS)
    images = uint8_images(1, 1, 28).repeat(6, 1, 1, 1)
    view = policy(images, generator())[0]
    distinct = {tuple(view[i].flatten().tolist()) for i in range(6)}
    assert len(distinct) == 6


def test_crops_differ_per_sample():
    x = float_images(1, 1, 16).repeat(4, 1, 1, 1)
    crops = ops.random_resized_crop(x, generator(), scale=(0.2, 0.5))
    for i in range(1, 4):
        assert not torch.allclose(crops[0], crops[i])


def test_full_square_crop_without_flip_is_identity():
    x = float_images(5, 3, 12)
    crop = ops.random_resized_crop(x, generator(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(crop, x, atol=1e-5, rtol=0)


def test_forced_flip_is_a_horizontal_mirror():
    x = float_images(5, 3, 12)
    crop = ops.random_resized_crop(x, generator(), (1.0, 1.0), (1.0, 1.0), flip_p=1.0)
    torch.testing.assert_close(crop, torch.flip(x, dims=[3]), atol=1e-5, rtol=0)


def test_crop_resamples_to_out_size_for_multi_crop():
    x = float_images(3, 3, 32)
    local = ops.random_resized_crop(x, generator(), scale=(0.05, 0.4), out_size=12)
    assert local.shape == (3, 3, 12, 12)
    # A box is inside the image, so the crop stays in the image's value range.
    assert local.min() >= 0 and local.max() <= 1


def test_axis_aligned_grid_matches_affine_grid():
    scale_x, shift_x, scale_y, shift_y = torch.rand(4, 6, generator=generator()) - 0.5
    zero = torch.zeros_like(scale_x)
    theta = torch.stack([scale_x, zero, shift_x, zero, scale_y, shift_y], 1).view(6, 2, 3)
    expected = F.affine_grid(theta, [6, 1, 9, 7], align_corners=False)
    grid = ops.axis_aligned_grid(scale_x, shift_x, scale_y, shift_y, (9, 7))
    torch.testing.assert_close(grid, expected, atol=1e-6, rtol=0)


def test_neutral_brightness_contrast_saturation_and_hue_are_identity():
    x = float_images(4, 3, 10)
    ones, zeros = torch.ones(4), torch.zeros(4)
    assert torch.equal(ops.adjust_brightness(x, ones), x)
    assert torch.equal(ops.adjust_contrast(x, ones), x)
    assert torch.equal(ops.adjust_saturation(x, ones), x)
    torch.testing.assert_close(ops.adjust_hue(x, zeros), x, atol=1e-5, rtol=0)


def test_adjustments_apply_only_where_the_mask_is_on():
    x = float_images(4, 3, 10)
    mask = torch.tensor([True, False, True, False])
    for adjust, factor in [
        (ops.adjust_brightness, torch.full((4,), 1.5)),
        (ops.adjust_contrast, torch.full((4,), 0.5)),
        (ops.adjust_saturation, torch.full((4,), 0.3)),
        (ops.adjust_hue, torch.full((4,), 0.25)),
    ]:
        out = adjust(x, factor, mask)
        assert torch.equal(out[~mask], x[~mask]), adjust.__name__
        assert not torch.allclose(out[mask], x[mask]), adjust.__name__


def test_adjustments_match_their_definitions():
    x = float_images(3, 3, 8)
    half = torch.full((3,), 0.5)
    torch.testing.assert_close(ops.adjust_brightness(x, half), x * 0.5)
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(ops.adjust_contrast(x, half), 0.5 * x + 0.5 * mean)
    torch.testing.assert_close(ops.adjust_saturation(x, torch.zeros(3)), grey.expand_as(x))


def test_hue_rotation_keeps_grey_and_a_full_turn_is_identity():
    grey = float_images(2, 1, 6).repeat(1, 3, 1, 1)
    torch.testing.assert_close(ops.adjust_hue(grey, torch.full((2,), 0.3)), grey, atol=1e-5, rtol=0)
    x = float_images(2, 3, 6) * 0.5 + 0.25  # away from the clamp
    turned = ops.adjust_hue(ops.adjust_hue(x, torch.full((2,), 0.5)), torch.full((2,), 0.5))
    torch.testing.assert_close(turned, x, atol=1e-4, rtol=0)


def test_color_jitter_skips_colour_ops_on_one_channel_and_respects_p():
    x = float_images(8, 1, 10)
    assert torch.equal(ops.color_jitter(x, generator(), p=0.0), x)
    # Only brightness and contrast on one channel: a grey image stays one channel.
    assert ops.color_jitter(x, generator(), p=1.0).shape == x.shape
    jittered = ops.color_jitter(float_images(8, 3, 10), generator(), p=1.0)
    assert jittered.min() >= 0 and jittered.max() <= 1


def test_solarize_matches_the_formula():
    x = float_images(4, 3, 8)
    expected = torch.where(x >= 0.5, 1 - x, x)
    torch.testing.assert_close(ops.solarize(x, generator(), p=1.0), expected, rtol=0, atol=0)
    assert torch.equal(ops.solarize(x, generator(), p=0.0), x)


def test_per_sample_probability_tensor_selects_samples():
    x = float_images(4, 1, 8)
    p = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = ops.solarize(x, generator(), p)
    assert torch.equal(out[1::2], x[1::2])
    assert torch.equal(out[0::2], torch.where(x[0::2] >= 0.5, 1 - x[0::2], x[0::2]))


def test_grayscale_output_has_equal_channels():
    x = float_images(4, 3, 8)
    grey = ops.random_grayscale(x, generator(), p=1.0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    one_channel = float_images(4, 1, 8)
    assert torch.equal(ops.random_grayscale(one_channel, generator(), p=1.0), one_channel)


def test_blur_keeps_a_constant_image_and_smooths_noise():
    constant = torch.full((3, 3, 20, 20), 0.3)
    blurred = ops.gaussian_blur(constant, generator(), p=1.0)
    torch.testing.assert_close(blurred, constant, atol=1e-6, rtol=0)
    noise = float_images(3, 3, 20)
    smoothed = ops.gaussian_blur(noise, generator(), p=1.0, sigma=(1.0, 2.0), kernel_size=5)
    assert smoothed.var() < 0.5 * noise.var()
    assert torch.equal(ops.gaussian_blur(noise, generator(), p=0.0), noise)


def test_blur_kernel_size_follows_simclr():
    assert ops.default_kernel_size(28) == 3
    assert ops.default_kernel_size(96) == 9
    assert ops.default_kernel_size(224) == 23
    with pytest.raises(ValueError, match="odd"):
        ops.gaussian_blur(float_images(1, 1, 8), generator(), 1.0, kernel_size=4)


def test_random_order_follows_the_generator():
    first = generator(3)
    torch.rand(1, generator=first)
    again = generator(3)
    torch.rand(1, generator=again)
    assert ops.random_order(6, first) == ops.random_order(6, again)
    assert sorted(ops.random_order(6, first)) == list(range(6))


def test_normalize_matches_reference_for_uint8_and_float():
    images = uint8_images(2, 3, 5)
    mean, std = RGB_STATS["mean"], RGB_STATS["std"]
    expected = (images.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(
        3, 1, 1
    )
    torch.testing.assert_close(normalize(images, mean, std), expected)
    torch.testing.assert_close(normalize(images.float() / 255, mean, std), expected)
    with pytest.raises(ValueError, match="3-channel"):
        normalize(images, (0.5,), (0.2,))


def test_byol_views_are_asymmetric():
    # View 1 is always blurred, view 2 never here: a flat-cropped constant stays equal.
    policy = BYOLViews(
        channels=1, image_size=16, blur_p=(1.0, 0.0), solarize_p=(0.0, 1.0), **MNIST_STATS
    )
    images = torch.full((4, 1, 16, 16), 255, dtype=torch.uint8)
    first, second = policy(images, generator())
    assert (first > second).all()  # view 2 solarized a bright image to dark


def test_options_have_paper_defaults_and_overrides():
    simclr = SimCLRViews(channels=3, image_size=32, **RGB_STATS)
    assert simclr.options.saturation == 0.4 and simclr.blur_p == (0.0, 0.0)
    assert SimCLRViews(channels=3, image_size=96, **RGB_STATS).blur_p == (0.5, 0.5)
    byol = BYOLViews(channels=3, image_size=32, **RGB_STATS)
    assert byol.blur_p == (0.0, 0.0) and byol.options.solarize_p == (0.0, 0.2)
    assert byol.options.saturation == 0.2
    assert BYOLViews(channels=3, image_size=33, **RGB_STATS).blur_p == (1.0, 0.1)
    assert BYOLViews(channels=1, image_size=28, blur_p=0.3, **MNIST_STATS).blur_p == (0.3, 0.3)


def _identity_crop_options() -> dict:
    """Options that leave only the blur and solarize steps able to change an image."""
    return {"crop_scale": (1.0, 1.0), "crop_ratio": (1.0, 1.0), "flip_p": 0.0,
            "jitter_p": 0.0, "grayscale_p": 0.0, "solarize_p": 0.0}


def test_byol_blurs_neither_view_at_28_px_by_default():
    images = uint8_images(4, 1, 28)
    plain = normalize(images.float() / 255, (0.5,), (0.25,))
    policy = BYOLViews(channels=1, image_size=28, **_identity_crop_options(), **MNIST_STATS)
    for view in policy(images, generator()):
        torch.testing.assert_close(view, plain, atol=1e-5, rtol=0)
    # BYOL's blur, set explicitly, does change view 1.
    blurred = BYOLViews(channels=1, image_size=28, blur_p=(1.0, 0.1),
                        **_identity_crop_options(), **MNIST_STATS)
    assert not torch.allclose(blurred(images, generator())[0], plain, atol=1e-3)


def test_swav_views_are_symmetric_with_swav_scales():
    small = SwAVMultiCropViews(channels=3, image_size=32, **RGB_STATS)
    o = small.options
    assert (o.crop_scale, o.local_scale, o.num_local) == ((0.14, 1.0), (0.05, 0.14), 6)
    assert (o.brightness, o.contrast, o.saturation, o.hue) == (0.8, 0.8, 0.8, 0.2)
    assert (o.jitter_p, o.grayscale_p, o.flip_p) == (0.8, 0.2, 0.5)
    assert o.solarize_p == (0.0, 0.0)
    assert small.blur_p == (0.0, 0.0) and small.local_blur_p == 0.0
    large = SwAVMultiCropViews(channels=3, image_size=96, **RGB_STATS)
    assert large.blur_p == (0.5, 0.5) and large.local_blur_p == 0.5
    views = small(uint8_images(2, 3, 32), generator())
    assert [v.shape[-1] for v in views] == [32, 32] + [12] * 6
    # DINO's multicrop keeps BYOL's asymmetric global views above 32 px.
    dino = MultiCropViews(channels=3, image_size=96, **RGB_STATS)
    assert dino.blur_p == (1.0, 0.1) and dino.options.solarize_p == (0.0, 0.2)
    assert MultiCropViews(channels=3, image_size=32, **RGB_STATS).blur_p == (0.0, 0.0)


def method_policy(method: str, overrides: tuple[str, ...] = ()) -> ViewPolicy:
    """The method's default policy for 28 px images, built as the trainer builds it."""
    registry = load_registry()
    config = RunConfig.build(registry, method, overrides)
    spec = registry.methods.get(method)
    family = registry.backbones.get(config.backbone).family
    options = spec.policy_options(config.method_config, family)
    return registry.views.create(config.views_name(registry), channels=1, image_size=28,
                                 **MNIST_STATS, **options)


@pytest.mark.parametrize("method", ["byol", "barlow_twins", "vicreg"])
def test_byol_family_methods_get_no_blur_at_28_px(method):
    policy = method_policy(method)
    assert isinstance(policy, BYOLViews) and policy.blur_p == (0.0, 0.0)
    assert policy.options.solarize_p == (0.0, 0.2)


@pytest.mark.parametrize(("method", "overrides", "scale"), [
    ("moco", (), (0.2, 1.0)),
    ("simsiam", (), (0.2, 1.0)),
    ("moco", ("method.version=3",), (0.08, 1.0)),
])
def test_moco_and_simsiam_crop_scales(method, overrides, scale):
    policy = method_policy(method, overrides)
    assert isinstance(policy, SimCLRViews) and policy.options.crop_scale == scale


def test_moco_v3_views_are_byol_like_at_28_px():
    o = method_policy("moco", ("method.version=3",)).options
    assert (o.saturation, o.solarize_p) == (0.2, (0.0, 0.2))
    assert method_policy("moco").options.solarize_p == (0.0, 0.0)


def test_swav_method_gets_swav_views():
    policy = method_policy("swav", ("method.num_local=2",))
    assert type(policy) is SwAVMultiCropViews and policy.num_views == 4


def test_dino_crop_scales_follow_the_papers_recipe_for_the_backbone():
    policy = method_policy("dino")
    assert type(policy) is MultiCropViews
    assert (policy.options.crop_scale, policy.options.local_scale) == ((0.14, 1.0), (0.05, 0.14))
    vit = method_policy("dino", ("backbone=vit-mini",))  # main_dino.py's ViT defaults
    assert (vit.options.crop_scale, vit.options.local_scale) == ((0.4, 1.0), (0.05, 0.4))
    mixed = method_policy("dino", ("backbone=vit-mini", "method.global_crops_scale=0.14,1"))
    assert (mixed.options.crop_scale, mixed.options.local_scale) == ((0.14, 1.0), (0.05, 0.4))
    with pytest.raises(ValueError, match="global_crops_scale"):
        method_policy("dino", ("method.global_crops_scale=0.5,0.2",))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"colour": 0.4}, "unknown option 'colour'.*valid options: blur_p"),
        ({"crop_scale": (0.0, 1.0)}, r"crop_scale=\(0.0, 1.0\) must be a pair"),
        ({"crop_scale": (0.5, 1.5)}, "crop_scale"),
        ({"flip_p": 1.5}, "flip_p=1.5 must be a probability"),
        ({"hue": 0.7}, r"hue=0.7 must be a number in \[0, 0.5\]"),
        ({"blur_p": (0.5, 0.5, 0.5)}, "blur_p"),
        ({"mean": (0.5, 0.5)}, "2 values for 1 channels"),
        ({"std": (0.0,)}, "must be positive"),
        ({"channels": 2}, "channels=2 must be 1 or 3"),
    ],
)
def test_bad_options_raise_a_one_line_value_error(options, message):
    arguments = {"channels": 1, "image_size": 28, **MNIST_STATS, **options}
    with pytest.raises(ValueError, match=message) as error:
        SimCLRViews(**arguments)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 1, 28, 28), "uint8 images .* got a torch.float32 4-D tensor"),
        (torch.zeros(1, 28, 28, dtype=torch.uint8), "3-D tensor"),
        (torch.zeros(2, 3, 28, 28, dtype=torch.uint8), "1-channel images.*3 channels"),
    ],
)
def test_bad_images_raise_value_error(images, message):
    policy = SimCLRViews(channels=1, image_size=28, **MNIST_STATS)
    with pytest.raises(ValueError, match=message):
        policy(images, generator())


def test_registry_builds_the_builtin_policies():
    registry = load_registry()
    assert {"simclr", "byol"} <= set(registry.views.names())
    policy = registry.views.create("simclr", channels=1, image_size=28, mean=(0.5,), std=(0.25,))
    views = policy(uint8_images(4, 1, 28), generator())
    assert [view.shape for view in views] == [(4, 1, 28, 28)] * 2
    assert registry.views.get("byol").plugin == "sslreg.builtins.views"


def test_multicrop_returns_two_global_and_n_local_views():
    policy = MultiCropViews(channels=3, image_size=32, **RGB_STATS)
    assert policy.num_views == 8 and policy.local_size == 12
    views = policy(uint8_images(4, 3, 32), generator())
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 12, 12)] * 6
    # Whole ViT patches: 3 of 12 px at 96 px (sslreg.backbones.multicrop_sizes).
    assert MultiCropViews(channels=1, image_size=96, **MNIST_STATS).local_size == 36
    few = MultiCropViews(channels=1, image_size=28, num_local=2, local_size=16, **MNIST_STATS)
    assert [v.shape[-1] for v in few(uint8_images(2, 1, 28), generator())] == [28, 28, 16, 16]
    assert MultiCropViews(channels=1, image_size=28, num_local=0, **MNIST_STATS).num_views == 2


def test_multicrop_is_seeded_and_local_views_differ():
    policy = MultiCropViews(channels=1, image_size=28, num_local=3, **MNIST_STATS)
    images = uint8_images(4, 1, 28)
    first, again = policy(images, generator(5)), policy(images, generator(5))
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(first[2], first[3])


def test_multicrop_local_crops_are_smaller_regions():
    # A horizontal ramp: a crop covering a fraction f of the width spans about f of the
    # ramp's range, so local crops (scale <= 0.4) span less than global ones (>= 0.4).
    ramp = torch.linspace(0, 255, 28).round().to(torch.uint8).expand(64, 1, 28, 28)
    policy = MultiCropViews(channels=1, image_size=28, num_local=1, jitter_p=0.0,
                            grayscale_p=0.0, **MNIST_STATS)
    views = policy(ramp.contiguous(), generator())

    def span(view):
        rows = view[:, 0, view.shape[-2] // 2]
        return (rows.max(dim=1).values - rows.min(dim=1).values).mean()

    assert span(views[2]) < 0.75 * span(views[0])


@pytest.mark.parametrize(("options", "message"), [
    ({"num_local": -1}, "num_local=-1 must be an int in 0..32"),
    ({"local_size": 10}, "local_size=10 does not fit 28 px images.*multiple of the ViT "
     r"patch \(4 px\).*one of 4, 8, 12, 16, 20, 24, 28 \(default 12\)"),
    ({"local_size": 32}, "local_size=32 does not fit 28 px images"),
    ({"local_size": 0}, "local_size=0 must be a positive int"),
    ({"local_scale": (0.5, 0.2)}, "local_scale"),
])
def test_multicrop_rejects_bad_options(options, message):
    with pytest.raises(ConfigError, match=message) as error:
        MultiCropViews(channels=1, image_size=28, **MNIST_STATS, **options)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("size", "patch", "local"), [(28, 4, 12), (32, 4, 12), (64, 8, 24),
                                                      (96, 12, 36)])
def test_vit_patch_and_multicrop_sizes_come_from_one_rule(size, patch, local):
    assert sizes.vit_patch_size(size) == patch
    assert sizes.multicrop_sizes(size) == (size, local)
    assert load_registry().backbones.create("vit-mini", in_channels=3,
                                            image_size=size).patch_size == patch
    assert all(side % patch == 0 for side in sizes.valid_local_sizes(size))


def test_a_local_size_that_is_not_whole_patches_is_refused_naming_the_valid_ones():
    # 40 px was the old default at 96 px: 3.33 patches of 12 px, which a ViT cannot embed.
    with pytest.raises(ConfigError, match=r"local_size=40 does not fit 96 px images.*"
                       r"\(12 px\).*one of 12, 24, 36, 48, 60, 72, 84, 96 \(default 36\)"):
        MultiCropViews(channels=3, image_size=96, local_size=40, **RGB_STATS)
    assert MultiCropViews(channels=3, image_size=96, local_size=48, **RGB_STATS).local_size == 48


def test_crop_flip_views_only_crop_and_flip():
    policy = CropFlipViews(channels=1, image_size=28, crop_scale=(1.0, 1.0),
                           crop_ratio=(1.0, 1.0), flip_p=0.0, **MNIST_STATS)
    images = uint8_images(3, 1, 28)
    (view,) = policy(images, generator())
    # A full, unflipped crop with no colour ops is the normalised image itself.
    torch.testing.assert_close(view, normalize(images.float() / 255, (0.5,), (0.25,)),
                               atol=1e-5, rtol=0)
    assert CropFlipViews(channels=1, image_size=28, **MNIST_STATS).options.crop_scale == (0.2, 1)
    with pytest.raises(ValueError, match="unknown option 'hue'.*crop_ratio, crop_scale, flip_p"):
        CropFlipViews(channels=1, image_size=28, hue=0.1, **MNIST_STATS)


def test_registry_has_multicrop_and_crop_flip_views():
    registry = load_registry()
    assert {"multicrop", "swav-multicrop", "crop-flip"} <= set(registry.views.names())
    assert registry.views.get("swav-multicrop").factory is SwAVMultiCropViews


def test_mae_is_an_alias_of_crop_flip(registry):
    crop_flip = registry.views.get("crop-flip")
    assert registry.views.get("mae") is crop_flip and crop_flip.factory is CropFlipViews
    assert crop_flip.aliases == ("mae",) and "mae" in registry.views
    assert "mae" not in registry.views.names()  # listed once, under its own name
    by_alias, by_name = (registry.views.create(name, channels=1, image_size=28, **MNIST_STATS)
                         for name in ("mae", "crop-flip"))
    images = uint8_images(4, 1, 28)
    torch.testing.assert_close(by_alias(images, generator(3)), by_name(images, generator(3)))


@pytest.mark.parametrize("method", ["mae", "clip", "supervised"])
def test_views_mae_in_a_config_runs_the_methods_policy_and_keeps_its_digest(registry, method):
    backbone = {"backbone": "vit-mini"} if method == "mae" else {}
    default = RunConfig.build(registry, method, **backbone)
    aliased = RunConfig.build(registry, method, ["views=mae"], **backbone)
    assert registry.methods.get(method).views == "crop-flip"
    assert default.views_name(registry) == aliased.views_name(registry) == "crop-flip"
    # config.json names the policy that ran; the digest hashes the method's default as
    # "" and a policy named on the command line as written ("mae"), exactly as before
    # the rename, so existing run directories keep their names.
    assert (default.to_dict()["views"], aliased.to_dict()["views"]) == ("crop-flip", "mae")
    assert default.keyed_dict()["views"] == ""
    assert aliased.keyed_dict()["views"] == "mae"
    assert RunConfig.from_dict(aliased.to_dict(), registry) == aliased


def test_a_method_naming_the_alias_keeps_its_view_options(registry):
    # A plugin written before the rename: its default views say "mae".
    method = attrs.evolve(registry.methods.get("simclr"), name="aliased", views="mae")
    registry.methods.add(method, "old-plugin")  # this fixture's registry only
    for views in ("", "mae", "crop-flip"):
        config = RunConfig.build(registry, "aliased", [f"views={views}"] if views else [])
        assert config.views_name(registry) == "mae"  # the method's name: options apply
    other = RunConfig.build(registry, "aliased", ["views=simclr"])
    assert other.views_name(registry) == "simclr"


def test_unknown_view_name_lists_the_valid_names(registry):
    with pytest.raises(UnknownNameError) as error:
        RunConfig.build(registry, "simclr", ["views=crops"])
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("unknown view policy 'crops'; choose from: byol, crop-flip "
                              "(alias mae), multicrop, ")
