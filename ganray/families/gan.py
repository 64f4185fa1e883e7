"""`gan`: the non-saturating GAN of Goodfellow et al. (2014), as in the Keras / PyTorch DCGAN examples.

D outputs logits; losses use BCE-with-logits (log-sigmoid computed stably).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganray.config import TrainConfig
from ganray.families import Family, Stats, adversarial_builder, adversarial_step, frozen, no_state, register_family


def d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, real: Tensor, z: Tensor,
           state: dict, tc: TrainConfig) -> Stats:
    """One D update on a batch of real examples and G(z)."""
    opt_D.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = G(z)  # [N, *shape]
    n = real.shape[0]
    logits = D(torch.cat([real, fake]))  # [2N]: one forward, one backward (one DDP all-reduce)
    logit_real, logit_fake = logits[:n], logits[n:]
    # D maximises log D(x) + log(1 - D(G(z))), i.e. minimises
    # loss_D = BCE(D(x), 1) + BCE(D(G(z)), 0) = -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
    loss_D = (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
              + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
    loss_D.backward()
    opt_D.step()
    logit_real, logit_fake = logit_real.detach(), logit_fake.detach()
    return {
        "loss_D": loss_D.detach(),
        # share of real classified real (logit > 0 <=> D(x) > 1/2) and of fake classified fake
        "d_acc_real": (logit_real > 0).float().mean(),
        "d_acc_fake": (logit_fake < 0).float().mean(),
        "d_real": torch.sigmoid(logit_real).mean(),  # mean D(x)
        "d_fake": torch.sigmoid(logit_fake).mean(),  # mean D(G(z))
    }


def g_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, z: Tensor,
           state: dict, tc: TrainConfig) -> Stats:
    """One G update; D is used frozen (pass the unwrapped D under DDP)."""
    opt_G.zero_grad(set_to_none=True)
    with frozen(D):
        logit_fake = D(G(z))  # [N]
        # Non-saturating G loss: minimise -log D(G(z)) = BCE(D(G(z)), 1)
        loss_G = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        loss_G.backward()
    opt_G.step()
    return {"loss_G": loss_G.detach()}


FAMILY = register_family(Family(
    name="gan",
    build=adversarial_builder("gan"),
    init_state=no_state,
    step=adversarial_step(d_step, g_step),
    d_step=d_step,
    g_step=g_step,
))
