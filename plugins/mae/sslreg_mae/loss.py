"""MAE's masked reconstruction loss (He et al. 2022, sec. 3 "Reconstruction target")."""

from __future__ import annotations

from torch import Tensor, nn


def normalize_patches(patches: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch standardised pixels: (x - mean) / sqrt(var + eps) over each patch's
    pixels, with the unbiased variance as the MAE code (``Tensor.var``)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


class MaskedReconstructionLoss(nn.Module):
    """Mean squared error per patch, averaged over the masked patches only.

    Args:
        norm_pix_loss: regress each patch's standardised pixels (the paper's best
            setting, table 1d) rather than the raw ones.
        eps: added to the patch variance before the square root.

    Call with ``(pred, target, mask)``: pred and target (B, L, P) patch pixels (target
    from :func:`sslreg_mae.patches.patchify`), mask (B, L) with 1 on masked patches.
    Visible patches carry no loss.
    """

    def __init__(self, norm_pix_loss: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.norm_pix_loss = norm_pix_loss
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        if pred.shape != target.shape or mask.shape != pred.shape[:2]:
            raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and "
                             f"mask {tuple(mask.shape)} do not match")
        # In float32 under bf16 autocast: the per-patch variance and the MSE are sums.
        target = target.float()
        if self.norm_pix_loss:
            target = normalize_patches(target, self.eps)
        per_patch = (pred.float() - target).pow(2).mean(dim=-1)  # (B, L)
        mask = mask.float()
        return (per_patch * mask).sum() / mask.sum()
