"""DINO: self-distillation with no labels. A student matches an EMA teacher's centred,
sharpened distribution over prototypes across multi-crop views.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin. "Emerging Properties in
Self-Supervised Vision Transformers." ICCV 2021. https://arxiv.org/abs/2104.14294

The plugin's README.md describes the method and says where every default comes from and
where sslreg departs from the paper.
"""

from __future__ import annotations

import math
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
    RunContext,
    Schedule,
    StepOutput,
    fields,
    hookimpl,
)
from sslreg.distributed import global_batch_mean
from sslreg.interfaces import is_vit
from sslreg.nn import ema_update, make_target
from sslreg_dino.loss import DINOLoss, teacher_probabilities

__all__ = ["DINO", "DINOConfig", "DINOHead", "DINOLoss", "attention_maps", "view_options"]

PAPER = "Caron et al. 2021, Emerging Properties in Self-Supervised Vision Transformers (DINO)"

# Schedules measured in epochs are cut to the share of the run the paper gave them, so
# a short run keeps their shape: the teacher temperature warms up over 30 of 100 epochs
# and the prototypes stay frozen for 1 of 100 (sec. 4 and appendix; main_dino.py).
TEACHER_TEMP_WARMUP_SHARE = 0.3
FREEZE_SHARE = 0.01

# The paper's ViTs raise the weight decay on a cosine from 0.04 to 0.4 over the run
# (main_dino.py's weight_decay and weight_decay_end); its ResNet-50 keeps it constant.
# As a factor of optim.weight_decay, so --set optim.weight_decay=0.04 gives 0.04 -> 0.4.
VIT_WEIGHT_DECAY_RISE = 10.0


# The paper's two multi-crop recipes, (global crop scale, local crop scale): its
# ResNet-50 run (the command in its repository's README) and its ViTs (main_dino.py's defaults).
CROP_SCALES = {
    "convnet": ((0.14, 1.0), (0.05, 0.14)),
    "vit": ((0.4, 1.0), (0.05, 0.4)),
}


def _crop_scale(_instance: Any, attribute: attrs.Attribute, value: tuple | None) -> None:
    if value is not None and not (len(value) == 2 and 0 < value[0] <= value[1] <= 1):
        raise ValueError(f"{attribute.name}={value!r} must be a pair (low, high) with "
                         "0 < low <= high <= 1, or None for the paper's recipe")


def _local_size(_instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    # Which sides fit depends on the image size; the multicrop policy checks that.
    if value is not None and not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{attribute.name}={value!r} must be a positive int, or None for "
                         "the default (sslreg.backbones.multicrop_sizes)")


@attrs.frozen(kw_only=True)
class DINOConfig:
    """DINO hyperparameters; defaults from the paper (sec. 3.1, 4 and appendix) and its
    reference code (main_dino.py), except ``out_dim`` (4096, not 65536). The plugin's
    README.md says where each comes from."""

    out_dim: int = fields.positive_int(4096, "prototypes: width of the head's output")
    hidden_dim: int = fields.positive_int(2048, "hidden width of the head's MLP")
    bottleneck_dim: int = fields.positive_int(256, "width of the normalised bottleneck")
    num_local: int = fields.nonnegative_int(6, "small local crops beside the 2 global ones",
                                            maximum=32)
    student_temp: float = fields.positive_float(0.1, "softmax temperature of the student")
    warmup_teacher_temp: float = fields.positive_float(
        0.04, "teacher temperature at the start of its warm-up")
    teacher_temp: float = fields.positive_float(0.07, "teacher temperature after warm-up")
    warmup_teacher_temp_epochs: float = fields.nonnegative_float(
        30.0, "epochs of teacher-temperature warm-up (at most 30% of the run)")
    center_momentum: float = fields.finite(
        0.9, "EMA momentum of the teacher's centre", minimum=0, below=1)
    base_momentum: float = fields.probability(
        0.996, "EMA momentum of the teacher at the start; rises to 1 on a cosine")
    freeze_last_layer_epochs: float = fields.nonnegative_float(
        1.0, "epochs the prototypes stay frozen (at most 1% of the run)")
    use_bn_in_head: bool | None = fields.flag(
        None, "BN in the head's hidden layers (none: yes on a convnet, no on a ViT)",
        optional=True)
    evaluate_teacher: bool = fields.flag(
        False, "probe the EMA teacher's backbone instead of the student's")
    global_crops_scale: tuple[float, float] | None = fields.option(
        None, "area range (low, high) of the global crops (none: the paper's for the "
        "backbone)", converter=attrs.converters.optional(tuple), validator=_crop_scale)
    local_crops_scale: tuple[float, float] | None = fields.option(
        None, "area range (low, high) of the local crops (none: the paper's for the "
        "backbone)", converter=attrs.converters.optional(tuple), validator=_crop_scale)
    local_size: int | None = fields.option(
        None, "side of the local crops in px (none: 96/224 of the image, whole patches)",
        validator=_local_size)


