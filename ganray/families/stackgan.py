"""`stackgan`: StackGAN-v1 (Zhang et al. 2017), text-conditional, trained stage by stage.

The losses and schedule of the authors' code (hanzhanggit/StackGAN-Pytorch @ e72ef88,
code/miscc/utils.py compute_discriminator_loss / compute_generator_loss / KL_loss, code/trainer.py):

    D:  errD = BCE(D(x, mu), 1) + 1/2 [BCE(D(x_i, mu_{i+1}), 0) + BCE(D(G(z, c), mu_f), 0)]       Stage I
        errD = 1/2 [BCE(D(x, mu), 1) + BCE(D_u(x), 1)]
             + 1/3 [BCE(D(x_i, mu_{i+1}), 0) + BCE(D(G(z, c), mu_f), 0) + BCE(D_u(G(z, c)), 0)]     Stage II
    G:  errG = BCE(D(G(z, c), mu), 1) [+ BCE(D_u(G(z, c)), 1) in Stage II] + kl_weight * KL(N(mu, sigma^2) || N(0, I))

D is conditioned on the CA mean mu (not on the sampled c), detached. The mismatched ("wrong")
pairs are the authors': real image i with the text of example i + 1, i < N - 1 (N - 1 pairs; two
neighbours may share a class by chance: a wrong pair that happens to match, as in the authors'
batches). BCE means are per batch. kl_weight = train.kl_weight (the authors' code 2.0, the
paper's text lambda = 1). Adam (lr_g / lr_d, betas (beta1, beta2); the authors 2e-4, (0.5, 0.999)),
both learning rates halved every train.lr_decay_steps G steps (`lr_at`; the authors every
LR_DECAY_EPOCH epochs).

Inputs (the conditional contract): `real = (x [N, C, H, W], phi_t [N, E])`, `z = (z [N, z_dim],
phi_t_fake [N, E])`; fakes are drawn for the conditions the sampler gives (the authors draw them
for the real batch's texts). In Stage I the real images are area-downsampled to Stage I's size
(`at_size`). As the authors, D's step calls D on the real images and on the fakes apart, and
scores each kind of pair (real, mismatched, fake) as a BatchNorm batch of its own: G's step shows D
fakes alone, and a D that had learnt its statistics over real and fake rows together is fooled
through BatchNorm (a first version with one forward over [real, fake] trained G to garbage with
loss_G near 0). G steps use D frozen; D's BatchNorm running statistics move in G's forward (D always runs in
train mode, so they are never read).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganray.config import Config, TrainConfig
from ganray.families import Family, Models, Stats, Wrap, adam, frozen, identity, register_family, widen
from ganray.models.stackgan import (
    StageDiscriminator,
    StageIGenerator,
    StageIIGenerator,
    ca_kl,
    default_res_blocks,
    default_stage1_size,
    stackgan_init_,
)

Real = tuple[Tensor, Tensor]  # (x [N, C, H, W], phi_t [N, E])
Latent = tuple[Tensor, Tensor]  # (z [N, z_dim], phi_t [N, E])


def bce(logit: Tensor, target: float) -> Tensor:
    """Mean binary cross-entropy of `logit` against the constant label `target` (stable, with logits)."""
    return F.binary_cross_entropy_with_logits(logit, torch.full_like(logit, target))


def matching_aware_d_loss(logit_real: Tensor, logit_wrong: Tensor, logit_fake: Tensor,
                          uncond_real: Tensor | None = None, uncond_fake: Tensor | None = None) -> Tensor:
    """The matching-aware D loss from conditional logits of real [N], wrong [N - 1] and fake [N] pairs
    (with the unconditional logits of real and fake images, as the authors' Stage-II D)."""
    if uncond_real is None or uncond_fake is None:
        # errD = BCE(real, 1) + (BCE(wrong, 0) + BCE(fake, 0)) / 2
        return bce(logit_real, 1.0) + 0.5 * (bce(logit_wrong, 0.0) + bce(logit_fake, 0.0))
    # errD = (BCE(real, 1) + BCE(u_real, 1)) / 2 + (BCE(wrong, 0) + BCE(fake, 0) + BCE(u_fake, 0)) / 3
    return (0.5 * (bce(logit_real, 1.0) + bce(uncond_real, 1.0))
            + (bce(logit_wrong, 0.0) + bce(logit_fake, 0.0) + bce(uncond_fake, 0.0)) / 3)


def lr_at(step: int, base_lr: float, decay_steps: int) -> float:
    """The learning rate after `step` G steps: base_lr halved every decay_steps steps (0 = never)."""
    return base_lr * 0.5 ** (step // decay_steps) if decay_steps > 0 else base_lr


def at_size(x: Tensor, size: int) -> Tensor:
    """Real images [N, C, H, W] at size x size: area (mean-of-block) downsampling; as they are if H == size."""
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="area")


def d_step(G: nn.Module, D: nn.Module, opt_D: torch.optim.Optimizer, real: Real, z: Latent,
           state: dict, tc: TrainConfig) -> Stats:
    """One matching-aware D update (G unwrapped, used under no_grad; D possibly DDP-wrapped)."""
    x, text = real
    z, text_fake = z
    n = x.shape[0]
    if n < 2:
        raise ValueError("stackgan d_step: the mismatched pairs need a batch of at least 2")
    x = at_size(x, G.size)  # [N, C, S, S]: Stage I trains on downsampled reals
    opt_D.zero_grad(set_to_none=True)
    with torch.no_grad():
        fake, mu_fake, _ = G(z, text_fake)  # [N, C, S, S], [N, c_dim]
        mu = G.ca.mean(text)  # [N, c_dim]: the real texts' CA mean
    # Two forwards, as the authors' D: the real images (their real pairs (x_i, mu_i) and mismatched
    # pairs (x_i, mu_{i+1}), i < N-1, each a BatchNorm batch of its own), then the fakes (G_j, mu_f_j)
    # alone, the batch D sees in G's step too. Each forward has its backward (gradients accumulate; under
    # DDP each backward all-reduces), then one optimizer step on errD's gradient.
    ar = torch.arange(n, device=x.device)
    logits, u_real = D(x, torch.cat([mu, mu[1:]]), torch.cat([ar, ar[:-1]]), split=[n, n - 1])
    logit_real, logit_wrong = widen(logits).split([n, n - 1])
    u_real = widen(u_real) if u_real is not None else None
    # errD = BCE(real, 1) + (BCE(wrong, 0) + BCE(fake, 0)) / 2, Stage II with D's unconditional logits
    # (matching_aware_d_loss): the real-image terms here, the fake-image terms below
    loss_real_part = (bce(logit_real, 1.0) + 0.5 * bce(logit_wrong, 0.0) if u_real is None
                      else 0.5 * (bce(logit_real, 1.0) + bce(u_real, 1.0)) + bce(logit_wrong, 0.0) / 3)
    loss_real_part.backward()
    logit_fake, u_fake = D(fake.to(x.dtype), mu_fake)
    logit_fake = widen(logit_fake)
    u_fake = widen(u_fake) if u_fake is not None else None
    loss_fake_part = (0.5 * bce(logit_fake, 0.0) if u_fake is None
                      else (bce(logit_fake, 0.0) + bce(u_fake, 0.0)) / 3)
    loss_fake_part.backward()
    opt_D.step()
    loss_D = matching_aware_d_loss(logit_real.detach(), logit_wrong.detach(), logit_fake.detach(),
                                   None if u_real is None else u_real.detach(),
                                   None if u_fake is None else u_fake.detach())
    logit_real, logit_wrong, logit_fake = logit_real.detach(), logit_wrong.detach(), logit_fake.detach()
    return {
        "loss_D": loss_D.detach(),
        "loss_real": bce(logit_real, 1.0), "loss_wrong": bce(logit_wrong, 0.0), "loss_fake": bce(logit_fake, 0.0),
        "d_real": torch.sigmoid(logit_real).mean(),  # mean D(x, mu)
        "d_wrong": torch.sigmoid(logit_wrong).mean(),  # mean D(x_i, mu_{i+1})
        "d_fake": torch.sigmoid(logit_fake).mean(),  # mean D(G(z, c), mu)
        "d_acc_real": (logit_real > 0).float().mean(),
        "d_acc_fake": (logit_fake < 0).float().mean(),
    }


def g_step(G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer, z: Latent,
           state: dict, tc: TrainConfig) -> Stats:
    """One G update (G possibly DDP-wrapped; D unwrapped, frozen)."""
    z, text = z
    opt_G.zero_grad(set_to_none=True)
    with frozen(D):
        fake, mu, logvar = G(z, text)  # [N, C, S, S], [N, c_dim] x 2 (logvar None without CA)
        logit, uncond = D(fake, mu.detach())  # [N], [N] | None; D sees the mean, detached (the authors')
        logit = widen(logit)
        # non-saturating: errG = BCE(D(G(z, c), mu), 1) [+ BCE(D_u(G(z, c)), 1)]
        loss_adv = bce(logit, 1.0) + (bce(widen(uncond), 1.0) if uncond is not None else 0.0)
        # + kl_weight * KL(N(mu, sigma^2) || N(0, I)) (conditioning augmentation only)
        kl = ca_kl(widen(mu), widen(logvar)) if logvar is not None else torch.zeros((), device=logit.device)
        loss_G = loss_adv + tc.kl_weight * kl
        loss_G.backward()
    opt_G.step()
    return {"loss_G": loss_G.detach(), "loss_G_adv": loss_adv.detach(), "kl": kl.detach(),
            "d_fake_g": torch.sigmoid(logit.detach()).mean()}


def init_state() -> dict:
    return {"step": 0}  # G steps taken: the learning-rate schedule's clock (saved in checkpoints)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def step(m: Models, next_real: Callable[[], Real], sample_z: Callable[[int], Latent], state: dict,
         tc: TrainConfig) -> Stats:
    """tc.n_critic D steps (each on a fresh batch), then one G step, at lr_at(state["step"], ...)."""
    set_lr(m.opt_G, lr_at(state["step"], tc.lr_g, tc.lr_decay_steps))
    set_lr(m.opt_D, lr_at(state["step"], tc.lr_d, tc.lr_decay_steps))
    stats: Stats = {}
    n = 0
    for _ in range(tc.n_critic):
        real = next_real()
        n = real[0].shape[0]
        stats = d_step(m.G_module, m.D, m.opt_D, real, sample_z(n), state, tc)
    stats.update(g_step(m.G, m.D_module, m.opt_G, sample_z(n), state, tc))
    state["step"] += 1
    return stats


