"""The remedies in D (model.pack, model.minibatch_std, model.spectral_norm), the PacGAN authors'
2-D networks (model.arch: pacgan-mlp) and the remedies sweep job (jobs/sweep_remedies.py)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_ddp_gp as ddp_gp
import torch
import torch.multiprocessing as mp
from test_loop import TINY, _assert_same_state, _run
from torch import nn

from ganray.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, load
from ganray.data import load_dataset
from ganray.families import get_family
from ganray.families.wgan_gp import d_step as wgan_d_step
from ganray.families.wgan_gp import gradient_penalty, interpolate
from ganray.models import build_discriminator, build_generator, count_params
from ganray.models.mlp import LinearMaxout
from ganray.models.remedies import MinibatchStd, Packed, pack, unpack
from ganray.train import checkpoint
from ganray.train.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
IMAGE, POINT = (1, 28, 28), (2,)
REMEDIES = {"pack2": ["model.pack=2"], "minibatch-std": ["model.minibatch_std=2"],
            "spectral-norm": ["model.spectral_norm=true"]}


# ---- pack --------------------------------------------------------------------------------


def test_pack_stacks_consecutive_examples_and_unpack_inverts_it():
    points = torch.arange(8.0).reshape(4, 2)  # [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert pack(points, 2).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    images = torch.arange(6 * 2 * 2 * 2.0).reshape(6, 2, 2, 2)  # [N=6, C=2, 2, 2]
    packed = pack(images, 3)  # [2, 6, 2, 2]
    assert packed.shape == (2, 6, 2, 2)
    for k in range(2):
        for j in range(3):  # pack k's channels 2j, 2j+1 are example 3k+j's two channels
            assert torch.equal(packed[k, 2 * j:2 * j + 2], images[3 * k + j])
    assert torch.equal(unpack(packed, 3), images)
    cl = images.contiguous(memory_format=torch.channels_last)
    assert torch.equal(pack(cl, 3), packed) and pack(cl, 3).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="model.pack"):
        pack(points, 3)


@pytest.mark.parametrize("family,shape,arch", [("gan", IMAGE, "dcgan"), ("wgan-gp", IMAGE, "dcgan"),
                                               ("gan", POINT, "mlp"), ("wgan-gp", POINT, "pacgan-mlp")])
def test_packed_d_gives_one_logit_per_pack_that_depends_on_its_pack_alone(family, shape, arch):
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(arch=arch, width=0.125, pack=4), shape, family).eval()  # no dropout
    first = next(mod for mod in D.modules() if isinstance(mod, (nn.Conv2d, nn.Linear)))
    assert (first.in_channels if isinstance(first, nn.Conv2d) else first.in_features) == 4 * shape[0]
    x = torch.randn(12, *shape)
    out = D(x)
    assert out.shape == (3,)
    x2 = x.clone()
    x2[5] += 1.0  # example 5 is in pack 1 (examples 4..7)
    out2 = D(x2)
    assert out2[1] != out[1] and out2[0] == out[0] and out2[2] == out[2]


def test_packed_began_autoencoder_unpacks_its_reconstructions():
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(width=0.125, pack=2), IMAGE, "began")
    assert isinstance(D, Packed) and D.D.encoder[0].in_channels == 2 and D.D.decoder[-1].out_channels == 2
    x = torch.randn(6, *IMAGE)
    assert D(x).shape == (6, *IMAGE)
    assert torch.equal(D(x), unpack(D.D(pack(x, 2)), 2))


# ---- minibatch standard deviation ----------------------------------------------------------


def test_minibatch_std_feature_on_a_known_batch():
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [1.0, 3.0]])
    y = MinibatchStd(2)(x)
    # group 0 (rows 0, 1): stds (÷ g) 1 and 2 -> 1.5; group 1 (rows 2, 3): 0 (sqrt(1e-8) = 1e-4) and 1 -> 0.50005
    assert y[:, :2].tolist() == x.tolist()
    torch.testing.assert_close(y[:, 2], torch.tensor([1.5, 1.5, 0.50005, 0.50005]), rtol=0, atol=1e-6)
    images = torch.zeros(4, 2, 3, 3)
    images[1] = 2.0  # group 0: every feature's std is 1; group 1 (all zeros): 1e-4
    out = MinibatchStd(2)(images)
    assert out.shape == (4, 3, 3, 3) and torch.equal(out[:, :2], images)
    torch.testing.assert_close(out[:2, 2], torch.ones(2, 3, 3))
    torch.testing.assert_close(out[2:, 2], torch.full((2, 3, 3), 1e-4))


@pytest.mark.parametrize("shape,arch", [(IMAGE, "dcgan"), (POINT, "mlp"), (POINT, "pacgan-mlp")])
def test_minibatch_std_groups_never_straddle_real_and_fake(shape, arch):
    """d_step's one forward over [real, fake], N = 8 each, pack 2: 4 packs each, groups of 4 packs:
    the real logits do not move when a fake changes. A group of all 8 packs (a layer that mixed
    them, as StyleGAN's strided groups would) does move them: the check can fail."""
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(arch=arch, width=0.125, pack=2, minibatch_std=4), shape, "wgan-gp")
    real, fake = torch.randn(8, *shape), torch.randn(8, *shape)
    other_fake = fake + torch.randn_like(fake)
    a, b = D(torch.cat([real, fake])), D(torch.cat([real, other_fake]))
    assert a.shape == (8,)
    assert torch.equal(a[:4], b[:4]) and not torch.equal(a[4:], b[4:])
    mixing = next(mod for mod in D.modules() if isinstance(mod, MinibatchStd))
    mixing.group = 8
    a, b = D(torch.cat([real, fake])), D(torch.cat([real, other_fake]))
    assert not torch.equal(a[:4], b[:4])