class DINOHead(nn.Module):
    """3-layer MLP (GELU, BN after the hidden layers if ``use_bn``) -> L2-normalised
    bottleneck -> prototypes.

    The last layer is the paper's weight-normalised linear layer with its gain fixed to
    1, i.e. each prototype row is L2-normalised, so the logits are cosines in [-1, 1].
    Returns ``(z, logits)``: the normalised bottleneck (B, bottleneck_dim) and the
    prototype scores (B, out_dim), the latter in float32.
    """

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int,
                 out_dim: int, use_bn: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for dim in (in_dim, hidden_dim):
            layers.append(nn.Linear(dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden_dim, bottleneck_dim))
        for module in self.mlp:
            if isinstance(module, nn.Linear):  # the reference code's init
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        # nn.Linear's default init, as the reference's weight-normed layer keeps it.
        nn.init.kaiming_uniform_(self.prototypes, a=math.sqrt(5))

    def forward(self, x: Tensor, freeze_prototypes: bool = False) -> tuple[Tensor, Tensor]:
        z = F.normalize(self.mlp(x).float(), dim=-1)  # (B, bottleneck_dim)
        # A detached weight gets no gradient, so the optimizer skips it (frozen layer).
        weight = self.prototypes.detach() if freeze_prototypes else self.prototypes
        # float32 matmul under autocast: cosines / 0.04 need more than bf16's 8 bits.
        with torch.autocast(x.device.type, enabled=False):
            logits = z @ F.normalize(weight.float(), dim=-1).T  # (B, out_dim)
        return z, logits


