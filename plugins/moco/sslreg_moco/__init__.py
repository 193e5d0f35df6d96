"""MoCo: momentum contrast. A query encoder is trained with InfoNCE against keys from a
slowly moving (EMA) copy of itself; v2 draws its negatives from a queue of past keys, v3
from the other keys of the batch, with a predictor and a symmetric loss.

Papers: He et al. 2020 (MoCo), https://arxiv.org/abs/1911.05722; Chen et al. 2020 (v2),
https://arxiv.org/abs/2003.04297; Chen, Xie, He 2021 (v3), https://arxiv.org/abs/2104.02057.

The plugin's README.md says where every default comes from and where sslreg departs
from the papers.
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
    RunContext,
    Schedule,
    StepOutput,
    distributed,
    fields,
    hookimpl,
)
from sslreg.interfaces import is_vit
from sslreg.nn import ema_update, make_target, mlp
from sslreg.nn.split_bn import convert_split_batchnorm
from sslreg.objectives import infonce_bound

PAPER = "He et al. 2020, Momentum Contrast (MoCo); v2: Chen et al. 2020; v3: Chen, Xie " \
    "and He 2021"


@attrs.frozen(kw_only=True)
class MoCoConfig:
    """MoCo hyperparameters; v2's defaults (Chen et al. 2020, sec. 3) unless noted. The
    plugin's README.md says where each comes from and why ``head_bn``, ``momentum`` and
    ``queue_length`` depart from the paper."""

    version: int = fields.choice(2, (2, 3), "2: queue of negatives, MLP head; 3: in-batch "
                                 "negatives, predictor, symmetric loss")
    temperature: float = fields.positive_float(0.2, "softmax temperature of InfoNCE")
    queue_length: int = fields.positive_int(4096, "keys kept as negatives (version 2)")
    momentum: float | None = fields.probability(
        None, "EMA momentum of the key encoder (none: 0.99, v3 rising to 1)", optional=True)
    proj_hidden_dim: int | None = fields.positive_int(
        None, "hidden width of the heads (none: 2048 for v2, 4096 for v3)", optional=True)
    proj_dim: int | None = fields.positive_int(
        None, "output width of the heads (none: 128 for v2, 256 for v3)", optional=True)
    head_bn: bool = fields.flag(True, "BN after the v2 head's hidden layer (not the paper's)")
    shuffle_bn: bool | None = fields.flag(
        None, "Shuffle BN against intra-batch cheating (none: on for v2, off for v3)",
        optional=True)
    bn_splits: int = fields.positive_int(8, "sub-batches Shuffle BN takes statistics over")

    @property
    def base_momentum(self) -> float:
        return self.momentum if self.momentum is not None else 0.99

    @property
    def uses_shuffle_bn(self) -> bool:
        return self.shuffle_bn if self.shuffle_bn is not None else self.version == 2

    @property
    def head_sizes(self) -> tuple[int, int]:
        hidden, out = {2: (2048, 128), 3: (4096, 256)}[self.version]
        return self.proj_hidden_dim or hidden, self.proj_dim or out


def v2_head(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool) -> nn.Sequential:
    """MoCo v2's MLP head, Linear-ReLU-Linear, with BN after the hidden Linear unless
    ``batch_norm`` is off (see README.md, head_bn)."""
    if batch_norm:
        return mlp(in_dim, hidden_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def v3_heads(in_dim: int, hidden_dim: int, out_dim: int, vit: bool
             ) -> tuple[nn.Sequential, nn.Sequential]:
    """moco-v3's projector and predictor (its moco/builder.py): for a ResNet a 2-layer
    projector ending in an affine-free BN and a 2-layer predictor without it; for a ViT
    a 3-layer projector and a predictor that also ends in the BN. A predictor without
    the final BN keeps a bias in its last Linear (``mlp``'s), where v3's has none."""
    projector = mlp(in_dim, hidden_dim, out_dim, num_layers=3 if vit else 2, last_bn=True)
    predictor = mlp(out_dim, hidden_dim, out_dim, last_bn=vit)
    return projector, predictor


class KeyQueue(nn.Module):
    """A FIFO of the last ``length`` L2-normalised keys, kept as buffers so that a
    checkpoint carries it.

    MoCo's code starts the queue with random unit vectors. Those are orthogonal to every
    query, so until real keys replace them the loss is lowered by pointing all queries
    one way; over a 200-epoch run that lasts a negligible 256 steps, but on short runs
    it left the representation collapsed (measured: std x sqrt(D) of the projections
    0.07 by step 4, loss stuck at log(1 + K)). So this queue starts empty and
    :meth:`negatives` returns only the keys pushed so far.

    Every optimizer step pushes one global batch of keys, so the steps done say how
    many rows are filled and where the next push goes: the queue keeps no counter.
    """

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(length, dim))

    def written(self, steps: int, batch: int) -> int:
        """Rows written by ``steps`` pushes of ``batch`` keys (a push keeps at most
        ``length`` of them)."""
        return steps * min(batch, len(self.keys))

    def negatives(self, steps: int, batch: int) -> Tensor | None:
        """The keys stored after ``steps`` pushes of ``batch`` (a copy, as the queue
        changes in place while autograd still needs them), or ``None`` while empty."""
        count = min(self.written(steps, batch), len(self.keys))
        if count == len(self.keys):
            return self.keys.clone()
        return self.keys[:count].clone() if count else None

    @torch.no_grad()
    def push(self, keys: Tensor, steps: int) -> None:
        """After ``steps`` earlier pushes of as many keys, overwrite the oldest
        ``len(keys)`` entries (wrapping around the end)."""
        length = self.keys.shape[0]
        keys = F.normalize(keys.detach().float(), dim=1)[-length:]
        start = self.written(steps, len(keys)) % length
        rows = (start + torch.arange(len(keys), device=keys.device)) % length
        self.keys[rows] = keys.to(self.keys.dtype)


class MoCo(Method):
    """Query encoder (backbone + head [+ predictor]) against an EMA key encoder."""

    def __init__(self, config: MoCoConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: info_nce at temperature
        hidden, out = config.head_sizes
        if config.version == 2:
            self.projector = v2_head(backbone.output_dim, hidden, out, config.head_bn)
            self.predictor = nn.Identity()
            self.queue = KeyQueue(config.queue_length, out)
        else:
            self.projector, self.predictor = v3_heads(backbone.output_dim, hidden, out,
                                                      vit=is_vit(backbone))
        if config.uses_shuffle_bn:  # before the key encoder copies them
            self.backbone = convert_split_batchnorm(self.backbone, config.bn_splits)
            self.projector = convert_split_batchnorm(self.projector, config.bn_splits)
            self.predictor = convert_split_batchnorm(self.predictor, config.bn_splits)
        self.key_backbone = make_target(self.backbone)
        self.key_projector = make_target(self.projector)
        self._pending_keys: Tensor | None = None  # this step's keys, queued at its end

    @torch.no_grad()
    def keys(self, view: Tensor) -> Tensor:
        """The key encoder's output, row i for image i. With Shuffle BN the images go
        through it in a random order (README.md, shuffle_bn)."""
        if not self.config.uses_shuffle_bn:
            return self.key_projector(self.key_backbone(view))
        order = torch.randperm(len(view), device=view.device)
        keys = self.key_projector(self.key_backbone(view[order]))
        return keys[torch.argsort(order)]

    def schedules(self, context: RunContext) -> dict[str, Schedule]:
        """The key encoder's EMA momentum: constant for v2, base -> 1 on a cosine for v3."""
        base = self.config.base_momentum
        if self.config.version == 2:
            return {"momentum": Schedule.constant(base)}
        return {"momentum": Schedule.cosine(base, 1.0, after_step=True)}

    def training_step(self, views: list[Tensor], clock: Clock) -> StepOutput:
        if self.config.version == 2:
            return self._v2_step(views[0], views[1], clock)
        return self._v3_step(views[0], views[1])

    def _v2_step(self, query_view: Tensor, key_view: Tensor, clock: Clock) -> StepOutput:
        q = self.projector(self.backbone(query_view))  # (N, D)
        k = self.keys(key_view)  # (N, D)
        # Every rank pushes the global batch's keys each step.
        global_batch = len(q) * distributed.world_size()
        # None on the first step: in-batch negatives.
        negatives = self.queue.negatives(clock.step, global_batch)
        loss = self.objective(q, k, negatives)
        # Queued in on_step_end, after the optimizer step (the paper's algorithm 1): a
        # loss computed without a step must leave the queue alone. Under torchrun every
        # rank queues the keys of the whole global batch, as MoCo's code does, so the
        # ranks' queues stay identical.
        self._pending_keys = distributed.gather_with_grad(k).detach()
        # In-batch negatives are gathered from every rank under torchrun.
        candidates = global_batch if negatives is None else 1 + len(negatives)
        bound = infonce_bound(loss, num_candidates=candidates)
        return StepOutput(loss=loss, embeddings=q.detach(), metrics={"infonce_bound": bound})

    def _v3_step(self, view1: Tensor, view2: Tensor) -> StepOutput:
        # One pass per view, as v3's code does: BN normalises over one view's images.
        q1, q2 = (self.predictor(self.projector(self.backbone(v))) for v in (view1, view2))
        k1, k2 = self.keys(view1), self.keys(view2)
        one_way = self.objective(q1, k2) + self.objective(q2, k1)
        loss = 2 * self.config.temperature * one_way  # v3's loss scaling (its algorithm 1)
        bound = infonce_bound(one_way / 2, num_candidates=len(q1) * distributed.world_size())
        return StepOutput(loss=loss, embeddings=q1.detach(), metrics={"infonce_bound": bound})

    def on_step_end(self, clock: Clock) -> None:
        if self._pending_keys is not None:
            self.queue.push(self._pending_keys, clock.step)
            self._pending_keys = None
        ema_update(self.key_backbone, self.backbone, clock["momentum"])
        ema_update(self.key_projector, self.projector, clock["momentum"])


def view_options(config: MoCoConfig) -> dict[str, Any]:
    """Options for the ``simclr`` policy; README.md says where each comes from."""
    if config.version == 2:
        return {"crop_scale": (0.2, 1.0)}
    return {"crop_scale": (0.08, 1.0), "saturation": 0.2, "solarize_p": (0.0, 0.2)}


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="moco",
        factory=MoCo,
        config_class=MoCoConfig,
        paper=PAPER,
        # v2's augmentation is SimCLR's with blur (Chen et al. 2020, sec. 3); view_options
        # sets what each version changes (see README.md).
        views="simclr",
        view_options=view_options,
        objective="info_nce",
        description="query vs EMA key encoder; v2 (default): queue of 4096 negatives; "
        "method.version=3: in-batch negatives, predictor, symmetric loss",
        # v2: SGD, momentum 0.9, weight decay 1e-4, cosine decay, no warm-up (Chen et
        # al. 2020, sec. 3); lr 0.3 x batch/256, solo-learn's CIFAR rate, instead of the
        # paper's ImageNet 0.03. A suite runs the rate `sslreg tune` chose on the
        # validation split (1, 4 or 16 times this one; sslreg/suites/tuned/).
        optim={"name": "sgd", "lr": 0.3, "weight_decay": 1e-4, "momentum": 0.9,
               "warmup_epochs": 0},
    ))
