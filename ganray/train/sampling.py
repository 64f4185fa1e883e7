"""What the loop draws: minibatches of a rank's data shard, latent vectors, the fixed z batch,
and samples of G for evaluation — each from a generator of its own, so that the streams are
recorded in checkpoints and evaluation never moves training's.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from ganray.config import Config
from ganray.data import Dataset

log = logging.getLogger(__name__)


class Sampler:
    """Random minibatches of one rank's data shard and latent vectors, from recorded generators.

    The generators live on the training device, and the indices and z are drawn there: a step
    copies nothing from the host and never waits for it (no host-device sync). Under
    speed.cuda_graphs the draws stay outside the captured graph (ganray.train.speed.GraphedStep
    copies each into a static input before a replay), so g_data and g_z are not registered to
    the graph. On the CPU the streams are those of a CPU generator, as before.
    A checkpoint's streams continue only on the device type that wrote them (a CUDA generator's
    state is not a CPU generator's); elsewhere the run goes on with fresh streams and says so."""

    def __init__(self, data: Dataset, batch_size: int, z_dim: int, seed: int, device: torch.device):
        self.x = data.x.to(device)
        self.batch_size = batch_size
        self.z_dim = z_dim
        self.device = device
        self.seed = seed
        self.g_data = torch.Generator(device=device)
        self.g_z = torch.Generator(device=device)
        self._seed(seed)

    def _seed(self, seed: int) -> None:
        self.g_data.manual_seed(seed)
        self.g_z.manual_seed(seed + 1_000_003)

    def next_real(self) -> torch.Tensor:
        # indices drawn on the device the data lives on: no host-device copy
        idx = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=self.g_data, device=self.device)
        self.last_idx = idx
        return self.x[idx]

    def sample_z(self, n: int) -> torch.Tensor:
        # z ~ N(0, I)  [n, z_dim], on the training device
        z = torch.randn(n, self.z_dim, generator=self.g_z, device=self.device)
        self.last_z = z
        return z

    def fingerprint(self) -> dict[str, float]:
        """Sums of the last real batch and the last z: they differ between ranks."""
        # note: a CPU-GPU sync point, at log steps of DDP runs only
        real = self.x[self.last_idx].double().sum()
        return {"ddp_data_fingerprint": float(real), "ddp_z_fingerprint": float(self.last_z.double().sum())}

    def state(self) -> dict:
        return {"data": self.g_data.get_state(), "z": self.g_z.get_state(), "device_type": self.device.type}

    def load_state(self, s: dict, step: int) -> None:
        """Continue the streams of a checkpoint; `step` seeds fresh ones where that cannot be done."""
        written_on = s.get("device_type", "cpu")  # checkpoints before issue 17: CPU generators
        if written_on == self.device.type:
            self.g_data.set_state(s["data"])
            self.g_z.set_state(s["z"])
            return
        log.warning("sampler streams of a %s checkpoint cannot continue on %s: fresh streams from the seed and "
                    "step %d (not bitwise a straight run)", written_on, self.device.type, step)
        self._seed((self.seed * 1_000_033 + 7_919 * step) % 2**32)  # not the run's first batches (CPU: 32-bit seeds)


def fixed_z(cfg: Config, device: torch.device) -> torch.Tensor:
    """The same z batch on every rank and every resume: samples, GIF frames and flip rate use it."""
    # drawn on the CPU, once per run: the same batch whatever the training device
    g = torch.Generator().manual_seed(10_007 * (cfg.experiment.seed + 1))
    return torch.randn(cfg.eval.n_fixed_z, cfg.model.z_dim, generator=g).to(device)


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, device: torch.device, seed: int, batch: int = 1000) -> torch.Tensor:
    """n samples from G in eval mode (BN running statistics), from a generator of their own
    so that evaluation never moves the training RNG."""
    # z drawn on the CPU (off the training step): `ganray eval` and the report's regeneration on
    # the CPU draw the same z for a seed as a GPU run's evaluation did
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
