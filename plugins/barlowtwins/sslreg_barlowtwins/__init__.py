"""Barlow Twins: make the cross-correlation matrix of two views' projections the identity,
so each feature is invariant to the augmentation and the features are not redundant.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction." ICML 2021. https://arxiv.org/abs/2103.03230

The plugin's README.md says where every default comes from and where sslreg departs
from the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from torch import Tensor, nn

from sslreg import Method, MethodSpec, OptimConfig, StepOutput, fields, hookimpl
from sslreg.nn import mlp

PAPER = "Zbontar et al. 2021, Barlow Twins: Self-Supervised Learning via Redundancy " \
    "Reduction (Barlow Twins)"


@attrs.frozen(kw_only=True)
class BarlowTwinsConfig:
    """Barlow Twins hyperparameters.

    ``lambda_offdiag`` is the paper's trade-off lambda = 5e-3 (sec. 2, also the default of
    ``sslreg.objectives.BarlowTwinsLoss``; the reference code's 0.0051 differs by 2%).
    The projector sizes are the small-image ones of solo-learn and lightly (README.md).
    """

    lambda_offdiag: float = fields.nonnegative_float(
        5e-3, "weight of the off-diagonal (redundancy) terms against the diagonal ones")
    proj_hidden_dim: int = fields.positive_int(2048, "hidden width of the 3-layer projector")
    proj_dim: int = fields.positive_int(2048, "output width of the projector (the "
                                        "cross-correlation matrix is proj_dim x proj_dim)")


class BarlowTwins(Method):
    """Backbone -> 3-layer projector -> Barlow Twins loss between the two views.

    The projector's final Linear feeds the loss's own standardisation (the reference
    code's affine-free BN), which removes any bias, as the reference's ``bias=False`` does.
    """

    def __init__(self, config: BarlowTwinsConfig, backbone: nn.Module,
                 objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: barlow_twins
        self.projector = mlp(backbone.output_dim, config.proj_hidden_dim, config.proj_dim,
                             num_layers=3)

    def training_step(self, views: list[Tensor]) -> StepOutput:
        # One pass per view, as the reference code does: each view's batch norm
        # statistics come from that view's batch alone, like the loss's standardisation.
        z1, z2 = (self.projector(self.backbone(view)) for view in views[:2])  # (N, proj_dim)
        return StepOutput(loss=self.objective(z1, z2), embeddings=z1.detach())


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="barlow_twins",
        factory=BarlowTwins,
        config_class=BarlowTwinsConfig,
        paper=PAPER,
        # The paper uses BYOL's asymmetric augmentations (sec. 2, implementation details);
        # the policy drops blur at <= 32 px, as solo-learn's CIFAR barlow.yaml.
        views="byol",
        objective="barlow_twins",
        description="cross-correlation of the two views' standardised projections driven "
        "to the identity; no negatives, no predictor, no EMA",
        # LARS, weight decay 1.5e-6 and 10 warm-up epochs as in the paper (sec. 2). The
        # paper's rates are 0.2 (weights) and 0.0048 (biases, BN) x batch/256; sslreg's
        # LARS has one rate and exempts 1-d parameters from adaptation and decay.
        optim=OptimConfig(name="lars", lr=0.2, weight_decay=1.5e-6, warmup_epochs=10),
    ))
