"""BYOL: bootstrap your own latent, a predictor on an online network regressing an EMA
target network's projection, without negatives.

Grill et al. "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning."
NeurIPS 2020. https://arxiv.org/abs/2006.07733

Views: the ``byol`` policy, the paper's asymmetric pair (table 6), with no blur at
<= 32 px as in solo-learn's CIFAR recipe (``scripts/pretrain/cifar/byol.yaml``); see
:class:`sslreg.views.policies.BYOLOptions`.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch
from torch import Tensor, nn

from sslreg import (
    Clock,
    Method,
    MethodSpec,
    OptimConfig,
    RunContext,
    Schedule,
    StepOutput,
    fields,
    hookimpl,
)
from sslreg.nn import ema_update, make_target, mlp

PAPER = "Grill et al. 2020, Bootstrap Your Own Latent (BYOL)"


@attrs.frozen(kw_only=True)
class BYOLConfig:
    """BYOL hyperparameters; defaults from the paper (sec. 3.3 and appendix)."""

    base_momentum: float = fields.probability(
        0.996, "EMA momentum of the target at the start; rises to 1 on a cosine")
    proj_hidden_dim: int = fields.positive_int(4096, "hidden width of the projector")
    proj_dim: int = fields.positive_int(256, "output width of the projector and predictor")
    pred_hidden_dim: int = fields.positive_int(4096, "hidden width of the predictor")


class BYOL(Method):
    """Online backbone+projector+predictor against an EMA target backbone+projector.

    The loss is the paper's symmetrised normalised MSE, 2 - 2 cos(p, z') per direction,
    written through ``negative_cosine`` (which already stops the gradient on z').
    """

    def __init__(self, config: BYOLConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: negative_cosine
        self.projector = mlp(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)
        self.predictor = mlp(config.proj_dim, config.pred_hidden_dim, config.proj_dim)
        self.target_backbone = make_target(backbone)
        self.target_projector = make_target(self.projector)

    def schedules(self, context: RunContext) -> dict[str, Schedule]:
        """The target's EMA momentum, from ``base_momentum`` to 1 on a cosine (sec. 3.2)."""
        return {"momentum": Schedule.cosine(self.config.base_momentum, 1.0, after_step=True)}

    def training_step(self, views: list[Tensor]) -> StepOutput:
        # One pass per view, as the paper's code does: each view's batch norm statistics
        # come from that view's batch alone, in the online and the target network.
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])  # (N, proj_dim)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1, t2 = (self.target_projector(self.target_backbone(view)) for view in views[:2])
        # p1 predicts the target of view 2 and p2 that of view 1 (symmetrised loss).
        loss = 4 + 2 * (self.objective(p1, t2) + self.objective(p2, t1))
        return StepOutput(loss=loss, embeddings=z1.detach())

    def on_step_end(self, clock: Clock) -> None:
        ema_update(self.target_backbone, self.backbone, clock["momentum"])
        ema_update(self.target_projector, self.projector, clock["momentum"])


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="byol",
        factory=BYOL,
        config_class=BYOLConfig,
        paper=PAPER,
        views="byol",  # table 6; no blur at <= 32 px (BYOLOptions)
        objective="negative_cosine",
        description="online predictor regresses an EMA target (momentum 0.996 -> 1), no negatives",
        # LARS at 0.2 x batch/256, weight decay 1.5e-6, 10 warm-up epochs (sec. 3.3).
        optim=OptimConfig(name="lars", lr=0.2, weight_decay=1.5e-6, warmup_epochs=10),
    ))
