"""StackGAN-v1's networks (Zhang et al. 2017), with the layers of the authors' PyTorch code.

Checked against hanzhanggit/StackGAN-Pytorch @ e72ef88 (code/model.py, code/miscc/utils.py,
code/trainer.py, code/miscc/config.py, code/cfg/coco_s*.yml); written anew, the same maths. The
authors' sizes are CUB's 64 -> 256; here every count of up/down-sampling blocks comes from the
image sizes, so that the offline 14 -> 28 stand-in uses the same networks (`halvings`).

    CondAugment          text embedding phi_t [N, E] -> c, mu, log sigma^2 [N, c_dim] each
    StageIGenerator      (z [N, z_dim], phi_t [N, E]) -> (image [N, C, S1, S1], mu, logvar)
    StageIIGenerator     (z, phi_t) -> (image [N, C, S2, S2], mu, logvar); holds a frozen Stage I
    StageDiscriminator   (image [N, C, S, S], mu [M, c_dim], pairs [M]) -> (cond [M], uncond [N] | None)

Conditioning augmentation (model.cond_augment): as the authors' CA_NET, one Linear(E, 2 c_dim)
followed by a ReLU gives (mu, log sigma^2) (so mu >= 0 and log sigma^2 >= 0, i.e. sigma >= 1: the
authors' ReLU, kept; the paper's text says only "a fully connected layer"), and c = mu + sigma * eps,
eps ~ N(0, I) drawn from torch's global RNG on mu's device (torch.randn_like; the loop checkpoints
that RNG, so resumes are bitwise). c is drawn in eval mode too, as the authors sample. Off, c is
the same ReLU(Linear(E, c_dim)) without noise: c = mu, logvar None, no KL term.

Layers (authors' code): conv3x3 without bias; up block = nearest x2, conv3x3, BatchNorm, ReLU;
D's LeakyReLU slope 0.2; weights N(0, 0.02^2), BatchNorm gamma N(1, 0.02^2), biases 0
(`stackgan_init_`, drawn from torch's global RNG). Channel counts from model.ngf / model.ndf (the
authors' GF_DIM / DF_DIM: 128 / 64 in their defaults, 192 / 96 for COCO).

Deviation, on purpose: in Stage II the authors run the frozen Stage-I G in train mode (its
BatchNorm uses batch statistics and updates its running statistics). Here Stage I stays in eval
mode (`StageIIGenerator.train` keeps it so), so training Stage II leaves every Stage-I parameter
and buffer bitwise unchanged, and Stage I computes what it computed when it was trained.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganray.config import ConfigError

LEAK = 0.2  # D's LeakyReLU slope (the authors')
INIT_STD = 0.02  # the authors' weights_init (code/miscc/utils.py)


def halvings(size: int, floor: int = 4, most: int = 64) -> int:
    """How many times `size` halves exactly while staying >= floor (at most `most`):
    64 -> 4 (to 4x4), 256 -> 6, 28 -> 2 (to 7x7), 14 -> 1 (to 7x7), 7 -> 0."""
    k = 0
    while k < most and size % 2 == 0 and size // 2 >= floor:
        size //= 2
        k += 1
    return k


def default_stage1_size(size: int) -> int:
    """Stage I's image size for data of `size`: a quarter from 128 up (CUB 256 -> 64), else a half (28 -> 14)."""
    return size // 4 if size >= 128 else size // 2


def default_res_blocks(size: int) -> int:
    """Stage II's residual blocks for model.res_blocks = 0: the authors' default R_NUM 4 (miscc/config.py) from
    128 up, 2 (their COCO setting) below."""
    return 4 if size >= 128 else 2


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)


def up_block(c_in: int, c_out: int) -> nn.Sequential:
    """[N, c_in, s, s] -> [N, c_out, 2s, 2s]: nearest x2, conv3x3, BatchNorm, ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(c_in, c_out),
                         nn.BatchNorm2d(c_out), nn.ReLU())


def down_block(c_in: int, c_out: int, act: nn.Module, bn: bool = True) -> nn.Sequential:
    """[N, c_in, s, s] -> [N, c_out, s/2, s/2]: conv 4x4 stride 2 (no bias), BatchNorm, activation."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), *([nn.BatchNorm2d(c_out)] if bn else []), act)