# ---- spectral norm -----------------------------------------------------------------------------


@pytest.mark.parametrize("family,shape", [("gan", IMAGE), ("began", IMAGE), ("gan", POINT)])
def test_spectral_norm_makes_every_weights_largest_singular_value_one(family, shape):
    torch.manual_seed(0)
    D = build_discriminator(ModelConfig(width=0.125, spectral_norm=True), shape, family)
    layers = [mod for mod in D.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    assert layers and all(nn.utils.parametrize.is_parametrized(mod, "weight") for mod in layers)
    keys = list(D.state_dict())  # the power iteration's u and v are buffers: checkpoints hold them
    for suffix in ("parametrizations.weight.original", "parametrizations.weight.0._u", "parametrizations.weight.0._v"):
        assert sum(k.endswith(suffix) for k in keys) == len(layers), suffix
    with torch.no_grad():
        D(torch.randn(4, *shape))  # a training forward: one power iteration per layer
        for mod in layers:  # more of them (training runs one per forward): σ's estimate converges
            sn = mod.parametrizations.weight[0]
            sn._power_method(sn._reshape_weight_to_matrix(mod.parametrizations.weight.original), 300)
    D.eval()  # eval: W / σ with the u, v the iterations left, no further iteration
    for mod in layers:
        W = mod.weight.detach()  # W / σ(W), σ from the power iteration
        sigma_max = torch.linalg.matrix_norm(W.reshape(W.shape[0], -1), ord=2)
        assert sigma_max == pytest.approx(1.0, abs=2e-3), mod


# ---- WGAN-GP per pack ----------------------------------------------------------------------------


class LinearCritic(nn.Module):
    """D(p) = w . p + b on packed inputs [P, 4] (packs of 2 points): ∇_p D = w for every pack."""

    def __init__(self, w: list[float]):
        super().__init__()
        self.lin = nn.Linear(len(w), 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([w]))
            self.lin.bias.fill_(0.5)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return self.lin(p).squeeze(1)  # [P]


def test_wgan_gp_penalty_is_per_pack_on_a_linear_critic():
    """||w|| = ||(1, 2, 2, 0)|| = 3 per pack, so gp = (3 - 1)^2 = 4; per example the norms would be
    ||(1, 2)|| = sqrt(5) and ||(2, 0)|| = 2, gp 0.89: the penalty is the packs'."""
    D = Packed(LinearCritic([1.0, 2.0, 2.0, 0.0]), 2)
    x_hat = torch.randn(6, 2, requires_grad=True)
    gp, grad_norm = gradient_penalty(D(x_hat), x_hat)
    torch.testing.assert_close(grad_norm, torch.full((3,), 3.0))
    assert float(gp.detach()) == pytest.approx(4.0, abs=1e-6)
    # the step's own statistics, the interpolation drawn inside (one weight per pack)
    tc = load(None, ["train.family=wgan-gp", "data.dataset=ring8", "train.batch_size=6"]).train
    opt = torch.optim.SGD(D.parameters(), lr=0.0)
    stats = wgan_d_step(nn.Identity(), D, opt, torch.randn(6, 2), torch.randn(6, 2), {}, tc)
    assert float(stats["gp"]) == pytest.approx(4.0, abs=1e-6) and float(stats["grad_norm"]) == pytest.approx(3.0)


def test_wgan_gp_interpolates_each_pack_with_one_weight():
    torch.manual_seed(0)
    real, fake = torch.randn(8, 1, 2, 2), torch.randn(8, 1, 2, 2)
    eps = ((interpolate(real, fake, pack=4) - fake) / (real - fake)).flatten(1)  # [8, 4]: eps of each example
    per_example = eps.mean(1)
    assert torch.allclose(eps, per_example[:, None], atol=1e-5)
    assert torch.allclose(per_example[:4], per_example[0], atol=1e-5)
    assert torch.allclose(per_example[4:], per_example[4], atol=1e-5) and abs(per_example[0] - per_example[4]) > 1e-3
    torch.manual_seed(0)
    x1 = interpolate(real, fake)  # pack 1: one weight per example, the draws of before
    torch.manual_seed(0)
    eps1 = torch.rand(8, 1, 1, 1)
    assert torch.equal(x1, eps1 * real + (1 - eps1) * fake)


# ---- every family with every remedy ---------------------------------------------------------------


@pytest.mark.parametrize("family", ["gan", "wgan-gp", "began"])
@pytest.mark.parametrize("remedy", list(REMEDIES))
def test_each_family_steps_with_each_remedy(family, remedy):
    cfg = load(None, [*TINY, f"train.family={family}", "train.n_critic=1", *REMEDIES[remedy]])
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    fam = get_family(family)
    m = fam.build(cfg, data.shape)
    before = [p.detach().clone() for p in m.D.parameters()]
    g = torch.Generator().manual_seed(0)
    stats = fam.step(m, lambda: data.x[torch.randint(0, len(data.x), (8,), generator=g)],
                     lambda n: torch.randn(n, cfg.model.z_dim, generator=g), fam.init_state(), cfg.train)
    assert all(math.isfinite(float(v)) for v in stats.values())
    assert any(not torch.equal(a, p) for a, p in zip(before, m.D.parameters()))


def test_resume_with_remedies_is_bitwise_equal_to_a_straight_run(tmp_path):
    """wgan-gp with pack 2 (one interpolation weight per pack), minibatch-std and spectral norm
    (its u, v buffers in the checkpoint): 4 steps, a checkpoint file, 4 more = 8 straight."""
    cfg = load(None, [*TINY, "train.family=wgan-gp", "train.n_critic=2", "train.steps=8", "train.checkpoint_every=4",
                      "model.pack=2", "model.minibatch_std=2", "model.spectral_norm=true"])
    data = load_dataset(cfg.data)
    straight, ckpts, _ = _run(cfg, data=data)
    _, ckpts_half, _ = _run(cfg.replace(**{"train.steps": 4}), data=data)
    state = checkpoint.load(checkpoint.save(ckpts_half[4], tmp_path / "step_4.pt"))
    state["config"]["train"]["steps"] = 8
    resumed, ckpts2, reports = _run(cfg, resume=state, data=data)
    assert resumed.step == straight.step == 8 and reports[0][0] == 5  # the log step after the checkpoint
    assert any(k.endswith("._u") for k in ckpts[8]["D"])
    for key in ("G", "D", "opt_G", "opt_D", "step"):
        _assert_same_state(ckpts[8][key], ckpts2[8][key], key)
    # a checkpoint of another D is refused, naming the key
    with pytest.raises(CheckpointError, match=r"model.pack: checkpoint has 2, config has 1"):
        checkpoint.check_compatible(state, cfg.replace(**{"model.pack": 1, "model.minibatch_std": 0}))


def _ddp_worker(rank: int, init_file: str, batch: dict, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        with ddp_gp.float64():
            m = ddp_gp.build(_ddp_cfg(), batch["states"], lambda mod: nn.parallel.DistributedDataParallel(
                mod, broadcast_buffers=False))
            mine = slice(rank * DDP_N, (rank + 1) * DDP_N)
            D, _ = ddp_gp.d_grads(m, batch["real"][mine], batch["fake"][mine], batch["eps"][mine], _ddp_cfg().train)
        torch.save({"D": D, "D_state": m.D_module.state_dict()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


DDP_N = 4  # examples per rank: 2 packs of 2, one group of 2 packs, in each of real, fake and x_hat


def _ddp_cfg() -> Config:
    return Config(data=DataConfig(dataset="mnist5k"), train=TrainConfig(family="wgan-gp", batch_size=DDP_N),
                  model=ModelConfig(z_dim=4, width=0.125, pack=2, minibatch_std=2, spectral_norm=True))


@pytest.mark.timeout(120)
def test_wgan_gp_with_remedies_through_ddp_equals_one_process(tmp_path):
    """Two gloo ranks with pack, minibatch-std and spectral norm get the critic gradients (and the
    power iteration's u, v) of one process on the global batch: packs and groups stay in a rank."""
    cfg = _ddp_cfg()
    with ddp_gp.float64():
        torch.manual_seed(0)
        m0 = get_family("wgan-gp").build(cfg, IMAGE)
        g = torch.Generator().manual_seed(1)
        batch = {"states": {"G": m0.G_module.state_dict(), "D": m0.D_module.state_dict()},
                 "real": torch.rand(2 * DDP_N, *IMAGE, generator=g) * 2 - 1,
                 "fake": torch.rand(2 * DDP_N, *IMAGE, generator=g) * 2 - 1,
                 "eps": torch.rand(DDP_N, 1, 1, 1, generator=g).repeat_interleave(2, dim=0)}  # one per pack
        single = ddp_gp.build(cfg, batch["states"])
        D_single, _ = ddp_gp.d_grads(single, batch["real"], batch["fake"], batch["eps"], cfg.train)
    mp.start_processes(_ddp_worker, args=(str(tmp_path / "store"), batch, str(tmp_path)), nprocs=2,
                       start_method="spawn", join=True)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt")
        ddp_gp.assert_grads_close(got["D"], D_single, f"rank {r}: critic gradient (DDP) vs one process")
        for k, v in single.D_module.state_dict().items():
            torch.testing.assert_close(got["D_state"][k], v, rtol=ddp_gp.RTOL, atol=ddp_gp.ATOL, msg=k)


# ---- pacgan-mlp -----------------------------------------------------------------------------------


@pytest.mark.parametrize("z_dim", [2, 5])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_pacgan_mlp_parameter_counts_and_initialisation(z_dim, m):
    torch.manual_seed(0)
    mc = ModelConfig(arch="pacgan-mlp", z_dim=z_dim, pack=m)
    G, D = build_generator(mc, POINT), build_discriminator(mc, POINT, "gan")
    # G: z_dim*400 (no bias) + 4 BatchNorms (400 scales + 400 shifts) + 3*400*400 + 400*2 + 2
    assert count_params(G) == z_dim * 400 + 4 * 800 + 3 * 400 * 400 + 802 == 400 * z_dim + 484_002
    # D: LinearMaxout 2m -> 200x5, 200 -> 200x5 twice, Linear 200 -> 1
    assert count_params(D) == (2 * m * 1000 + 1000) + 2 * (200 * 1000 + 1000) + 201 == 2000 * m + 403_201
    with_std = build_discriminator(ModelConfig(arch="pacgan-mlp", pack=m, minibatch_std=2), POINT, "gan")
    assert count_params(with_std) == 2000 * m + 403_202
    linears = [mod for net in (G, D) for mod in net.modules() if isinstance(mod, nn.Linear)]
    assert len(linears) == 5 + 4 and sum(mod.bias is None for mod in linears) == 4
    assert all(mod.bias is None or not mod.bias.any() for mod in linears)
    big = torch.cat([mod.weight.detach().flatten() for mod in linears if mod.weight.numel() >= 40_000])
    assert float(big.std()) == pytest.approx(0.02, rel=0.02) and abs(float(big.mean())) < 1e-3
    bns = [mod for mod in G.modules() if isinstance(mod, nn.BatchNorm1d)]
    assert [(bn.eps, bn.momentum) for bn in bns] == [(1e-4, 0.05)] * 4
    assert D(torch.randn(8 * m, 2)).shape == (8,) and G(torch.randn(8, z_dim)).shape == (8, 2)


def test_linear_maxout_takes_the_max_of_each_units_consecutive_pieces():
    layer = LinearMaxout(1, units=2, pieces=3)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0], [-1.0], [2.0], [0.0], [-3.0], [0.5]]))
        layer.linear.bias.zero_()
    # x = 1: pieces (1, -1, 2) -> 2 and (0, -3, 0.5) -> 0.5; x = -1: (-1, 1, -2) -> 1 and (0, 3, -0.5) -> 3
    assert layer(torch.tensor([[1.0], [-1.0]])).tolist() == [[2.0, 0.5], [1.0, 3.0]]


