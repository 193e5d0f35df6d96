"""SwAV: swapping assignments between views. Each global crop is given a soft code over
learnable prototypes by Sinkhorn-Knopp (equal use of the prototypes prevents collapse),
and every other crop of the image predicts that code.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin. "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments." NeurIPS 2020.
https://arxiv.org/abs/2006.09882

The plugin's README.md says where every default comes from and where sslreg departs
from the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg import (
    Clock,
    Method,
    MethodSpec,
    ObjectiveSpec,
    StepOutput,
    distributed,
    fields,
    hookimpl,
)
from sslreg.nn import mlp
from sslreg_swav.loss import SwAVLoss, sinkhorn

__all__ = ["PAPER", "SwAV", "SwAVConfig", "SwAVLoss", "cosine_scores", "sinkhorn", "view_options"]

PAPER = "Caron et al. 2020, Unsupervised Learning of Visual Features by Contrasting " \
    "Cluster Assignments (SwAV)"

# The two global crops get codes (the reference code's crops_for_assign = [0, 1]).
GLOBAL_CROPS = 2

# The reference code freezes the prototypes for ``freeze_prototypes_niters`` iterations,
# one epoch in each of its scripts: 5005 of 400 x 5005 in the batch-256 400-epoch script
# (the recipe of ``optim`` below), 313 of 100-800 x 313 in the batch-4096 ones. As a share
# of the run that is 1/400 to 1/800; the default is the batch-256 script's 1/400.
FREEZE_FRACTION = 1 / 400


@attrs.frozen(kw_only=True)
class SwAVConfig:
    """SwAV hyperparameters; the plugin's README.md says where each default comes from.

    ``queue_length`` > 0 keeps that many past global-crop projections per global crop;
    once full they join the batch the codes are computed over (never the predictions),
    from epoch ``queue_start_epoch`` on. ``freeze_prototypes_fraction`` keeps every
    gradient off the prototypes for that share of the run's steps (epochs x steps per
    epoch), rounded to the nearest step: 0 never freezes them, 1 always does.
    ``local_size`` (``None``: the image side x 96/224 in whole ViT patches, 12 px at
    28-32 px, 36 px at 96 px) is the local crops' side.
    """

    temperature: float = fields.positive_float(
        0.1, "softmax temperature of the predictions over prototypes")
    epsilon: float = fields.positive_float(
        0.05, "entropy weight of Sinkhorn-Knopp (smaller: sharper codes)")
    sinkhorn_iterations: int = fields.positive_int(3, "Sinkhorn-Knopp rounds per step")
    proj_hidden_dim: int = fields.positive_int(2048, "hidden width of the projector")
    proj_dim: int = fields.positive_int(128, "output width of the projector")
    num_prototypes: int = fields.positive_int(3000, "prototypes (clusters)", minimum=2)
    freeze_prototypes_fraction: float = fields.probability(
        FREEZE_FRACTION, "share of the run's steps the prototypes stay frozen")
    queue_length: int = fields.nonnegative_int(
        0, "past projections per global crop that widen the codes' batch (0: no queue)")
    queue_start_epoch: int = fields.nonnegative_int(15, "epoch from which the queue is used")
    num_local: int = fields.nonnegative_int(6, "small local crops beside the 2 global ones",
                                            maximum=32)
    local_size: int | None = fields.positive_int(
        None, "side of the local crops in px (none: 96/224 of the image, whole patches)",
        optional=True)


def view_options(config: SwAVConfig) -> dict[str, Any]:
    """The number and side of the local crops; the ``swav-multicrop`` policy's other
    defaults are SwAV's. The policy checks ``local_size`` against the image size: a
    multiple of the ViT patch (:func:`sslreg.backbones.multicrop_sizes`)."""
    options: dict[str, Any] = {"num_local": config.num_local}
    if config.local_size is not None:
        options["local_size"] = config.local_size
    return options


class SwAV(Method):
    """Backbone -> projector -> L2-normalise -> prototypes (a bias-free Linear whose rows
    are kept on the unit sphere) -> swapped prediction of Sinkhorn codes.

    The queue is a buffer; whether the prototypes are frozen, whether the queue has
    started and how full it is follow from the engine's clock (the global step), so a
    resumed run freezes and queues exactly as an uninterrupted one, with no counter of
    its own and no device sync to decide the Python branches.
    """

    def __init__(self, config: SwAVConfig, backbone: nn.Module, objective: nn.Module) -> None:
        # objective: swav at temperature, epsilon, sinkhorn_iterations (2 assigned crops)
        super().__init__(config, backbone, objective)
        self.projector = mlp(backbone.output_dim, config.proj_hidden_dim, config.proj_dim)
        self.prototypes = nn.Linear(config.proj_dim, config.num_prototypes, bias=False)
        # Past normalised projections of each global crop, newest first.
        self.register_buffer("queue", torch.zeros(GLOBAL_CROPS, config.queue_length,
                                                  config.proj_dim))  # (2, L, D)
        self._pending: Tensor | None = None  # this step's projections, enqueued at its end

    @property
    def freeze_steps(self) -> int:
        """How many steps from the start the prototypes stay frozen."""
        return round(self.config.freeze_prototypes_fraction * self.context.total_steps)

    def prototypes_frozen(self, clock: Clock) -> bool:
        return clock.step < self.freeze_steps

    @property
    def queue_rows(self) -> int:
        """The rows of the queue this rank uses: all of them in one process, 1/W of them
        under torchrun (the reference code's ``queue_length // world_size``), so the
        ranks' queues together hold what one process's does. The buffer keeps its full
        length, so checkpoints load whatever the number of processes."""
        return self.config.queue_length // distributed.world_size()

    def queue_started(self, clock: Clock) -> bool:
        """Projections are queued from the end of step ``queue_start_epoch`` x steps
        per epoch on."""
        start = self.config.queue_start_epoch * self.context.steps_per_epoch
        return self.queue_rows > 0 and clock.step >= start

    def queue_full(self, clock: Clock, batch: int) -> bool:
        """Every step since the start pushed ``batch`` rows (the engine's batches are
        all whole), so the step tells how full the queue is."""
        start = self.config.queue_start_epoch * self.context.steps_per_epoch
        pushed = max(clock.step - start, 0) * batch
        return self.queue_started(clock) and pushed >= self.queue_rows

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Put each prototype back on the unit sphere (done before every step, as the
        reference code does, so scores are cosines)."""
        weight = self.prototypes.weight
        weight.copy_(F.normalize(weight.float(), dim=1))

    def embed(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, proj_dim) L2-normalised projections."""
        return F.normalize(self.projector(self.backbone(images)).float(), dim=1)

    def training_step(self, views: list[Tensor], clock: Clock) -> StepOutput:
        self.normalize_prototypes()
        batch = len(views[0])
        # One pass per resolution, as the reference code: the globals, then all locals.
        z = [self.embed(torch.cat(views[:GLOBAL_CROPS]))]  # (2B, D)
        if len(views) > GLOBAL_CROPS:
            z.append(self.embed(torch.cat(views[GLOBAL_CROPS:])))  # (nB, D)
        z = torch.cat(z)  # (V*B, D)
        # No gradient reaches frozen prototypes, so their .grad stays None and the
        # optimizer skips them (the reference code sets p.grad = None instead).
        frozen, queue_full = self.prototypes_frozen(clock), self.queue_full(clock, batch)
        weight = self.prototypes.weight  # (K, D)
        if frozen:
            weight = weight.detach()
        scores = list(cosine_scores(z, weight).split(batch))  # V x (B, K)
        globals_ = z[:GLOBAL_CROPS * batch].detach().view(GLOBAL_CROPS, batch, -1)
        loss = self.objective(scores, self.queue_scores() if queue_full else None)
        self._pending = globals_  # (2, B, D)
        return StepOutput(loss=loss, embeddings=globals_[0], metrics={
            "prototypes_frozen": torch.tensor(float(frozen)),
            "queue_in_use": torch.tensor(float(queue_full)),
        })

    @torch.no_grad()
    def queue_scores(self) -> list[Tensor]:
        """Each global crop's queue scored against the prototypes; used once the queue
        is full, as the reference code does."""
        weight, rows = self.prototypes.weight, self.queue_rows
        return [cosine_scores(self.queue[i, :rows], weight)
                for i in range(GLOBAL_CROPS)]  # 2 x (L, K), L / W under torchrun

    def on_step_end(self, clock: Clock) -> None:
        if self.queue_started(clock) and self._pending is not None:
            self.enqueue(self._pending)
        self._pending = None

    @torch.no_grad()
    def enqueue(self, projections: Tensor) -> None:
        """Push (2, B, D) projections in front of this rank's rows of the queue, dropping
        the oldest."""
        rows = self.queue_rows
        n = min(projections.shape[1], rows)
        self.queue[:, n:rows] = self.queue[:, :rows - n].clone()
        self.queue[:, :n] = projections[:, :n]


def cosine_scores(z: Tensor, prototypes: Tensor) -> Tensor:
    """(N, D) unit projections x (K, D) unit prototypes -> (N, K) cosines, in float32
    even under autocast: exp(score / 0.05) in Sinkhorn would turn bf16 rounding of the
    scores (steps of 0.004 below 1) into errors of several percent in the codes."""
    with torch.autocast(z.device.type, enabled=False):
        return z.float() @ prototypes.float().T


@hookimpl
def register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec(
        name="swav",
        factory=SwAVLoss,
        paper=PAPER,
        description="(scores, queue_scores=None): each global crop's Sinkhorn code "
        "predicted from every other crop's softmax(scores / T)",
    ))


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="swav",
        factory=SwAV,
        config_class=SwAVConfig,
        paper=PAPER,
        views="swav-multicrop",
        objective="swav",
        description="multi-crop; every crop predicts the global crops' Sinkhorn-Knopp codes "
        "over learnable prototypes",
        view_options=view_options,
        # The paper's own batch-256 setting (reference code, scripts/
        # swav_400ep_bs256_pretrain.sh): LARS (trust 1e-3) at lr 0.6 for 256 images, weight
        # decay 1e-6, no warm-up; solo-learn's CIFAR-10 config also uses LARS lr 0.6, wd 1e-6.
        # (The batch-4096 runs use 4.8 with 10 warm-up epochs.)
        optim={"name": "lars", "lr": 0.6, "weight_decay": 1e-6, "warmup_epochs": 0},
    ))
