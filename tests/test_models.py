"""Models: shapes for every dataset shape, output ranges, arch resolution, Keras parameter counts."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganray.config import ConfigError, ModelConfig
from ganray.models import build_discriminator, build_generator, count_params, resolve_arch, scale_channels
from ganray.models.autoencoder import BEGANAutoencoder
from ganray.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganray.models.mlp import MLPDiscriminator, MLPGenerator
from ganray.models.vae import VAEEncoder

IMAGE_SHAPES = [(1, 28, 28), (3, 28, 28), (3, 32, 32)]  # MNIST, stacked MNIST, CIFAR-10
TINY = ModelConfig(z_dim=5, width=0.125)
N = 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_image_generator_shape_and_range(shape):
    G = build_generator(TINY, shape)
    assert isinstance(G, DCGANGenerator)
    x = G(torch.randn(N, TINY.z_dim))
    assert x.shape == (N, *shape)
    # tanh output: in [-1, 1] even for far-out z
    x_far = G(50 * torch.randn(N, TINY.z_dim))
    assert x_far.abs().max() <= 1.0
    assert x.abs().max() <= 1.0


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("family", ["gan", "wgan-gp"])
def test_image_discriminator_shape(shape, family):
    D = build_discriminator(TINY, shape, family)
    assert isinstance(D, DCGANDiscriminator)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in D.modules()), "no BatchNorm in D"
    out = D(torch.rand(N, *shape) * 2 - 1)
    assert out.shape == (N,)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_began_autoencoder_shape_and_bottleneck(shape):
    D = build_discriminator(TINY, shape, "began")
    assert isinstance(D, BEGANAutoencoder)
    x = torch.rand(N, *shape) * 2 - 1
    assert D(x).shape == (N, *shape)
    assert D.encode(x).shape == (N, 64)
    assert any(isinstance(m, nn.ELU) for m in D.modules())


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_vae_encoder_shape(shape):
    enc = build_discriminator(TINY, shape, "vae")
    assert isinstance(enc, VAEEncoder)
    mu, logvar = enc(torch.rand(N, *shape) * 2 - 1)
    assert mu.shape == logvar.shape == (N, TINY.z_dim)
    assert not torch.equal(mu, logvar)


@pytest.mark.parametrize("family", ["gan", "wgan-gp"])
def test_2d_mlp_shapes(family):
    cfg = ModelConfig(z_dim=3)
    G = build_generator(cfg, (2,))
    D = build_discriminator(cfg, (2,), family)
    assert isinstance(G, MLPGenerator) and isinstance(D, MLPDiscriminator)
    x = G(torch.randn(N, 3))
    assert x.shape == (N, 2)
    assert D(x).shape == (N,)


def test_mlp_layer_list():
    G = MLPGenerator(z_dim=3)
    D = MLPDiscriminator()
    g_linear = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in g_linear] == [400, 400, 400, 400, 2]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in G.modules()) == 4
    assert sum(isinstance(m, nn.ReLU) for m in G.modules()) == 4
    d_linear = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in d_linear] == [400, 400, 400, 1]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in D.modules())


def test_arch_resolution_and_errors():
    assert resolve_arch(ModelConfig(arch="auto"), (1, 28, 28)) == "dcgan"
    assert resolve_arch(ModelConfig(arch="auto"), (2,)) == "mlp"
    with pytest.raises(ConfigError, match="model.arch"):
        build_generator(ModelConfig(arch="dcgan"), (2,))
    with pytest.raises(ConfigError, match="model.arch"):
        build_discriminator(ModelConfig(arch="mlp"), (1, 28, 28), "gan")
    with pytest.raises(ConfigError, match="train.family: began needs image data"):
        build_discriminator(ModelConfig(), (2,), "began")
    with pytest.raises(ConfigError, match="train.family: unknown family 'lsgan'"):
        build_discriminator(ModelConfig(), (1, 28, 28), "lsgan")
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_generator(ModelConfig(), (1, 30, 30))


# ---- the Keras MNIST DCGAN at width 1.0, counted from its layer list --------------------------

def _dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out  # kernel + bias


def _conv(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out  # kernel + bias


def _bn(c: int) -> int:
    return 2 * c  # trainable gamma, beta (Keras also counts 2c non-trainable moving mean/variance)


@pytest.mark.parametrize("z_dim", [1, 100])
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_dcgan_param_counts_match_keras(z_dim, shape):
    c, h, w = shape
    start = (h // 4) * (w // 4) * 64  # Dense(7*7*64) for 28x28; 8*8*64 for 32x32
    g_layers = [
        _dense(z_dim, start), _bn(start),
        _conv(5, 64, 128), _bn(128),
        _conv(5, 128, 64), _bn(64),
        _conv(5, 64, 64), _bn(64),
        _conv(5, 64, c),
    ]
    bn_channels = start + 128 + 64 + 64
    flat = 128 * math.ceil(h / 8) * math.ceil(w / 8)  # three 'same' stride-2 convs
    d_layers = [_conv(5, c, 64), _conv(5, 64, 64), _conv(5, 64, 128), _conv(5, 128, 128), _dense(flat, 1)]

    cfg = ModelConfig(z_dim=z_dim, width=1.0)
    G = build_generator(cfg, shape)
    D = build_discriminator(cfg, shape, "gan")
    assert count_params(G) == sum(g_layers)
    assert count_params(D) == sum(d_layers)
    # Keras' "Total params" also counts BatchNorm's moving mean and variance
    moving = sum(b.numel() for name, b in G.named_buffers() if name.endswith(("running_mean", "running_var")))
    assert count_params(G) + moving == sum(g_layers) + 2 * bn_channels


def test_width_multiplier_scales_channels():
    assert scale_channels(64, 0.5) == 32
    assert scale_channels(64, 0.001) == 1
    G = DCGANGenerator(10, (1, 28, 28), width=0.5)
    D = DCGANDiscriminator((1, 28, 28), width=0.5)
    g_convs = [m.out_channels for m in G.modules() if isinstance(m, nn.Conv2d)]
    d_convs = [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert g_convs == [64, 32, 32, 1]
    assert d_convs == [32, 32, 64, 64]
    assert G.project[0].out_features == 7 * 7 * 32


def test_keras_init_and_seeded_determinism():
    torch.manual_seed(3)
    G1 = build_generator(TINY, (1, 28, 28))
    torch.manual_seed(3)
    G2 = build_generator(TINY, (1, 28, 28))
    for p1, p2 in zip(G1.parameters(), G2.parameters()):
        assert torch.equal(p1, p2)
    for m in G1.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            assert torch.count_nonzero(m.bias) == 0
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel() if m.weight.dim() == 4 else m.weight.shape[0]
            bound = math.sqrt(6 / (fan_in + fan_out))  # Glorot uniform
            assert m.weight.abs().max() <= bound


def _layers(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("settings,expected", [
    ({}, (0.1, 1e-5, 0.2)),  # the defaults: PyTorch's BatchNorm, ganray's LeakyReLU 0.2
    (dict(bn_momentum=0.2, bn_eps=1e-3, leaky_slope=0.3), (0.2, 1e-3, 0.3)),  # the Keras DCGAN's
])
def test_dcgan_batchnorm_and_leaky_relu_settings_reach_every_layer(settings, expected):
    momentum, eps, slope = expected
    cfg = ModelConfig(z_dim=5, width=0.125, **settings)
    G = build_generator(cfg, (1, 28, 28))
    D = build_discriminator(cfg, (1, 28, 28), "gan")
    bns = _layers(G, nn.modules.batchnorm._BatchNorm)
    assert len(bns) == 4 and {(b.momentum, b.eps) for b in bns} == {(momentum, eps)}
    assert len(_layers(G, nn.LeakyReLU)) == 3 and len(_layers(D, nn.LeakyReLU)) == 4
    assert {a.negative_slope for a in _layers(G, nn.LeakyReLU) + _layers(D, nn.LeakyReLU)} == {slope}
    # PyTorch's convention: one train-mode batch moves the running mean from 0 by momentum * batch mean
    project_bn = G.project[1]
    z = torch.randn(N, 5)
    with torch.no_grad():
        h = G.project[0](z)
        G(z)
    assert torch.allclose(project_bn.running_mean, momentum * h.mean(0), atol=1e-6)
    # a negative input x leaks slope * x through every LeakyReLU
    assert _layers(D, nn.LeakyReLU)[0](torch.tensor([-2.0])).item() == pytest.approx(-2.0 * slope)
