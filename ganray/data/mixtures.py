"""2D Gaussian mixtures, the standard mode-collapse testbeds (unrolled GAN, VEEGAN, PacGAN):

  ring8:  8 modes, means (cos 2πi/8, sin 2πi/8), i = 0..7, isotropic σ = 0.01
  grid25: 25 modes, means {−4, −2, 0, 2, 4}², isotropic σ = 0.05

Points keep their coordinates (no scaling to [-1, 1]); y is the index of the mode drawn from.
"""
from __future__ import annotations

import math

import torch

from ganray.config import DataConfig
from ganray.data import DataError, Dataset, register_dataset, split_generator

DEFAULT_N = 100_000
MIXTURES = ("ring8", "grid25")


def mixture_spec(name: str) -> tuple[torch.Tensor, float]:
    """(means float32 [K, 2], σ) of a named mixture."""
    if name == "ring8":
        # μ_i = (cos 2πi/8, sin 2πi/8), i = 0..7
        angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
        means = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return means.float(), 0.01
    if name == "grid25":
        # μ_(i,j) = (a_i, a_j), a = (−4, −2, 0, 2, 4); mode index 5i + j
        a = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
        means = torch.cartesian_prod(a, a)
        return means, 0.05
    raise DataError(f"unknown mixture {name!r}; allowed: {', '.join(MIXTURES)}")


def sample_mixture(name: str, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of the mixture: (x float32 [n, 2], mode int64 [n]), modes uniform."""
    means, sigma = mixture_spec(name)
    # mode ~ Uniform{0..K-1};  x = μ_mode + σ ε,  ε ~ N(0, I₂)
    mode = torch.randint(means.shape[0], (n,), generator=generator)
    eps = torch.randn(n, 2, generator=generator)
    return means[mode] + sigma * eps, mode


def load_mixture(name: str, cfg: DataConfig, split: str = "train") -> Dataset:
    """cfg.n_train points (0 = 100,000) drawn with data.seed; the test split uses another stream."""
    g = split_generator(cfg.seed, split)
    x, mode = sample_mixture(name, cfg.n_train or DEFAULT_N, g)
    means, sigma = mixture_spec(name)
    names = tuple(f"({round(u, 3) + 0.0:g}, {round(v, 3) + 0.0:g})" for u, v in means.tolist())  # "(0.707, 0.707)"
    return Dataset(name, x, mode, means.shape[0], names, extra={"means": means, "sigma": sigma})


@register_dataset("ring8")
def load_ring8(cfg: DataConfig, split: str = "train") -> Dataset:
    return load_mixture("ring8", cfg, split)


@register_dataset("grid25")
def load_grid25(cfg: DataConfig, split: str = "train") -> Dataset:
    return load_mixture("grid25", cfg, split)
