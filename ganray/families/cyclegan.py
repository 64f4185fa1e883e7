"""`cyclegan`: unpaired image-to-image translation (Zhu et al. 2017), pure steps (not registered here).

Settings checked against the authors' reference, junyanz/pytorch-CycleGAN-and-pix2pix:
models/cycle_gan_model.py (the loss terms, lambda_A = lambda_B = 10, lambda_identity 0.5 as a share
of them, backward_D_basic's factor 0.5, the pools, G step before D step), util/image_pool.py (the
pool), models/networks.py (GANLoss 'lsgan' = MSE against 1 / 0, get_scheduler 'linear') and
options/train_options.py (Adam lr 2e-4, beta1 0.5, pool_size 50). The code is ganray's.

Networks (ganray.models.cyclegan): G_AB: A -> B, G_BA: B -> A, D_A judges domain A, D_B domain B.
The reference's names: its G_A = G_AB, G_B = G_BA, its D_A (on B images) = D_B, its D_B = D_A.

One training step (`step`), the reference's optimize_parameters:

    (a, b) = next_real()                          unpaired batches [N, *shape_A], [N, *shape_B]
    g_step: one Adam step of opt_G over G_AB and G_BA, D_A and D_B frozen; returns the fakes
    d_step: one Adam step of opt_D over D_A and D_B, on those fakes (made before G's update, as
            the reference's forward()) detached and passed through the history pools

With lambda = tc.lambda_cycle, lambda_id = tc.lambda_identity (a share of lambda), LSGAN losses
(lsgan_loss) and L1 means:

    L_G = (D_B(G_AB(a)) - 1)² + (D_A(G_BA(b)) - 1)²                               adversarial
        + lambda·(|G_BA(G_AB(a)) - a| + |G_AB(G_BA(b)) - b|)                     cycle
        + lambda_id·lambda·(|G_BA(a) - a| + |G_AB(b) - b|)                        identity
    L_D = ½[(D_A(a) - 1)² + D_A(pool_A(G_BA(b)))²] + ½[(D_B(b) - 1)² + D_B(pool_B(G_AB(a)))²]

The identity term asks each generator to leave an image of its own target domain unchanged (the
reference's idt_A = G_A(real_B)); it needs C_A = C_B.

Pools: each D is fed from a history of at most tc.pool_size (50) generated images (ImagePool, with
its own seeded generator). Their state lives in the family state as plain tensors
(state["pool_A"], state["pool_B"]: ImagePool.state_dict()), so checkpoints hold them and a resume
continues bitwise; a pool is created at the first D step, its seed drawn from torch's global RNG
(which the loop seeds per rank and a restore restores).

Learning rate: constant for the first half of the steps, then linear towards 0 (linear_decay_lr);
the loop sets it on both optimizers before each step.

DDP: the G step calls each (possibly wrapped) generator twice before its backward (pass 1 over
[a; b] or [b; a] with identity on, pass 2 on the other's fake), the Ds unwrapped and frozen; the D
step runs ONE forward of each (possibly wrapped) D over [real; pooled fake] and one backward of
L_D. Instance norm normalises each image alone, so concatenating batches changes no value.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

from ganray.config import Config, ConfigError, TrainConfig
from ganray.families import (
    Family,
    Models,
    Stats,
    Wrap,
    adam,
    frozen,
    identity,
    no_state,
    register_family,
    unwrap,
    widen,
)

Nets = dict[str, nn.Module]  # "G_AB", "G_BA", "D_A", "D_B"
Fakes = tuple[Tensor, Tensor]  # (fake_a = G_BA(b), fake_b = G_AB(a)), detached, float32
NET_NAMES = ("G_AB", "G_BA", "D_A", "D_B")


def lsgan_loss(pred: Tensor, target_is_real: bool) -> Tensor:
    """LSGAN (Mao et al. 2017), the reference's GANLoss('lsgan') = MSE against a constant target:
    mean((pred - 1)²) for target real, mean(pred²) for target fake; pred: D's scores [N, 1, h', w']."""
    return (pred - 1).square().mean() if target_is_real else pred.square().mean()


def cycle_loss(rec: Tensor, x: Tensor) -> Tensor:
    """Cycle consistency, L1: mean |rec - x| over every element, rec = G_BA(G_AB(x)) (or the other way)."""
    return (rec - x).abs().mean()


