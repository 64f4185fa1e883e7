"""StackGAN: conditioning augmentation's KL, the matching-aware D loss on known logits, which
parameters each step moves (both stages), the frozen Stage I under Stage-II training, shapes."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganray.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig
from ganray.families import stackgan
from ganray.models.stackgan import (
    CondAugment,
    StageDiscriminator,
    StageIGenerator,
    StageIIGenerator,
    ca_kl,
    halvings,
)

Z_DIM, E, C_DIM, BATCH = 5, 10, 6, 5  # batch 5: the wrong pairs are 4, no size divides another by luck


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(1)


def tiny_cfg(stage: int, *, cond_augment: bool = True, lr_decay_steps: int = 0) -> Config:
    return Config(
        data=DataConfig(dataset="mnist5k"),
        model=ModelConfig(z_dim=Z_DIM, c_dim=C_DIM, ngf=8, ndf=4, res_blocks=1, cond_augment=cond_augment),
        train=TrainConfig(family="stackgan", batch_size=BATCH, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999,
                          kl_weight=2.0, stage=stage, lr_decay_steps=lr_decay_steps),
    )


def real_batch(size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(BATCH, 1, size, size) * 2 - 1, torch.randn(BATCH, E)


def latent() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(BATCH, Z_DIM), torch.randn(BATCH, E)


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def all_moved(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(not torch.equal(x, y) for x, y in zip(a, b))


def test_ca_kl_zero_at_standard_normal_and_closed_form():
    zeros = torch.zeros(4, 3, dtype=torch.float64)
    assert ca_kl(zeros, zeros).item() == 0.0
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(4, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(4, 3, generator=g, dtype=torch.float64)
    # 1/2 (mu^2 + sigma^2 - log sigma^2 - 1) per element, mean over the 12 (the authors' reduction)
    terms = [0.5 * (m * m + math.exp(v) - v - 1) for m, v in zip(mu.flatten().tolist(), logvar.flatten().tolist())]
    assert ca_kl(mu, logvar).item() == pytest.approx(sum(terms) / 12, rel=1e-14, abs=0)
    # and torch's own Normal-Normal KL, per dimension, averaged the same way
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu, (0.5 * logvar).exp()),
                                           torch.distributions.Normal(0.0, 1.0))
    assert ca_kl(mu, logvar).item() == pytest.approx(kl.mean().item(), rel=1e-12)


def test_matching_aware_d_loss_on_known_logits():
    l3 = math.log(3)  # sigmoid(ln 3) = 3/4
    real, wrong, fake = torch.tensor([0.0, l3]), torch.tensor([l3]), torch.tensor([-l3, 0.0])
    # BCE(real, 1) = mean(-log 1/2, -log 3/4); BCE(wrong, 0) = -log(1/4); BCE(fake, 0) = mean(-log 3/4, -log 1/2)
    b_real = (math.log(2) + math.log(4 / 3)) / 2
    b_wrong = math.log(4)
    b_fake = (math.log(4 / 3) + math.log(2)) / 2
    loss = stackgan.matching_aware_d_loss(real, wrong, fake)
    assert loss.item() == pytest.approx(b_real + 0.5 * (b_wrong + b_fake), rel=1e-6)
    # the authors' Stage II adds unconditional logits: (real + u_real)/2 + (wrong + fake + u_fake)/3
    u_real, u_fake = torch.tensor([l3, l3]), torch.tensor([0.0, 0.0])  # BCE: -log 3/4 and -log 1/2
    loss2 = stackgan.matching_aware_d_loss(real, wrong, fake, u_real, u_fake)
    expected = (b_real + math.log(4 / 3)) / 2 + (b_wrong + b_fake + math.log(2)) / 3
    assert loss2.item() == pytest.approx(expected, rel=1e-6)


def test_lr_halves_every_decay_steps():
    assert [stackgan.lr_at(s, 2e-4, 3) for s in (0, 2, 3, 5, 6, 7)] == [2e-4, 2e-4, 1e-4, 1e-4, 5e-5, 5e-5]
    assert stackgan.lr_at(10_000, 2e-4, 0) == 2e-4


def test_step_applies_the_schedule_and_counts_steps():
    cfg = tiny_cfg(1, lr_decay_steps=2)
    m = stackgan.build_stackgan_models(cfg, (1, 28, 28), embed_dim=E)
    st = stackgan.init_state()
    seen = []
    for _ in range(3):
        stats = stackgan.step(m, real_batch, lambda n: (torch.randn(n, Z_DIM), torch.randn(n, E)), st, cfg.train)
        seen.append((m.opt_G.param_groups[0]["lr"], m.opt_D.param_groups[0]["lr"]))
    assert st == {"step": 3}
    assert seen == [(2e-4, 2e-4), (2e-4, 2e-4), (1e-4, 1e-4)]
    assert {"loss_D", "loss_wrong", "loss_G", "kl"} <= set(stats)
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("stage", [1, 2])
def test_d_step_moves_only_D_and_g_step_only_G(stage):
    cfg = tiny_cfg(stage)
    m = stackgan.build_stackgan_models(cfg, (1, 28, 28), embed_dim=E)
    G, D = m.G, m.D
    own = list(G.own_parameters()) if stage == 2 else list(G.parameters())
    g0, d0 = params(G), params(D)
    d_stats = stackgan.d_step(G, D, m.opt_D, real_batch(), latent(), {}, cfg.train)
    assert same(params(G), g0), "d_step changed G"
    assert all_moved(params(D), d0), "d_step left some D parameter unchanged"
    assert {"loss_D", "loss_real", "loss_wrong", "loss_fake", "d_wrong"} <= set(d_stats)

    own0, d1 = [p.detach().clone() for p in own], params(D)
    g_stats = stackgan.g_step(G, D, m.opt_G, latent(), {}, cfg.train)
    assert same(params(D), d1), "g_step changed D"
    assert all(not torch.equal(p, b) for p, b in zip(own, own0)), "g_step left some of G's own parameters unchanged"
    assert all(p.requires_grad for p in D.parameters()), "g_step must restore D's requires_grad"
    assert g_stats["kl"].item() > 0
    assert g_stats["loss_G"].item() == pytest.approx(g_stats["loss_G_adv"].item() + 2.0 * g_stats["kl"].item())


def test_stage2_leaves_stage1_bitwise_unchanged():
    cfg = tiny_cfg(2)
    m = stackgan.build_stackgan_models(cfg, (1, 28, 28), embed_dim=E)
    G = m.G
    trained = stackgan_init_stage1()
    stackgan.load_stage1_(G, trained.state_dict())
    s1 = state(G.stage1)
    assert all(torch.equal(s1[k], v) for k, v in trained.state_dict().items())
    # only Stage II's own parameters are in opt_G
    opt_ids = {id(p) for group in m.opt_G.param_groups for p in group["params"]}
    assert opt_ids.isdisjoint(id(p) for p in G.stage1.parameters()) and len(opt_ids) == len(list(G.own_parameters()))
    G.train()
    assert not G.stage1.training and G.ca.training
    st = stackgan.init_state()
    for _ in range(3):
        stackgan.step(m, real_batch, lambda n: latent(), st, cfg.train)
    after = state(G.stage1)
    assert s1.keys() == after.keys()
    assert all(torch.equal(s1[k], after[k]) for k in s1), "Stage II changed a Stage-I parameter or buffer"
    assert all(not p.requires_grad and p.grad is None for p in G.stage1.parameters())


def stackgan_init_stage1() -> StageIGenerator:
    """A 'trained' Stage I: built as the family builds one, with moved BatchNorm statistics."""
    G1 = StageIGenerator(Z_DIM, E, C_DIM, 8, 14, 1)
    G1.train()
    with torch.no_grad():
        G1(torch.randn(BATCH, Z_DIM), torch.randn(BATCH, E))  # running statistics away from (0, 1)
    return G1


def test_shapes_mnist_stand_in_and_cub_sizes():
    cfg = tiny_cfg(2)
    m = stackgan.build_stackgan_models(cfg, (1, 28, 28), embed_dim=E)
    z, text = latent()
    img, mu, logvar = m.G(z, text)
    assert img.shape == (BATCH, 1, 28, 28) and mu.shape == logvar.shape == (BATCH, C_DIM)
    assert m.G.stage1_images(z, text).shape == (BATCH, 1, 14, 14)
    assert img.abs().max() <= 1
    logit, uncond = m.D(img, mu)
    assert logit.shape == uncond.shape == (BATCH,)
    # CUB: 64 -> 256 with 3 channels, at a tiny channel count (shapes only)
    G1 = StageIGenerator(Z_DIM, E, C_DIM, 2, 64, 3)
    G2 = StageIIGenerator(G1, 2, 256, 1)
    assert [len(G1.up), len(G2.up), halvings(256)] == [4, 4, 6]  # the authors' 4 up blocks each, D's 6 downs
    z2, t2 = torch.randn(2, Z_DIM), torch.randn(2, E)
    assert G2(z2, t2)[0].shape == (2, 3, 256, 256) and G2.stage1_images(z2, t2).shape == (2, 3, 64, 64)
    D2 = StageDiscriminator(256, 3, 1, C_DIM, with_uncond=True)
    assert [t.shape for t in D2(torch.zeros(2, 3, 256, 256), torch.zeros(2, C_DIM))] == [(2,), (2,)]
    with pytest.raises(ConfigError, match="Stage-II size"):
        StageIIGenerator(G1, 2, 96, 1)


def test_discriminator_pairs_score_the_named_images():
    D = StageDiscriminator(14, 1, 4, C_DIM).eval()  # eval: BatchNorm per example, so pairs compare
    x, mu = torch.rand(3, 1, 14, 14), torch.rand(4, C_DIM)
    pairs = torch.tensor([2, 0, 0, 1])
    logit, uncond = D(x, mu, pairs)
    assert uncond is None
    assert torch.allclose(logit, D(x[pairs], mu)[0], atol=1e-6)


def test_cond_augment_off_is_deterministic_and_has_no_kl():
    ca = CondAugment(E, C_DIM, augment=False)
    text = torch.randn(BATCH, E)
    c1, mu, logvar = ca(text)
    assert logvar is None and torch.equal(c1, ca(text)[0]) and torch.equal(c1, mu)
    on = CondAugment(E, C_DIM)
    assert not torch.equal(on(text)[0], on(text)[0])  # c = mu + sigma * eps: a fresh eps per call
    cfg = tiny_cfg(1, cond_augment=False)
    m = stackgan.build_stackgan_models(cfg, (1, 28, 28), embed_dim=E)
    stats = stackgan.g_step(m.G, m.D, m.opt_G, latent(), {}, cfg.train)
    assert stats["kl"].item() == 0.0 and torch.equal(stats["loss_G"], stats["loss_G_adv"])


def test_d_step_scores_real_mismatched_and_fake_pairs():
    cfg = tiny_cfg(1)
    m = stackgan.build_stackgan_models(cfg, (1, 28, 28), embed_dim=E)
    G, D = m.G, m.D.eval()  # D in eval mode: each pair's logit is its own (BatchNorm's running statistics)
    G0, D0 = copy.deepcopy(G), copy.deepcopy(D)
    (x, text), (z, text_fake) = real_batch(), latent()
    torch.manual_seed(7)
    stats = stackgan.d_step(G, D, m.opt_D, (x, text), (z, text_fake), {}, cfg.train)
    torch.manual_seed(7)  # the same CA noise for the fakes
    with torch.no_grad():
        fake, mu_fake, _ = G0(z, text_fake)
        mu = G0.ca.mean(text)
        x14 = F.avg_pool2d(x, 2)  # Stage I sees the reals at 14x14
        real_l, wrong_l, fake_l = D0(x14, mu)[0], D0(x14[:-1], mu[1:])[0], D0(fake, mu_fake)[0]
    bce = F.binary_cross_entropy_with_logits
    assert stats["loss_wrong"].item() == pytest.approx(bce(wrong_l, torch.zeros(BATCH - 1)).item(), rel=1e-5)
    assert stats["loss_real"].item() == pytest.approx(bce(real_l, torch.ones(BATCH)).item(), rel=1e-5)
    assert stats["loss_fake"].item() == pytest.approx(bce(fake_l, torch.zeros(BATCH)).item(), rel=1e-5)
    assert stats["loss_D"].item() == pytest.approx(
        stackgan.matching_aware_d_loss(real_l, wrong_l, fake_l).item(), rel=1e-5)


def test_stage1_parameter_counts_match_the_authors_networks():
    # counted from hanzhanggit/StackGAN-Pytorch code/model.py STAGE1_G / STAGE1_D at their defaults
    # (GF_DIM 128, DF_DIM 64, CONDITION_DIM 128, TEXT.DIMENSION 1024, Z_DIM 100)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(StageIGenerator(100, 1024, 128, 128, 64, 3)) == 10_301_248
    assert count(StageDiscriminator(64, 3, 64, 128)) == 5_715_713