def build_networks(cfg: Config, shape: tuple[int, ...], embed_dim: int,
                   stage1_size: int = 0) -> tuple[nn.Module, StageDiscriminator]:
    """G and D of train.stage for images of `shape` (C, S, S) and text embeddings of size embed_dim,
    initialised as the authors (Stage II: its own layers; its Stage I is to be loaded, `load_stage1_`)."""
    mc = cfg.model
    c, size = shape[0], shape[-1]
    s1 = stage1_size or default_stage1_size(size)
    G1 = stackgan_init_(StageIGenerator(mc.z_dim, embed_dim, mc.c_dim, mc.ngf, s1, c, mc.cond_augment))
    if cfg.train.stage == 1:
        return G1, stackgan_init_(StageDiscriminator(s1, c, mc.ndf, mc.c_dim, with_uncond=False))
    G2 = StageIIGenerator(G1, mc.ngf, size, mc.res_blocks or default_res_blocks(size), mc.cond_augment)
    for name, child in G2.named_children():
        if name != "stage1":
            stackgan_init_(child)
    return G2, stackgan_init_(StageDiscriminator(size, c, mc.ndf, mc.c_dim, with_uncond=True))


def build_stackgan_models(cfg: Config, shape: tuple[int, ...], wrap: Wrap = identity,
                          device: torch.device | str = "cpu", *, embed_dim: int, stage1_size: int = 0) -> Models:
    """G and D of train.stage on `device`, each through `wrap`; Adam(lr_g) over G's own parameters
    (Stage II: not the frozen Stage I's) and Adam(lr_d) over D's."""
    G, D = build_networks(cfg, shape, embed_dim, stage1_size)
    G, D = G.to(device), D.to(device)
    g_params = G.own_parameters() if isinstance(G, StageIIGenerator) else G.parameters()
    opt_G = adam(list(g_params), cfg.train.lr_g, cfg.train, cfg.speed)
    opt_D = adam(D.parameters(), cfg.train.lr_d, cfg.train, cfg.speed)
    return Models.pair(wrap(G), wrap(D), opt_G, opt_D)


