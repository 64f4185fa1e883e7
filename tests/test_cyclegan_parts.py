"""CycleGAN's parts: the LSGAN, cycle and identity losses and the whole G objective on known
tensors, the image pool (fill, probability 0.5 once full, at most 50 kept, bitwise resume), the
learning-rate schedule, which networks each step moves, shapes at 28x28x1 and 64x64x3, the
PatchGAN's receptive field, and the shape checks."""
from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ganray.config import Config, ConfigError, ModelConfig, TrainConfig
from ganray.families import cyclegan as cg
from ganray.models import cyclegan as nets_mod

BATCH = 3


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def tiny_cfg(**train) -> Config:
    # family "gan" resolves the optimiser settings CycleGAN shares (Adam 2e-4, betas (0.5, 0.999))
    return Config(model=ModelConfig(ngf=4, ndf=4, res_blocks=1), train=TrainConfig(family="gan", **train))


def tc(lambda_cycle: float = 10.0, lambda_identity: float = 0.5, pool_size: int = 50) -> SimpleNamespace:
    return SimpleNamespace(lambda_cycle=lambda_cycle, lambda_identity=lambda_identity, pool_size=pool_size)


def images(shape=(1, 28, 28)) -> torch.Tensor:
    return torch.rand(BATCH, *shape) * 2 - 1


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def unchanged(module: nn.Module, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, b) for p, b in zip(module.parameters(), before))


# --- losses ------------------------------------------------------------------------------------

def test_lsgan_cycle_identity_losses_on_known_tensors():
    pred = torch.tensor([0.5, 1.5, -1.0])
    assert cg.lsgan_loss(pred, True).item() == pytest.approx((0.25 + 0.25 + 4.0) / 3)  # mean (pred - 1)²
    assert cg.lsgan_loss(pred, False).item() == pytest.approx((0.25 + 2.25 + 1.0) / 3)  # mean pred²
    x = torch.tensor([[0.0, 1.0], [-1.0, 0.5]])
    rec = torch.tensor([[0.5, 1.0], [1.0, 0.0]])
    assert cg.cycle_loss(rec, x).item() == pytest.approx((0.5 + 0 + 2.0 + 0.5) / 4)  # L1 mean, not MSE
    assert cg.identity_loss(rec, x).item() == pytest.approx(0.75)
    assert cg.cycle_loss(x, x).item() == 0.0


class Affine(nn.Module):
    """x -> scale·x + shift (trainable): a stand-in network with outputs known by hand."""

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.shift = nn.Parameter(torch.tensor(shift))

    def forward(self, x):
        return self.scale * x + self.shift


def known_nets() -> dict[str, nn.Module]:
    # G_AB(x) = x + 1, G_BA(x) = x, D_A(x) = D_B(x) = x
    return {"G_AB": Affine(1.0, 1.0), "G_BA": Affine(1.0, 0.0), "D_A": Affine(1.0, 0.0), "D_B": Affine(1.0, 0.0)}


@pytest.mark.parametrize("lambda_identity,expected_idt_B", [(0.5, 5.0), (0.0, 0.0)])
def test_g_objective_weights_every_term_as_the_reference(lambda_identity, expected_idt_B):
    nets = known_nets()
    a, b = torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 2.0)
    opt = torch.optim.SGD([p for k in ("G_AB", "G_BA") for p in nets[k].parameters()], lr=0.0)
    stats, (fake_a, fake_b) = cg.g_step(nets, opt, a, b, {}, tc(10.0, lambda_identity))
    # fake_b = G_AB(a) = 1, rec_a = G_BA(1) = 1; fake_a = G_BA(b) = 2, rec_b = G_AB(2) = 3
    assert torch.equal(fake_b, torch.ones_like(a)) and torch.equal(fake_a, torch.full_like(a, 2.0))
    assert stats["loss_G_AB"].item() == 0.0  # (D_B(fake_b) - 1)² = (1 - 1)²
    assert stats["loss_G_BA"].item() == 1.0  # (D_A(fake_a) - 1)² = (2 - 1)²
    assert stats["loss_cycle_A"].item() == 10.0  # 10·|rec_a - a| = 10·|1 - 0|
    assert stats["loss_cycle_B"].item() == 10.0  # 10·|rec_b - b| = 10·|3 - 2|
    # identity: G_BA(a) = a costs 0; G_AB(b) = b + 1 costs 0.5·10·|1|. Feeding a to G_AB would cost
    # 0.5·10·1 in loss_idt_A, comparing G_AB(b) with a 0.5·10·3, G_BA(a) with b 0.5·10·2
    assert stats["loss_idt_A"].item() == 0.0
    assert stats["loss_idt_B"].item() == expected_idt_B
    assert stats["loss_G"].item() == 21.0 + expected_idt_B


