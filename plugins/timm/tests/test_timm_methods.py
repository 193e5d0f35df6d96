"""Methods on timm backbones: MAE and DINO read the ViT token API, and a whole short
pretraining run goes through on a timm ResNet and a timm ViT."""

import pytest
import torch

from sslreg import RunConfig, testing
from sslreg.engine import pretrain

TINY_VIT = "timm/vit_tiny_patch16_224"


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_training_step_on_a_timm_vit(registry, method):
    """A step's loss is finite and its backward reaches every backbone parameter (DINO's
    local crops go through the resampled positions)."""
    testing.check_step(method, backbone=TINY_VIT, registry=registry)


@pytest.mark.parametrize("method", ["mae", "dino"])
def test_pictures_on_a_timm_vit(registry, method):
    """MAE's reconstructions and DINO's attention maps (last_self_attention)."""
    model, _ = testing.build(method, backbone=TINY_VIT, registry=registry)
    pictures = model.visualize(torch.rand(2, 1, 28, 28))
    assert pictures and all(picture.shape[-2:] == (28, 28) and torch.isfinite(picture).all()
                            for picture in pictures.values())
    assert method == "mae" or pictures["attention"].shape == (2, 1, 28, 28)


# One epoch of two steps, scored on a few images: the whole path (views, optimizer,
# checkpoint, features, linear probe and kNN), not how well it learns.
SHORT_RUN = ["train.epochs=1", "train.train_subset=128", "train.batch_size=64",
             "eval.train_subset=128", "eval.val_subset=64", "eval.test_subset=64"]


@pytest.mark.parametrize(("method", "backbone"), [("simclr", "timm/resnet18"),
                                                  ("mae", TINY_VIT)])
def test_a_short_pretraining_run(registry, tmp_path, monkeypatch, method, backbone):
    # The TensorBoard projector embeds the first 1000 test images whatever the subsets:
    # on a ViT that took longer than the rest of this run.
    monkeypatch.setattr("sslreg.engine.run.PROJECTOR_IMAGES", 64)
    config = RunConfig.build(registry, method, SHORT_RUN, dataset="synthetic",
                             backbone=backbone)
    run = pretrain(config, registry, tmp_path, progress=False)
    metrics = run.read_json(run.result)["val_metrics"]
    assert 0 <= metrics["linear_acc"] <= 1 and 0 <= metrics["knn20_acc"] <= 1
