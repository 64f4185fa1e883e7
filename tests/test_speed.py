"""Speed options (cfg.speed, ganray/train/speed.py): each off by default, each the same step.

"The same step" is checked on what a step computes: its losses, the gradients it leaves on
G's and D's parameters, and the parameters after a few steps. Two things a faster kernel may
legitimately change are set aside, and the tests say where:

- D's Dropout masks are drawn in memory order, so channels_last (or a compiler) draws other
  masks from the same seed: the same distribution, other numbers. The step tests set p = 0.
- The bias of a layer followed by BatchNorm has gradient 0 in exact arithmetic (BN subtracts
  the batch mean), so its float gradient is rounding noise, which Adam normalises into a step
  of about ±lr whatever its size: any reordering of the sums moves these biases by up to 2·lr
  per step. They change no output (the losses agree), and are left out of the parameter
  comparison (`ganray.train.speed.bn_cancelled`).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ganray.config import ConfigError, SpeedConfig, load
from ganray.data import load_dataset
from ganray.families import adam
from ganray.train import speed, train
from ganray.train.state import TrainingState

IMAGE = ["model.width=0.125", "train.batch_size=8", "eval.metrics=[]", "data.n_train=200"]
STEPS = 3
CPU = torch.device("cpu")


def run_steps(cfg, data, steps: int = STEPS, before_prepare=None):
    """`steps` family steps through speed.prepare, as the loop runs them (Dropout off)."""
    s = TrainingState.build(cfg, data, 0, 1, CPU)
    for mod in s.m.D.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    if before_prepare is not None:
        before_prepare(s)
    step = speed.prepare(s, CPU)
    losses = [{k: float(v) for k, v in step(s.m, s.sampler.next_real, s.sampler.sample_z, s.family_state,
                                            cfg.train).items()} for _ in range(steps)]
    grads = {k: {n: p.grad.clone() for n, p in getattr(s.m, k).named_parameters()} for k in "GD"}
    params = {k: {n: p.detach().clone() for n, p in getattr(s.m, k).named_parameters()} for k in "GD"}
    return s, losses, grads, params


def assert_same_step(ref, got, *, rtol: float, atol: float):
    """Losses and gradients within rtol (a gradient: of its model's largest one); parameters
    after the steps within atol, BN-cancelled biases aside (module docstring)."""
    s, losses, grads, params = ref
    for a, b in zip(losses, got[1]):
        for k in a:
            assert abs(a[k] - b[k]) <= rtol * max(abs(a[k]), 1e-3), (k, a[k], b[k])
    for k in "GD":
        g_max = max(g.abs().max() for g in grads[k].values())
        for n, g in grads[k].items():
            assert (g - got[2][k][n]).abs().max() <= rtol * g_max, f"{k}.{n}'s gradient differs"
        skip = speed.bn_cancelled(getattr(s.m, k))
        assert skip or k == "D"  # DCGAN's G has them: the comparison leaves out exactly these
        for n, p in params[k].items():
            if n not in skip:
                assert (p - got[3][k][n]).abs().max() <= atol, f"{k}.{n} differs after {STEPS} steps"


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(load(None, IMAGE).data)


@pytest.fixture(scope="module")
def reference(mnist):
    return run_steps(load(None, IMAGE), mnist)


def test_every_speed_option_is_off_by_default(mnist):
    assert SpeedConfig() == SpeedConfig(adam="default", channels_last=False, compile=False, cuda_graphs=False)
    cfg = load(None, IMAGE)
    s = TrainingState.build(cfg, mnist, 0, 1, CPU)
    assert speed.prepare(s, CPU) is s.family.step  # the loop runs the family's own step
    assert not speed.compiled(s.m.G) and not speed.compiled(s.m.D)
    conv = next(p for p in s.m.D.parameters() if p.dim() == 4 and p.shape[1] > 1)  # 1 channel: both layouts
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last)
    group = s.m.opt_D.param_groups[0]
    assert group["foreach"] is None and group["fused"] is None and group["capturable"] is False


def test_adam_implementations_make_the_same_update():
    """Same parameters, same 5 gradients: for-loop, foreach and fused Adam (betas 0.5, 0.999)."""
    tc = load(None, []).train
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(16, 8, 5, 5, generator=g), torch.randn(16, generator=g)]
    grads = [[torch.randn(p.shape, generator=g) for p in init] for _ in range(5)]
    flags = {"for-loop": (False, None), "foreach": (True, None), "fused": (None, True)}  # (foreach, fused)
    out = {}
    for impl, (foreach, fused) in flags.items():
        params = [nn.Parameter(p.clone()) for p in init]
        opt = adam(params, 2e-4, tc, SpeedConfig(adam=impl))
        assert (opt.defaults["foreach"], opt.defaults["fused"]) == (foreach, fused)
        for step_grads in grads:
            for p, gr in zip(params, step_grads):
                p.grad = gr.clone()
            opt.step()
        out[impl] = [p.detach() for p in params]
        assert (out[impl][0] - init[0]).abs().mean() > 1e-4  # the updates happened (5 steps of up to lr)
    for a, b in zip(out["for-loop"], out["foreach"]):
        assert torch.equal(a, b)  # bitwise on the CPU (measured; the same ops, batched)
    for a, b in zip(out["for-loop"], out["fused"]):
        torch.testing.assert_close(b, a, rtol=2.5e-7, atol=1e-9)  # one fused kernel: rounding, 2 ulps (lr 2e-4)


def test_the_adam_option_reaches_the_loop(mnist):
    """Through train(): speed.adam=foreach builds foreach Adam and ends bitwise where the default does."""
    states = {}
    for impl in ("default", "foreach"):
        cfg = load(None, [*IMAGE, "train.steps=4", "train.log_every=2", "train.checkpoint_every=4",
                          f"speed.adam={impl}"])
        train(cfg, report=lambda *a, **k: None,
              save_checkpoint=lambda step, st, m, impl=impl: states.__setitem__(impl, st),  # the last: step 4
              should_stop=lambda *a: False, data=mnist)
        assert states[impl]["step"] == 4
    assert states["foreach"]["opt_D"]["param_groups"][0]["foreach"] is True
    assert states["default"]["opt_D"]["param_groups"][0]["foreach"] is None
    for k in ("G", "D"):
        for n, v in states["default"][k].items():
            assert torch.equal(v, states["foreach"][k][n]), f"{k}.{n}"


def test_channels_last_computes_the_same_step(mnist, reference):
    cfg = load(None, [*IMAGE, "speed.channels_last=true"])
    got = run_steps(cfg, mnist)
    s = got[0]
    convs = [p for m in (s.m.G, s.m.D) for p in m.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    # 3 steps: losses and gradients to 1e-5, parameters to 1e-6 (lr 2e-4; measured: 2e-8)
    assert_same_step(reference, got, rtol=1e-5, atol=1e-6)


def test_channels_last_converts_batches_and_restored_adam_moments(mnist):
    fed = []
    step = speed.channels_last_batches(lambda m, next_real, sample_z, state, tc: fed.append(next_real()) or {})
    step(None, lambda: torch.randn(2, 3, 4, 4), None, {}, None)  # 3 channels: NCHW and NHWC differ
    assert fed[0].is_contiguous(memory_format=torch.channels_last) and not fed[0].is_contiguous()
    # Adam's moments from a step taken without the option (as a checkpoint restores them)
    s = TrainingState.build(load(None, IMAGE), mnist, 0, 1, CPU)
    s.family.step(s.m, s.sampler.next_real, s.sampler.sample_z, s.family_state, s.cfg.train)
    speed.to_channels_last(s.m)
    for opt in (s.m.opt_G, s.m.opt_D):
        moments = [st[k] for st in opt.state.values() for k in ("exp_avg", "exp_avg_sq") if st[k].dim() == 4]
        assert moments and all(v.is_contiguous(memory_format=torch.channels_last) for v in moments)


def test_compile_computes_the_same_step(mnist, reference):
    """torch.compile of G's and D's forward, traced by dynamo and AOT autograd (backend
    aot_eager: no code generation, which on this CPU takes minutes) — bitwise."""
    frames = []
    orig = torch.compile

    def counting(fn, backend):  # torch.compile, counting the graphs it hands the backend
        real = torch._dynamo.lookup_backend(backend)
        return orig(fn, backend=lambda gm, example_inputs: frames.append(gm) or real(gm, example_inputs))

    torch._dynamo.reset()
    cfg = load(None, [*IMAGE, "speed.compile=true", "speed.compile_backend=aot_eager"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speed.torch, "compile", counting)
        got = run_steps(cfg, mnist)
    assert speed.compiled(got[0].m.G) and speed.compiled(got[0].m.D)
    assert len(frames) >= 2  # G's and D's forward were captured (not run eagerly)
    assert_same_step(reference, got, rtol=0, atol=0)


def test_cuda_graphs_is_refused_without_a_gpu(mnist):
    with pytest.raises(ConfigError, match=r"speed\.cuda_graphs: CUDA-graph capture needs a GPU"):
        load(None, ["speed.cuda_graphs=true"])
    with pytest.raises(ConfigError, match=r"speed\.cuda_graphs: only for the gan and wgan-gp families"):
        load(None, ["speed.cuda_graphs=true", "scaling.use_gpu=true", "train.family=began"])
    with pytest.raises(ConfigError, match=r"speed\.cuda_graphs: one worker only"):
        load(None, ["speed.cuda_graphs=true", "scaling.use_gpu=true", "scaling.num_workers=2",
                    "scaling.gpus_per_worker=1"])
    # a config for a GPU (valid where it is written) that lands on a CPU: the run refuses it, naming the key
    cfg = load(None, [*IMAGE, "speed.cuda_graphs=true", "scaling.use_gpu=true"])
    s = TrainingState.build(cfg, mnist, 0, 1, CPU)
    with pytest.raises(ConfigError, match=r"speed\.cuda_graphs: CUDA-graph capture needs a CUDA device"):
        speed.prepare(s, CPU)
