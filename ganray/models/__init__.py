"""Generators and discriminators, built from `ModelConfig` and the shape of one example.

    build_generator(model_cfg, shape)              G: z [N, z_dim] -> [N, *shape]
    build_discriminator(model_cfg, shape, family)  gan, wgan-gp: [N, *shape] -> [N]
                                                   began: autoencoder [N, *shape] -> [N, *shape]
                                                   vae: encoder [N, *shape] -> (mu, logvar) [N, z_dim] each

`shape` is (C, H, W) for images (28x28x1 MNIST, 28x28x3 stacked MNIST, 32x32x3 CIFAR-10) or
(2,) for the 2D mixtures. `model_cfg.arch = "auto"` picks dcgan for images and mlp for 2D;
`pacgan-mlp` is the PacGAN authors' 2-D networks (ganray.models.mlp).

The remedies model.pack, model.minibatch_std and model.spectral_norm change D of gan, wgan-gp and
began (ganray.models.remedies): with pack m, D maps [N, *shape] -> [N/m] (one logit per pack of m
consecutive examples), BEGAN's autoencoder still [N, *shape] -> [N, *shape].

Weights are initialised as Keras does by default (Glorot-uniform kernels, zero biases,
BatchNorm gamma 1 / beta 0), because the reference architecture is the Keras MNIST DCGAN;
pacgan-mlp as its authors did (N(0, 0.02²) weights, zero biases).
Initialisation draws from torch's global RNG: seed it before building for reproducible runs.
"""
from __future__ import annotations

from torch import nn

from ganray.config import FAMILIES, REMEDY_FAMILIES, ConfigError, ModelConfig

IMAGE_ARCHS = ("dcgan",)
POINT_ARCHS = ("mlp", "pacgan-mlp")



def scale_channels(c: int, width: float) -> int:
    """Channel count of a layer with `c` channels at width multiplier `width`: max(1, round(c * width))."""
    return max(1, round(c * width))


def keras_init_(module: nn.Module) -> nn.Module:
    """Keras default initialisation in place: Glorot-uniform weights and zero biases for Linear/Conv."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def is_image_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3


def check_image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) with H and W divisible by 4 (the generators upsample twice by 2), else ConfigError."""
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ConfigError(f"model: expected an image shape (C, H, W), got {tuple(shape)}")
    c, h, w = shape
    if h % 4 or w % 4:
        raise ConfigError(f"model: image height and width must be divisible by 4 (got {h}x{w})")
    return c, h, w


def resolve_arch(model_cfg: ModelConfig, shape: tuple[int, ...]) -> str:
    """The architecture for `shape`: "auto" resolves to dcgan for images and mlp for 2D points."""
    image = is_image_shape(shape)
    if model_cfg.arch == "auto":
        return "dcgan" if image else "mlp"
    if image and model_cfg.arch not in IMAGE_ARCHS:
        raise ConfigError(f"model.arch: {model_cfg.arch!r} is for 2D data; the data has image shape {tuple(shape)} "
                          f"(use {' or '.join(IMAGE_ARCHS)} or auto)")
    if not image and model_cfg.arch not in POINT_ARCHS:
        raise ConfigError(f"model.arch: {model_cfg.arch!r} needs image data; the data has shape {tuple(shape)} "
                          f"(use {' or '.join(POINT_ARCHS)} or auto)")
    return model_cfg.arch


def build_generator(model_cfg: ModelConfig, shape: tuple[int, ...], family: str = "gan",
                    num_classes: int = 0) -> nn.Module:
    """G: z [N, z_dim] -> [N, *shape]; images in [-1, 1] (tanh), 2D points unbounded.
    cgan: (z, y) -> [N, *shape] for labels y in 0..num_classes-1 (ganray.models.conditional)."""
    from ganray.models import conditional, dcgan, mlp  # noqa: PLC0415 (submodules import helpers from here)

    shape = tuple(shape)
    arch = resolve_arch(model_cfg, shape)
    if family == "cgan":
        G = conditional.ConditionalGenerator(
            model_cfg.z_dim, _classes(num_classes), model_cfg.embed_dim or model_cfg.z_dim,
            _dcgan_shape(shape, arch, family), model_cfg.width, bn_momentum=model_cfg.bn_momentum,
            bn_eps=model_cfg.bn_eps, leaky_slope=model_cfg.leaky_slope)
        return conditional.glorot_embeddings_(keras_init_(G))
    if arch == "dcgan":
        G: nn.Module = dcgan.DCGANGenerator(model_cfg.z_dim, check_image_shape(shape), model_cfg.width,
                                            bn_momentum=model_cfg.bn_momentum, bn_eps=model_cfg.bn_eps,
                                            leaky_slope=model_cfg.leaky_slope)
    elif arch == "pacgan-mlp":
        G = mlp.PacGANGenerator(model_cfg.z_dim, shape[0])
    else:
        G = mlp.MLPGenerator(model_cfg.z_dim, shape[0])
    return init_weights_(G, arch)


