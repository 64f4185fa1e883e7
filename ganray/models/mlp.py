"""MLPs for the 2D mixtures (ring8, grid25): `model.arch: mlp` (ganray's) and `pacgan-mlp` (the
PacGAN authors').

mlp. Generator: 4 hidden layers of 400 units, each Linear -> BatchNorm -> ReLU, then a linear
output (points are unbounded, so no tanh). Discriminator: 3 hidden layers of 400 units with
LeakyReLU(0.2) and no BatchNorm, then a linear output, one logit per point. Keras
initialisation (ganray.models.keras_init_).

pacgan-mlp. The networks of the PacGAN paper's 2-D experiments (Lin et al. 2018; their code,
synthetic_data_experiments/2DGrid_GAN&PacGAN: pacgan_task.py and config.py, in Theano/Blocks):

    PacGANGenerator(z_dim, dim=2)        z [N, z_dim] -> points [N, dim]
        4 x (Linear 400 without bias, BatchNorm, ReLU), then Linear dim with bias
        BatchNorm as Blocks': eps 1e-4, learned scale (1) and shift (0), running statistics
        updated as 0.95 * running + 0.05 * batch (PyTorch momentum 0.05)
    PacGANDiscriminator(dim_in, mbstd=0) x [N, dim_in] -> one logit per row [N]
        3 x LinearMaxout(200 units, 5 pieces): Linear 1000 then the max over each unit's 5
        consecutive outputs; then Linear 1; no dropout, no BatchNorm
    pacgan_init_(module)                 every Linear weight ~ N(0, 0.02²), every bias 0 (Blocks'
                                         IsotropicGaussian(0.02), Constant(0)); BatchNorm 1 / 0

With `model.pack` m, build_discriminator builds PacGANDiscriminator(2 * m) inside
ganray.models.remedies.Packed, which feeds it packs of m consecutive points [N/m, 2m]: D's
output is one logit per pack [N/m]. The authors' `batch_size: 100` counts packs, so their
batch for m = 2 is train.batch_size 200 here (100 packs of 2 points; G draws 200 points).
Parameter counts (tests/test_remedies.py): G 400 z_dim + 484,002 (z_dim 2: 484,802); D 2,000 m
+ 403,201 (+1 with model.minibatch_std).

Their optimiser (Adam lr 1e-4, beta1 0.8, Blocks' beta2 0.999), z ~ N(0, I) of size 2 and data
(100,000 training points, 400 epochs) are training settings, not the architecture's: a config
sets them (train.lr_g, train.lr_d, train.beta1, model.z_dim, data.n_train, train.steps).

`model.width` scales image channels and is ignored here (a 400-unit MLP is already cheap on a CPU).
"""
from __future__ import annotations

import torch
from torch import nn

from ganray.models.remedies import MinibatchStd

HIDDEN = 400
G_LAYERS = 4
D_LAYERS = 3
LEAK = 0.2

PACGAN_G_HIDDEN = 400
PACGAN_D_HIDDEN = 200
PACGAN_PIECES = 5
PACGAN_BN_EPS = 1e-4  # Blocks' BatchNormalization default
PACGAN_BN_MOMENTUM = 0.05  # their population update: 0.95 * running + 0.05 * batch
PACGAN_INIT_STD = 0.02


class MLPGenerator(nn.Module):
    """z [N, z_dim] -> points [N, dim]: n_hidden x (Linear, BatchNorm, ReLU), then Linear dim.
    `hidden_bias=False` leaves out the biases before BatchNorm (PacGANGenerator); `bn` holds
    BatchNorm's eps and momentum (PyTorch's defaults when empty)."""

    def __init__(self, z_dim: int, dim: int = 2, hidden: int = HIDDEN, n_hidden: int = G_LAYERS, *,
                 hidden_bias: bool = True, bn: dict | None = None):
        super().__init__()
        self.z_dim = z_dim
        layers: list[nn.Module] = []
        n_in = z_dim
        for _ in range(n_hidden):
            layers += [nn.Linear(n_in, hidden, bias=hidden_bias), nn.BatchNorm1d(hidden, **(bn or {})), nn.ReLU()]
            n_in = hidden
        layers.append(nn.Linear(n_in, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # [N, dim]


def with_logit_head(layers: list[nn.Module], n_in: int, mbstd: int) -> nn.Sequential:
    """`layers` (of n_in outputs), then the minibatch-std feature when mbstd = g > 0, then Linear 1."""
    if mbstd:
        layers = [*layers, MinibatchStd(mbstd)]
        n_in += 1
    return nn.Sequential(*layers, nn.Linear(n_in, 1))


class MLPDiscriminator(nn.Module):
    """Points [N, dim] -> one logit (or critic value) per point [N]; mbstd=g > 0 appends the
    minibatch-std feature before the last layer."""

    def __init__(self, dim: int = 2, hidden: int = HIDDEN, n_hidden: int = D_LAYERS, *, mbstd: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = dim
        for _ in range(n_hidden):
            layers += [nn.Linear(n_in, hidden), nn.LeakyReLU(LEAK)]
            n_in = hidden
        self.net = with_logit_head(layers, n_in, mbstd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # [N]


class PacGANGenerator(MLPGenerator):
    """The PacGAN authors' 2-D generator: z [N, z_dim] -> points [N, dim] (module docstring); no
    bias before BatchNorm (it would cancel in BN's mean subtraction)."""

    def __init__(self, z_dim: int, dim: int = 2):
        super().__init__(z_dim, dim, PACGAN_G_HIDDEN, G_LAYERS, hidden_bias=False,
                         bn={"eps": PACGAN_BN_EPS, "momentum": PACGAN_BN_MOMENTUM})


class LinearMaxout(nn.Module):
    """[N, n_in] -> [N, units]: h = W x + b [N, units * pieces], then the max over each unit's
    `pieces` consecutive entries (Blocks' LinearMaxout)."""

    def __init__(self, n_in: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(n_in, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear(x)  # [N, units * pieces]
        return h.view(x.shape[0], self.units, self.pieces).amax(dim=2)  # [N, units]


class PacGANDiscriminator(nn.Module):
    """The PacGAN authors' 2-D discriminator: [N, dim_in] -> one logit per row [N]; dim_in = 2m
    for packs of m points (module docstring)."""

    def __init__(self, dim_in: int = 2, hidden: int = PACGAN_D_HIDDEN, pieces: int = PACGAN_PIECES,
                 n_hidden: int = D_LAYERS, *, mbstd: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        n_in = dim_in
        for _ in range(n_hidden):
            layers.append(LinearMaxout(n_in, hidden, pieces))
            n_in = hidden
        self.net = with_logit_head(layers, n_in, mbstd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # [N]


def pacgan_init_(module: nn.Module) -> nn.Module:
    """The authors' initialisation in place: Linear weights ~ N(0, 0.02²), biases 0, BatchNorm 1 / 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, PACGAN_INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module