# ---- config checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    (["train.family=vae", "model.pack=2"], r"model.pack: the vae family has no discriminator"),
    (["sweep.family=[gan, vae]", "model.spectral_norm=true"], r"model.spectral_norm: the vae family"),
    (["train.batch_size=64", "model.pack=3"], r"model.pack: 3 does not divide train.batch_size 64"),
    (["train.batch_size=64", "model.pack=2", "model.minibatch_std=3"],
     r"model.minibatch_std: group size 3 does not divide D's batch of 32"),
    (["train.batch_size=64", "sweep.variants=['pack3: model.pack=3']"], r"model.pack: 3 does not divide"),
    (["model.arch=pacgan-mlp"], r"model.arch: pacgan-mlp is for 2D data"),
])
def test_bad_remedy_combinations_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(None, overrides)


def test_build_discriminator_refuses_remedies_for_the_vae():
    with pytest.raises(ConfigError, match="model.minibatch_std: the vae family has no discriminator"):
        build_discriminator(ModelConfig(width=0.125, minibatch_std=2), IMAGE, "vae")


# ---- the job ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_remedies_job_smoke_runs_every_variant(tmp_path):
    """`python jobs/sweep_remedies.py --smoke` on a real local Ray: exit 0, one trial per variant,
    each with its experiment.variant and a verdict."""
    env = {**os.environ, "RAY_ADDRESS": "local", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "jobs/sweep_remedies.py", "--smoke", "--storage", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-6000:]}"
    exp = tmp_path / "remedies-mnist-local-smoke"
    trials = sorted(p for p in (exp / "trials").iterdir() if p.is_dir())
    variants = sorted(load(t / "config.yaml").experiment.variant for t in trials)
    assert variants == ["baseline", "control-z10", "minibatch-std", "pack2", "spectral-norm", "ttur"]
    assert all((t / "verdict.json").is_file() for t in trials)
    assert (exp / "report.md").is_file()