class DINO(Method):
    """Student backbone+head against an EMA teacher backbone+head (momentum 0.996 -> 1).

    The teacher's parameters are an EMA of the student's; its buffers (BatchNorm running
    statistics) are its own, updated by its forward passes on the global crops, which
    run in train mode whenever the method does (as in main_dino.py, whose EMA update
    touches parameters only).

    State kept for resume: ``center`` (1, out_dim), the EMA of the teacher's batch-mean
    output (the mean over the global batch under torchrun, the same on every rank).
    The teacher temperature, the EMA momentum and (on a ViT) the weight decay are
    schedules (:meth:`schedules`) read from the engine's clock, and the prototypes are
    frozen by the clock's step, so no step counter of its own has to survive a resume.
    """

    def __init__(self, config: DINOConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: dino at student_temp
        self.vit = is_vit(backbone)
        use_bn = config.use_bn_in_head
        if use_bn is None:  # the paper's two recipes: BN for its ResNet-50, none for ViTs
            use_bn = not self.vit
        self.head = DINOHead(backbone.output_dim, config.hidden_dim, config.bottleneck_dim,
                             config.out_dim, use_bn=use_bn)
        self.teacher_backbone = make_target(backbone)
        self.teacher_head = make_target(self.head)
        self.register_buffer("center", torch.zeros(1, config.out_dim))
        self._pending_teacher: Tensor | None = None  # this step's teacher output

    def schedules(self, context: RunContext) -> dict[str, Schedule]:
        """The teacher temperature warms up linearly from ``warmup_teacher_temp`` to
        ``teacher_temp``, then stays; the EMA momentum rises from ``base_momentum`` to 1
        on a cosine; on a ViT the weight decay rises x10 on a cosine (the paper's
        0.04 -> 0.4)."""
        c = self.config
        warmup = min(c.warmup_teacher_temp_epochs, TEACHER_TEMP_WARMUP_SHARE * context.epochs)
        schedules = {
            "teacher_temp": Schedule.linear(c.warmup_teacher_temp, c.teacher_temp,
                                            steps=warmup * context.steps_per_epoch),
            "momentum": Schedule.cosine(c.base_momentum, 1.0, after_step=True),
        }
        if self.vit:
            schedules["weight_decay"] = Schedule.cosine(1.0, VIT_WEIGHT_DECAY_RISE)
        return schedules

    @property
    def freeze_steps(self) -> float:
        freeze = min(self.config.freeze_last_layer_epochs, FREEZE_SHARE * self.context.epochs)
        return freeze * self.context.steps_per_epoch

    def prototypes_frozen(self, clock: Clock) -> bool:
        """The paper freezes the last layer during the first epoch: it helps training."""
        return clock.step < self.freeze_steps

    def student_outputs(self, views: list[Tensor], frozen: bool = False
                        ) -> tuple[Tensor, list[Tensor]]:
        """The first global crop's bottleneck (N, bottleneck_dim) and every crop's
        logits, V tensors (N, out_dim); ``frozen`` keeps gradients off the prototypes."""
        # One backbone pass per resolution: the global crops, then the local ones.
        features = [self.backbone(torch.cat(views[:2]))]  # (2N, D)
        if len(views) > 2:
            features.append(self.backbone(torch.cat(views[2:])))  # ((V-2)N, D)
        z, logits = self.head(torch.cat(features), freeze_prototypes=frozen)
        return z[: len(views[0])], list(logits.chunk(len(views)))

    @torch.no_grad()
    def teacher_outputs(self, views: list[Tensor]) -> list[Tensor]:
        """The global crops' teacher logits, two tensors (N, out_dim)."""
        _, logits = self.teacher_head(self.teacher_backbone(torch.cat(views[:2])))
        return list(logits.chunk(2))

    def training_step(self, views: list[Tensor], clock: Clock) -> StepOutput:
        z, student = self.student_outputs(views, frozen=self.prototypes_frozen(clock))
        teacher = self.teacher_outputs(views)
        temperature = clock["teacher_temp"]
        loss = self.objective(student, teacher, self.center, temperature)
        self._pending_teacher = torch.cat(teacher)  # (2N, out_dim), centres after the step
        return StepOutput(loss=loss, embeddings=z.detach(), metrics={
            "teacher_entropy": self.teacher_entropy(teacher, temperature),
        })

    @torch.no_grad()
    def teacher_entropy(self, teacher: list[Tensor], temperature: float) -> Tensor:
        """Mean entropy of the teacher's targets: log(out_dim) when uniform, 0 when
        one-hot; the paper watches it to tell the two kinds of collapse apart."""
        q = teacher_probabilities(torch.cat(teacher), self.center, temperature)
        return -(q * q.clamp_min(1e-12).log()).sum(dim=-1).mean()

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """center <- m * center + (1 - m) * mean of ``teacher`` (B, out_dim) over the
        batch (paper eq. 4), m = ``center_momentum``. Under torchrun the mean covers the
        global batch, every rank's rows (the reference code all-reduces it), so every
        rank keeps the centre one process would."""
        batch_center = global_batch_mean(teacher.float())  # (1, out_dim)
        self.center.lerp_(batch_center, 1.0 - self.config.center_momentum)

    def on_step_end(self, clock: Clock) -> None:
        momentum = clock["momentum"]
        ema_update(self.teacher_backbone, self.backbone, momentum, copy_buffers=False)
        ema_update(self.teacher_head, self.head, momentum, copy_buffers=False)
        if self._pending_teacher is not None:
            self.update_center(self._pending_teacher)
            self._pending_teacher = None

    @property
    def evaluated_backbone(self) -> nn.Module:
        return self.teacher_backbone if self.config.evaluate_teacher else self.backbone

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return self.evaluated_backbone(images)

    @torch.no_grad()
    def visualize(self, images: Tensor) -> dict[str, Tensor]:
        """On a ViT, the [CLS] token's last-layer attention to the patches: ``attention``
        (N, 1, H, W) averaged over heads and ``attention_heads`` (N * heads, 1, H, W),
        image by image; nothing on a convnet."""
        if not self.vit:
            return {}
        maps = attention_maps(self.evaluated_backbone, images)  # (N, heads, H, W)
        return {"attention": _unit_range(maps.mean(dim=1, keepdim=True)),
                "attention_heads": _unit_range(maps.flatten(0, 1).unsqueeze(1))}


def attention_maps(vit: nn.Module, images: Tensor) -> Tensor:
    """(N, heads, H, W): each head's attention from [CLS] to every patch in the last
    block, blown up to the image size (nearest, one block of pixels per patch, as the
    paper's visualize_attention.py)."""
    attention = vit.last_self_attention(images).float()  # (N, heads, 1 + P, 1 + P)
    rows, cols = vit.grid(images)
    cls_to_patches = attention[:, :, 0, 1:]  # (N, heads, P), P = rows * cols
    maps = cls_to_patches.reshape(*cls_to_patches.shape[:2], rows, cols)
    return F.interpolate(maps, size=tuple(images.shape[-2:]), mode="nearest")


def _unit_range(maps: Tensor) -> Tensor:
    """Each map (M, 1, H, W) rescaled to [0, 1] by its own min and max."""
    low = maps.amin(dim=(1, 2, 3), keepdim=True)
    high = maps.amax(dim=(1, 2, 3), keepdim=True)
    return (maps - low) / (high - low).clamp_min(1e-12)


def view_options(config: DINOConfig, backbone_family: str = "convnet") -> dict[str, Any]:
    """The ``multicrop`` policy's crop scales (the config's, else the paper's recipe for
    ``backbone_family``), number of local crops and local crop side."""
    global_scale, local_scale = CROP_SCALES.get(backbone_family, CROP_SCALES["convnet"])
    options = {"crop_scale": config.global_crops_scale or global_scale,
               "local_scale": config.local_crops_scale or local_scale,
               "num_local": config.num_local}
    if config.local_size is not None:
        options["local_size"] = config.local_size
    return options


@hookimpl
def register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec(
        name="dino",
        factory=DINOLoss,
        paper=PAPER,
        description="(student crops, teacher crops, center, teacher_temp): cross-entropy of "
        "the centred, sharpened teacher softmax and the student's (temperature 0.1) over "
        "every pair of different crops",
    ))


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="dino",
        factory=DINO,
        config_class=DINOConfig,
        paper=PAPER,
        views="multicrop",
        objective="dino",
        description="student matches an EMA teacher's centred, sharpened prototype "
        "distribution across 2 global + num_local crops; no negatives",
        view_options=view_options,
        # The paper's ResNet-50 run (its released args): LARS at 0.3 x batch/256, weight
        # decay 1e-6, 10 warm-up epochs. Its ViT recipe is AdamW at 5e-4 x batch/256 with
        # weight decay 0.04 -> 0.4 on a cosine (on a ViT the method's weight-decay
        # schedule raises optim.weight_decay x10), i.e.
        # --set optim.name=adamw optim.lr=5e-4 optim.weight_decay=0.04.
        optim={"name": "lars", "lr": 0.3, "weight_decay": 1e-6, "warmup_epochs": 10},
    ))
