"""WGAN-GP's gradient penalty (a double backward: autograd.grad with create_graph=True, then
backward) through a DistributedDataParallel critic: two gloo workers, each holding its half of
one global batch, get the gradients one process gets on the whole batch.

Everything runs in float64, so the only difference left between the two computations is the
order of the sums (two half-batch means all-reduced and halved against one mean over the global
batch): about 1e-16 relative. RTOL = 1e-9 is far above that round-off and far below any real
difference: a dropout mask drawn per rank moved the critic's gradients by ~0.5 (relative ~1),
and a penalty whose parameter gradient missed DDP's reducer would be off by the penalty's share,
which the test checks is large.
"""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from ganray.config import Config, DataConfig, ModelConfig, TrainConfig
from ganray.families import Models, get_family

IMAGE = (1, 28, 28)  # MNIST, the shape the wgan-gp presets train on
N = 3  # examples per rank; the global batch is WORLD * N
WORLD = 2
Z_DIM = 4
RTOL, ATOL = 1e-9, 1e-12  # float64; see the module docstring


def tiny_cfg() -> Config:
    return Config(data=DataConfig(dataset="mnist5k"), model=ModelConfig(z_dim=Z_DIM, width=0.125),
                  train=TrainConfig(family="wgan-gp", batch_size=N))


@contextlib.contextmanager
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def build(cfg: Config, states: dict, wrap=None) -> Models:
    """The wgan-gp models as ganray builds them (optionally DDP-wrapped), with the given weights."""
    fam = get_family("wgan-gp")
    m = fam.build(cfg, IMAGE) if wrap is None else fam.build(cfg, IMAGE, wrap)
    m.G_module.load_state_dict(states["G"])
    m.D_module.load_state_dict(states["D"])
    return m


def d_grads(m: Models, real, fake, eps, tc: TrainConfig) -> tuple[list[torch.Tensor], dict]:
    """ganray's own critic step; the fakes are given (G = identity, z = the fakes), because a
    rank's G(z) depends on its half batch through G's BatchNorm; G is compared in its own step."""
    stats = get_family("wgan-gp").d_step(nn.Identity(), m.D, m.opt_D, real, fake, {}, tc, eps=eps)
    return [p.grad.clone() for p in m.D_module.parameters()], {k: float(v) for k, v in stats.items()}


def g_grads(m: Models, z, tc: TrainConfig) -> list[torch.Tensor]:
    """ganray's own G step, as adversarial_step calls it: G possibly wrapped, D unwrapped."""
    get_family("wgan-gp").g_step(m.G, m.D_module, m.opt_G, z, {}, tc)
    return [p.grad.clone() for p in m.G_module.parameters()]


