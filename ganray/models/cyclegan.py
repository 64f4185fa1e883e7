"""CycleGAN's networks (Zhu et al. 2017): ResNet generators and PatchGAN discriminators.

The maths and settings are those of the authors' reference implementation,
junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py (ResnetGenerator, ResnetBlock,
NLayerDiscriminator, get_norm_layer('instance'), init_weights('normal', 0.02)); the code is ganray's.

Generator (Johnson et al.'s transformation network; ngf base channels, n_down = 2):

    ReflectionPad 3, Conv 7x7 ngf, IN, ReLU                    c7s1-ngf   [N, C_in, H, W] -> [N, ngf, H, W]
    Conv 3x3 stride 2 pad 1, IN, ReLU  (x n_down)              d2ngf, d4ngf -> [N, 4ngf, H/4, W/4]
    n_blocks x ResnetBlock(4ngf)                               R4ngf       -> [N, 4ngf, H/4, W/4]
    ConvTranspose 3x3 stride 2 pad 1 out_pad 1, IN, ReLU (x2)  u2ngf, ungf -> [N, ngf, H, W]
    ReflectionPad 3, Conv 7x7 C_out, tanh                      c7s1-C_out  -> [N, C_out, H, W] in [-1, 1]

    ResnetBlock(c): x + [ReflectionPad 1, Conv 3x3 c, IN, ReLU, ReflectionPad 1, Conv 3x3 c, IN](x)
    (no dropout: the reference's CycleGAN sets no_dropout)

28x28 images: 28 -> 14 -> 7 (blocks at 7x7) -> 14 -> 28. H and W must be divisible by 2**n_down = 4
and the bottleneck at least 2x2 (a reflection pad of 1 needs a side > 1), so at least 8x8.

PatchGAN discriminator (4x4 convs, pad 1, LeakyReLU 0.2; no norm on the first layer):

    Conv ndf stride 2, LReLU                                   [N, C, H, W] -> [N, ndf, H/2, W/2]
    Conv min(2^k, 8)·ndf stride 2, IN, LReLU  for k = 1..n-1   -> [N, ., H/2^n, W/2^n]
    Conv min(2^n, 8)·ndf stride 1, IN, LReLU                   side - 1
    Conv 1 stride 1                                            side - 1: one LSGAN score per patch
    output side = floor_n(side / 2) - 2 (n halvings);  256, n = 3: 30x30;  28, n = 2: 5x5

Receptive field of one output (walk the layers backwards, r <- (r - 1)·stride + kernel, from r = 1):
two stride-1 4x4 convs give 4, 7; each stride-2 4x4 conv r <- 2(r - 1) + 4:

    n_layers  1   2   3 (the reference's "basic" D: the 70x70 PatchGAN)
    field     16  34  70

Norm: InstanceNorm2d(affine=False, track_running_stats=False), the reference's 'instance': per
image and channel, no parameters and no running statistics, so train and eval modes agree and a
batch of [real; fake] normalises each image as alone. As in the reference every conv has a bias
(use_bias is true for instance norm), although the norm that follows cancels it (its gradient is 0).
Init: conv and transposed-conv weights N(0, 0.02²), biases 0 (init_weights 'normal', gain 0.02).
Initialisation draws from torch's global RNG: seed it before building.
"""
from __future__ import annotations

from torch import Tensor, nn

from ganray.config import ConfigError

N_DOWN = 2  # stride-2 downsamplings of the generator (the reference's n_downsampling)
MAX_PATCH_LAYERS = 3  # the reference's 70x70 PatchGAN
MIN_PATCH_SIDE = 2  # fewer D layers at small sizes, so that D still scores at least 2x2 patches
INIT_STD = 0.02
LEAK = 0.2


def instance_norm(c: int) -> nn.InstanceNorm2d:
    """The reference's 'instance' norm layer: no affine parameters, no running statistics."""
    return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)


def check_translation_shape(shape: tuple[int, ...], n_down: int = N_DOWN) -> tuple[int, int, int]:
    """(C, H, W) that the generator maps to itself, else ConfigError: H and W divisible by 2**n_down
    and a bottleneck of at least 2x2."""
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ConfigError(f"model: cyclegan needs image data (C, H, W), got shape {tuple(shape)}")
    c, h, w = shape
    f = 2 ** n_down
    if h % f or w % f or h < 2 * f or w < 2 * f:
        raise ConfigError(f"model: cyclegan's generator halves the image {n_down} times and doubles it back, so "
                          f"image height and width must be multiples of {f} and at least {2 * f} (got {h}x{w}; "
                          f"set data.crop_size or data.load_size)")
    return c, h, w


def res_blocks_for(size: int) -> int:
    """Residual blocks of G for images of side `size` (model.res_blocks = 0): the reference's 9 at
    256² and above, 6 at 128² (its resnet_6blocks for 128x128), and 3 below 128 (28..64: a 7x7..16x16
    bottleneck, where 3 blocks of 3x3 convs already see 13x13 of it)."""
    if size >= 256:
        return 9
    if size >= 128:
        return 6
    return 3


