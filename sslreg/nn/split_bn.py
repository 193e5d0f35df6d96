"""SplitBatchNorm: BatchNorm whose training statistics come from sub-batches.

MoCo's code runs BatchNorm per GPU (8 sub-batches of a 256 batch); its one-GPU CIFAR-10
demo simulates that with this layer, and MoCo's Shuffle BN relies on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase


def split_count(rows: int, num_splits: int) -> int:
    """The most sub-batches, at most ``num_splits``, that divide ``rows`` evenly with at
    least 2 rows each (BatchNorm needs two values per channel); 1 if none does."""
    fits = [n for n in range(1, num_splits + 1) if rows % n == 0 and rows // n >= 2]
    return max(fits, default=1)


class SplitBatchNorm(_NormBase):
    """BatchNorm over (N, C, ...) inputs that, in training, normalises each of
    ``num_splits`` sub-batches with its own mean and variance; in eval it is plain
    BatchNorm with the running statistics.

    Sub-batch ``s`` is rows ``s, s + n, s + 2n, ...`` (``n`` sub-batches): viewing the
    input as (N / n, n * C, ...) then gives each sub-batch its own channels, so one
    ``batch_norm`` call normalises them all. The running statistics move towards the
    mean of the sub-batches' statistics, as in MoCo's CIFAR-10 demo. A batch that does
    not divide into ``num_splits`` sub-batches of at least 2 rows uses the most that do
    (:func:`split_count`).

    It is not a ``_BatchNorm`` subclass, so ``SyncBatchNorm.convert_sync_batchnorm``
    (sslreg's torchrun on CUDA) leaves it per-rank. Its parameter and buffer names are
    BatchNorm's, so state_dicts load either way.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an (N, C, ...) input, got {x.dim()}D")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training and self.running_mean is not None:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        splits = split_count(len(x), self.num_splits)
        channels = x.shape[1]
        grouped = x.reshape(len(x) // splits, splits * channels, *x.shape[2:])
        mean, var = self._split_running_stats(splits)
        out = F.batch_norm(grouped, mean, var, _repeat(self.weight, splits),
                           _repeat(self.bias, splits), True, self._update_factor(), self.eps)
        if mean is not None:
            with torch.no_grad():
                self.running_mean.copy_(mean.view(splits, channels).mean(0))
                self.running_var.copy_(var.view(splits, channels).mean(0))
        return out.reshape(x.shape)

    def _split_running_stats(self, splits: int) -> tuple[Tensor | None, Tensor | None]:
        """One copy of the running statistics per sub-batch for ``batch_norm`` to update;
        ``None`` when there is nothing to update."""
        if not (self.training and self.track_running_stats):
            return None, None
        return self.running_mean.repeat(splits), self.running_var.repeat(splits)

    def _update_factor(self) -> float:
        """BatchNorm's: ``momentum``, or a cumulative average when it is ``None``."""
        if not (self.training and self.track_running_stats):
            return 0.0
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum


def _repeat(tensor: Tensor | None, times: int) -> Tensor | None:
    return None if tensor is None else tensor.repeat(times)


def convert_split_batchnorm(module: nn.Module, num_splits: int) -> nn.Module:
    """``module`` with every BatchNorm (SyncBatchNorm included) replaced, in place, by a
    SplitBatchNorm holding the same parameter and buffer tensors; returns ``module``
    (or the replacement when ``module`` is itself a BatchNorm)."""
    if isinstance(module, _BatchNorm):
        split = SplitBatchNorm(module.num_features, num_splits, eps=module.eps,
                               momentum=module.momentum, affine=module.affine,
                               track_running_stats=module.track_running_stats)
        for name, tensor in [*module.named_parameters(recurse=False),
                             *module.named_buffers(recurse=False)]:
            setattr(split, name, tensor)
        return split.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, convert_split_batchnorm(child, num_splits))
    return module
