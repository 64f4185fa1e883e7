"""Remedies for mode collapse that change the discriminator (`model.pack`, `model.minibatch_std`,
`model.spectral_norm`; docs/config.md "Remedies"). `build_discriminator` applies them to the D of
every family that has one (gan, wgan-gp, began); the families' steps need no other change than
reading one output per pack.

    pack m (PacGAN, Lin et al. 2018)   D judges m samples at once. Consecutive samples form a pack:
                                       images [N, C, H, W] -> [N/m, m*C, H, W] (stacked along
                                       channels), 2-D points [N, 2] -> [N/m, 2m] (along features);
                                       D is built for the packed shape and outputs one logit per
                                       pack [N/m]; BEGAN's autoencoder unpacks its output to [N, C, H, W]
    minibatch std g (StyleGAN)         `MinibatchStd` before D's last layer: per group of g
                                       consecutive inputs, the std over the group of each feature,
                                       averaged to one number, appended as one more channel/feature
    spectral norm (Miyato et al. 2018) every Conv2d/Linear weight W of D used as W / σ(W), σ the
                                       largest singular value, estimated by one power iteration per
                                       training forward (torch.nn.utils.parametrizations.spectral_norm;
                                       its u, v vectors are buffers: in the state_dict, so checkpoints)

Packs and groups never mix real and fake: the families run one D forward over [real, fake] (WGAN-GP:
[real, fake, x_hat]), N examples each; N / m packs per part, and the config check
(ganray.config._remedy_checks) makes g divide N / m, so the k-th group holds packs kg..kg+g-1 of one
part. That is why the groups here are consecutive: StyleGAN's layer groups strided inputs
(x.reshape(G, -1, ...): inputs i, i + N/G, ...), which would put reals and fakes in one group.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def packed_shape(shape: tuple[int, ...], m: int) -> tuple[int, ...]:
    """The shape of one pack of m examples of `shape`: (m*C, H, W) for images, (m*d,) for points."""
    return (m * shape[0], *shape[1:])


def pack(x: Tensor, m: int) -> Tensor:
    """[N, C, ...] -> [N/m, m*C, ...]: examples m*k .. m*k+m-1 stacked along dim 1 form pack k."""
    if m == 1:
        return x
    n = x.shape[0]
    if n % m:
        raise ValueError(f"model.pack: a batch of {n} examples does not split into packs of {m}")
    packed = x.reshape(n // m, m * x.shape[1], *x.shape[2:])  # [N/m, m*C, ...]
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        packed = packed.contiguous(memory_format=torch.channels_last)  # speed.channels_last stays NHWC
    return packed


def unpack(y: Tensor, m: int) -> Tensor:
    """pack's inverse: [N/m, m*C, ...] -> [N, C, ...]."""
    if m == 1:
        return y
    return y.reshape(y.shape[0] * m, y.shape[1] // m, *y.shape[2:])


class Packed(nn.Module):
    """D over packs of `m` consecutive examples: D(pack(x)) [N/m], or, for an autoencoder
    (`unpack_output`), unpack(D(pack(x))) [N, C, H, W]. `pack` is read by the families (WGAN-GP
    draws one interpolation weight per pack)."""

    def __init__(self, D: nn.Module, m: int, unpack_output: bool = False):
        super().__init__()
        self.D, self.pack, self.unpack_output = D, m, unpack_output

    def forward(self, x: Tensor) -> Tensor:
        y = self.D(pack(x, self.pack))
        return unpack(y, self.pack) if self.unpack_output else y


class MinibatchStd(nn.Module):
    """[N, F] -> [N, F+1] or [N, C, H, W] -> [N, C+1, H, W]: one extra feature per group of
    `group` consecutive inputs, equal for the group's members (StyleGAN's layer, one channel)."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        n, g = x.shape[0], self.group
        if n % g:
            raise ValueError(f"model.minibatch_std: D's batch of {n} does not split into groups of {g}")
        wide = torch.promote_types(x.dtype, torch.float32)  # bf16 under autocast: the statistic in float32
        y = x.to(wide).reshape(n // g, g, *x.shape[1:])  # [N/g, g, F...]: group k = inputs kg..kg+g-1
        # s_k = mean over features f of sqrt(Var_group(x_f) + 1e-8), the variance over the g members (÷ g)
        std = (y.var(dim=1, unbiased=False) + 1e-8).sqrt()  # [N/g, F...]
        s = std.flatten(1).mean(dim=1).to(x.dtype)  # [N/g]
        extra = s.repeat_interleave(g).reshape(n, 1, *([1] * (x.dim() - 2)))  # [N, 1, (1, 1)]
        return torch.cat([x, extra.expand(n, 1, *x.shape[2:])], dim=1)


def spectral_norm_(module: nn.Module) -> nn.Module:
    """Spectral normalisation of every Conv2d and Linear weight in `module`, in place."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        nn.utils.parametrizations.spectral_norm(layer)  # 15 power iterations at registration
    return module
