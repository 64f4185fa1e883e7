"""The class-conditional DCGAN of the `cgan` family: the Keras MNIST DCGAN of ganray.models.dcgan
with the class as a second input.

    G(z, y)  = DCGAN-G([z, e_G(y)])                    e_G: an embedding [K, model.embed_dim] concatenated to z
    D(x, y)  = ψ(φ(x)) + ⟨e_D(y), φ(x)⟩                the projection discriminator (Miyato & Koyama 2018)

φ is the DCGAN discriminator's feature stack (its flattened last feature map [N, F]), ψ its last
linear layer, e_D an embedding [K, F] of the class. The inner product scores how well the
features fit the asked class; ψ how real they look whatever the class. Embeddings are
initialised Glorot-uniform like the other weights (Keras' embeddings default to U(−0.05, 0.05);
Miyato & Koyama's code uses Glorot for the projection).
"""
from __future__ import annotations

import torch
from torch import nn

from ganray.models.dcgan import DCGANDiscriminator, DCGANGenerator


class ConditionalGenerator(nn.Module):
    """(z [N, z_dim], y int64 [N]) -> images [N, C, H, W] in [-1, 1]."""

    def __init__(self, z_dim: int, num_classes: int, embed_dim: int, shape: tuple[int, int, int],
                 width: float = 1.0, **dcgan_kw):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.net = DCGANGenerator(z_dim + embed_dim, shape, width, **dcgan_kw)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.embed(y).to(z.dtype)], dim=1))  # [N, z_dim + e] -> [N, C, H, W]


class ProjectionDiscriminator(nn.Module):
    """(x [N, C, H, W], y int64 [N]) -> one logit per image [N]: ψ(φ(x)) + ⟨e(y), φ(x)⟩."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, width: float = 1.0, **dcgan_kw):
        super().__init__()
        self.num_classes = num_classes
        self.body = DCGANDiscriminator(shape, width, **dcgan_kw)
        self.embed = nn.Embedding(num_classes, self.body.out.in_features)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = self.body.features(x)  # φ(x) [N, F]
        # logit = ψ(φ(x)) + Σ_j e(y)_j φ(x)_j
        return self.body.out(f).squeeze(1) + (self.embed(y).to(f.dtype) * f).sum(1)  # [N]


def glorot_embeddings_(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            nn.init.xavier_uniform_(m.weight)
    return module
