"""VICReg: variance-invariance-covariance regularisation of two views' embeddings. The
invariance term pulls the views together; the variance and covariance terms keep every
dimension alive and decorrelated, so nothing can collapse without negatives or an EMA.

Bardes, Ponce, LeCun. "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning." ICLR 2022. https://arxiv.org/abs/2105.04906

The plugin's README.md says where every default comes from and where sslreg departs
from the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
from torch import Tensor, nn

from sslreg import Method, MethodSpec, OptimConfig, StepOutput, fields, hookimpl
from sslreg.nn import mlp

PAPER = "Bardes, Ponce and LeCun 2022, VICReg: Variance-Invariance-Covariance " \
    "Regularization for Self-Supervised Learning (VICReg)"


@attrs.frozen(kw_only=True)
class VICRegConfig:
    """VICReg hyperparameters; the loss weights are the paper's lambda = mu = 25, nu = 1
    (sec. 4.1). The expander sizes are the small-image ones of solo-learn and lightly."""

    sim_coeff: float = fields.nonnegative_float(
        25.0, "weight of the invariance term (MSE between the views), lambda")
    std_coeff: float = fields.nonnegative_float(
        25.0, "weight of the variance hinge (keeps every dimension's std >= 1), mu")
    cov_coeff: float = fields.nonnegative_float(
        1.0, "weight of the covariance penalty (decorrelates dimensions), nu")
    proj_hidden_dim: int = fields.positive_int(2048, "hidden width of the 3-layer expander")
    proj_dim: int = fields.positive_int(2048, "output width of the expander")


class VICReg(Method):
    """Backbone -> 3-layer expander -> VICReg loss between the two views; the three
    unweighted terms are logged, since their balance shows what the run is fighting
    (a variance term that stays high means dimensions are collapsing)."""

    def __init__(self, config: VICRegConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: vicreg, the coefficients
        self.expander = mlp(backbone.output_dim, config.proj_hidden_dim, config.proj_dim,
                            num_layers=3)

    def training_step(self, views: list[Tensor]) -> StepOutput:
        # One pass per view, as the reference code does: each view's batch norm
        # statistics come from that view's batch alone.
        z1, z2 = (self.expander(self.backbone(view)) for view in views[:2])  # (N, proj_dim)
        terms = self.objective.terms(z1, z2)
        loss = self.objective.weigh(terms)
        metrics = {name: value.detach() for name, value in terms.items()}
        return StepOutput(loss=loss, embeddings=z1.detach(), metrics=metrics)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="vicreg",
        factory=VICReg,
        config_class=VICRegConfig,
        paper=PAPER,
        # The paper uses BYOL's asymmetric augmentations (appendix C.1); the policy drops
        # blur at <= 32 px, as solo-learn's CIFAR vicreg.yaml.
        views="byol",
        objective="vicreg",
        description="invariance (MSE) + variance hinge + covariance penalty on an "
        "expander's outputs; no negatives, no predictor, no EMA",
        # LARS at 0.2 x batch/256 for every parameter (1-d ones unadapted, undecayed),
        # weight decay 1e-6, 10 warm-up epochs: the paper's appendix C.1 and the
        # reference code's defaults (--base-lr 0.2, --wd 1e-6).
        optim=OptimConfig(name="lars", lr=0.2, weight_decay=1e-6, warmup_epochs=10),
    ))