def load_stage1_(G: StageIIGenerator, state_dict: dict) -> StageIIGenerator:
    """Stage II's embedded Stage I from a Stage-I G's state_dict (strict), frozen and in eval mode again."""
    G.stage1.load_state_dict(state_dict)
    G.stage1.requires_grad_(False)
    G.stage1.eval()
    return G


# What a Stage-II trial and the Stage-I trial it continues share, when train.stage1_checkpoint is
# a Stage-I experiment: the sweep's axes that shape Stage I (jobs/sweep_stackgan.py)
STAGE1_MATCH = (("model", "z_dim"), ("model", "cond_augment"), ("experiment", "seed"), ("experiment", "variant"),
                ("train", "lr_g"), ("train", "lr_d"))


def stage1_source(cfg: Config) -> str:
    """The checkpoint file train.stage1_checkpoint names: a checkpoint file (or a folder holding
    checkpoint.pt); a trial folder: its newest checkpoint; a Stage-I experiment folder: the newest
    checkpoint of its one trial whose z_dim, cond_augment, seed, variant and learning rates are this config's."""
    from ganray import storage  # noqa: PLC0415
    from ganray.artifacts import layout, reader  # noqa: PLC0415
    from ganray.config import ConfigError  # noqa: PLC0415

    uri = cfg.train.stage1_checkpoint
    if uri.endswith(".pt") or storage.exists(storage.join(uri, layout.CHECKPOINT_FILE)):
        return uri
    latest = reader.latest_checkpoint(uri)
    if latest is not None:
        return latest
    trials = reader.list_trials(uri)
    if not trials:
        raise ConfigError(f"train.stage1_checkpoint {uri}: no checkpoint, trial or experiment there")
    want = {f"{s}.{k}": getattr(getattr(cfg, s), k) for s, k in STAGE1_MATCH}
    found = []
    for name, files in sorted(trials.items()):
        if layout.CONFIG not in files:
            continue
        c = reader.read_config(storage.join(uri, layout.TRIALS_DIR, name, layout.CONFIG))
        if all(getattr(getattr(c, s), k) == want[f"{s}.{k}"] for s, k in STAGE1_MATCH):
            found.append(name)
    if len(found) != 1:
        raise ConfigError(f"train.stage1_checkpoint {uri}: {len(found)} Stage-I trials match "
                          f"{', '.join(f'{k}={v!r}' for k, v in want.items())}"
                          + (f" ({', '.join(found)})" if found else f"; its trials: {', '.join(sorted(trials))}"))
    latest = reader.latest_checkpoint(storage.join(uri, layout.TRIALS_DIR, found[0]))
    if latest is None:
        raise ConfigError(f"train.stage1_checkpoint {uri}: Stage-I trial {found[0]} has no checkpoint")
    return latest


