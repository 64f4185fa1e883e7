"""`wgan-gp`: Wasserstein GAN with gradient penalty (Gulrajani et al., 2017).

D is a critic (no sigmoid). The paper's settings: λ = 10 (train.gp_lambda), n_critic = 5,
Adam lr 1e-4, betas (0.5, 0.9); applied to every train key the config leaves unset
(ganray.config.FAMILY_DEFAULTS), so `--set train.family=wgan-gp` alone runs them.

The critic is deterministic and per-example: no BatchNorm (the paper's choice) and no dropout
(ganray.models builds the DCGAN critic without the GAN discriminator's Dropouts). D(x_i) then
depends on x_i and the weights alone, which the penalty needs (it constrains the gradient of
the critic that G is trained against, not of a random thinned copy) and which makes DDP's step
the single-process step on the global batch (tests/test_ddp_gp.py). With model.pack m the critic
judges packs of m examples: one interpolation weight per pack, the penalty per pack's input.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ganray.config import TrainConfig
from ganray.families import (
    Family,
    Stats,
    adversarial_builder,
    adversarial_step,
    frozen,
    no_state,
    register_family,
    unwrap,
    widen,
)


def interpolate(real: Tensor, fake: Tensor, eps: Tensor | None = None, pack: int = 1) -> Tensor:
    """x_hat = eps * x + (1 - eps) * G(z), eps ~ U[0, 1] per pack of `pack` consecutive examples
    (model.pack; 1: per example), so a packed x_hat lies on the line between a real and a fake
    pack; returned with requires_grad."""
    if eps is None:
        eps = torch.rand(real.shape[0] // pack, *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        eps = eps.repeat_interleave(pack, dim=0) if pack > 1 else eps  # [N, 1, ...]
    return (eps * real + (1 - eps) * fake).detach().requires_grad_(True)  # [N, *shape]


def gradient_penalty(critic_hat: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    """(gp, grad_norm) from critic values D(x_hat) [P] and the x_hat [N, *shape] they came from:
    P = N / m values for packs of m = model.pack consecutive examples (m = 1: P = N).

    gp = E[(||∇_x D(x_hat)||_2 - 1)^2] over the P critic inputs; grad_norm = ||∇_x D(x_hat)||_2 per
    input [P]. A pack's input is its m examples stacked, so its gradient is theirs stacked and its
    norm is that of the m examples' gradients together: rows of grad reshaped to [P, m * |x|].
    create_graph=True keeps the graph so gp can be differentiated w.r.t. D's parameters.
    """
    # Each D(x_hat_p) depends only on pack p's examples, so the gradient of the sum gives every
    # pack's gradient. (With model.minibatch_std it also depends on the pack's group through the
    # group's std; the gradient of the sum then includes those cross terms, as in ProGAN, which
    # trained WGAN-GP with its minibatch-std layer the same way.)
    (grad,) = torch.autograd.grad(critic_hat.sum(), x_hat, create_graph=True)  # [N, *shape]
    grad_norm = grad.reshape(critic_hat.shape[0], -1).norm(2, dim=1)  # [P]
    gp = ((grad_norm - 1) ** 2).mean()
    return gp, grad_norm


def d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, real: Tensor, z: Tensor,
           state: dict, tc: TrainConfig, eps: Tensor | None = None) -> Stats:
    """One critic update on a batch of real examples and G(z).

    eps: the interpolation weights, [N, 1, ...] broadcastable to real; drawn U[0, 1] per pack
    when None (training), given by tests that compare a DDP step with a single process's.
    """
    opt_D.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = G(z)  # [N, *shape]
    x_hat = interpolate(real, fake, eps, pack=getattr(unwrap(D), "pack", 1))  # [N, *shape]
    # [3N/m]: one forward, one backward (one DDP all-reduce); one value per pack of m examples
    critic = widen(D(torch.cat([real, fake, x_hat])))
    d_real, d_fake, d_hat = critic.chunk(3)
    gp, grad_norm = gradient_penalty(d_hat, x_hat)
    # Critic loss: E[D(G(z))] - E[D(x)] + λ E[(||∇D(x_hat)||_2 - 1)^2]
    wasserstein = d_real.mean() - d_fake.mean()  # E[D(x)] - E[D(G(z))], the Wasserstein estimate
    loss_D = -wasserstein + tc.gp_lambda * gp
    # Under DDP (W ranks, N examples each) loss_D = (1/N) Σ_i ℓ_i over the rank's triples, with
    # ℓ_i = D(G(z_i)) - D(x_i) + λ (||∇_x D(x_hat_i)||_2 - 1)^2, and DDP averages the ranks'
    # gradients: (1/W) Σ_r ∇_θ (1/N) Σ_{i∈r} ℓ_i = ∇_θ (1/WN) Σ_i ℓ_i, the global batch's gradient,
    # because ℓ_i depends on example i alone (no BatchNorm, no dropout in the critic; with
    # model.pack, i counts packs, which never straddle ranks: m divides each rank's N).
    # The penalty's ∇_θ arrives through create_graph in this one backward, the one DDP's reducer
    # hooks see; autograd.grad above (w.r.t. x_hat only) accumulates no parameter gradient.
    loss_D.backward()
    opt_D.step()
    return {
        "loss_D": loss_D.detach(),
        "wasserstein": wasserstein.detach(),
        "grad_norm": grad_norm.detach().mean(),
        "gp": gp.detach(),
    }


def g_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, z: Tensor,
           state: dict, tc: TrainConfig) -> Stats:
    """One G update; D is used frozen (pass the unwrapped D under DDP)."""
    opt_G.zero_grad(set_to_none=True)
    with frozen(D):
        # G loss: -E[D(G(z))]
        loss_G = -widen(D(G(z))).mean()
        loss_G.backward()
    opt_G.step()
    return {"loss_G": loss_G.detach()}


FAMILY = register_family(Family(
    name="wgan-gp",
    build=adversarial_builder("wgan-gp"),
    init_state=no_state,
    step=adversarial_step(d_step, g_step),
    d_step=d_step,
    g_step=g_step,
))
