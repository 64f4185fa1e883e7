"""`vae`: a convolutional variational autoencoder (Kingma & Welling, 2014) as a GAN baseline.

Models: D = encoder q(z|x) -> (mu, logvar); G = decoder, the DCGAN generator, so samples for
evaluation are G(z) with z ~ N(0, I), exactly as for the GAN families. One optimizer over
encoder + decoder (opt_G, lr = train.lr_g); opt_D is None. tc.n_critic does not apply: a step
uses one batch.

Loss per batch (averaged over the N examples):

    loss = KL(q(z|x) || N(0, I)) + α · MSE(x, G(z)),   z = mu + σ·ε, σ = exp(logvar / 2), ε ~ N(0, I)
    KL   = -1/2 Σ_j (1 + logvar_j - mu_j² - exp(logvar_j))      (sum over the z_dim latent dims)
    MSE  = Σ_pixels (x - G(z))²                                  (sum over the C·H·W values of one image)

MSE is summed per image, like the KL over latent dims, so that α = 1 is the negative ELBO of
a Gaussian decoder p(x|z) = N(G(z), σ_x² I) with σ_x² = 1/2 on the [-1, 1] pixel scale
(-log p = ||x - G(z)||² / (2σ_x²) + const). A per-pixel mean would shrink the reconstruction
term by C·H·W (784 for MNIST) and let the KL flatten the posterior (blank, mode-averaged samples).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ganray.config import Config, TrainConfig
from ganray.families import (
    Family,
    Models,
    NextReal,
    SampleZ,
    Stats,
    Wrap,
    adam,
    identity,
    no_state,
    register_family,
    widen,
)


def vae_loss(x: Tensor, x_hat: Tensor, mu: Tensor, logvar: Tensor, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, kl, mse) for a batch; see the module docstring for the definitions."""
    # KL(N(mu, σ²) || N(0, I)) = -1/2 Σ_j (1 + logvar_j - mu_j² - exp(logvar_j)), averaged over the batch
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
    # MSE = Σ_pixels (x - x_hat)², averaged over the batch
    mse = (x - x_hat).pow(2).flatten(1).sum(dim=1).mean()
    # loss = KL + α · MSE
    return kl + alpha * mse, kl, mse


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + σ·ε, σ = exp(logvar / 2), ε ~ N(0, I) (torch's global RNG)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # [N, z_dim]


def build(cfg: Config, shape: tuple[int, ...], wrap: Wrap = identity, device: torch.device | str = "cpu") -> Models:
    """G = decoder (DCGAN generator), D = encoder; one Adam(lr_g) over both, unwrapped."""
    from ganray.models import build_discriminator, build_generator  # noqa: PLC0415

    decoder = build_generator(cfg.model, shape).to(device)
    encoder = build_discriminator(cfg.model, shape, "vae").to(device)
    opt = adam([*encoder.parameters(), *decoder.parameters()], cfg.train.lr_g, cfg.train, cfg.speed)
    return Models.pair(wrap(decoder), wrap(encoder), opt, None)


def step(m: Models, next_real: NextReal, sample_z: SampleZ, state: dict, tc: TrainConfig) -> Stats:
    """One update of encoder and decoder on one real batch (sample_z is not needed: z comes from q(z|x))."""
    m.opt_G.zero_grad(set_to_none=True)
    x = next_real()  # [N, C, H, W]
    mu, logvar = (widen(t) for t in m.D(x))  # [N, z_dim] each
    x_hat = widen(m.G(reparameterize(mu, logvar)))  # [N, C, H, W]
    loss, kl, mse = vae_loss(x, x_hat, mu, logvar, tc.vae_alpha)
    loss.backward()
    m.opt_G.step()
    return {"loss": loss.detach(), "kl": kl.detach(), "mse": mse.detach()}


@torch.no_grad()
def reconstruct(m: Models, x: Tensor) -> Tensor:
    """Deterministic reconstructions G(mu(x)) [N, C, H, W] in eval mode (modes restored after)."""
    encoder, decoder = m.D_module, m.G_module
    modes = [encoder.training, decoder.training]
    encoder.eval()
    decoder.eval()
    try:
        mu, _logvar = encoder(x)
        return decoder(mu)
    finally:
        encoder.train(modes[0])
        decoder.train(modes[1])


FAMILY = register_family(Family(
    name="vae",
    build=build,
    init_state=no_state,
    step=step,
))
