"""CLIP: contrastive image-text pre-training, with captions built from class names, so
the labels reach the model through the captions (closer to supervised learning than SSL).

Radford et al. "Learning Transferable Visual Models From Natural Language Supervision."
ICML 2021. https://arxiv.org/abs/2103.00020

The plugin's README.md describes the model and says where sslreg departs from the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslreg import Clock, Method, MethodSpec, RunContext, StepOutput, fields, hookimpl
from sslreg.objectives import infonce_bound
from sslreg_clip.text import TextEncoder
from sslreg_clip.tokenizer import PAD_ID, ByteTokenizer

__all__ = ["TEMPLATES", "ByteTokenizer", "CLIP", "CLIPConfig", "TextEncoder"]

PAPER = "Radford et al. 2021, Learning Transferable Visual Models From Natural Language " \
        "Supervision (CLIP)"

# Caption templates, mostly from the paper's ImageNet prompt list; every one fits the
# 64-byte context with the longest Fashion-MNIST name ("T-shirt/top").
TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of the {}.",
    "a low resolution photo of a {}.",
    "a black and white photo of a {}.",
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a blurry photo of the {}.",
)

# Length of the fixed table of random template draws read by the global step; a prime,
# so that batches of any size walk through all of it before repeating.
TEMPLATE_DRAWS = 4093

# Images per forward pass in zero-shot evaluation.
ZERO_SHOT_BATCH = 512


@attrs.frozen(kw_only=True)
class CLIPConfig:
    """CLIP hyperparameters: the paper's (sec. 2.4-2.5), sized down for small images.

    ``init_temperature`` 0.07 and ``max_logit_scale`` 100 are the paper's;
    ``learn_temperature=False`` keeps the temperature fixed (then the loss is the
    built-in ``clip`` objective at a fixed temperature). The three temperature fields
    are the ``clip`` objective's options (see ``objective_options``).
    """

    proj_dim: int = fields.positive_int(128, "width of the joint image-text space")
    text_width: int = fields.positive_int(128, "width of the text transformer")
    text_layers: int = fields.positive_int(2, "blocks of the text transformer")
    text_heads: int = fields.positive_int(2, "attention heads of the text transformer "
                                          "(divides text_width)")
    context_length: int = fields.positive_int(64, "caption length in byte tokens",
                                              minimum=3, maximum=1024)
    init_temperature: float = fields.positive_float(
        0.07, "softmax temperature at the start (logit scale 1/T, learned in log space)")
    max_logit_scale: float = fields.finite(
        100.0, "where the learned logit scale is clipped (the paper: 100)", minimum=1)
    learn_temperature: bool = fields.flag(
        True, "learn the temperature (false: keep init_temperature)")

    @text_heads.validator
    def _divides_width(self, attribute: attrs.Attribute, value: int) -> None:
        if self.text_width % value:
            raise ValueError(f"{attribute.name}={value} must divide text_width="
                             f"{self.text_width}")

    @max_logit_scale.validator
    def _above_initial(self, attribute: attrs.Attribute, value: float) -> None:
        if 1 / self.init_temperature > value:
            raise ValueError(f"{attribute.name}={value} is below the initial logit scale "
                             f"1/init_temperature={1 / self.init_temperature:g}")


class CLIP(Method):
    """Image and text towers into one joint space, trained on class-name captions."""

    uses_labels = True

    def __init__(self, config: CLIPConfig, backbone: nn.Module, objective: nn.Module) -> None:
        # objective: clip, whose learned logit scale is a parameter of this model
        super().__init__(config, backbone, objective)
        self.register_load_state_dict_pre_hook(_move_logit_scale)
        self.tokenizer = ByteTokenizer(config.context_length)
        self.image_projection = nn.Linear(backbone.output_dim, config.proj_dim, bias=False)
        self.text_encoder = TextEncoder(
            vocab_size=self.tokenizer.vocab_size, context_length=config.context_length,
            width=config.text_width, layers=config.text_layers, heads=config.text_heads,
            out_dim=config.proj_dim)
        # Random template draws from the seeded global RNG, read at the engine's global
        # step: deterministic, free of host syncs, and in the state_dict, so a resumed
        # run draws what an uninterrupted one would have.
        self.register_buffer("template_draws",
                             torch.randint(len(TEMPLATES), (TEMPLATE_DRAWS,)))
        # (classes, templates, length) caption tokens, rebuilt from the class names by
        # setup() on every run, so not saved.
        self.register_buffer("captions", self._tokenize(()), persistent=False)

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.captions = self._tokenize(context.class_names).to(self.captions.device)

    def _tokenize(self, class_names: tuple[str, ...]) -> Tensor:
        texts = [template.format(name) for name in class_names for template in TEMPLATES]
        tokens = self.tokenizer.encode(texts)  # (C * T, context_length)
        # Drop the columns after the longest caption's EOS: under the causal mask no EOS
        # feature sees them, so the text tower's output is the same, and it runs faster.
        length = int((tokens != PAD_ID).sum(dim=1).max()) if len(texts) else 0
        return tokens[:, :length].reshape(len(class_names), len(TEMPLATES), length).contiguous()

    def encode_image(self, images: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, proj_dim), not normalised."""
        return self.image_projection(self.backbone(images))

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(M, L) ids -> (M, proj_dim), not normalised."""
        return self.text_encoder(tokens)

    def scale(self) -> Tensor:
        """The objective's logit scale exp(logit_scale), 0-d, with its gradient."""
        return self.objective.scale()

    def template_choices(self, batch: int, step: int) -> Tensor:
        """(batch,) template indices for ``step``: a window of the fixed random draws
        that moves by ``batch`` every optimizer step."""
        offsets = torch.arange(batch, device=self.template_draws.device)
        return self.template_draws[(step * batch + offsets) % TEMPLATE_DRAWS]

    def caption_embeddings(self, labels: Tensor, templates: Tensor) -> Tensor:
        """(N,) labels and template indices -> (N, proj_dim) caption embeddings.

        Only classes x templates distinct captions exist, so all of them are encoded
        once (80 for 10 classes, fewer than a batch) and gathered per sample: the text
        tower has no batch statistics, so this equals encoding each sample's caption.
        """
        classes, count, length = self.captions.shape
        table = self.encode_text(self.captions.view(classes * count, length))  # (C*T, D)
        return table.view(classes, count, -1)[labels, templates]  # (N, D)

    def training_step(self, views: list[Tensor], clock: Clock,
                      labels: Tensor | None = None) -> StepOutput:
        self._check_captions(labels)
        image = self.encode_image(views[0])  # (N, D)
        templates = self.template_choices(len(labels), clock.step)
        text = self.caption_embeddings(labels, templates)  # (N, D)
        scale = self.scale()
        loss = self.objective(image, text)
        embeddings = F.normalize(image.detach().float(), dim=1)  # what the monitors watch
        # Each image is scored against the batch's N captions (and each caption against
        # N images): K = N candidates.
        metrics = {"infonce_bound": infonce_bound(loss, num_candidates=len(labels)),
                   "logit_scale": scale.detach()}
        return StepOutput(loss=loss, embeddings=embeddings, metrics=metrics)

    def _check_captions(self, labels: Tensor | None) -> None:
        if labels is None:
            raise ValueError("clip builds its captions from the labels: call "
                             "training_step(views, labels=labels)")
        if self.captions.shape[0] == 0:
            raise ValueError("clip has no class names to caption: call "
                             "setup(RunContext(class_names=...)) first")

    def on_step_end(self, clock: Clock) -> None:
        self.objective.clamp_()  # the paper's clip of the learned scale (sec. 2.5)

    @torch.no_grad()
    def class_embeddings(self) -> Tensor:
        """(C, proj_dim) unit class embeddings: every template's caption embedded and
        normalised, averaged over templates, renormalised (prompt ensembling)."""
        classes, count, length = self.captions.shape
        text = self.encode_text(self.captions.view(classes * count, length)).float()
        text = F.normalize(text, dim=1).view(classes, count, -1)  # (C, T, D)
        return F.normalize(text.mean(dim=1), dim=1)  # (C, D)

    @torch.no_grad()
    def extra_evaluation(self, images: Tensor, labels: Tensor,
                         batch_size: int = ZERO_SHOT_BATCH) -> dict[str, float]:
        """Zero-shot accuracy: each test image takes the class whose ensembled caption
        embedding is closest in cosine similarity."""
        self._check_captions(labels)
        classes = self.class_embeddings()  # (C, D)
        correct = torch.zeros((), dtype=torch.long, device=labels.device)
        for start in range(0, len(images), batch_size):
            image = self.encode_image(images[start:start + batch_size]).float()  # (b, D)
            predicted = (F.normalize(image, dim=1) @ classes.T).argmax(dim=1)  # (b,)
            correct += (predicted == labels[start:start + batch_size]).sum()
        return {"zero_shot_acc": correct.item() / max(len(images), 1)}


