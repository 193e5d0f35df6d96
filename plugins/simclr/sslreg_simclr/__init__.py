"""SimCLR: contrastive learning of visual representations with NT-Xent.

Chen, Kornblith, Norouzi, Hinton. "A Simple Framework for Contrastive Learning of Visual
Representations." ICML 2020. https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch
from torch import Tensor, nn

from sslreg import Method, MethodSpec, OptimConfig, StepOutput, distributed, fields, hookimpl
from sslreg.nn import mlp
from sslreg.objectives import infonce_bound

PAPER = "Chen et al. 2020, A Simple Framework for Contrastive Learning (SimCLR)"


@attrs.frozen(kw_only=True)
class SimCLRConfig:
    """SimCLR hyperparameters; defaults from the paper's CIFAR-10 setting (appendix B.9)."""

    temperature: float = fields.positive_float(0.5, "softmax temperature of NT-Xent")
    proj_hidden_dim: int = fields.positive_int(2048, "hidden width of the MLP projector")
    proj_dim: int = fields.positive_int(128, "output width of the projector (NT-Xent's space)")


class SimCLR(Method):
    """Backbone -> 2-layer MLP projector -> NT-Xent between the two views of each image."""

    def __init__(self, config: SimCLRConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: nt_xent at temperature
        self.projector = mlp(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)

    def training_step(self, views: list[Tensor]) -> StepOutput:
        # One pass over both views: batch norm sees all 2N images, as in the paper.
        z = self.projector(self.backbone(torch.cat(views[:2])))  # (2N, proj_dim)
        z1, z2 = z.chunk(2)
        loss = self.objective(z1, z2)
        # Each of the 2N anchors (N images per rank) is scored against the other 2NW - 1
        # projections of all W ranks: its positive and 2NW - 2 negatives.
        candidates = 2 * len(z1) * distributed.world_size() - 1
        bound = infonce_bound(loss, num_candidates=candidates)
        return StepOutput(loss=loss, embeddings=z1.detach(), metrics={"infonce_bound": bound})


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="simclr",
        factory=SimCLR,
        config_class=SimCLRConfig,
        paper=PAPER,
        views="simclr",
        objective="nt_xent",
        description="two augmented views, MLP projector, NT-Xent: each of the 2N projections "
        "of a batch of N images against its positive and the other 2N-2 as negatives",
        # LARS at 0.3 x batch/256 with weight decay 1e-6 and a 10-epoch warm-up (sec. B.1).
        optim=OptimConfig(name="lars", lr=0.3, weight_decay=1e-6, warmup_epochs=10),
    ))
