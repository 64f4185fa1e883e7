"""GAN families: which parameters each step moves, losses on known inputs, BEGAN's k_t, WGAN-GP's
penalty, the VAE loss, n_critic, and the same steps under real DistributedDataParallel (gloo, 2 workers)."""
from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ganray.config import FAMILIES, FAMILY_DEFAULTS, Config, ConfigError, DataConfig, ModelConfig, TrainConfig, load
from ganray.families import Models, began, family_names, frozen, gan, get_family, unwrap, vae, wgan_gp

Z_DIM = 4
BATCH = 6
GAN_FAMILIES = ("gan", "wgan-gp", "began")
IMAGE = (1, 28, 28)
POINT = (2,)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def tiny_cfg(family: str, shape: tuple[int, ...] = IMAGE, **train) -> Config:
    dataset = {"stackgan": "captioned-mnist", "cyclegan": "digits2inverse"}.get(family,
                                                                             "mnist5k" if len(shape) == 3 else "ring8")
    # built directly (no YAML round trip): these tests are about the families, not config loading
    return Config(
        data=DataConfig(dataset=dataset),
        model=ModelConfig(z_dim=Z_DIM, width=0.125, ngf=4, ndf=4),
        train=TrainConfig(family=family, batch_size=BATCH, **train),
    )


def real_batch(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(BATCH, *shape) * 2 - 1


CONDITIONAL = ("cgan",)
TEXT_DIM = 1024  # captioned-mnist's caption embeddings


def real_for(family: str, shape: tuple[int, ...]):
    """A real batch as `family`'s step takes it: x, (x, labels) for a class-conditional family, (x, a
    caption embedding) for stackgan, (a, b) of two domains for cyclegan."""
    x = real_batch(shape)
    if family == "stackgan":
        return x, torch.randn(BATCH, TEXT_DIM)
    if family == "cyclegan":
        return x, real_batch(shape)
    return (x, torch.randint(0, 10, (BATCH,))) if family in CONDITIONAL else x


def z_for(family: str, n: int):
    """G's input for n fakes: z, or (z, asked labels / caption embedding); cyclegan draws none."""
    z = torch.randn(n, Z_DIM)
    if family == "stackgan":
        return z, torch.randn(n, TEXT_DIM)
    return (z, torch.randint(0, 10, (n,))) if family in CONDITIONAL else z


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def unchanged(module: nn.Module, before: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, b) for p, b in zip(module.parameters(), before))


def all_changed(module: nn.Module, before: list[torch.Tensor]) -> bool:
    return all(not torch.equal(p, b) for p, b in zip(module.parameters(), before))


def assert_stats(stats: dict, keys: set[str]) -> None:
    assert keys <= set(stats), f"missing {keys - set(stats)}"
    for k, v in stats.items():
        assert isinstance(v, torch.Tensor) and v.dim() == 0, k
        assert not v.requires_grad, f"{k} must be detached"
        assert torch.isfinite(v), f"{k} = {v}"


D_KEYS = {
    "gan": {"loss_D", "d_acc_real", "d_acc_fake", "d_real", "d_fake"},
    "wgan-gp": {"loss_D", "wasserstein", "grad_norm", "gp"},
    "began": {"loss_D", "loss_real", "loss_fake", "k_t", "m_global"},
}
D_KEYS["cgan"] = D_KEYS["gan"]
D_KEYS["stackgan"] = {"loss_D", "loss_real", "loss_wrong", "loss_fake", "d_real", "d_wrong", "d_fake", "d_acc_real",
                      "d_acc_fake", "loss_G_adv", "kl", "d_fake_g"}
# cyclegan: its step's every loss term (one G step, then one D step)
D_KEYS["cyclegan"] = {"loss_G_AB", "loss_G_BA", "loss_cycle_A", "loss_cycle_B", "loss_idt_A", "loss_idt_B", "loss_D",
                      "loss_D_A", "loss_D_B", "d_real_A", "d_fake_A", "d_real_B", "d_fake_B"}


def test_registry_matches_config():
    assert family_names() == FAMILIES
    assert set(FAMILY_DEFAULTS) == set(family_names())
    assert get_family("began").init_state() == {"k_t": 0.0}
    with pytest.raises(ConfigError, match="train.family: unknown family 'lsgan'"):
        get_family("lsgan")


