"""The supervised ceiling: conformance and its loss."""

import pytest
import torch
import torch.nn.functional as F

from sslreg import load_registry, testing


def test_registered_as_a_labelled_ceiling():
    spec = load_registry().methods.get("supervised")
    assert spec.plugin == "supervised" and spec.factory.uses_labels
    assert "LABELS" in spec.description and spec.views == "crop-flip"


def test_loss_is_cross_entropy_of_the_linear_classifier():
    method, policy = testing.build("supervised")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    labels = testing.tiny_labels()
    output = method.training_step(views, labels=labels)
    logits = method.classifier(method.backbone(views[0]))
    assert logits.shape == (8, len(testing.CLASS_NAMES))
    torch.testing.assert_close(output.loss, F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="labels"):
        method.training_step(views)
