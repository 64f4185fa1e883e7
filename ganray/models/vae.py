"""The VAE's encoder q(z|x); its decoder is the DCGAN generator (`build_generator`).

Encoder: the DCGAN discriminator's convolutions without dropout, then one linear layer giving
mu and logvar:

    Conv 5x5 64 stride 2, LeakyReLU(0.2)    [N, C, H, W] -> [N, 64, H/2, W/2]
    Conv 5x5 64 stride 2, LeakyReLU(0.2)    -> [N, 64, H/4, W/4]
    Conv 5x5 128 stride 2, LeakyReLU(0.2)   -> [N, 128, H/8, W/8]
    Conv 5x5 128 stride 1, LeakyReLU(0.2)   -> [N, 128, H/8, W/8]
    flatten, Linear 2*z_dim, split          -> mu [N, z_dim], logvar [N, z_dim]
"""
from __future__ import annotations

import torch
from torch import nn

from ganray.models import scale_channels
from ganray.models.dcgan import LEAK, conv5x5, strided_size


class VAEEncoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], z_dim: int, width: float = 1.0):
        super().__init__()
        c, h, w = shape
        self.z_dim = z_dim
        c64, c128 = scale_channels(64, width), scale_channels(128, width)
        self.features = nn.Sequential(
            conv5x5(c, c64, stride=2), nn.LeakyReLU(LEAK),
            conv5x5(c64, c64, stride=2), nn.LeakyReLU(LEAK),
            conv5x5(c64, c128, stride=2), nn.LeakyReLU(LEAK),
            conv5x5(c128, c128, stride=1), nn.LeakyReLU(LEAK),
            nn.Flatten(),
        )
        h8, w8 = strided_size(strided_size(strided_size(h))), strided_size(strided_size(strided_size(w)))
        self.out = nn.Linear(c128 * h8 * w8, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.out(self.features(x))  # [N, 2*z_dim]
        mu, logvar = stats.chunk(2, dim=1)  # [N, z_dim] each
        return mu, logvar