def patch_side(size: int, n_layers: int) -> int:
    """Output side of the PatchGAN with n_layers for inputs of side `size`: n halvings (4x4, stride 2,
    pad 1: s -> floor(s / 2)), then two 4x4 stride-1 convs (s -> s - 1 each)."""
    for _ in range(n_layers):
        size //= 2
    return size - 2


def patch_receptive_field(n_layers: int) -> int:
    """Receptive field (pixels per side) of one PatchGAN output: r <- (r - 1)·stride + 4 backwards
    over the two stride-1 convs and the n_layers stride-2 convs; 16, 34, 70 for n = 1, 2, 3."""
    r = 1
    for stride in [1, 1] + [2] * n_layers:
        r = (r - 1) * stride + 4
    return r


def patch_layers_for(size: int) -> int:
    """The reference's 3 stride-2 layers (70x70 field), fewer while the output would be under 2x2:
    28 -> 2 (5x5 outputs, field 34), 32 and up -> 3 (32: 2x2, 64: 6x6, 256: 30x30)."""
    for n in range(MAX_PATCH_LAYERS, 0, -1):
        if patch_side(size, n) >= MIN_PATCH_SIDE:
            return n
    raise ConfigError(f"model: cyclegan's PatchGAN needs images of at least 8x8 (got side {size})")


class ResnetBlock(nn.Module):
    """x + F(x), F = [reflect-pad 1, 3x3 conv, IN, ReLU, reflect-pad 1, 3x3 conv, IN]: [N, c, h, w] -> same."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), instance_norm(c), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), instance_norm(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Images [N, in_c, H, W] -> [N, out_c, H, W] in [-1, 1]; see the module docstring for the layers."""

    def __init__(self, in_c: int, out_c: int, ngf: int = 64, n_blocks: int = 9, n_down: int = N_DOWN):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_c, ngf, 7), instance_norm(ngf), nn.ReLU()]
        c = ngf
        for _ in range(n_down):  # d2ngf, d4ngf: [N, c, h, w] -> [N, 2c, h/2, w/2]
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), instance_norm(2 * c), nn.ReLU()]
            c *= 2
        layers += [ResnetBlock(c) for _ in range(n_blocks)]
        for _ in range(n_down):  # fractional-strided: (h - 1)·2 - 2 + 3 + 1 = 2h
            layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                       instance_norm(c // 2), nn.ReLU()]
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, out_c, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # [N, out_c, H, W]


class NLayerDiscriminator(nn.Module):
    """PatchGAN: images [N, in_c, H, W] -> one unbounded LSGAN score per patch [N, 1, h', w']
    (h' = patch_side(H, n_layers))."""

    def __init__(self, in_c: int, ndf: int = 64, n_layers: int = MAX_PATCH_LAYERS):
        super().__init__()
        if n_layers < 1:
            raise ConfigError(f"model: the PatchGAN needs at least 1 layer (got {n_layers})")
        layers: list[nn.Module] = [nn.Conv2d(in_c, ndf, 4, stride=2, padding=1), nn.LeakyReLU(LEAK)]  # no norm
        c = ndf
        for k in range(1, n_layers):
            c_next = ndf * min(2 ** k, 8)
            layers += [nn.Conv2d(c, c_next, 4, stride=2, padding=1), instance_norm(c_next), nn.LeakyReLU(LEAK)]
            c = c_next
        c_next = ndf * min(2 ** n_layers, 8)
        layers += [nn.Conv2d(c, c_next, 4, stride=1, padding=1), instance_norm(c_next), nn.LeakyReLU(LEAK),
                   nn.Conv2d(c_next, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # [N, 1, h', w']


def normal_init_(module: nn.Module, std: float = INIT_STD) -> nn.Module:
    """The reference's 'normal' init in place: conv / transposed-conv / linear weights N(0, std²), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def build_cyclegan_networks(model_cfg, shape_a: tuple[int, ...],
                            shape_b: tuple[int, ...] | None = None) -> dict[str, nn.Module]:
    """G_AB: A -> B, G_BA: B -> A (ResNet, model.ngf, model.res_blocks or res_blocks_for(side)),
    D_A judges domain A, D_B domain B (PatchGAN, model.ndf, patch_layers_for(side)), initialised
    N(0, 0.02²). Built in this order, so a seeded global RNG gives the same weights every time.
    (The reference's names: G_A = G_AB, G_B = G_BA, its D_A judges B = our D_B, its D_B = our D_A.)"""
    c_a, h, w = check_translation_shape(shape_a)
    c_b, h_b, w_b = check_translation_shape(shape_b if shape_b is not None else shape_a)
    if (h_b, w_b) != (h, w):
        raise ConfigError(f"data: cyclegan's domains must have one image size (A {h}x{w}, B {h_b}x{w_b})")
    side = min(h, w)
    blocks = model_cfg.res_blocks or res_blocks_for(side)
    n_layers = patch_layers_for(side)
    nets = {
        "G_AB": ResnetGenerator(c_a, c_b, model_cfg.ngf, blocks),
        "G_BA": ResnetGenerator(c_b, c_a, model_cfg.ngf, blocks),
        "D_A": NLayerDiscriminator(c_a, model_cfg.ndf, n_layers),
        "D_B": NLayerDiscriminator(c_b, model_cfg.ndf, n_layers),
    }
    return {name: normal_init_(net) for name, net in nets.items()}