def test_build_optimizers_from_config():
    cfg = tiny_cfg("wgan-gp", lr_g=3e-4, lr_d=1e-4, beta1=0.5, beta2=0.9)
    m = get_family("wgan-gp").build(cfg, IMAGE)
    assert m.opt_G.param_groups[0]["lr"] == 3e-4
    assert m.opt_D.param_groups[0]["lr"] == 1e-4
    assert m.opt_D.param_groups[0]["betas"] == (0.5, 0.9)
    assert {id(p) for p in m.opt_G.param_groups[0]["params"]} == {id(p) for p in m.G.parameters()}
    assert {id(p) for p in m.opt_D.param_groups[0]["params"]} == {id(p) for p in m.D.parameters()}


def test_build_applies_wrap_and_unwraps():
    class Wrapper(nn.Module):  # not a parallel wrapper, though it has a .module: must not be unwrapped
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.module = inner

    wrapped = []

    def wrap(module: nn.Module) -> nn.Module:
        wrapped.append(module)
        return nn.parallel.DataParallel(module)  # a real wrapper; real DDP runs in test_steps_under_ddp

    m = get_family("gan").build(tiny_cfg("gan"), IMAGE, wrap)
    assert wrapped == [m.G_module, m.D_module]
    assert isinstance(m.G, nn.DataParallel) and unwrap(m.G) is wrapped[0]
    assert unwrap(Wrapper(nn.Linear(1, 1))).__class__ is Wrapper  # only known wrappers are unwrapped


@pytest.mark.parametrize("family,shape", [(f, IMAGE) for f in (*GAN_FAMILIES, *CONDITIONAL)]
                         + [(f, POINT) for f in ("gan", "wgan-gp")])
def test_d_step_moves_only_D_and_g_step_only_G(family, shape):
    fam = get_family(family)
    cfg = tiny_cfg(family, shape)
    m = fam.build(cfg, shape)
    state = fam.init_state()
    g0, d0 = snapshot(m.G), snapshot(m.D)

    d_stats = fam.d_step(m.G_module, m.D, m.opt_D, real_for(family, shape), z_for(family, BATCH), state, cfg.train)
    assert unchanged(m.G, g0), "d_step changed G"
    if family == "wgan-gp":
        # the critic's output bias cancels in E[D(G(z))] - E[D(x)] and in ∇D: its gradient is 0
        *d_body, d_out_bias = list(m.D.parameters())
        assert torch.equal(d_out_bias, d0[-1])
        assert all(not torch.equal(p, b) for p, b in zip(d_body, d0)), "d_step left some D parameter unchanged"
    else:
        assert all_changed(m.D, d0), "d_step left some D parameter unchanged"
    assert_stats(d_stats, D_KEYS[family])

    g1, d1 = snapshot(m.G), snapshot(m.D)
    g_stats = fam.g_step(m.G, m.D_module, m.opt_G, z_for(family, BATCH), state, cfg.train)
    assert unchanged(m.D, d1), "g_step changed D"
    assert not unchanged(m.G, g1), "g_step did not change G"
    assert_stats(g_stats, {"loss_G"})
    assert all(p.requires_grad for p in m.D.parameters()), "g_step must restore D's requires_grad"


def test_g_step_computes_no_D_gradients():
    fam = get_family("gan")
    cfg = tiny_cfg("gan")
    m = fam.build(cfg, IMAGE)
    m.opt_D.zero_grad(set_to_none=True)
    fam.g_step(m.G, m.D, m.opt_G, torch.randn(BATCH, Z_DIM), {}, cfg.train)
    assert all(p.grad is None for p in m.D.parameters())
    assert all(p.grad is not None for p in m.G.parameters())


def test_frozen_restores_flags():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    net[1].weight.requires_grad_(False)
    with frozen(net):
        assert not any(p.requires_grad for p in net.parameters())
    assert [p.requires_grad for p in net.parameters()] == [True, True, False, True]