def identity_loss(same: Tensor, x: Tensor) -> Tensor:
    """Identity, L1: mean |same - x|, same = the generator into x's own domain applied to x."""
    return cycle_loss(same, x)


def linear_decay_lr(step: int, total_steps: int, base_lr: float) -> float:
    """The learning rate of step `step` (0-based: 0 .. total_steps - 1): base_lr for the first
    H = total_steps // 2 steps, then linear towards 0, reached one step after the last:

        lr(s) = base_lr · (1 - max(0, s + 1 - H) / (D + 1)),   D = total_steps - H

    which is the reference's get_scheduler('linear') rule 1 - max(0, e + epoch_count - n_epochs) /
    (n_epochs_decay + 1) with epoch_count 1, read per step (e = s) instead of per epoch, and with
    n_epochs = H, n_epochs_decay = D. For 600 steps: lr(0) = lr(299) = base_lr (the first half),
    lr(300) = base_lr·300/301, lr(599) = base_lr/301 (the last step). (Its train.py steps the
    scheduler at the end of an epoch in early versions and at the start in later ones, which
    shifts the rule by one and runs the last epoch at 0; here no step runs at 0.)"""
    if total_steps < 1 or not 0 <= step < total_steps:
        raise ValueError(f"linear_decay_lr: step {step} outside 0..{total_steps - 1}")
    keep = total_steps // 2
    decay = total_steps - keep
    return base_lr * (1.0 - max(0, step + 1 - keep) / (decay + 1))


