"""MoCo: momentum contrast. A query encoder is trained with InfoNCE against keys from a
slowly moving (EMA) copy of itself; v2 draws its negatives from a queue of past keys, v3
from the other keys of the batch, with a predictor and a symmetric loss.

He, Fan, Wu, Xie, Girshick. "Momentum Contrast for Unsupervised Visual Representation
Learning." CVPR 2020. https://arxiv.org/abs/1911.05722
Chen, Fan, Girshick, He. "Improved Baselines with Momentum Contrastive Learning" (MoCo
v2). 2020. https://arxiv.org/abs/2003.04297
Chen, Xie, He. "An Empirical Study of Training Self-Supervised Vision Transformers"
(MoCo v3). ICCV 2021. https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import torch
import torch.nn.functional as F
from attrs import field
from attrs.validators import ge, gt, in_, instance_of, le, optional
from torch import Tensor, nn

from sslreg import Method, MethodSpec, StepOutput, distributed, hookimpl
from sslreg.nn import cosine_momentum, ema_update, make_target, mlp
from sslreg.objectives import InfoNCELoss, infonce_bound

PAPER = "He et al. 2020, Momentum Contrast (MoCo); v2: Chen et al. 2020; v3: Chen, Xie " \
    "and He 2021"


@attrs.frozen(kw_only=True)
class MoCoConfig:
    """MoCo hyperparameters; v2's defaults (Chen et al. 2020, sec. 3) unless noted.

    * ``version`` 2: 2-layer MLP head (hidden 2048, output 128), asymmetric loss
      against a queue, constant momentum (paper 0.999; 0.99 here, see below).
      ``version`` 3: 3-layer projector and 2-layer predictor with BN (hidden 4096,
      output 256), symmetric loss against the batch's other keys scaled by 2T, momentum
      0.99 -> 1 on a cosine schedule.
    * ``queue_length``: the paper's 65536 is larger than Fashion-MNIST's training set,
      so a queue that long would hold stale keys of the very image being queried; 4096
      (MoCo's smallest ablated size within 1% of its best, fig. 3) fits small datasets.
    * ``temperature``: 0.2 (v2, and v3 for ViTs; v3 reports 1.0 for its ResNet-50).
    * ``momentum``: ``None`` takes the version's default: 0.99 for v2 (solo-learn's
      CIFAR setting; the paper's 0.999 suits ImageNet's 5000 steps per epoch, while on
      a short small-image run the key encoder would barely leave its initialisation)
      and 0.99 -> 1 for v3 (its paper).
    * ``head_bn``: v2's head has no BN; sslreg adds one after its hidden layer (as
      SimCLR's and v3's heads have): a randomly initialised small-image ResNet maps
      every image to nearly one direction, and BN centres them. Measured after 2 epochs
      of 6000 Fashion-MNIST images (seed 0): kNN20 0.728 with BN, 0.658 without (std x
      sqrt(D) of the projections 0.39 and 0.28). ``method.head_bn=false`` restores the
      paper's head.
    """

    version: int = field(default=2, validator=in_((2, 3)))
    temperature: float = field(default=0.2, converter=float, validator=gt(0))
    queue_length: int = field(default=4096, validator=[instance_of(int), ge(1)])
    momentum: float | None = field(
        default=None, converter=attrs.converters.optional(float),
        validator=optional([ge(0), le(1)]))
    proj_hidden_dim: int | None = field(default=None, validator=optional([instance_of(int),
                                                                          ge(1)]))
    proj_dim: int | None = field(default=None, validator=optional([instance_of(int), ge(1)]))
    head_bn: bool = field(default=True, validator=instance_of(bool))

    @property
    def base_momentum(self) -> float:
        return self.momentum if self.momentum is not None else 0.99

    @property
    def head_sizes(self) -> tuple[int, int]:
        hidden, out = {2: (2048, 128), 3: (4096, 256)}[self.version]
        return self.proj_hidden_dim or hidden, self.proj_dim or out


def v2_head(in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool) -> nn.Sequential:
    """MoCo v2's MLP head, Linear-ReLU-Linear, with BN after the hidden Linear unless
    ``batch_norm`` is off (see MoCoConfig.head_bn)."""
    if batch_norm:
        return mlp(in_dim, hidden_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class KeyQueue(nn.Module):
    """A FIFO of the last ``length`` L2-normalised keys, kept as buffers so that a
    checkpoint carries it.

    MoCo's code starts the queue with random unit vectors. Those are orthogonal to every
    query, so until real keys replace them the loss is lowered by pointing all queries
    one way; over a 200-epoch run that lasts a negligible 256 steps, but on short runs
    it left the representation collapsed (measured: std x sqrt(D) of the projections
    0.07 by step 4, loss stuck at log(1 + K)). So this queue starts empty and
    :meth:`negatives` returns only the keys pushed so far.
    """

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(length, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        # A host-side copy of ``count``, so no step waits on the device to read it; read
        # from the buffer once after construction or loading a state_dict.
        self._count: int | None = None
        self.register_load_state_dict_post_hook(lambda module, _keys: module._forget_count())

    def _forget_count(self) -> None:
        self._count = None

    def negatives(self) -> Tensor | None:
        """The stored keys (a copy, as the queue changes in place while autograd still
        needs them), or ``None`` while empty."""
        if self._count is None:
            self._count = int(self.count)
        if self._count == len(self.keys):
            return self.keys.clone()
        return self.keys[:self._count].clone() if self._count else None

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Overwrite the oldest ``len(keys)`` entries (wrapping around the end)."""
        length = self.keys.shape[0]
        keys = F.normalize(keys.detach().float(), dim=1)[-length:]
        rows = (self.pointer + torch.arange(len(keys), device=keys.device)) % length
        self.keys[rows] = keys.to(self.keys.dtype)
        self.pointer.copy_((self.pointer + len(keys)) % length)
        self.count.copy_(torch.clamp(self.count + len(keys), max=length))
        if self._count is not None:
            self._count = min(self._count + len(keys), length)