def test_d_objective_is_half_the_sum_of_the_real_and_fake_terms():
    nets = known_nets()
    a = torch.full((2, 1, 4, 4), 0.5)  # D_A(a) = 0.5: (0.5 - 1)² = 0.25
    b = torch.full((2, 1, 4, 4), 2.0)  # D_B(b) = 2: (2 - 1)² = 1
    fakes = (torch.zeros_like(a), torch.full_like(b, -1.0))  # D_A(0)² = 0, D_B(-1)² = 1
    opt = torch.optim.SGD([p for k in ("D_A", "D_B") for p in nets[k].parameters()], lr=0.0)
    stats = cg.d_step(nets, opt, a, b, {}, tc(), fakes=fakes)  # the pools' fill phase returns the fakes
    assert stats["loss_D_A"].item() == 0.125  # ½(0.25 + 0)
    assert stats["loss_D_B"].item() == 1.0  # ½(1 + 1)
    assert stats["loss_D"].item() == 1.125
    assert (stats["d_real_A"].item(), stats["d_fake_B"].item()) == (0.5, -1.0)


# --- the image pool ------------------------------------------------------------------------------

def numbered(start: int, n: int = 1) -> torch.Tensor:
    """n single-pixel images whose value is their number: [n, 1, 1, 1]."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1)


def test_pool_fill_phase_returns_the_input_and_stores_it():
    pool = cg.ImagePool(50, seed=1)
    for start in range(0, 49, 7):  # 7 batches of 7: 49 stored
        x = numbered(start, 7)
        assert torch.equal(pool.query(x), x)
    assert len(pool) == 49
    x = numbered(49, 4)  # the 50th fills the pool; the other 3 are already past the fill phase
    out = pool.query(x)
    assert torch.equal(out[0], x[0]) and len(pool) == 50


def test_pool_returns_stored_images_with_probability_half_and_keeps_at_most_50():
    pool = cg.ImagePool(50, seed=7)
    pool.query(numbered(0, 50))  # full
    n, returned = 4000, []
    for i in range(50, 50 + n):
        out = pool.query(numbered(i)).item()
        if out != i:
            returned.append(out)
        assert out <= i and len(pool) == 50
    returned_stored = len(returned)
    assert len(set(returned)) == returned_stored  # a returned image leaves the pool: the new one takes its slot
    # each of the first 50 survives 4000 queries with probability (1 - 1/100)^4000 ~ e^-40
    assert pool.images.min().item() >= 50
    # stored images are older ones; binomial(4000, 0.5): mean 2000, sigma = sqrt(4000/4) = 31.6
    assert abs(returned_stored - n / 2) < 4 * math.sqrt(n / 4), returned_stored
    values = pool.images.flatten()
    assert values.unique().numel() == 50  # every slot a distinct image: a swap stores the new one


def test_pool_of_size_zero_returns_the_input():
    x = numbered(0, 5)
    assert cg.ImagePool(0).query(x) is x


def test_pool_state_dict_round_trip_continues_bitwise():
    pool = cg.ImagePool(5, seed=3)
    for i in range(0, 30, 3):
        pool.query(torch.randn(3, 2, 4, 4) + i)
    buf = io.BytesIO()
    torch.save(pool.state_dict(), buf)  # a checkpoint holds it; loadable without pickled classes
    buf.seek(0)
    restored = cg.ImagePool.from_state_dict(torch.load(buf, weights_only=True))
    for _ in range(6):
        x = torch.randn(3, 2, 4, 4)
        assert torch.equal(pool.query(x), restored.query(x))
    assert torch.equal(pool.images, restored.images)
    with pytest.raises(ConfigError, match="train.pool_size"):
        cg.ImagePool(50).load_state_dict(pool.state_dict())


# --- the learning-rate schedule ------------------------------------------------------------------

def test_linear_decay_lr_values_at_start_middle_end():
    base = 2e-4
    assert cg.linear_decay_lr(0, 600, base) == base  # start
    assert cg.linear_decay_lr(299, 600, base) == base  # the last step of the first half
    assert cg.linear_decay_lr(300, 600, base) == pytest.approx(base * 300 / 301)  # the first decayed step
    assert cg.linear_decay_lr(449, 600, base) == pytest.approx(base * 151 / 301)  # half-way down: 1 - 150/301
    assert cg.linear_decay_lr(599, 600, base) == pytest.approx(base / 301)  # end: 0 the step after the last
    # an odd count: 2 constant steps, then 3 decayed to 3/4, 2/4, 1/4
    assert [cg.linear_decay_lr(s, 5, 1.0) for s in range(5)] == [1.0, 1.0, 0.75, 0.5, 0.25]
    with pytest.raises(ValueError):
        cg.linear_decay_lr(600, 600, base)


# --- the networks and the steps ------------------------------------------------------------------

def build(shape=(1, 28, 28), **train):
    return cg.build_cyclegan_models(tiny_cfg(**train), shape)


def test_d_step_moves_only_the_ds_and_g_step_only_the_gs():
    nets, opts = build()
    a, b = images(), images()
    before = {k: snapshot(v) for k, v in nets.items()}
    g_stats, fakes = cg.g_step(nets, opts["G"], a, b, {}, tc())
    for k in ("D_A", "D_B"):
        assert unchanged(nets[k], before[k]), f"g_step changed {k}"
        assert all(p.requires_grad and p.grad is None for p in nets[k].parameters()), f"{k} frozen, no gradient"
    for k in ("G_AB", "G_BA"):
        assert not unchanged(nets[k], before[k]), f"g_step left {k} unchanged"
        assert not torch.equal(nets[k].model[-2].weight, before[k][-2]), f"{k}'s last conv did not move"

    before = {k: snapshot(v) for k, v in nets.items()}
    state: dict = {}
    d_stats = cg.d_step(nets, opts["D"], a, b, state, tc(), fakes=fakes)
    for k in ("G_AB", "G_BA"):
        assert unchanged(nets[k], before[k]), f"d_step changed {k}"
    for k in ("D_A", "D_B"):
        assert not unchanged(nets[k], before[k]), f"d_step left {k} unchanged"
        assert not torch.equal(nets[k].model[0].weight, before[k][0]), f"{k}'s first conv did not move"
    assert set(state) == {"pool_A", "pool_B"} and len(state["pool_A"]["images"]) == BATCH
    stats = {**g_stats, **d_stats}
    assert {"loss_G", "loss_D", "loss_D_A", "loss_D_B", "loss_cycle_A", "loss_idt_B", "loss_G_AB"} <= set(stats)
    for k, v in stats.items():
        assert v.dim() == 0 and not v.requires_grad and torch.isfinite(v), k


def test_step_runs_g_then_d_and_keeps_the_pools_in_the_state():
    nets, opts = build()
    m = SimpleNamespace(nets=nets, opts=opts)
    calls = []

    def next_real():
        calls.append(1)
        return images(), images()

    state: dict = {}
    for _ in range(2):
        stats = cg.step(m, next_real, None, state, tc())
    assert len(calls) == 2 and len(state["pool_B"]["images"]) == 2 * BATCH
    assert stats["loss_D"].item() == pytest.approx((stats["loss_D_A"] + stats["loss_D_B"]).item())


def test_build_optimizers_over_both_generators_and_both_discriminators():
    nets, opts = build(lr_g=3e-4, lr_d=1e-4)
    assert opts["G"].param_groups[0]["lr"] == 3e-4 and opts["D"].param_groups[0]["lr"] == 1e-4
    assert opts["G"].param_groups[0]["betas"] == (0.5, 0.999)
    ids = lambda *ks: {id(p) for k in ks for p in nets[k].parameters()}  # noqa: E731
    assert {id(p) for p in opts["G"].param_groups[0]["params"]} == ids("G_AB", "G_BA")
    assert {id(p) for p in opts["D"].param_groups[0]["params"]} == ids("D_A", "D_B")


@pytest.mark.parametrize("shape,patch", [((1, 28, 28), 5), ((3, 64, 64), 6)])
def test_shapes_of_the_generators_and_patch_discriminators(shape, patch):
    nets, _ = build(shape)
    x = images(shape)
    for k in ("G_AB", "G_BA"):
        y = nets[k](x)
        assert y.shape == x.shape and y.abs().max() <= 1  # tanh
    for k in ("D_A", "D_B"):
        assert nets[k](x).shape == (BATCH, 1, patch, patch)


def test_init_is_normal_002_with_zero_biases():
    G = nets_mod.normal_init_(nets_mod.ResnetGenerator(3, 3, ngf=16, n_blocks=2))
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    assert w.std().item() == pytest.approx(0.02, rel=0.02) and abs(w.mean().item()) < 1e-3
    assert all(m.bias.abs().max() == 0 for m in G.modules() if isinstance(m, nn.Conv2d))
    assert not any(isinstance(m, nn.InstanceNorm2d) and (m.affine or m.track_running_stats) for m in G.modules())


def receptive_field(D: nn.Module) -> int:
    """From D's conv layers, last to first: r <- (r - 1)·stride + kernel."""
    r = 1
    for conv in reversed([m for m in D.modules() if isinstance(m, nn.Conv2d)]):
        r = (r - 1) * conv.stride[0] + conv.kernel_size[0]
    return r


