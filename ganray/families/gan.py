"""`gan`: the non-saturating GAN of Goodfellow et al. (2014), as in the Keras / PyTorch DCGAN examples.

D outputs logits; losses use BCE-with-logits (log-sigmoid computed stably). A D step is one of
two schemes (train.d_updates):

    joint           one optimizer step on real and fake together: one forward of D over
                    [real, fake], one backward (the PyTorch DCGAN example; ganray's default)
    fake_then_real  two optimizer steps, as the Keras DCGAN's D.train_on_batch(G.predict(z), 0)
                    then D.train_on_batch(x, 1): fakes drawn with G in inference mode (eval:
                    BatchNorm's running statistics, left unchanged by the draw), a step on
                    them, then a step on the real batch with the D that step made. Under DDP
                    each of the two backward passes all-reduces D's gradients.
    simultaneous    D and G updated at once from the same point (theta_G, theta_D) and the same
                    fakes: one forward of G, G's gradient through the current (frozen) D, D's
                    gradient on those fakes, then both optimizer steps. The PacGAN authors'
                    code trains so (ALI's ali_algorithm in Blocks; docs/protocols.md); it
                    replaces the D step and the G step, so train.n_critic must be 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganray.config import TrainConfig
from ganray.families import (
    Family,
    Models,
    NextReal,
    SampleZ,
    Stats,
    adversarial_builder,
    adversarial_step,
    frozen,
    no_state,
    register_family,
    widen,
)


def d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, real: Tensor, z: Tensor,
           state: dict, tc: TrainConfig) -> Stats:
    """One D update on a batch of real examples and G(z), in the scheme of tc.d_updates."""
    if tc.d_updates == "fake_then_real":
        return d_step_fake_then_real(G, D, opt_D, real, z, state, tc)
    opt_D.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake = G(z)  # [N, *shape]
    # [2N/m]: one forward, one backward (one DDP all-reduce); one logit per pack of m = model.pack
    # examples (m = 1: per example), the first N/m of real packs, the rest of fake ones
    loss_D, logit_real, logit_fake = joint_d_loss(widen(D(torch.cat([real, fake]))))
    loss_D.backward()
    opt_D.step()
    return d_stats(loss_D, logit_real, logit_fake)


def joint_d_loss(logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(loss_D, logit_real, logit_fake) of D's logits over [real, fake] (first half real packs)."""
    logit_real, logit_fake = logits.chunk(2)
    # D maximises log D(x) + log(1 - D(G(z))), i.e. minimises
    # loss_D = BCE(D(x), 1) + BCE(D(G(z)), 0) = -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
    loss_D = (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
              + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))
    return loss_D, logit_real, logit_fake


def d_step_fake_then_real(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, real: Tensor, z: Tensor,
                          state: dict, tc: TrainConfig) -> Stats:
    """Two D optimizer steps, the Keras DCGAN's: first on G.predict(z) with label 0, then on the
    real batch with label 1."""
    fake = predict(G, z)  # [N, *shape]
    # (1) the fake batch: D minimises BCE(D(G(z)), 0) = -log(1 - sigmoid(D(G(z))))
    opt_D.zero_grad(set_to_none=True)
    logit_fake = widen(D(fake))  # [N] ([N/m] with model.pack m)
    loss_fake = F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake))
    loss_fake.backward()
    opt_D.step()
    # (2) then the real batch, with the D that step (1) made: D minimises BCE(D(x), 1) = -log sigmoid(D(x))
    opt_D.zero_grad(set_to_none=True)
    logit_real = widen(D(real))  # [N]
    loss_real = F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
    loss_real.backward()
    opt_D.step()
    # loss_D = BCE(D(x), 1) + BCE(D(G(z)), 0), as the joint step's (here of two Ds one step apart)
    return d_stats(loss_real.detach() + loss_fake.detach(), logit_real, logit_fake)


@torch.no_grad()
def predict(G: nn.Module, z: Tensor) -> Tensor:
    """G(z) in inference mode, as Keras' G.predict: eval mode (BatchNorm normalises with its running
    statistics and does not update them; no dropout), no gradients; G's mode is restored."""
    was_training = G.training
    G.eval()
    try:
        return G(z)  # [N, *shape]
    finally:
        G.train(was_training)


def d_stats(loss_D: Tensor, logit_real: Tensor, logit_fake: Tensor) -> Stats:
    """The D step's stats from its loss and the logits of real [N] and fake [N] examples (of packs
    with model.pack: [N/m] each)."""
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
        logit_fake = widen(D(G(z)))  # [N]
        # Non-saturating G loss: minimise -log D(G(z)) = BCE(D(G(z)), 1)
        loss_G = F.binary_cross_entropy_with_logits(logit_fake, torch.ones_like(logit_fake))
        loss_G.backward()
    opt_G.step()
    return {"loss_G": loss_G.detach()}


def simultaneous_step(m: Models, next_real: NextReal, sample_z: SampleZ, state: dict, tc: TrainConfig) -> Stats:
    """train.d_updates simultaneous: both gradients at the same (theta_G, theta_D), on one batch of
    fakes, then both updates (Adam steps of D and of G, in that order; neither reads the other's).

    D runs forward twice (on the fakes for G's gradient, on [real, fake] for its own) where ALI's
    graph runs it once: the same function for the PacGAN nets (no dropout, no BatchNorm in D), but a
    D with dropout draws two masks, and model.spectral_norm's power iteration moves between the two."""
    if m.opt_D is None:
        raise ValueError("simultaneous step: Models.opt_D is None; build the models with the family's build()")
    real = next_real()
    z = sample_z(real.shape[0])
    m.opt_G.zero_grad(set_to_none=True)
    m.opt_D.zero_grad(set_to_none=True)
    fake = m.G(z)  # [N, *shape]: G's one forward (BatchNorm in train mode, running statistics updated once)
    # G's gradient at the current D (frozen, unwrapped: D's gradients neither computed nor all-reduced):
    # non-saturating loss_G = -log D(G(z)) = BCE(D(G(z)), 1)
    with frozen(m.D_module):
        logit_g = widen(m.D_module(fake))  # [N/m]
        loss_G = F.binary_cross_entropy_with_logits(logit_g, torch.ones_like(logit_g))
        loss_G.backward()
    # D's gradient at the current G, on the same fakes (detached: G's gradient is the one above):
    # loss_D = BCE(D(x), 1) + BCE(D(G(z)), 0) = -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z))))
    loss_D, logit_real, logit_fake = joint_d_loss(widen(m.D(torch.cat([real, fake.detach()]))))  # [2N/m] logits
    loss_D.backward()
    m.opt_D.step()
    m.opt_G.step()
    return {**d_stats(loss_D, logit_real, logit_fake), "loss_G": loss_G.detach()}


_alternating = adversarial_step(d_step, g_step)


def step(m: Models, next_real: NextReal, sample_z: SampleZ, state: dict, tc: TrainConfig) -> Stats:
    """One generator iteration: tc.n_critic D steps then a G step, or the simultaneous update."""
    if tc.d_updates == "simultaneous":
        return simultaneous_step(m, next_real, sample_z, state, tc)
    return _alternating(m, next_real, sample_z, state, tc)


FAMILY = register_family(Family(
    name="gan",
    build=adversarial_builder("gan"),
    init_state=no_state,
    step=step,
    d_step=d_step,
    g_step=g_step,
))