class MoCo(Method):
    """Query encoder (backbone + head [+ predictor]) against an EMA key encoder."""

    def __init__(self, config: MoCoConfig, backbone: nn.Module) -> None:
        super().__init__(config, backbone)
        hidden, out = config.head_sizes
        if config.version == 2:
            self.projector = v2_head(backbone.output_dim, hidden, out, config.head_bn)
            self.predictor = nn.Identity()
            self.queue = KeyQueue(config.queue_length, out)
        else:
            self.projector = mlp(backbone.output_dim, hidden, out, num_layers=3, last_bn=True)
            self.predictor = mlp(out, hidden, out, last_bn=True)
        self.key_backbone = make_target(backbone)
        self.key_projector = make_target(self.projector)
        self.criterion = InfoNCELoss(temperature=config.temperature)
        self.momentum = config.base_momentum

    def keys(self, view: Tensor) -> Tensor:
        with torch.no_grad():
            return self.key_projector(self.key_backbone(view))

    def training_step(self, views: list[Tensor]) -> StepOutput:
        if self.config.version == 2:
            return self._v2_step(views[0], views[1])
        return self._v3_step(views[0], views[1])

    def _v2_step(self, query_view: Tensor, key_view: Tensor) -> StepOutput:
        q = self.projector(self.backbone(query_view))  # (N, D)
        k = self.keys(key_view)  # (N, D)
        negatives = self.queue.negatives()  # None on the first step: in-batch negatives
        loss = self.criterion(q, k, negatives)
        # Under torchrun every rank queues the keys of the whole global batch, as MoCo's
        # code does, so the ranks' queues stay identical.
        self.queue.push(distributed.gather_with_grad(k))
        candidates = len(q) if negatives is None else 1 + len(negatives)
        bound = infonce_bound(loss, num_candidates=candidates)
        return StepOutput(loss=loss, embeddings=q.detach(), metrics={"infonce_bound": bound})

    def _v3_step(self, view1: Tensor, view2: Tensor) -> StepOutput:
        # One pass for both views, so batch norm sees all 2N images as in v3's code.
        q1, q2 = self.predictor(self.projector(self.backbone(torch.cat([view1, view2])))
                                ).chunk(2)
        k1, k2 = self.keys(torch.cat([view1, view2])).chunk(2)
        one_way = self.criterion(q1, k2) + self.criterion(q2, k1)
        loss = 2 * self.config.temperature * one_way  # v3's loss scaling (its algorithm 1)
        bound = infonce_bound(one_way / 2, num_candidates=len(q1))
        return StepOutput(loss=loss, embeddings=q1.detach(), metrics={"infonce_bound": bound})

    def on_step_end(self, progress: float) -> None:
        if self.config.version == 3:
            self.momentum = cosine_momentum(self.config.base_momentum, progress)
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="moco",
        factory=MoCo,
        config_class=MoCoConfig,
        paper=PAPER,
        # v2's augmentation is SimCLR's with blur (Chen et al. 2020, sec. 3).
        views="simclr",
        objective="info_nce",
        description="query vs EMA key encoder; v2 (default): queue of 4096 negatives; "
        "method.version=3: in-batch negatives, predictor, symmetric loss",
        # v2: SGD, momentum 0.9, weight decay 1e-4, cosine decay, no warm-up (Chen et
        # al. 2020, sec. 3); lr 0.3 x batch/256, solo-learn's CIFAR rate, instead of the
        # paper's ImageNet 0.03, which learned little in short runs (kNN20 0.58 vs 0.73
        # after 2 epochs of 6000 Fashion-MNIST images).
        optim={"name": "sgd", "lr": 0.3, "weight_decay": 1e-4, "momentum": 0.9,
               "warmup_epochs": 0},
    ))
