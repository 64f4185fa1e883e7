"""What the loop draws: minibatches of a rank's data shard, latent vectors, the fixed z batch,
and samples of G for evaluation — each from a generator of its own, so that the streams are
recorded in checkpoints and evaluation never moves training's.
"""
from __future__ import annotations

import torch
from torch import nn

from ganray.config import Config
from ganray.data import Dataset


class Sampler:
    """Random minibatches of one rank's data shard and latent vectors, from recorded generators."""

    def __init__(self, data: Dataset, batch_size: int, z_dim: int, seed: int, device: torch.device):
        self.x = data.x.to(device)
        self.batch_size = batch_size
        self.z_dim = z_dim
        self.device = device
        self.g_data = torch.Generator().manual_seed(seed)
        self.g_z = torch.Generator().manual_seed(seed + 1_000_003)

    def next_real(self) -> torch.Tensor:
        idx = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=self.g_data)
        self.last_idx = idx
        return self.x[idx.to(self.x.device)]

    def sample_z(self, n: int) -> torch.Tensor:
        # z ~ N(0, I)  [n, z_dim]
        z = torch.randn(n, self.z_dim, generator=self.g_z)
        self.last_z = z
        return z.to(self.device, non_blocking=True)

    def fingerprint(self) -> dict[str, float]:
        """Sums of the last real batch and the last z: they differ between ranks."""
        real = self.x[self.last_idx.to(self.x.device)].double().sum()
        return {"ddp_data_fingerprint": float(real), "ddp_z_fingerprint": float(self.last_z.double().sum())}

    def state(self) -> dict:
        return {"data": self.g_data.get_state(), "z": self.g_z.get_state()}

    def load_state(self, s: dict) -> None:
        self.g_data.set_state(s["data"])
        self.g_z.set_state(s["z"])


def fixed_z(cfg: Config, device: torch.device) -> torch.Tensor:
    """The same z batch on every rank and every resume: samples, GIF frames and flip rate use it."""
    g = torch.Generator().manual_seed(10_007 * (cfg.experiment.seed + 1))
    return torch.randn(cfg.eval.n_fixed_z, cfg.model.z_dim, generator=g).to(device)


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, device: torch.device, seed: int, batch: int = 1000) -> torch.Tensor:
    """n samples from G in eval mode (BN running statistics), from a generator of their own
    so that evaluation never moves the training RNG."""
    g = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    out = [G(torch.randn(min(batch, n - i), z_dim, generator=g).to(device)).float().cpu() for i in range(0, n, batch)]
    G.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def sample_fixed(G: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """G(z) for the fixed z batch, in eval mode, on the CPU."""
    was = G.training
    G.eval()
    out = G(z).float().cpu()
    G.train(was)
    return out
