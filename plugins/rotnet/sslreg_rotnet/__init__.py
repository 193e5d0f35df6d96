"""RotNet: learn features by predicting which of four rotations (0, 90, 180, 270
degrees) an image was turned by; a classic pretext-task baseline.

Gidaris, Singh, Komodakis. "Unsupervised Representation Learning by Predicting Image
Rotations." ICLR 2018. https://arxiv.org/abs/1803.07728

Besides its method, this plugin registers its own view policy (``rotation``) and
objective (``rotation``), through the same hooks as every other plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg import Method, MethodSpec, OptimConfig, StepOutput, fields, hookimpl
from sslreg.nn import mlp
from sslreg.specs import ObjectiveSpec, ViewSpec
from sslreg.views import CropFlipViews

PAPER = "Gidaris, Singh and Komodakis 2018, Unsupervised Representation Learning by " \
    "Predicting Image Rotations (RotNet)"
ROTATIONS = 4


class RotationViews(CropFlipViews):
    """One random resized crop and flip per image, then that view turned by 0, 90, 180
    and 270 degrees: ``num_views`` = 4, view r rotated r quarter-turns. All four
    rotations of an image share a batch, as the paper found best (sec. 3.2.1).

    The crop is milder than MAE's (scale 0.6-1 instead of 0.2-1): the paper uses only
    small translations and flips, and a rotation is judged from the whole object.
    """

    num_views = ROTATIONS

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{"crop_scale": (0.6, 1.0), **kwargs})

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        self._check(images, generator)
        batch = images.shape[0]
        x = images.float().mul_(1.0 / 255.0)
        view = self._normalize(self._augment(x, generator, batch))  # (B, C, S, S)
        return [torch.rot90(view, turns, dims=(2, 3)) for turns in range(ROTATIONS)]


class RotationLoss(nn.Module):
    """Cross-entropy of 4-way rotation logits.

    Shapes: logits (R * B, R), stacked by rotation (the first B rows are the unrotated
    images, the next B turned once, ...), as the ``rotation`` views come. Returns a
    scalar: the mean over all R * B images.
    """

    def forward(self, logits: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), rotation_targets(logits))


def rotation_targets(logits: Tensor) -> Tensor:
    rotations = logits.shape[1]
    if logits.ndim != 2 or logits.shape[0] % rotations:
        raise ValueError(f"rotation logits must be (R * B, R), got {tuple(logits.shape)}")
    batch = logits.shape[0] // rotations
    return torch.arange(rotations, device=logits.device).repeat_interleave(batch)


@attrs.frozen(kw_only=True)
class RotNetConfig:
    """RotNet hyperparameters.

    The paper's rotation classifier sits on convolutional feature maps; on sslreg's pooled
    backbone features it is a 2-layer MLP (hidden ``head_hidden_dim``), so the features
    the probes read are one layer removed from the rotation logits (the paper found the
    layers before the classifier the most transferable, sec. 3.1.1).
    """

    head_hidden_dim: int = fields.positive_int(512, "hidden width of the rotation head")


class RotNet(Method):
    """Backbone -> MLP -> 4 rotation logits, on all four rotations of every image."""

    def __init__(self, config: RotNetConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: rotation
        self.head = mlp(backbone.output_dim, config.head_hidden_dim, ROTATIONS)

    def training_step(self, views: list[Tensor]) -> StepOutput:
        features = self.backbone(torch.cat(views))  # (4B, D), stacked by rotation
        logits = self.head(features)  # (4B, 4)
        loss = self.objective(logits)
        accuracy = (logits.detach().argmax(1) == rotation_targets(logits)).float().mean()
        upright = features[: len(views[0])].detach()
        return StepOutput(loss=loss, embeddings=upright, metrics={"rotation_acc": accuracy})


@hookimpl
def register_views(register: Callable[[ViewSpec], None]) -> None:
    register(ViewSpec(name="rotation", factory=RotationViews,
                      description="RotNet: 4 views, one crop+flip turned 0/90/180/270 degrees"))


@hookimpl
def register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec(name="rotation", factory=RotationLoss, paper=PAPER,
                           description="(logits (4B, 4) stacked by rotation): 4-way "
                           "rotation cross-entropy"))


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="rotnet",
        factory=RotNet,
        config_class=RotNetConfig,
        paper=PAPER,
        views="rotation",
        objective="rotation",
        description="pretext task: classify which of 4 rotations each image was turned by",
        # SGD, lr 0.1, momentum 0.9, weight decay 5e-4 (sec. 4.1, CIFAR-10); the
        # paper's batch of 128 images is 512 rotated ones, so 0.1 is taken per 256 images.
        optim=OptimConfig(name="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9,
               warmup_epochs=0),
    ))
