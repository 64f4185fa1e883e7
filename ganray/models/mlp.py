"""MLPs for the 2D mixtures (ring8, grid25).

Generator: 4 hidden layers of 400 units, each Linear -> BatchNorm -> ReLU, then a linear output
(points are unbounded, so no tanh). Discriminator: 3 hidden layers of 400 units with
LeakyReLU(0.2) and no BatchNorm, then a linear output, one logit per point.

These sizes are fixed: `model.width` scales image channels and is ignored here (a 400-unit MLP
is already cheap on a CPU).
"""
from __future__ import annotations

import torch
from torch import nn

HIDDEN = 400
G_LAYERS = 4
D_LAYERS = 3
LEAK = 0.2


class MLPGenerator(nn.Module):
    """z [N, z_dim] -> points [N, dim]."""

    def __init__(self, z_dim: int, dim: int = 2, hidden: int = HIDDEN, n_hidden: int = G_LAYERS):
        super().__init__()
        self.z_dim = z_dim
        layers: list[nn.Module] = []
        n_in = z_dim
        for _ in range(n_hidden):
            layers += [nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            n_in = hidden
        layers.append(nn.Linear(n_in, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # [N, dim]


class MLPDiscriminator(nn.Module):
    """Points [N, dim] -> one logit (or critic value) per point [N]."""

    def __init__(self, dim: int = 2, hidden: int = HIDDEN, n_hidden: int = D_LAYERS):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = dim
        for _ in range(n_hidden):
            layers += [nn.Linear(n_in, hidden), nn.LeakyReLU(LEAK)]
            n_in = hidden
        layers.append(nn.Linear(n_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # [N]
