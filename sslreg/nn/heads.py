"""Projector and predictor MLPs shared by the methods."""

from __future__ import annotations

from torch import nn


def mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    *,
    num_layers: int = 2,
    last_bn: bool = False,
) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a final Linear (optionally followed by an affine-free BN).

    SimCLR's projector is ``mlp(d, 2048, 128)``; BYOL's projector and predictor are
    ``mlp(d, 4096, 256)``; Barlow Twins and VICReg use three layers.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                   nn.ReLU(inplace=True)]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)