def load_stage1_checkpoint(cfg: Config, load: Callable[[str], tuple[dict, Config]]) -> dict:
    """The Stage-I G weights of train.stage1_checkpoint, checked against this Stage-II config;
    `load(uri)` -> (checkpoint state, its config), the train layer's checkpoint reader."""
    from ganray.config import ConfigError  # noqa: PLC0415

    source = stage1_source(cfg)
    state, s1 = load(source)
    diffs = [f"{key}: Stage I has {a!r}, this config {b!r}" for key, a, b in (
        ("train.family", s1.train.family, "stackgan"), ("train.stage", s1.train.stage, 1),
        ("data.dataset", s1.data.dataset, cfg.data.dataset), ("model.z_dim", s1.model.z_dim, cfg.model.z_dim),
        ("model.c_dim", s1.model.c_dim, cfg.model.c_dim), ("model.ngf", s1.model.ngf, cfg.model.ngf),
        ("model.cond_augment", s1.model.cond_augment, cfg.model.cond_augment)) if a != b]
    if diffs:
        raise ConfigError(f"train.stage1_checkpoint {source}: not a Stage-I checkpoint of this model:\n  "
                          + "\n  ".join(diffs))
    return state["G"]


def build(cfg: Config, shape: tuple[int, ...], wrap: Wrap = identity, device: torch.device | str = "cpu") -> Models:
    """The family's build: the text embedding size from the dataset (ganray.data.TEXT_EMBED_DIMS), Stage
    I's size from its Stage-II size (STAGE2_SIZES: CUB 256 -> 64, captioned-mnist 28 -> 14) in both
    stages, so that a Stage-I run on CUB images loaded at 64 trains the Stage I a Stage II at 256 holds."""
    from ganray.data import STAGE2_SIZES, TEXT_EMBED_DIMS  # noqa: PLC0415

    return build_stackgan_models(cfg, shape, wrap, device, embed_dim=TEXT_EMBED_DIMS[cfg.data.dataset],
                                 stage1_size=default_stage1_size(STAGE2_SIZES[cfg.data.dataset]))


def start(m: Models, cfg: Config, load: Callable[[str], tuple[dict, Config]]) -> None:
    """A new Stage-II run starts from its Stage I (a resume then restores the whole Stage-II G)."""
    if cfg.train.stage == 2:
        load_stage1_(m.G_module, load_stage1_checkpoint(cfg, load))


FAMILY = register_family(Family(
    name="stackgan",
    build=build,
    init_state=init_state,
    step=step,
    d_step=d_step,
    g_step=g_step,
    conditional=True,
    start=start,
))
