"""SimSiam: a Siamese network whose predictor regresses the other view's projection, with
neither negatives nor a momentum encoder; a stop-gradient alone prevents collapse.

Chen and He. "Exploring Simple Siamese Representation Learning." CVPR 2021.
https://arxiv.org/abs/2011.10566

The plugin's README.md says where every default comes from and where sslreg departs
from the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg import Method, MethodSpec, OptimConfig, StepOutput, fields, hookimpl
from sslreg.nn import mlp

PAPER = "Chen and He 2021, Exploring Simple Siamese Representation Learning (SimSiam)"


@attrs.frozen(kw_only=True)
class SimSiamConfig:
    """SimSiam hyperparameters; defaults from the paper (sec. 3 and appendix D, CIFAR).

    ``stop_gradient=False`` is the paper's ablation (sec. 4.1, fig. 2): without it the
    representation collapses to a constant within a few epochs.
    """

    proj_hidden_dim: int = fields.positive_int(2048, "hidden width of the projector")
    proj_dim: int = fields.positive_int(2048, "output width of the projector and predictor")
    pred_hidden_dim: int = fields.positive_int(512, "the predictor's bottleneck width")
    stop_gradient: bool = fields.flag(
        True, "stop the gradient on the target projection (false: the collapsing ablation)")


def negative_cosine_with_gradient(p: Tensor, z: Tensor) -> Tensor:
    """D(p, z) = -cos(p, z) averaged over the batch, with gradients into both ``p`` and
    ``z``: the no-stop-gradient ablation only; the ``negative_cosine`` objective is the
    method."""
    return -F.cosine_similarity(p.float(), z.float(), dim=1).mean()


class SimSiam(Method):
    """Backbone -> projector (z) -> predictor (p); loss 0.5 D(p1, z2) + 0.5 D(p2, z1).

    The projector ends in an affine-free BN, as in the paper, so its final Linear has no
    bias. The predictor's bottleneck (512 for 2048-d z) is what the paper found to train
    well; its output layer has neither BN nor ReLU.
    """

    def __init__(self, config: SimSiamConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: negative_cosine
        self.projector = mlp(backbone.output_dim, config.proj_hidden_dim, config.proj_dim,
                             last_bn=True)
        self.predictor = mlp(config.proj_dim, config.pred_hidden_dim, config.proj_dim)

    def training_step(self, views: list[Tensor]) -> StepOutput:
        # One pass per view, as the paper's code does: each view's batch norm statistics
        # (the projector's output BN above all) come from that view's batch alone.
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])  # (N, proj_dim)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = self.symmetric_loss(p1, p2, z1, z2)
        # The paper watches the std of the l2-normalised projections z (sec. 4.1).
        return StepOutput(loss=loss, embeddings=z1.detach())

    def symmetric_loss(self, p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
        """0.5 D(p1, z2) + 0.5 D(p2, z1) (paper eq. 2); ``z`` gets no gradient unless the
        stop-gradient is switched off."""
        distance = (self.objective if self.config.stop_gradient
                    else negative_cosine_with_gradient)
        return 0.5 * distance(p1, z2) + 0.5 * distance(p2, z1)


def view_options(_config: SimSiamConfig) -> dict[str, Any]:
    """Options for the ``simclr`` policy: main_simsiam.py's crop scale (0.2, 1)."""
    return {"crop_scale": (0.2, 1.0)}


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="simsiam",
        factory=SimSiam,
        config_class=SimSiamConfig,
        paper=PAPER,
        views="simclr",
        view_options=view_options,
        objective="negative_cosine",
        description="predictor regresses the other view's projection under a stop-gradient; "
        "no negatives, no momentum encoder",
        # SGD, momentum 0.9, cosine decay, no warm-up (appendix D); lr 0.5 x batch/256 and
        # weight decay 1e-5 are solo-learn's CIFAR settings, in place of the paper's CIFAR
        # lr 0.03 (wd 5e-4); a suite runs the rate `sslreg tune` chose on the validation
        # split (1, 4 or 16 times this one; sslreg/suites/tuned/). Weight decay 1e-5 beat
        # 5e-4 on validation at the quick CPU budget, 3 seeds: linear 71.8 ± 2.0 against
        # 66.9 ± 2.0, kNN20 64.0 ± 3.8 against 57.4 ± 2.3
        # (benchmarks/results/quick-defaults-val.md). The ImageNet
        # setting's constant predictor lr is not used: the engine schedules every
        # parameter group alike.
        optim=OptimConfig(name="sgd", lr=0.5, weight_decay=1e-5, momentum=0.9,
               warmup_epochs=0),
    ))