def _classes(num_classes: int) -> int:
    if num_classes < 1:
        raise ConfigError("train.family: cgan needs the number of classes of the data")
    return num_classes


def _dcgan_shape(shape: tuple[int, ...], arch: str, family: str) -> tuple[int, int, int]:
    if arch != "dcgan":
        raise ConfigError(f"train.family: {family} needs image data (the data has shape {shape})")
    return check_image_shape(shape)


def build_discriminator(model_cfg: ModelConfig, shape: tuple[int, ...], family: str,
                        num_classes: int = 0) -> nn.Module:
    """The second network of `family`: critic/discriminator, BEGAN autoencoder, or VAE encoder,
    with the remedies of model_cfg (pack, minibatch_std, spectral_norm) for gan, wgan-gp, began;
    cgan: the projection discriminator (x, y) -> [N] over num_classes classes."""
    from ganray.models import conditional, remedies  # noqa: PLC0415

    shape = tuple(shape)
    arch = resolve_arch(model_cfg, shape)
    if family not in FAMILIES:
        raise ConfigError(f"train.family: unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    if family == "cgan":
        D = conditional.ProjectionDiscriminator(_dcgan_shape(shape, arch, family), _classes(num_classes),
                                                model_cfg.width, leaky_slope=model_cfg.leaky_slope)
        return conditional.glorot_embeddings_(keras_init_(D))
    used = [k for k, off in (("pack", 1), ("minibatch_std", 0), ("spectral_norm", False))
            if getattr(model_cfg, k) != off]
    if used and family not in REMEDY_FAMILIES:  # the config check says so first; this, for direct callers
        raise ConfigError(f"model.{used[0]}: the {family} family has no discriminator; use {', '.join(REMEDY_FAMILIES)}")
    m = model_cfg.pack
    D = _base_discriminator(model_cfg, remedies.packed_shape(shape, m), family, arch)
    D = init_weights_(D, arch)
    if model_cfg.spectral_norm:
        remedies.spectral_norm_(D)  # after the initialisation: W / σ(W) of the initialised W
    return remedies.Packed(D, m, unpack_output=family == "began") if m > 1 else D


def init_weights_(module: nn.Module, arch: str) -> nn.Module:
    """`arch`'s initialisation in place: the PacGAN authors' for pacgan-mlp, else Keras'."""
    from ganray.models import mlp  # noqa: PLC0415

    return mlp.pacgan_init_(module) if arch == "pacgan-mlp" else keras_init_(module)


def _base_discriminator(model_cfg: ModelConfig, shape: tuple[int, ...], family: str, arch: str) -> nn.Module:
    """D of `family` for inputs of `shape` (with model.pack m: one pack's shape), not initialised."""
    from ganray.models import autoencoder, dcgan, mlp, vae  # noqa: PLC0415

    g = model_cfg.minibatch_std
    if family in ("gan", "wgan-gp"):
        if arch == "dcgan":
            # WGAN-GP's critic has no dropout (as in the paper): its penalty constrains ∇_x D of the
            # critic G trains against, and DDP's step then equals one process's (families/wgan_gp.py)
            return dcgan.DCGANDiscriminator(check_image_shape(shape), model_cfg.width,
                                            leaky_slope=model_cfg.leaky_slope, dropout=family == "gan", mbstd=g)
        if arch == "pacgan-mlp":
            return mlp.PacGANDiscriminator(shape[0], mbstd=g)
        return mlp.MLPDiscriminator(shape[0], mbstd=g)
    if arch != "dcgan":
        raise ConfigError(f"train.family: {family} needs image data (the data has shape {shape})")
    if family == "began":
        return autoencoder.BEGANAutoencoder(check_image_shape(shape), model_cfg.width, mbstd=g)
    return vae.VAEEncoder(check_image_shape(shape), model_cfg.z_dim, model_cfg.width)


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