def test_patchgan_receptive_field_and_layers_per_size():
    assert receptive_field(nets_mod.NLayerDiscriminator(3, 8, n_layers=3)) == 70  # the 70x70 PatchGAN
    assert [receptive_field(nets_mod.NLayerDiscriminator(1, 4, n)) for n in (1, 2)] == [16, 34]
    assert [nets_mod.patch_receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
    assert [nets_mod.patch_layers_for(s) for s in (8, 16, 28, 32, 64, 256)] == [1, 2, 2, 3, 3, 3]
    assert nets_mod.patch_side(256, 3) == 30
    assert [nets_mod.res_blocks_for(s) for s in (28, 64, 128, 256, 512)] == [3, 3, 6, 9, 9]


@pytest.mark.parametrize("shape", [(1, 30, 30), (1, 28, 27), (1, 4, 4), (28, 28)])
def test_shapes_the_generator_cannot_map_are_config_errors(shape):
    with pytest.raises(ConfigError, match="model: cyclegan"):
        nets_mod.build_cyclegan_networks(ModelConfig(ngf=4, ndf=4), shape)


def test_identity_loss_needs_domains_of_one_shape():
    with pytest.raises(ConfigError, match="train.lambda_identity"):
        cg.build_cyclegan_models(tiny_cfg(), (1, 28, 28), (3, 28, 28))


def test_steps_after_a_weights_only_round_trip_of_nets_optimizers_and_pools_are_bitwise():
    torch.manual_seed(5)
    data = [(images(), images()) for _ in range(4)]
    tiny_pool = tc(pool_size=4)  # full after the first two steps of 3: the later steps swap
    nets, opts = build()
    m, state = SimpleNamespace(nets=nets, opts=opts), {}
    for i in range(2):
        cg.step(m, lambda i=i: data[i], None, state, tiny_pool)
    buf = io.BytesIO()
    torch.save({"nets": {k: v.state_dict() for k, v in nets.items()}, "rng": torch.get_rng_state(),
                "opts": {k: v.state_dict() for k, v in opts.items()}, "family_state": state}, buf)
    straight = [cg.step(m, lambda i=i: data[i], None, state, tiny_pool) for i in (2, 3)]

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    nets2, opts2 = build()
    for k, v in nets2.items():
        v.load_state_dict(ckpt["nets"][k])
    for k, v in opts2.items():
        v.load_state_dict(ckpt["opts"][k])
    torch.set_rng_state(ckpt["rng"])
    m2, state2 = SimpleNamespace(nets=nets2, opts=opts2), ckpt["family_state"]
    resumed = [cg.step(m2, lambda i=i: data[i], None, state2, tiny_pool) for i in (2, 3)]
    assert all(torch.equal(s[k], r[k]) for s, r in zip(straight, resumed) for k in s)
    assert all(torch.equal(p, q) for k in nets for p, q in zip(nets[k].parameters(), nets2[k].parameters()))
    assert torch.equal(state["pool_A"]["images"], state2["pool_A"]["images"])


def test_reference_settings_have_the_reference_parameter_counts():
    # the reference prints "Total number of parameters: 11.378 M" per resnet_9blocks G, "2.765 M" per basic D
    nets = nets_mod.build_cyclegan_networks(ModelConfig(ngf=64, ndf=64), (3, 256, 256))
    counts = {k: sum(p.numel() for p in v.parameters()) for k, v in nets.items()}
    assert counts == {"G_AB": 11_378_179, "G_BA": 11_378_179, "D_A": 2_764_737, "D_B": 2_764_737}


def test_family_build_and_lr_factor():
    cfg = tiny_cfg(steps=10)
    m = cg.build(cfg, (1, 28, 28))
    assert set(m.nets) == set(cg.NET_NAMES) and set(m.opts) == {"G", "D"}
    assert m.module("G_AB") is m.nets["G_AB"]
    assert [cg.lr_factor(s, cfg.train) for s in (0, 4, 5, 9)] == [1.0, 1.0, pytest.approx(5 / 6), pytest.approx(1 / 6)]