def _move_logit_scale(_module: nn.Module, state_dict: dict[str, Any], prefix: str,
                      *_: Any) -> None:
    # Checkpoints written before the clip objective held the scale keep it loadable.
    old = state_dict.pop(prefix + "logit_scale", None)
    if old is not None:
        state_dict.setdefault(prefix + "objective.logit_scale", old)


def objective_options(config: CLIPConfig) -> dict[str, Any]:
    """The ``clip`` objective's options: its ``temperature`` is the initial one."""
    return {"temperature": config.init_temperature,
            "learn_temperature": config.learn_temperature,
            "max_logit_scale": config.max_logit_scale}


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="clip",
        factory=CLIP,
        config_class=CLIPConfig,
        paper=PAPER,
        # One view: crop and flip, close to the paper's random square crop.
        views="crop-flip",
        objective="clip",
        objective_options=objective_options,
        description="image-text contrast with captions built from class names, learned "
        "temperature, zero-shot accuracy; USES THE LABELS (not self-supervised)",
        # AdamW with the paper's betas (0.9, 0.98) and decoupled weight decay 0.2 (sec.
        # 2.5, table 18); gains, biases and the logit scale are not decayed (1-d or 0-d).
        # The paper warms up for 2000 steps; 1 epoch here: without warm-up the text
        # tower maps every caption to one point in its first steps at these rates. The
        # paper's lr 5e-4 is for batch 32768; 5e-3 at batch 256 is this plugin's
        # starting point, and a suite runs the rate `sslreg tune` chose on the
        # validation split (1, 4 or 16 times it). Adam eps 1e-6 as the paper.
        optim={"name": "adamw", "lr": 5e-3, "weight_decay": 0.2, "betas": (0.9, 0.98),
               "eps": 1e-6, "warmup_epochs": 1},
    ))
