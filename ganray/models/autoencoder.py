"""BEGAN's discriminator: a convolutional autoencoder D: [N, C, H, W] -> [N, C, H, W].

After Berthelot et al. (2017): 3x3 convolutions with ELU, downsampling by stride-2 convolutions,
a 64-d bottleneck, nearest-neighbour upsampling in the decoder. With n = 64 * width channels:

    encoder  Conv 3x3 n, ELU                         [N, C, H, W] -> [N, n, H, W]
             Conv 3x3 n, ELU; Conv 3x3 2n stride 2   -> [N, 2n, H/2, W/2]
             Conv 3x3 2n, ELU; Conv 3x3 3n stride 2  -> [N, 3n, H/4, W/4]
             flatten, Linear 64                      -> h [N, 64]
    decoder  Linear n*H/4*W/4, reshape               -> [N, n, H/4, W/4]
             Conv 3x3 n, ELU; Upsample x2            -> [N, n, H/2, W/2]
             Conv 3x3 n, ELU; Upsample x2            -> [N, n, H, W]
             Conv 3x3 n, ELU; Conv 3x3 C             -> [N, C, H, W]

The output has no tanh (as in the paper): L(v) = mean|v - D(v)| is an L1 reconstruction error,
and a tanh would saturate its gradient at the [-1, 1] edges of the images.
"""
from __future__ import annotations

import torch
from torch import nn

from ganray.models import scale_channels
from ganray.models.remedies import MinibatchStd

H_DIM = 64


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)


class BEGANAutoencoder(nn.Module):
    """mbstd=g > 0: StyleGAN's minibatch-std channel on the encoder's last feature map, before
    its flatten and Linear (ganray.models.remedies.MinibatchStd): [N, 3n + 1, H/4, W/4]."""

    def __init__(self, shape: tuple[int, int, int], width: float = 1.0, h_dim: int = H_DIM, *, mbstd: int = 0):
        super().__init__()
        c, h, w = shape
        n = scale_channels(64, width)
        self.bottom = (n, h // 4, w // 4)
        self.encoder = nn.Sequential(
            _conv(c, n), nn.ELU(),
            _conv(n, n), nn.ELU(), _conv(n, 2 * n, stride=2), nn.ELU(),
            _conv(2 * n, 2 * n), nn.ELU(), _conv(2 * n, 3 * n, stride=2), nn.ELU(),
            *([MinibatchStd(mbstd)] if mbstd else []),
            nn.Flatten(),
            nn.Linear((3 * n + (1 if mbstd else 0)) * (h // 4) * (w // 4), h_dim),
        )
        self.expand = nn.Linear(h_dim, n * (h // 4) * (w // 4))
        self.decoder = nn.Sequential(
            _conv(n, n), nn.ELU(), nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(n, n), nn.ELU(), nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(n, n), nn.ELU(), _conv(n, c),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # [N, h_dim]

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        b = self.expand(h).view(h.shape[0], *self.bottom)  # [N, n, H/4, W/4]
        return self.decoder(b)  # [N, C, H, W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))  # [N, C, H, W]