class ResBlock(nn.Module):
    """x -> ReLU(x + BN(conv3x3(ReLU(BN(conv3x3(x)))))), channels kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(),
                                  conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


def stackgan_init_(module: nn.Module) -> nn.Module:
    """The authors' initialisation in place: conv/linear weights N(0, 0.02^2), BatchNorm gamma N(1, 0.02^2),
    every bias 0 (the authors leave their few conv biases at PyTorch's default; here they are 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, INIT_STD)
            nn.init.zeros_(m.bias)
    return module


def ca_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) of conditioning augmentation, 0-dim.

    Per dimension KL = 1/2 (mu^2 + sigma^2 - log sigma^2 - 1); reduced as the authors' KL_loss
    (code/miscc/utils.py): the MEAN over the batch and the c_dim dimensions, i.e. the per-example
    sum divided by c_dim and averaged over the batch."""
    # 1/2 mean(mu^2 + exp(log sigma^2) - log sigma^2 - 1)   [N, c_dim] -> []
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).mean()


class CondAugment(nn.Module):
    """phi_t [N, E] -> (c, mu, logvar) [N, c_dim] each; logvar None with augment=False (see the module docstring)."""

    def __init__(self, embed_dim: int, c_dim: int, augment: bool = True):
        super().__init__()
        self.c_dim = c_dim
        self.augment = augment
        self.fc = nn.Linear(embed_dim, 2 * c_dim if augment else c_dim)

    def mean(self, text: Tensor) -> Tensor:
        """mu [N, c_dim]: what D is conditioned on (the authors feed D the mean, not c)."""
        return F.relu(self.fc(text))[:, :self.c_dim]

    def forward(self, text: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        h = F.relu(self.fc(text))  # [N, 2 c_dim] (mu, log sigma^2); augment off: [N, c_dim] = mu
        if not self.augment:
            return h, h, None
        mu, logvar = h[:, :self.c_dim], h[:, self.c_dim:]
        # reparameterisation: c = mu + sigma * eps, sigma = exp(log sigma^2 / 2), eps ~ N(0, I)
        c = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return c, mu, logvar


class StageIGenerator(nn.Module):
    """(z [N, z_dim], phi_t [N, E]) -> (image [N, C, S, S] in [-1, 1], mu, logvar).

    S0 = S / 2^k (k = halvings(S): 64 -> 4x4, 14 -> 7x7); channels halve per up block down to ngf/2
    (the authors: 8 ngf at 4x4 -> ngf/2 at 64x64).

        Linear(z_dim + c_dim, ch0 S0^2, no bias), BatchNorm1d, ReLU   [z, c] -> [N, ch0, S0, S0]
        k up blocks, channels / 2 each                                 -> [N, ngf/2, S, S]
        conv3x3 C, tanh                                                -> [N, C, S, S]
    """

    def __init__(self, z_dim: int, embed_dim: int, c_dim: int, ngf: int, size: int, channels: int,
                 cond_augment: bool = True):
        super().__init__()
        self.z_dim, self.embed_dim, self.c_dim, self.size, self.channels = z_dim, embed_dim, c_dim, size, channels
        self.cond_augment = cond_augment
        k = halvings(size)
        last = max(ngf // 2, 1)
        ch = [last * 2 ** (k - i) for i in range(k + 1)]  # ch[0] at S0 ... ch[k] = ngf/2 at S
        self.start = (ch[0], size >> k, size >> k)
        self.ca = CondAugment(embed_dim, c_dim, cond_augment)
        n_start = math.prod(self.start)
        self.fc = nn.Sequential(nn.Linear(z_dim + c_dim, n_start, bias=False), nn.BatchNorm1d(n_start), nn.ReLU())
        self.up = nn.Sequential(*(up_block(ch[i], ch[i + 1]) for i in range(k)))
        self.img = nn.Sequential(conv3x3(ch[k], channels), nn.Tanh())

    def forward(self, z: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        c, mu, logvar = self.ca(text)  # [N, c_dim] each
        h = self.fc(torch.cat([z, c], 1)).view(z.shape[0], *self.start)  # [N, ch0, S0, S0]
        return self.img(self.up(h)), mu, logvar  # [N, C, S, S]


class StageIIGenerator(nn.Module):
    """(z, phi_t) -> (image [N, C, S2, S2] in [-1, 1], mu, logvar): refines the frozen Stage I's image.

    With S1 = stage1.size, d = halvings(S1, most=2) (the authors: 64 -> 16, d = 2; 14 -> 7, d = 1)
    and u = d + log2(S2 / S1) up blocks (the authors: 4):

        Stage I under no_grad, eval mode                  (z, phi_t) -> [N, C, S1, S1]
        conv3x3 ngf, ReLU; d x (conv4x4/2, BN, ReLU)      -> [N, ngf 2^d, S1/2^d, S1/2^d]
        concat its own CA's c replicated spatially        -> [N, ngf 2^d + c_dim, ...]
        conv3x3 ngf 2^d, BN, ReLU; res_blocks ResBlocks   -> [N, ngf 2^d, ...]
        u up blocks, channels / 2 each                    -> [N, ngf 2^d / 2^u, S2, S2]
        conv3x3 C, tanh                                   -> [N, C, S2, S2]
    """

    def __init__(self, stage1: StageIGenerator, ngf: int, size: int, res_blocks: int, cond_augment: bool = True):
        super().__init__()
        s1 = stage1.size
        ratio = size // s1
        if size % s1 or ratio < 2 or ratio & (ratio - 1):
            raise ConfigError(f"model: StackGAN's Stage-II size must be the Stage-I size times a power of 2; "
                              f"got {s1} -> {size}")
        self.z_dim, self.embed_dim, self.c_dim = stage1.z_dim, stage1.embed_dim, stage1.c_dim
        self.size, self.channels, self.cond_augment = size, stage1.channels, cond_augment
        self.stage1 = stage1
        self.stage1.requires_grad_(False)
        self.stage1.eval()
        d = halvings(s1, most=2)
        u = d + int(math.log2(ratio))
        enc = ngf * 2 ** d
        self.ca = CondAugment(self.embed_dim, self.c_dim, cond_augment)
        self.encoder = nn.Sequential(conv3x3(self.channels, ngf), nn.ReLU(),
                                     *(down_block(ngf * 2 ** i, ngf * 2 ** (i + 1), nn.ReLU()) for i in range(d)))
        self.joint = nn.Sequential(conv3x3(enc + self.c_dim, enc), nn.BatchNorm2d(enc), nn.ReLU())
        self.residual = nn.Sequential(*(ResBlock(enc) for _ in range(res_blocks)))
        ch = [max(enc >> i, 1) for i in range(u + 1)]
        self.up = nn.Sequential(*(up_block(ch[i], ch[i + 1]) for i in range(u)))
        self.img = nn.Sequential(conv3x3(ch[u], self.channels), nn.Tanh())

    def own_parameters(self) -> Iterator[nn.Parameter]:
        """Stage II's parameters, without the frozen Stage I's: what opt_G trains."""
        return (p for name, p in self.named_parameters() if not name.startswith("stage1."))

    def train(self, mode: bool = True) -> StageIIGenerator:
        """Stage II's layers in `mode`; the frozen Stage I always in eval mode."""
        super().train(mode)
        self.stage1.eval()
        return self

    def stage1_images(self, z: Tensor, text: Tensor) -> Tensor:
        """The frozen Stage I's images for (z, phi_t) [N, C, S1, S1], as Stage II sees them."""
        with torch.no_grad():
            return self.stage1(z, text)[0]

    def forward(self, z: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        low = self.stage1_images(z, text)  # [N, C, S1, S1], no gradient to Stage I
        h = self.encoder(low)  # [N, enc, s, s]
        c, mu, logvar = self.ca(text)  # Stage II's own conditioning augmentation, [N, c_dim]
        c_map = c[:, :, None, None].expand(-1, -1, *h.shape[2:])  # [N, c_dim, s, s]
        h = self.residual(self.joint(torch.cat([h, c_map], 1)))  # [N, enc, s, s]
        return self.img(self.up(h)), mu, logvar  # [N, C, S2, S2]


class StageDiscriminator(nn.Module):
    """Matching-aware D of one stage: image features, then logits for (image, condition) pairs.

    k = halvings(S) down blocks (the authors: 64 -> 4x4 in 4, 256 -> 4x4 in 6; 28 and 14 -> 7x7):
    conv4x4/2 C -> ndf, LeakyReLU; then conv4x4/2, BN, LeakyReLU doubling the channels; when they
    pass 8 ndf (Stage II at 256: 32 ndf), conv3x3, BN, LeakyReLU halving them back to 8 ndf. On the
    s x s features h [N, cf, s, s]:

        cond:   concat mu replicated s x s; conv3x3 cf, BN, LeakyReLU; conv s x s -> 1   [M]
        uncond: conv s x s -> 1 (with_uncond: the authors' Stage-II D has it, Stage I's not) [N]

    Logits, not the authors' sigmoid outputs: the losses use BCE-with-logits (the same maths, stable).
    `pairs` [M] (int64, default arange(N)) says which image each condition row goes with, so one
    forward scores the real and the mismatched pairs on the real images' features; `split` (sizes of
    consecutive groups of the M rows) runs the condition head on each group as a batch of its own,
    as the authors' separate get_cond_logits calls: D has BatchNorm, and a batch statistic over real
    and mismatched (or real and fake) rows together is one that G's step, which D sees fakes only
    in, never matches (G then fools D through BatchNorm, not through its images).
    """

    def __init__(self, size: int, channels: int, ndf: int, c_dim: int, with_uncond: bool = False):
        super().__init__()
        self.size, self.c_dim = size, c_dim
        k = halvings(size)
        layers: list[nn.Module] = []
        c = ndf
        if k == 0:
            layers += [nn.Conv2d(channels, ndf, 3, padding=1, bias=False), nn.LeakyReLU(LEAK)]
        else:
            layers.append(down_block(channels, ndf, nn.LeakyReLU(LEAK), bn=False))
            for _ in range(k - 1):
                layers.append(down_block(c, 2 * c, nn.LeakyReLU(LEAK)))
                c *= 2
        while c > 8 * ndf:
            layers += [conv3x3(c, c // 2), nn.BatchNorm2d(c // 2), nn.LeakyReLU(LEAK)]
            c //= 2
        self.encode = nn.Sequential(*layers)
        s = size >> k
        self.cond = nn.Sequential(conv3x3(c + c_dim, c), nn.BatchNorm2d(c), nn.LeakyReLU(LEAK), nn.Conv2d(c, 1, s))
        self.uncond = nn.Conv2d(c, 1, s) if with_uncond else None

    def forward(self, x: Tensor, cond: Tensor, pairs: Tensor | None = None,
                split: list[int] | None = None) -> tuple[Tensor, Tensor | None]:
        h = self.encode(x)  # [N, cf, s, s]
        h_pairs = h[pairs] if pairs is not None else h  # [M, cf, s, s]: the image of each condition row
        c_map = cond[:, :, None, None].expand(-1, -1, *h.shape[2:])  # [M, c_dim, s, s]
        joined = torch.cat([h_pairs, c_map.to(h.dtype)], 1)  # [M, cf + c_dim, s, s]
        groups = joined.split(split) if split is not None else (joined,)
        logit = torch.cat([self.cond(g).flatten() for g in groups])  # [M]
        return logit, (self.uncond(h).flatten() if self.uncond is not None else None)  # [N]