@pytest.mark.parametrize("family", FAMILIES)
def test_step_n_critic_calls_next_real(family):
    fam = get_family(family)
    cfg = tiny_cfg(family, n_critic=3)
    m = fam.build(cfg, IMAGE)
    calls = []

    def next_real() -> torch.Tensor:
        calls.append(1)
        return real_for(family, IMAGE)

    state = fam.init_state()
    stats = fam.step(m, next_real, lambda n: z_for(family, n), state, cfg.train)
    assert len(calls) == (1 if family in ("vae", "cyclegan") else 3)  # no critic loop: one batch per step
    assert_stats(stats, D_KEYS[family] | {"loss_G"} if family != "vae" else {"loss", "kl", "mse"})


# ---- gan ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("d_updates", ["joint", "fake_then_real"])
def test_gan_losses_on_a_constant_discriminator(d_updates):
    """D(v) = 0 logit (sigmoid 1/2): loss_D = 2 ln 2, loss_G = ln 2, D(x) = D(G(z)) = 1/2."""
    D = nn.Linear(2, 1)
    nn.init.zeros_(D.weight)
    nn.init.zeros_(D.bias)
    D_flat = nn.Sequential(D, nn.Flatten(0))
    G = nn.Linear(Z_DIM, 2)
    tc = tiny_cfg("gan", POINT, d_updates=d_updates).train
    d = gan.d_step(G, D_flat, torch.optim.SGD(D_flat.parameters(), lr=0.0), real_batch(POINT),
                   torch.randn(BATCH, Z_DIM), {}, tc)
    assert d["loss_D"].item() == pytest.approx(2 * math.log(2))
    assert d["d_real"].item() == pytest.approx(0.5) and d["d_fake"].item() == pytest.approx(0.5)
    assert d["d_acc_real"].item() == 0.0 and d["d_acc_fake"].item() == 0.0  # logit 0 is neither side
    g = gan.g_step(G, D_flat, torch.optim.SGD(G.parameters(), lr=0.0), torch.randn(BATCH, Z_DIM), {}, tc)
    assert g["loss_G"].item() == pytest.approx(math.log(2))


@pytest.mark.parametrize("d_updates", ["joint", "fake_then_real"])
def test_gan_accuracy_of_a_perfect_discriminator(d_updates):
    """D(v) = 100 * (v_0 - 5): real points at v_0 = 10 are 'real', G's points at v_0 = 0 'fake'."""
    D = nn.Sequential(nn.Linear(2, 1), nn.Flatten(0))
    with torch.no_grad():
        D[0].weight.copy_(torch.tensor([[100.0, 0.0]]))
        D[0].bias.fill_(-500.0)
    G = nn.Linear(Z_DIM, 2)
    nn.init.zeros_(G.weight)
    nn.init.zeros_(G.bias)
    real = torch.zeros(BATCH, 2)
    real[:, 0] = 10.0
    d = gan.d_step(G, D, torch.optim.SGD(D.parameters(), lr=0.0), real, torch.randn(BATCH, Z_DIM), {},
                   tiny_cfg("gan", POINT, d_updates=d_updates).train)
    assert d["d_acc_real"].item() == 1.0 and d["d_acc_fake"].item() == 1.0
    assert d["loss_D"].item() < 1e-6


def _watch_d_step(m: Models) -> dict[str, list]:
    """Hooks recording, in call order, G's mode at each forward, each D forward's input with the
    optimizer steps taken before it and D's output weights then, and each opt_D step."""
    G, D = m.G_module, m.D_module
    seen: dict[str, list] = {"g_training": [], "d_inputs": [], "steps": []}
    G.register_forward_pre_hook(lambda mod, args: seen["g_training"].append(mod.training))
    D.register_forward_pre_hook(lambda mod, args: seen["d_inputs"].append(
        (args[0].detach().clone(), len(seen["steps"]), D.out.weight.detach().clone())))
    m.opt_D.register_step_post_hook(lambda opt, args, kwargs: seen["steps"].append(1))
    return seen


