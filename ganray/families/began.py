"""`began`: Boundary Equilibrium GAN (Berthelot et al., 2017).

D is an autoencoder; L(v) = mean|v - D(v)| is its L1 reconstruction error. The state is the
equilibrium term k_t (k_0 = 0), updated once per D step from that step's L(x) and L(G(z)):

    k_{t+1} = clip(k_t + λ_k (γ L(x) - L(G(z))), 0, 1),   λ_k = train.began_lambda_k, γ = train.began_gamma

Under torch.distributed (world size > 1) L(x) and L(G(z)) are averaged over the workers before
the update, so every worker holds the same k_t (the workers see different data shards).

With model.pack m the autoencoder encodes packs of m examples stacked along channels and returns
each example's reconstruction (ganray.models.remedies.Packed), so L(v) is per example as without.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ganray.config import TrainConfig
from ganray.families import Family, Stats, adversarial_builder, adversarial_step, frozen, register_family, widen


def init_state() -> dict:
    return {"k_t": 0.0}


def recon_loss(D: nn.Module, v: Tensor) -> Tensor:
    """L(v) = mean |v - D(v)| (over batch and pixels)."""
    return widen(v - D(v)).abs().mean()


def _mean_over_workers(t: Tensor) -> Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t)
        t = t / dist.get_world_size()
    return t


def update_k(k_t: Tensor | float, loss_real: Tensor, loss_fake: Tensor, tc: TrainConfig) -> Tensor:
    """k_{t+1} = clip(k_t + λ_k (γ L(x) - L(G(z))), 0, 1), as a detached 0-dim tensor."""
    k = torch.as_tensor(k_t, dtype=loss_real.dtype, device=loss_real.device)
    balance = tc.began_gamma * loss_real.detach() - loss_fake.detach()  # γ L(x) - L(G(z))
    return (k + tc.began_lambda_k * balance).clamp(0.0, 1.0)


def d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, real: Tensor, z: Tensor,
           state: dict, tc: TrainConfig) -> Stats:
    """One D (autoencoder) update and one k_t update; writes state["k_t"]."""
    opt_D.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = G(z)  # [N, C, H, W]
    n = real.shape[0]
    both = torch.cat([real, fake])  # [2N, C, H, W]: one forward, one backward (one DDP all-reduce)
    err = widen(both - D(both)).abs().flatten(1).mean(1)  # [2N] per-example |v - D(v)|
    loss_real, loss_fake = err[:n].mean(), err[n:].mean()  # L(x), L(G(z))
    k_t = torch.as_tensor(state["k_t"], dtype=real.dtype, device=real.device)
    # L_D = L(x) - k_t L(G(z))
    loss_D = loss_real - k_t * loss_fake
    loss_D.backward()
    opt_D.step()

    loss_real, loss_fake = loss_real.detach(), loss_fake.detach()
    pair = _mean_over_workers(torch.stack([loss_real, loss_fake]))  # same k_t on every worker
    state["k_t"] = update_k(k_t, pair[0], pair[1], tc)
    # M_global = L(x) + |γ L(x) - L(G(z))|: convergence measure, falls as training improves
    m_global = loss_real + (tc.began_gamma * loss_real - loss_fake).abs()
    return {
        "loss_D": loss_D.detach(),
        "loss_real": loss_real,
        "loss_fake": loss_fake,
        "k_t": state["k_t"],
        "m_global": m_global,
    }


def g_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, z: Tensor,
           state: dict, tc: TrainConfig) -> Stats:
    """One G update; D is used frozen (pass the unwrapped D under DDP)."""
    opt_G.zero_grad(set_to_none=True)
    with frozen(D):
        # L_G = L(G(z)) = mean |G(z) - D(G(z))|
        loss_G = recon_loss(D, G(z))
        loss_G.backward()
    opt_G.step()
    return {"loss_G": loss_G.detach()}


FAMILY = register_family(Family(
    name="began",
    build=adversarial_builder("began"),
    init_state=init_state,
    step=adversarial_step(d_step, g_step),
    d_step=d_step,
    g_step=g_step,
))
