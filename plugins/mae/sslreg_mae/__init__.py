"""MAE: masked autoencoders. A ViT encoder sees a random 25% of an image's patches and a
light decoder reconstructs the pixels of the masked 75% from them and mask tokens.

He, Chen, Xie, Li, Dollar and Girshick. "Masked Autoencoders Are Scalable Vision
Learners." CVPR 2022. https://arxiv.org/abs/2111.06377

The plugin's README.md says where every default comes from and where sslreg departs
from the paper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from sslreg import Method, MethodSpec, ObjectiveSpec, OptimConfig, StepOutput, fields, hookimpl
from sslreg_mae.decoder import MAEDecoder
from sslreg_mae.loss import MaskedReconstructionLoss, normalize_patches
from sslreg_mae.patches import patchify, random_masking, unpatchify, visible_count

__all__ = ["MAE", "MAEConfig", "MAEDecoder", "MaskedReconstructionLoss", "normalize_patches",
           "patchify", "random_masking", "unpatchify", "visible_count"]

PAPER = "He et al. 2022, Masked Autoencoders Are Scalable Vision Learners (MAE)"


def _divides_dim(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    # attrs runs validators once every field is set, so decoder_dim is there.
    if instance.decoder_dim % value:
        raise ValueError(f"{attribute.name}={value} must divide decoder_dim="
                         f"{instance.decoder_dim}")


def _multiple_of_four(_instance: Any, attribute: attrs.Attribute, value: int) -> None:
    # The 2-D sine-cosine positions split the width into four quarters.
    if value % 4:
        raise ValueError(f"{attribute.name} must be a multiple of 4, got {value}")


@attrs.frozen(kw_only=True)
class MAEConfig:
    """MAE hyperparameters; the plugin's README.md says where each default comes from.

    ``norm_pix_loss=False`` regresses raw (dataset-normalised) pixels, the paper's
    baseline target (table 1d, slightly worse than the normalised one).
    """

    mask_ratio: float = fields.finite(0.75, "share of the patches hidden from the encoder",
                                      above=0, below=1)
    norm_pix_loss: bool = fields.flag(
        True, "regress each patch's pixels normalised by its own mean and std")
    decoder_dim: int = fields.positive_int(128, "width of the decoder (a multiple of 4)",
                                           minimum=4, also=[_multiple_of_four])
    decoder_depth: int = fields.positive_int(2, "transformer blocks of the decoder")
    decoder_heads: int = fields.positive_int(4, "attention heads of the decoder (divides "
                                             "decoder_dim)", also=[_divides_dim])


class MAE(Method):
    """ViT encoder on the visible patches (+ [CLS]) -> :class:`MAEDecoder` -> pixels of
    every patch; the loss scores the masked ones only.

    Needs the ViT token API (:class:`sslreg.interfaces.ViTBackbone`): ``embed``,
    ``encode``, ``grid``, ``patch_size``, ``embed_dim``, ``in_channels``.
    """

    # Its features pool the patch tokens, not the backbone's [CLS]: the random-init
    # floor it is compared with reads them the same way.
    readout = "mean of patch tokens"

    def __init__(self, config: MAEConfig, backbone: nn.Module, objective: nn.Module) -> None:
        super().__init__(config, backbone, objective)  # objective: mae, norm_pix_loss
        self.decoder = MAEDecoder(backbone.embed_dim, config.decoder_dim, config.decoder_depth,
                                  config.decoder_heads,
                                  backbone.patch_size ** 2 * backbone.in_channels)

    def reconstruct(self, images: Tensor, generator: torch.Generator | None = None
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mask, encode, decode: (B, C, H, W) -> predicted patches (B, L, p * p * C),
        mask (B, L) (1 = masked) and the encoder output (B, 1 + K, D)."""
        tokens = self.backbone.embed(images)  # (B, L, D)
        visible, mask, restore = random_masking(tokens, self.config.mask_ratio, generator)
        latent = self.backbone.encode(visible)  # (B, 1 + K, D)
        pred = self.decoder(latent, restore, self.backbone.grid(images))
        return pred, mask, latent

    def training_step(self, views: list[Tensor]) -> StepOutput:
        images = views[0]  # the ``crop-flip`` policy gives one view
        pred, mask, latent = self.reconstruct(images)
        target = patchify(images, self.backbone.patch_size)  # (B, L, p * p * C)
        loss = self.objective(pred, target, mask)
        # The monitors watch the mean-pooled visible tokens (what the encoder learns).
        return StepOutput(loss=loss, embeddings=latent[:, 1:].mean(dim=1).detach())

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """The encoder on ALL patches, no masking; the mean of the patch tokens ([CLS]
        excluded), (B, D). The linear probe and kNN see these pooled tokens."""
        tokens = self.backbone.encode(self.backbone.embed(images))  # (B, 1 + L, D)
        return tokens[:, 1:].mean(dim=1)

    @torch.no_grad()
    def visualize(self, images: Tensor) -> dict[str, Tensor]:
        """The masked input and its reconstruction (visible patches pasted back), with
        a fixed mask so epochs compare. Normalised-pixel predictions are de-normalised
        with each true patch's mean and std; each picture is min-max scaled to [0, 1]."""
        generator = torch.Generator(device=images.device).manual_seed(0)
        pred, mask, _ = self.reconstruct(images, generator)
        target = patchify(images, self.backbone.patch_size).float()  # (B, L, P)
        pred = pred.float()
        if self.config.norm_pix_loss:
            std = (target.var(dim=-1, keepdim=True) + self.objective.eps).sqrt()
            pred = pred * std + target.mean(dim=-1, keepdim=True)
        hidden = mask.unsqueeze(-1)  # (B, L, 1)
        floor = target.amin(dim=(1, 2), keepdim=True)  # masked patches shown dark
        grid = self.backbone.grid(images)
        pictures = {"masked": target * (1 - hidden) + floor * hidden,
                    "reconstruction": target * (1 - hidden) + pred * hidden}
        return {tag: _min_max(unpatchify(x, self.backbone.patch_size, grid))
                for tag, x in pictures.items()}


def _min_max(images: Tensor) -> Tensor:
    """Per-image min-max scaling of (N, C, H, W) to [0, 1]."""
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-6)


@hookimpl
def register_objectives(register: Callable[[ObjectiveSpec], None]) -> None:
    register(ObjectiveSpec(
        name="mae",
        factory=MaskedReconstructionLoss,
        paper=PAPER,
        description="(pred, target, mask): per-patch MSE on masked patches only, "
        "per-patch normalised pixel target (norm_pix_loss)",
    ))


@hookimpl
def register_methods(register: Callable[[MethodSpec], None]) -> None:
    register(MethodSpec(
        name="mae",
        factory=MAE,
        config_class=MAEConfig,
        paper=PAPER,
        views="crop-flip",
        objective="mae",
        description="ViT encodes a random 25% of the patches; a light decoder "
        "reconstructs the masked pixels",
        backbone_families=("vit",),
        # Appendix A.1: AdamW, base lr 1.5e-4 x batch/256, betas (0.9, 0.95), weight
        # decay 0.05, 40 warm-up epochs, cosine decay.
        optim=OptimConfig(name="adamw", lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95),
               warmup_epochs=40),
    ))
