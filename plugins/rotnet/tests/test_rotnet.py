"""RotNet's tests."""

import math

import pytest
import torch
from sslreg_rotnet import RotationLoss, RotationViews

from sslreg import ConfigError, RunConfig, load_registry, testing


def test_registered_with_its_own_views_and_objective():
    registry = load_registry()
    spec = registry.methods.get("rotnet")
    assert spec.plugin == "rotnet"
    assert (spec.views, spec.objective) == ("rotation", "rotation")
    assert registry.views.get("rotation").plugin == "rotnet"
    assert registry.objectives.get("rotation").plugin == "rotnet"
    assert spec.optim.name == "sgd" and spec.optim.weight_decay == 5e-4


def test_views_are_one_crop_turned_four_ways():
    policy = RotationViews(channels=1, image_size=8, mean=(0.0,), std=(1.0,), flip_p=0.0,
                           crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    images = torch.arange(2 * 64, dtype=torch.uint8).reshape(2, 1, 8, 8)
    views = policy(images, torch.Generator().manual_seed(0))
    assert len(views) == policy.num_views == 4
    torch.testing.assert_close(views[0], images.float() / 255)  # full crop, no flip
    # A quarter-turn counter-clockwise moves the top row to the left column, reversed.
    torch.testing.assert_close(views[1][:, :, :, 0], views[0][:, :, 0, :].flip(-1))
    torch.testing.assert_close(views[2], views[0].flip(-1).flip(-2))
    torch.testing.assert_close(views[3], torch.rot90(views[0], -1, dims=(2, 3)))


def test_colour_views_normalise_each_channel_with_its_own_statistics():
    # Full crop, no flip: view 0 is the image itself, normalised per channel.
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.4, 0.8)
    policy = RotationViews(channels=3, image_size=32, mean=mean, std=std, flip_p=0.0,
                           crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    images = testing.tiny_images(2, channels=3, size=32)
    views = policy(images, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in views] == [(2, 3, 32, 32)] * 4
    expected = (images.float() / 255 - torch.tensor(mean).view(3, 1, 1)) \
        / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(views[0], expected)
    torch.testing.assert_close(views[2], expected.flip(-1).flip(-2))


def test_loss_on_hand_checkable_logits():
    # B = 1: four rows, the target of row r is r. Rows 0 and 1 put all their logit mass
    # on the right class (loss ~0); rows 2 and 3 are uniform (loss log 4).
    big = 50.0
    logits = torch.tensor([[big, 0, 0, 0], [0, big, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1.0]])
    loss = RotationLoss()(logits)
    torch.testing.assert_close(loss, torch.tensor(2 * math.log(4) / 4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="rotation logits"):
        RotationLoss()(torch.zeros(6, 4))


def test_training_step_labels_each_rotation():
    method, policy = testing.build("rotnet")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    output = method.training_step(views)
    logits = method.head(method.backbone(torch.cat(views)))
    targets = torch.arange(4).repeat_interleave(8)
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(logits, targets))
    assert 0 <= float(output.metrics["rotation_acc"]) <= 1


def test_overrides_are_validated():
    with pytest.raises(ConfigError, match="head_hidden_dim"):
        RunConfig.build(load_registry(), "rotnet", ["method.head_hidden_dim=0"])
