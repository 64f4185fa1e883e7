"""The classic Keras MNIST DCGAN, with a channel `width` multiplier (1.0 = the Keras channel counts).

Generator (H0 = H // 4, W0 = W // 4; 7x7 for 28x28, 8x8 for 32x32):

    Dense(H0*W0*64) + BatchNorm                    z [N, z_dim] -> [N, H0*W0*64]
    reshape                                        -> [N, 64, H0, W0]
    Upsample x2, Conv 5x5 128, BN, LeakyReLU(a)    -> [N, 128, 2*H0, 2*W0]
    Upsample x2, Conv 5x5 64,  BN, LeakyReLU(a)    -> [N, 64, H, W]
    Conv 5x5 64, BN, LeakyReLU(a)                  -> [N, 64, H, W]
    Conv 5x5 C, tanh                               -> [N, C, H, W] in [-1, 1]

Discriminator (no BatchNorm; 'same' padding, so a stride-2 conv maps H to ceil(H / 2)):

    Conv 5x5 64 stride 2, LeakyReLU(a)               [N, C, H, W] -> [N, 64, H/2, W/2]
    Conv 5x5 64 stride 2, LeakyReLU(a), Dropout 0.3  -> [N, 64, H/4, W/4]
    Conv 5x5 128 stride 2, LeakyReLU(a), Dropout 0.4 -> [N, 128, H/8, W/8]  (28 -> 4, 32 -> 4)
    Conv 5x5 128 stride 1, LeakyReLU(a), Dropout 0.4 -> [N, 128, H/8, W/8]
    flatten, Linear 1                                -> [N] logit / critic value

WGAN-GP's critic is the same without the Dropouts (as in the WGAN-GP paper): the gradient
penalty must constrain the critic G is trained against, not a random thinned copy, and a
deterministic per-example critic makes the DDP step equal one process's on the global batch.

Every layer has a bias (Keras' default). Upsampling is nearest-neighbour (Keras UpSampling2D).
The slope a of every LeakyReLU (G and D) is model.leaky_slope, default 0.2 (Keras' own
LeakyReLU default is 0.3). BatchNorm's momentum and eps are model.bn_momentum and model.bn_eps,
in PyTorch's convention (running = (1 - momentum) * running + momentum * batch; Keras' momentum
k is 1 - k here). The defaults keep PyTorch's 0.1 / 1e-5 rather than Keras' 0.99 / 1e-3: running
statistics then follow G within a few hundred steps, which eval-mode sampling relies on.
configs/zdim_mnist_original.yaml sets the Keras DCGAN's 0.2 (Keras 0.8) / 1e-3 and 0.3.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ganray.models import scale_channels
from ganray.models.remedies import MinibatchStd

KERNEL = 5
PAD = KERNEL // 2  # 'same' padding for odd kernels
LEAK = 0.2  # default LeakyReLU slope (model.leaky_slope)
BN_MOMENTUM = 0.1  # PyTorch's BatchNorm defaults (model.bn_momentum, model.bn_eps)
BN_EPS = 1e-5


def conv5x5(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, KERNEL, stride=stride, padding=PAD)


def strided_size(size: int) -> int:
    """Output size of a 'same'-padded 5x5 convolution with stride 2: ceil(size / 2)."""
    return (size + 2 * PAD - KERNEL) // 2 + 1


class DCGANGenerator(nn.Module):
    """z [N, z_dim] -> images [N, C, H, W] in [-1, 1]; see the module docstring for the layers."""

    def __init__(self, z_dim: int, shape: tuple[int, int, int], width: float = 1.0, *,
                 bn_momentum: float = BN_MOMENTUM, bn_eps: float = BN_EPS, leaky_slope: float = LEAK):
        super().__init__()
        c, h, w = shape
        self.z_dim = z_dim
        self.shape = (c, h, w)
        c64, c128 = scale_channels(64, width), scale_channels(128, width)
        self.start = (c64, h // 4, w // 4)
        n_start = math.prod(self.start)
        bn = dict(momentum=bn_momentum, eps=bn_eps)
        self.project = nn.Sequential(nn.Linear(z_dim, n_start), nn.BatchNorm1d(n_start, **bn))
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv5x5(c64, c128), nn.BatchNorm2d(c128, **bn), nn.LeakyReLU(leaky_slope),
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv5x5(c128, c64), nn.BatchNorm2d(c64, **bn), nn.LeakyReLU(leaky_slope),
            conv5x5(c64, c64), nn.BatchNorm2d(c64, **bn), nn.LeakyReLU(leaky_slope),
            conv5x5(c64, c), nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z)  # [N, c64*H0*W0]
        h = h.view(z.shape[0], *self.start)  # [N, c64, H0, W0]
        return self.body(h)  # [N, C, H, W]


class DCGANDiscriminator(nn.Module):
    """Images [N, C, H, W] -> one logit (or critic value) per image [N].

    dropout=False (WGAN-GP's critic) puts Identity where the Dropouts were: the same layer
    indices, so the state_dict keys are those of the dropout version. mbstd=g > 0 appends
    StyleGAN's minibatch-std channel to the last feature map (before the flatten and the last
    layer, ganray.models.remedies.MinibatchStd): [N, c128 + 1, H/8, W/8].
    """

    def __init__(self, shape: tuple[int, int, int], width: float = 1.0, *, leaky_slope: float = LEAK,
                 dropout: bool = True, mbstd: int = 0):
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        c64, c128 = scale_channels(64, width), scale_channels(128, width)
        a = leaky_slope

        def drop(p: float) -> nn.Module:
            return nn.Dropout(p) if dropout else nn.Identity()

        self.features = nn.Sequential(
            conv5x5(c, c64, stride=2), nn.LeakyReLU(a),
            conv5x5(c64, c64, stride=2), nn.LeakyReLU(a), drop(0.3),
            conv5x5(c64, c128, stride=2), nn.LeakyReLU(a), drop(0.4),
            conv5x5(c128, c128, stride=1), nn.LeakyReLU(a), drop(0.4),
            *([MinibatchStd(mbstd)] if mbstd else []),
            nn.Flatten(),
        )
        h8, w8 = strided_size(strided_size(strided_size(h))), strided_size(strided_size(strided_size(w)))
        self.out = nn.Linear((c128 + (1 if mbstd else 0)) * h8 * w8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # [N, c128*H/8*W/8]
        return self.out(f).squeeze(1)  # [N]