def test_fake_then_real_d_step_steps_on_eval_mode_fakes_then_on_the_real_batch():
    """train.d_updates fake_then_real, the Keras DCGAN's D.train_on_batch(G.predict(z), 0) then
    D.train_on_batch(x, 1): G draws the fakes in eval mode (BatchNorm's running statistics, which
    the draw leaves as they are) and is in train mode again after; D sees the fake batch first and
    takes an optimizer step, then sees the real batch with the weights that step made and takes a
    second one."""
    fam = get_family("gan")
    cfg = tiny_cfg("gan", d_updates="fake_then_real")
    m = fam.build(cfg, IMAGE)
    G = m.G_module
    real, z = real_batch(IMAGE), torch.randn(BATCH, Z_DIM)
    with torch.no_grad():
        G(torch.randn(BATCH, Z_DIM))  # running statistics away from their initial 0 / 1
        expected_fake = G.eval()(z)  # what G.predict(z) returns
    G.train()
    buffers = [b.clone() for b in G.buffers()]
    d_weight = m.D_module.out.weight.detach().clone()
    seen = _watch_d_step(m)

    stats = fam.d_step(G, m.D, m.opt_D, real, z, {}, cfg.train)
    assert seen["g_training"] == [False] and G.training, "the fakes must be drawn in eval mode, G left in train mode"
    assert all(torch.equal(a, b) for a, b in zip(G.buffers(), buffers)), "the draw moved G's BatchNorm statistics"
    assert len(seen["steps"]) == 2, "two D optimizer steps"
    (x1, steps1, w1), (x2, steps2, w2) = seen["d_inputs"]
    assert torch.equal(x1, expected_fake) and steps1 == 0 and torch.equal(w1, d_weight)  # first: the fakes
    assert torch.equal(x2, real) and steps2 == 1 and not torch.equal(w2, d_weight)  # then: real, D stepped
    assert_stats(stats, D_KEYS["gan"])


def test_joint_d_step_is_one_step_on_real_and_fake_together():
    """train.d_updates joint (the default, as before the setting): G draws the fakes in train mode,
    D sees [real, fake] in one forward, one optimizer step."""
    fam = get_family("gan")
    cfg = tiny_cfg("gan")
    assert cfg.train.d_updates == "joint"
    m = fam.build(cfg, IMAGE)
    real, z = real_batch(IMAGE), torch.randn(BATCH, Z_DIM)
    seen = _watch_d_step(m)
    fam.d_step(m.G_module, m.D, m.opt_D, real, z, {}, cfg.train)
    assert seen["g_training"] == [True] and len(seen["steps"]) == 1
    (x, steps, _), = seen["d_inputs"]
    assert x.shape[0] == 2 * BATCH and torch.equal(x[:BATCH], real) and steps == 0


def test_fake_then_real_step_takes_two_D_steps_per_critic_step():
    """A family step with n_critic 2: two real batches, four D optimizer steps, then one G step."""
    fam = get_family("gan")
    cfg = tiny_cfg("gan", d_updates="fake_then_real", n_critic=2)
    m = fam.build(cfg, IMAGE)
    seen = _watch_d_step(m)
    g_steps, reals = [], []
    m.opt_G.register_step_post_hook(lambda opt, args, kwargs: g_steps.append(len(seen["steps"])))
    stats = fam.step(m, lambda: reals.append(1) or real_batch(IMAGE), lambda n: torch.randn(n, Z_DIM), {},
                     cfg.train)
    assert len(reals) == 2 and len(seen["steps"]) == 4 and g_steps == [4]
    assert_stats(stats, D_KEYS["gan"] | {"loss_G"})