class ImagePool:
    """A history of at most `size` generated images (Shrivastava et al. 2017), the reference's
    util/image_pool.py semantics, image by image: while fewer than `size` are stored, the new image
    is stored and returned; once full, with probability 0.5 a uniformly chosen stored image is
    returned and the new one takes its place, else the new image is returned (and not stored).
    size 0: the input is returned. Draws come from the pool's own CPU torch.Generator (seeded), two
    numbers per image queried once full; state_dict() holds the images and the generator state."""

    def __init__(self, size: int = 50, seed: int = 0):
        if size < 0:
            raise ConfigError(f"train.pool_size: must be >= 0 (got {size})")
        self.size = size
        self.images: Tensor | None = None  # [k, *shape], k <= size, detached
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    @torch.no_grad()
    def query(self, images: Tensor) -> Tensor:
        """images [N, *shape] -> [N, *shape]: per image, itself or a stored one (see the class)."""
        if self.size == 0:
            return images
        images = images.detach()
        if self.images is not None:
            self.images = self.images.to(images)  # device and dtype of this batch (a restore loads to CPU)
        n_fill = min(images.shape[0], self.size - len(self))
        if n_fill:  # not full: store and return the new ones
            new = images[:n_fill].clone()
            self.images = new if self.images is None else torch.cat([self.images, new])
        rest = images.shape[0] - n_fill
        if rest == 0:
            return images.clone()
        out = images.clone()
        assert self.images is not None
        swap = torch.rand(rest, generator=self.generator) < 0.5  # [rest] return a stored image?
        slot = torch.randint(self.size, (rest,), generator=self.generator)  # [rest] which one
        for i, (s, j) in enumerate(zip(swap.tolist(), slot.tolist()), start=n_fill):
            if s:  # sequential, as the reference: a slot replaced earlier in this batch returns its new image
                out[i] = self.images[j]
                self.images[j] = images[i]
        return out

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and ints (loadable with torch.load(weights_only=True))."""
        return {"size": self.size, "images": self.images, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise ConfigError(f"train.pool_size: {self.size}, but the checkpoint's pool has size {state['size']}")
        images = state["images"]
        self.images = None if images is None else images.detach().clone()
        self.generator.set_state(state["rng"].clone())

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "ImagePool":
        pool = cls(int(state["size"]))
        pool.load_state_dict(state)
        return pool


def query_pool(state: dict, key: str, fake: Tensor, tc: TrainConfig) -> Tensor:
    """fake [N, *shape] through the pool kept in state[key] (created on first use with tc.pool_size
    and a seed from torch's global RNG); state[key] is then the pool's new state_dict()."""
    if key in state:
        pool = ImagePool(tc.pool_size)
        pool.load_state_dict(state[key])
    else:
        pool = ImagePool(tc.pool_size, seed=int(torch.randint(0, 2 ** 62, ())))
    out = pool.query(fake)
    state[key] = pool.state_dict()
    return out


def g_step(nets: Nets, opt_G: torch.optim.Optimizer, a: Tensor, b: Tensor,
           state: dict, tc: TrainConfig) -> tuple[Stats, Fakes]:
    """One update of G_AB and G_BA (opt_G over both); pass the Ds unwrapped (they are frozen here).
    Returns the stats and the fakes (fake_a, fake_b), detached, for the D step."""
    G_AB, G_BA, D_A, D_B = (nets[k] for k in NET_NAMES)
    lam, lam_id = tc.lambda_cycle, tc.lambda_identity
    if lam_id > 0 and a.shape[1:] != b.shape[1:]:
        raise ConfigError(f"train.lambda_identity: the identity loss needs domains of one shape "
                          f"(A {tuple(a.shape[1:])}, B {tuple(b.shape[1:])}); set it to 0")
    n = a.shape[0]
    opt_G.zero_grad(set_to_none=True)
    with frozen(D_A), frozen(D_B):
        # pass 1: one call per G; with identity on, G_AB([a; b]) = [fake_b; idt_b], G_BA([b; a]) = [fake_a; idt_a]
        out_ab = widen(G_AB(torch.cat([a, b]) if lam_id > 0 else a))
        out_ba = widen(G_BA(torch.cat([b, a]) if lam_id > 0 else b))
        fake_b, fake_a = out_ab[:n], out_ba[:b.shape[0]]  # [N, *shape_B], [N, *shape_A]
        # pass 2: the cycles a -> B -> A and b -> A -> B
        rec_a = widen(G_BA(fake_b))  # [N, *shape_A]
        rec_b = widen(G_AB(fake_a))  # [N, *shape_B]
        # adversarial: each G wants the D of its target domain to score its fakes real (1)
        loss_G_AB = lsgan_loss(widen(D_B(fake_b)), True)  # (D_B(G_AB(a)) - 1)²
        loss_G_BA = lsgan_loss(widen(D_A(fake_a)), True)  # (D_A(G_BA(b)) - 1)²
        # cycle: lambda·|G_BA(G_AB(a)) - a|, lambda·|G_AB(G_BA(b)) - b|
        loss_cycle_A = lam * cycle_loss(rec_a, a)
        loss_cycle_B = lam * cycle_loss(rec_b, b)
        if lam_id > 0:
            # identity: lambda_id·lambda·|G_BA(a) - a| and lambda_id·lambda·|G_AB(b) - b|
            loss_idt_A = lam_id * lam * identity_loss(out_ba[b.shape[0]:], a)
            loss_idt_B = lam_id * lam * identity_loss(out_ab[n:], b)
        else:
            loss_idt_A = loss_idt_B = torch.zeros((), device=a.device)
        loss_G = loss_G_AB + loss_G_BA + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        loss_G.backward()
    opt_G.step()
    stats = {"loss_G": loss_G, "loss_G_AB": loss_G_AB, "loss_G_BA": loss_G_BA, "loss_cycle_A": loss_cycle_A,
             "loss_cycle_B": loss_cycle_B, "loss_idt_A": loss_idt_A, "loss_idt_B": loss_idt_B}
    return {k: v.detach() for k, v in stats.items()}, (fake_a.detach(), fake_b.detach())


def d_step(nets: Nets, opt_D: torch.optim.Optimizer, a: Tensor, b: Tensor, state: dict, tc: TrainConfig,
           fakes: Fakes | None = None) -> Stats:
    """One update of D_A and D_B (opt_D over both) on real a, b and the fakes of the G step
    (fakes=None: made here by the Gs, unwrapped, under no_grad), each through its pool in `state`."""
    G_AB, G_BA, D_A, D_B = (nets[k] for k in NET_NAMES)
    if fakes is None:
        with torch.no_grad():
            fakes = widen(unwrap(G_BA)(b)), widen(unwrap(G_AB)(a))
    fake_a = query_pool(state, "pool_A", fakes[0], tc)  # [N, *shape_A] from the history of G_BA(b)
    fake_b = query_pool(state, "pool_B", fakes[1], tc)  # [N, *shape_B] from the history of G_AB(a)
    opt_D.zero_grad(set_to_none=True)
    # one forward per D over [real; pooled fake] (one DDP all-reduce each): scores [2N, 1, h', w']
    pred_a_real, pred_a_fake = widen(D_A(torch.cat([a, fake_a]))).chunk(2)
    pred_b_real, pred_b_fake = widen(D_B(torch.cat([b, fake_b]))).chunk(2)
    # L_D = ½[(D(real) - 1)² + D(pool(fake))²] per D, the reference's backward_D_basic
    loss_D_A = 0.5 * (lsgan_loss(pred_a_real, True) + lsgan_loss(pred_a_fake, False))
    loss_D_B = 0.5 * (lsgan_loss(pred_b_real, True) + lsgan_loss(pred_b_fake, False))
    loss_D = loss_D_A + loss_D_B
    loss_D.backward()
    opt_D.step()
    return {
        "loss_D": loss_D.detach(), "loss_D_A": loss_D_A.detach(), "loss_D_B": loss_D_B.detach(),
        # mean scores (LSGAN targets: real 1, fake 0)
        "d_real_A": pred_a_real.detach().mean(), "d_fake_A": pred_a_fake.detach().mean(),
        "d_real_B": pred_b_real.detach().mean(), "d_fake_B": pred_b_fake.detach().mean(),
    }


def step(m, next_real, sample_z, state: dict, tc: TrainConfig) -> Stats:
    """The family's step(m, next_real, sample_z, state, tc) over m.nets / m.opts ("G", "D"): one G
    step (wrapped Gs, unwrapped frozen Ds), then one D step (wrapped Ds) on its fakes; sample_z unused."""
    a, b = next_real()
    g_nets = {"G_AB": m.nets["G_AB"], "G_BA": m.nets["G_BA"],
              "D_A": unwrap(m.nets["D_A"]), "D_B": unwrap(m.nets["D_B"])}
    stats, fakes = g_step(g_nets, m.opts["G"], a, b, state, tc)
    stats.update(d_step(m.nets, m.opts["D"], a, b, state, tc, fakes=fakes))
    return stats


def build_cyclegan_models(cfg: Config, shape_a: tuple[int, ...], shape_b: tuple[int, ...] | None = None,
                          wrap: Wrap = identity, device: torch.device | str = "cpu",
                          ) -> tuple[Nets, dict[str, torch.optim.Optimizer]]:
    """The four networks (ganray.models.cyclegan), moved to `device` and passed through `wrap`, and
    the reference's two optimizers over the unwrapped parameters: "G" = Adam(lr_g) over G_AB and
    G_BA, "D" = Adam(lr_d) over D_A and D_B, betas (beta1, beta2) (the reference: 2e-4, (0.5, 0.999))."""
    from ganray.models.cyclegan import build_cyclegan_networks  # noqa: PLC0415

    tc = cfg.train
    if tc.lr_g is None or tc.lr_d is None or tc.beta1 is None or tc.beta2 is None:
        raise ConfigError("train: lr_g, lr_d, beta1 and beta2 must be resolved (the family's defaults) before build")
    if tc.lambda_identity > 0 and shape_b is not None and tuple(shape_a) != tuple(shape_b):
        raise ConfigError(f"train.lambda_identity: the identity loss needs domains of one shape (A {tuple(shape_a)}, "
                          f"B {tuple(shape_b)}); set it to 0")
    nets = {k: v.to(device) for k, v in build_cyclegan_networks(cfg.model, shape_a, shape_b).items()}
    opts = {
        "G": adam(itertools.chain(nets["G_AB"].parameters(), nets["G_BA"].parameters()), tc.lr_g, tc, cfg.speed),
        "D": adam(itertools.chain(nets["D_A"].parameters(), nets["D_B"].parameters()), tc.lr_d, tc, cfg.speed),
    }
    return {k: wrap(v) for k, v in nets.items()}, opts


def build(cfg: Config, shape: tuple[int, ...], wrap: Wrap = identity, device: torch.device | str = "cpu",
          shape_b: tuple[int, ...] | None = None) -> Models:
    """Family.build: Models(nets={"G_AB", "G_BA", "D_A", "D_B"}, opts={"G", "D"}); shape = domain A's
    (and B's, unless shape_b)."""
    nets, opts = build_cyclegan_models(cfg, shape, shape_b, wrap, device)
    return Models(nets=nets, opts=opts)


def lr_factor(step: int, tc: TrainConfig) -> float:
    """Family.lr_factor: the factor on lr_g and lr_d at `step` (0-based) of tc.steps, linear_decay_lr's."""
    return linear_decay_lr(step, tc.steps, 1.0)


FAMILY = register_family(Family(
    name="cyclegan",
    build=build,
    init_state=no_state,
    step=step,
    lr_factor=lr_factor,
    translation=True,
))
