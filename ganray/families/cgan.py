"""`cgan`: the class-conditional DCGAN: G(z, y) with the class embedded and concatenated to z, the
projection discriminator D(x, y) (ganray.models.conditional), and the non-saturating loss of
`gan`. Real batches come with their labels y; a fake is asked for the label of a random
training example (the sampler's `sample_z` gives (z, y_fake)), so fakes follow the data's class
proportions. One joint D step per batch, as gan's default.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
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
    widen,
)
from ganray.families.gan import d_stats


def d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, real: tuple[Tensor, Tensor],
           z: tuple[Tensor, Tensor], state: dict, tc: TrainConfig) -> Stats:
    """One D update on real (x, y) and G(z, y_fake) with y_fake."""
    (x, y), (z_, y_fake) = real, z
    opt_D.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = G(z_, y_fake)  # [N, C, H, W]
    # one forward over [real, fake] with their labels [2N], one backward
    logits = widen(D(torch.cat([x, fake]), torch.cat([y, y_fake])))
    logit_real, logit_fake = logits.chunk(2)
    # D maximises log D(x, y) + log(1 - D(G(z, y'), y')), i.e. minimises
    # loss_D = BCE(D(x, y), 1) + BCE(D(G(z, y'), y'), 0)
    loss_D = (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
              + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
    loss_D.backward()
    opt_D.step()
    return d_stats(loss_D, logit_real, logit_fake)


def g_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, z: tuple[Tensor, Tensor],
           state: dict, tc: TrainConfig) -> Stats:
    """One G update; D is used frozen (pass the unwrapped D under DDP)."""
    z_, y_fake = z
    opt_G.zero_grad(set_to_none=True)
    with frozen(D):
        logit_fake = widen(D(G(z_, y_fake), y_fake))  # [N]
        # non-saturating: minimise -log D(G(z, y), y) = BCE(D(G(z, y), y), 1)
        loss_G = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        loss_G.backward()
    opt_G.step()
    return {"loss_G": loss_G.detach()}


FAMILY = register_family(Family(
    name="cgan",
    build=adversarial_builder("cgan"),
    init_state=no_state,
    step=adversarial_step(d_step, g_step),
    d_step=d_step,
    g_step=g_step,
    conditional=True,
))