class _Packs(nn.Module):
    """D's packing as ganray.models.remedies lays it out: m consecutive examples side by side."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0] // self.m, -1)


@pytest.mark.parametrize("pack", [1, 2])
def test_simultaneous_step_takes_both_gradients_at_the_same_weights_on_one_batch_of_fakes(pack):
    """train.d_updates simultaneous (the PacGAN authors'): one z batch and one forward of G (its
    BatchNorm's statistics move once), G's gradient of -log D(G(z)) and D's of -log D(x) - log(1 -
    D(G(z))) (per pack of m) both at the starting weights, then both SGD steps, whatever gradients
    were left in the nets; an alternating step from the same start moves G otherwise (its G
    gradient is at the updated D)."""
    torch.set_default_dtype(torch.float64)
    try:
        G = nn.Sequential(nn.Linear(Z_DIM, 2), nn.BatchNorm1d(2))
        D = nn.Sequential(_Packs(pack), nn.Linear(2 * pack, 1), nn.Flatten(0))
        real, z = real_batch(POINT), torch.randn(BATCH, Z_DIM)
    finally:
        torch.set_default_dtype(torch.float32)
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    fake = G0(z)  # G0's one forward in train mode
    loss_G = nn.functional.softplus(-D0(fake)).mean()  # BCE(l, 1) = softplus(-l)
    grads_G = torch.autograd.grad(loss_G, list(G0.parameters()))
    loss_D = nn.functional.softplus(-D0(real)).mean() + nn.functional.softplus(D0(fake.detach())).mean()
    grads_D = torch.autograd.grad(loss_D, list(D0.parameters()))

    def run(G_: nn.Module, D_: nn.Module, d_updates: str) -> tuple[dict, list[int]]:
        m = Models.pair(G_, D_, torch.optim.SGD(G_.parameters(), lr=0.1), torch.optim.SGD(D_.parameters(), lr=0.1))
        for p in [*G_.parameters(), *D_.parameters()]:
            p.grad = torch.full_like(p, 7.0)  # left over from elsewhere: the step must start from zero
        drawn: list[int] = []
        stats = gan.FAMILY.step(m, lambda: real, lambda n: drawn.append(n) or z, {},
                                tiny_cfg("gan", POINT, d_updates=d_updates).train)
        return stats, drawn

    stats, drawn = run(G, D, "simultaneous")
    assert drawn == [BATCH]  # one batch of fakes for both updates
    for net, start, grads in ((G, G0, grads_G), (D, D0, grads_D)):
        for p, p0, g in zip(net.parameters(), start.parameters(), grads):
            assert torch.allclose(p, p0 - 0.1 * g, rtol=0, atol=1e-15)
    bn, bn0 = G[1], G0[1]
    assert int(bn.num_batches_tracked) == 1 and torch.equal(bn.running_mean, bn0.running_mean)
    assert stats["loss_G"].item() == pytest.approx(loss_G.item(), rel=1e-12)
    assert stats["loss_D"].item() == pytest.approx(loss_D.item(), rel=1e-12)
    G2, D2 = copy.deepcopy(G0), copy.deepcopy(D0)
    G2[1].reset_running_stats()
    _, drawn = run(G2, D2, "joint")
    assert drawn == [BATCH, BATCH] and int(G2[1].num_batches_tracked) == 2  # G ran for D's step and for its own
    assert not torch.allclose(G2[0].weight, G[0].weight, rtol=0, atol=1e-9)


def test_simultaneous_updates_are_refused_with_a_critic_loop_or_another_family():
    with pytest.raises(ConfigError, match="train.n_critic: 2 with train.d_updates simultaneous"):
        load(None, ["train.d_updates=simultaneous", "train.n_critic=2"])
    with pytest.raises(ConfigError, match="train.d_updates: simultaneous is for the gan family only.*wgan-gp"):
        load(None, ["train.family=wgan-gp", "train.d_updates=simultaneous"])


# ---- wgan-gp ------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale,expected_gp", [(1.0, 0.0), (3.0, 4.0)])
def test_gradient_penalty_of_a_linear_critic(scale, expected_gp):
    """D(x) = w·x has ∇D = w everywhere: gp = (||w|| - 1)^2, 0 for a unit w."""
    w = torch.randn(IMAGE).flatten()
    w = scale * w / w.norm()

    def D(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ w  # [N]

    x_hat = wgan_gp.interpolate(real_batch(IMAGE), real_batch(IMAGE))
    gp, grad_norm = wgan_gp.gradient_penalty(D(x_hat), x_hat)
    assert grad_norm.shape == (BATCH,)
    assert torch.allclose(grad_norm, torch.full((BATCH,), scale), atol=1e-5)
    assert gp.item() == pytest.approx(expected_gp, abs=1e-5)


def test_interpolate_lies_between_real_and_fake():
    real, fake = torch.ones(BATCH, 2), -torch.ones(BATCH, 2)
    x_hat = wgan_gp.interpolate(real, fake, eps=torch.full((BATCH, 1), 0.25))
    assert torch.allclose(x_hat, torch.full((BATCH, 2), -0.5))  # 0.25 * 1 + 0.75 * (-1)
    x_rand = wgan_gp.interpolate(real, fake)
    assert x_rand.requires_grad and (x_rand.abs() <= 1).all()
    assert torch.allclose(x_rand[:, 0], x_rand[:, 1])  # one eps per example, shared over features


def test_wgan_gp_loss_is_minus_wasserstein_plus_penalty():
    fam = get_family("wgan-gp")
    cfg = tiny_cfg("wgan-gp", POINT, gp_lambda=7.0)
    m = fam.build(cfg, POINT)
    s = fam.d_step(m.G_module, m.D, m.opt_D, real_batch(POINT), torch.randn(BATCH, Z_DIM), {}, cfg.train)
    assert s["loss_D"].item() == pytest.approx(-s["wasserstein"].item() + 7.0 * s["gp"].item(), rel=1e-5)
    assert s["gp"].item() >= 0 and s["grad_norm"].item() >= 0


# ---- began --------------------------------------------------------------------------------------

def test_began_k_update_formula_and_clipping():
    tc = dataclasses.replace(tiny_cfg("began").train, began_gamma=0.5, began_lambda_k=0.1)
    # k + λ_k (γ L(x) - L(G(z))) = 0.2 + 0.1 * (0.5 * 0.4 - 0.1) = 0.21
    k = began.update_k(0.2, torch.tensor(0.4), torch.tensor(0.1), tc)
    assert k.item() == pytest.approx(0.21)
    assert began.update_k(0.9, torch.tensor(100.0), torch.tensor(0.0), tc).item() == 1.0
    assert began.update_k(0.1, torch.tensor(0.0), torch.tensor(100.0), tc).item() == 0.0


@pytest.mark.parametrize("lambda_k,gamma", [(0.001, 0.5), (100.0, 0.5), (100.0, 1.0)])
def test_began_k_t_stays_in_unit_interval(lambda_k, gamma):
    fam = get_family("began")
    cfg = tiny_cfg("began", began_lambda_k=lambda_k, began_gamma=gamma)
    m = fam.build(cfg, IMAGE)
    state = fam.init_state()
    ks = []
    for _ in range(6):
        k_before = float(state["k_t"])
        s = fam.step(m, lambda: real_batch(IMAGE), lambda n: torch.randn(n, Z_DIM), state, cfg.train)
        k = state["k_t"].item()
        # the update used this step's L(x) and L(G(z)) from the D step
        raw = k_before + lambda_k * (gamma * s["loss_real"].item() - s["loss_fake"].item())
        assert k == pytest.approx(min(1.0, max(0.0, raw)), abs=1e-5)
        m_global = s["loss_real"].item() + abs(gamma * s["loss_real"].item() - s["loss_fake"].item())
        assert s["m_global"].item() == pytest.approx(m_global, rel=1e-5)
        ks.append(k)
    assert all(0.0 <= k <= 1.0 for k in ks)


# ---- vae ----------------------------------------------------------------------------------------

def test_vae_loss_known_inputs():
    x = torch.rand(BATCH, 1, 4, 4)
    zeros = torch.zeros(BATCH, 3)
    loss, kl, mse = vae.vae_loss(x, x.clone(), zeros, zeros, alpha=1.0)
    assert kl.item() == 0.0  # q(z|x) = N(0, I)
    assert mse.item() == 0.0  # perfect reconstruction
    assert loss.item() == 0.0
    # mu = 1, logvar = 0 over 3 dims: KL = 1/2 * 3 * mu² = 1.5; error 0.5 on 16 pixels: MSE = 16 * 0.25 = 4
    loss, kl, mse = vae.vae_loss(x, x + 0.5, torch.ones(BATCH, 3), zeros, alpha=2.0)
    assert kl.item() == pytest.approx(1.5)
    assert mse.item() == pytest.approx(4.0)
    assert loss.item() == pytest.approx(1.5 + 2.0 * 4.0)
    # logvar = ln 2, mu = 0 in 1 dim: KL = -1/2 (1 + ln 2 - 2) = (1 - ln 2) / 2
    _, kl, _ = vae.vae_loss(x, x, torch.zeros(1, 1), torch.full((1, 1), math.log(2)), alpha=1.0)
    assert kl.item() == pytest.approx((1 - math.log(2)) / 2)


def test_vae_step_changes_encoder_and_decoder():
    fam = get_family("vae")
    cfg = tiny_cfg("vae")
    m = fam.build(cfg, IMAGE)
    assert m.opt_D is None
    n_opt = sum(p.numel() for g in m.opt_G.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in m.G.parameters()) + sum(p.numel() for p in m.D.parameters())
    g0, d0 = snapshot(m.G), snapshot(m.D)
    stats = fam.step(m, lambda: real_batch(IMAGE), lambda n: torch.randn(n, Z_DIM), fam.init_state(), cfg.train)
    assert_stats(stats, {"loss", "kl", "mse"})
    assert stats["loss"].item() == pytest.approx(stats["kl"].item() + stats["mse"].item(), rel=1e-5)
    assert all_changed(m.G, g0) and all_changed(m.D, d0)
    # samples are decoder(z), z ~ N(0, I), images in [-1, 1]
    samples = m.G(torch.randn(3, Z_DIM))
    assert samples.shape == (3, *IMAGE) and samples.abs().max() <= 1


def test_vae_reconstruct_is_deterministic_and_keeps_modes():
    fam = get_family("vae")
    m = fam.build(tiny_cfg("vae"), IMAGE)
    x = real_batch(IMAGE)
    r1, r2 = vae.reconstruct(m, x), vae.reconstruct(m, x)
    assert r1.shape == x.shape and torch.equal(r1, r2)
    assert m.G.training and m.D.training


def test_vae_training_reduces_loss_on_a_fixed_batch():
    fam = get_family("vae")
    cfg = tiny_cfg("vae", lr_g=2e-3)
    m = fam.build(cfg, IMAGE)
    x = real_batch(IMAGE)
    losses = [fam.step(m, lambda: x, lambda n: torch.randn(n, Z_DIM), {}, cfg.train)["loss"].item()
              for _ in range(15)]
    assert losses[-1] < losses[0]


# ---- the same steps under DistributedDataParallel (2 gloo workers on this CPU) ------------------

DDP_VARIANTS = [(f, "joint") for f in FAMILIES] + [("gan", "fake_then_real"), ("gan", "simultaneous")]


def _ddp_worker(rank: int, world_size: int, init_file: str, results) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        out = {}
        for family, d_updates in DDP_VARIANTS:
            torch.manual_seed(100 + rank)  # different init and data per rank: DDP must make them agree
            fam = get_family(family)
            # BEGAN: k_t starts inside (0, 1) with a λ_k that keeps it there, so agreement is not 0 == 0
            cfg = tiny_cfg(family, n_critic=1 if d_updates == "simultaneous" else 2, began_lambda_k=0.01,
                           d_updates=d_updates)

            def wrap(module: nn.Module) -> nn.Module:
                return nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)

            m: Models = fam.build(cfg, IMAGE, wrap)
            state = {"k_t": 0.5} if family == "began" else fam.init_state()
            for _ in range(2):
                stats = fam.step(m, lambda f=family: real_for(f, IMAGE), lambda n, f=family: z_for(f, n), state, cfg.train)
            out[family if d_updates == "joint" else f"{family} {d_updates}"] = {
                "nets": {name: [p.detach().clone() for p in m.module(name).parameters()] for name in m.nets},
                "k_t": float(state.get("k_t", 0.0)),
                "finite": all(bool(torch.isfinite(v)) for v in stats.values()),
            }
        results[rank] = out
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_steps_under_ddp(tmp_path):
    """Every family trains under real DDP: after steps on different data, both workers hold the
    same G and D (gradients were all-reduced) and BEGAN's k_t agrees; gan's fake-then-real D step
    (two backward passes, each all-reduced) and its simultaneous update (G's backward through the
    unwrapped D, then D's) too."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "store"), results), nprocs=2,
                           start_method="spawn", join=True)
        r0, r1 = dict(results[0]), dict(results[1])
    assert set(r0) == set(FAMILIES) | {"gan fake_then_real", "gan simultaneous"}
    for family in r0:
        a, b = r0[family], r1[family]
        assert a["finite"] and b["finite"], family
        assert set(a["nets"]) == ({"G_AB", "G_BA", "D_A", "D_B"} if family == "cyclegan" else {"G", "D"})
        for name in a["nets"]:
            for pa, pb in zip(a["nets"][name], b["nets"][name]):
                assert torch.allclose(pa, pb, atol=1e-6), f"{family}: {name} differs across workers"
        assert a["k_t"] == pytest.approx(b["k_t"]), family