def _worker(rank: int, init_file: str, batch: dict, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        with float64():
            torch.manual_seed(100 + rank)  # a different init per rank; the parent's weights are loaded below
            cfg = tiny_cfg()

            def wrap(module: nn.Module) -> nn.Module:  # what ray.train.torch.prepare_model does on a CPU worker
                return nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)

            m = build(cfg, batch["states"], wrap)
            mine = slice(rank * N, (rank + 1) * N)
            D, stats = d_grads(m, batch["real"][mine], batch["fake"][mine], batch["eps"][mine], cfg.train)
            G = g_grads(m, batch["z"][mine], cfg.train)
            D_after_g = [p.grad.clone() for p in m.D_module.parameters()]
            D_weights = [p.detach().clone() for p in m.D_module.parameters()]
        torch.save({"D": D, "stats": stats, "G": G, "D_after_g": D_after_g, "D_weights": D_weights},
                   f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def assert_grads_close(got: list[torch.Tensor], want: list[torch.Tensor], what: str) -> None:
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=lambda m, i=i: f"{what}, parameter {i}: {m}")


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.timeout(120)
def test_wgan_gp_gradients_through_ddp_equal_one_process_on_the_global_batch(tmp_path):
    cfg = tiny_cfg()
    with float64():
        torch.manual_seed(0)
        m0 = get_family("wgan-gp").build(cfg, IMAGE)
        g = torch.Generator().manual_seed(1)
        batch = {
            "states": {"G": m0.G_module.state_dict(), "D": m0.D_module.state_dict()},
            "real": torch.rand(WORLD * N, *IMAGE, generator=g) * 2 - 1,  # [WN, C, H, W]
            "fake": torch.rand(WORLD * N, *IMAGE, generator=g) * 2 - 1,  # [WN, C, H, W]
            "eps": torch.rand(WORLD * N, 1, 1, 1, generator=g),  # one interpolation weight per example
            "z": torch.randn(WORLD * N, Z_DIM, generator=g),  # [WN, z_dim]
        }
        # One process, the whole global batch: a critic step, then G's step against the stepped critic.
        single = build(cfg, batch["states"])
        D_single, stats_single = d_grads(single, batch["real"], batch["fake"], batch["eps"], cfg.train)
        D_stepped = {k: v.clone() for k, v in single.D_module.state_dict().items()}  # weights only (no buffers)
        D_weights = [p.detach().clone() for p in single.D_module.parameters()]
        # G has BatchNorm, whose training statistics are each rank's own (broadcast_buffers=False, no
        # SyncBatchNorm: docs/distributed.md), so one process's equivalent of the DDP G step is the
        # mean of its gradients on each half: G's loss is (1/W) Σ_r -mean_{i∈r} D(G(z_i)).
        halves = [g_grads(build(cfg, {"G": batch["states"]["G"], "D": D_stepped}), batch["z"][r * N:(r + 1) * N],
                          cfg.train) for r in range(WORLD)]
        G_single = [sum(ps) / WORLD for ps in zip(*halves)]
        # The penalty carries much of the critic's gradient here: a reducer that missed it would fail.
        no_gp = TrainConfig(family="wgan-gp", batch_size=N, gp_lambda=0.0)
        D_no_gp, _ = d_grads(build(cfg, batch["states"]), batch["real"], batch["fake"], batch["eps"], no_gp)
    assert max_abs_diff(D_single, D_no_gp) > 1e-2

    mp.start_processes(_worker, args=(str(tmp_path / "store"), batch, str(tmp_path)), nprocs=WORLD,
                       start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for r, got in enumerate(ranks):
        assert_grads_close(got["D"], D_single, f"rank {r}: critic gradient (DDP) vs one process")
        assert_grads_close(got["D_weights"], D_weights, f"rank {r}: critic after opt_D.step()")
        assert_grads_close(got["G"], G_single, f"rank {r}: G gradient (DDP) vs one process")
        # G's step ran the unwrapped, frozen D: no gradient reached D (its .grad is the critic step's)
        assert all(torch.equal(a, b) for a, b in zip(got["D_after_g"], got["D"])), f"rank {r}: G's step touched D"
    # Each rank's stats are means over its half: their mean is the global batch's.
    for name, value in stats_single.items():
        assert sum(got["stats"][name] for got in ranks) / WORLD == pytest.approx(value, rel=RTOL, abs=ATOL), name


def test_wgan_gp_critic_is_deterministic_and_per_example():
    """What the equality needs: the critic has no dropout and no BatchNorm, so in training mode
    D(x_i) is the same on every call and whatever batch x_i comes in."""
    cfg = tiny_cfg()
    D = get_family("wgan-gp").build(cfg, IMAGE).D
    assert D.training
    assert not any(isinstance(mod, (nn.Dropout, nn.BatchNorm1d, nn.BatchNorm2d)) for mod in D.modules())
    x = torch.rand(2 * N, *IMAGE) * 2 - 1
    torch.testing.assert_close(D(x), D(x), rtol=0, atol=0)
    torch.testing.assert_close(D(x[:N]), D(x)[:N])
    # The GAN family keeps the Keras reference discriminator's dropout.
    assert any(isinstance(mod, nn.Dropout) for mod in get_family("gan").build(cfg, IMAGE).D.modules())
