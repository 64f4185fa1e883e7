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

import contextlib
import copy
import dataclasses
import io
import types

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


# ---- wgan-gp under speed.compile (G only: the penalty is a double backward through D) -----------


def test_compile_with_wgan_gp_compiles_g_alone_and_computes_the_same_step(mnist):
    """WGAN-GP's penalty differentiates ∇_x D(x_hat) (a double backward through D), which
    AOTAutograd does not support: compiling D failed at the first step. speed.compile compiles G
    alone for it, and the step equals the eager step (aot_eager: bitwise)."""
    items = [*IMAGE, "train.family=wgan-gp", "train.n_critic=2"]
    ref = run_steps(load(None, items), mnist)
    torch._dynamo.reset()
    got = run_steps(load(None, [*items, "speed.compile=true", "speed.compile_backend=aot_eager"]), mnist)
    assert speed.compiled(got[0].m.G) and not speed.compiled(got[0].m.D)
    assert all(r["gp"] > 0 for r in ref[1])  # the penalty was computed (and differentiated)
    assert_same_step(ref, got, rtol=0, atol=0)


# ---- a resume runs this config's Adam kernels, with moments laid out like the parameters --------


def checkpoint_after(cfg, data, steps: int = 2) -> dict:
    """A checkpoint of `steps` steps of `cfg` (through speed.prepare), as checkpoint.load reads it back."""
    s, *_ = run_steps(cfg, data, steps)
    buf = io.BytesIO()
    torch.save(s.snapshot(), buf)
    return torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)


def resume(cfg, data, ckpt: dict, steps: int = 2, before_restore=None):
    """`steps` steps of `cfg` from `ckpt`: the state after restore, and G's and D's parameters after."""
    s = TrainingState.build(cfg, data, 0, 1, CPU)
    if before_restore is not None:
        before_restore(ckpt)
    s.restore(ckpt, CPU)
    restored = s
    step = speed.prepare(s, CPU)
    for _ in range(steps):
        step(s.m, s.sampler.next_real, s.sampler.sample_z, s.family_state, cfg.train)
    return restored, {f"{k}.{n}": p.detach().clone() for k in "GD" for n, p in getattr(s.m, k).named_parameters()}


def test_a_resume_runs_the_adam_kernels_of_its_own_config(mnist):
    """load_state_dict puts back the checkpoint's foreach/fused/capturable; restore re-applies speed.adam's."""
    ckpt = checkpoint_after(load(None, [*IMAGE, "speed.adam=foreach"]), mnist)
    assert ckpt["opt_D"]["param_groups"][0]["foreach"] is True
    out = {}
    for impl, (foreach, fused) in {"default": (None, None), "for-loop": (False, None), "fused": (None, True)}.items():
        s, out[impl] = resume(load(None, [*IMAGE, f"speed.adam={impl}"]), mnist, copy.deepcopy(ckpt))
        for opt in (s.m.opt_G, s.m.opt_D):
            for g in opt.param_groups:
                assert (g["foreach"], g["fused"], g["capturable"]) == (foreach, fused, False), impl
            steps = [st["step"] for st in opt.state.values()]
            assert all(t.dtype == torch.float32 and t.device.type == "cpu" and float(t) == 4 for t in steps)
    skip = {f"{k}.{n}" for k in "GD" for n in speed.bn_cancelled(getattr(s.m, k))}  # module docstring
    for k, v in out["for-loop"].items():
        assert torch.equal(v, out["default"][k]), k  # the CPU's default is the for-loop
        if k not in skip:
            assert (out["fused"][k] - v).abs().max() <= 1e-6, k  # another kernel: rounding (as channels_last)


def test_a_capturable_checkpoint_resumes_on_the_cpu(mnist):
    """A checkpoint from a speed.cuda_graphs run: param groups capturable, steps float32 tensors
    (here simulated: no GPU). Resumed on the CPU without cuda_graphs it trains (it raised "If
    capturable=True, params and state_steps must be on supported devices"); resumed with
    cuda_graphs (the config a GPU run would have) the groups are capturable again."""
    ckpt = checkpoint_after(load(None, IMAGE), mnist)
    plain = copy.deepcopy(ckpt)
    for key in ("opt_G", "opt_D"):
        for g in ckpt[key]["param_groups"]:
            g["capturable"] = True
        for st in ckpt[key]["state"].values():
            st["step"] = torch.tensor(float(st["step"]), dtype=torch.float32)
    s, params = resume(load(None, IMAGE), mnist, copy.deepcopy(ckpt))
    assert not any(g["capturable"] for g in s.m.opt_D.param_groups)
    _, straight = resume(load(None, IMAGE), mnist, plain)
    for k, v in straight.items():
        assert torch.equal(params[k], v), k  # the same run as from a checkpoint that never was capturable
    gpu_cfg = dataclasses.replace(load(None, IMAGE), speed=SpeedConfig(cuda_graphs=True))  # past the config check
    s = TrainingState.build(gpu_cfg, mnist, 0, 1, CPU)
    s.restore(copy.deepcopy(ckpt), CPU)
    for p, st in s.m.opt_G.state.items():
        assert st["step"].dtype == torch.float32 and st["step"].device == p.device
    assert all(g["capturable"] for g in s.m.opt_G.param_groups)


def test_a_resume_lays_adam_moments_out_like_the_parameters(mnist):
    """Moments of a channels_last + fused run, resumed with channels_last off: the fused kernel
    walks parameters and moments as flat memory, so NHWC moments beside NCHW parameters paired
    elements that do not belong together (wrong updates, no error). Restore lays each moment
    out like its parameter: the resumed run equals one from the same moments made NCHW by hand."""
    ckpt = checkpoint_after(load(None, [*IMAGE, "speed.channels_last=true", "speed.adam=fused"]), mnist)
    nhwc = [v for st in ckpt["opt_D"]["state"].values() for v in st.values()
            if torch.is_tensor(v) and v.dim() == 4 and v.shape[1] > 1]
    assert nhwc and all(not v.is_contiguous() for v in nhwc)  # the checkpoint holds NHWC moments

    def by_hand(c):
        for key in ("opt_G", "opt_D"):
            for st in c[key]["state"].values():
                for k, v in st.items():
                    if torch.is_tensor(v) and v.dim() == 4:
                        st[k] = v.contiguous()

    cfg = load(None, [*IMAGE, "speed.adam=fused"])
    s, got = resume(cfg, mnist, copy.deepcopy(ckpt), steps=3)
    for opt in (s.m.opt_G, s.m.opt_D):
        for p, st in opt.state.items():
            assert st["exp_avg"].stride() == p.stride() and st["exp_avg_sq"].stride() == p.stride()
    _, want = resume(cfg, mnist, copy.deepcopy(ckpt), steps=3, before_restore=by_hand)
    for k, v in want.items():
        assert torch.equal(got[k], v), f"{k}: {float((got[k] - v).abs().max())}"


# ---- GraphedStep's logic on the CPU (a mock: no GPU here) ---------------------------------------


class FakeStream:
    def wait_stream(self, other):
        pass


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: counts replays (a real replay reruns the captured kernels)."""

    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's stream and graph calls stubbed. This is a MOCK: no GPU exists on this machine,
    so what runs is GraphedStep's own logic (the draws it records, the inputs it feeds the
    capture, the buffers it refills, the mismatch it refuses), not a CUDA capture; the real one
    is bench/gpu_check.py's speed_cuda_graphs* and trial_cuda_graphs (GPU only)."""
    captures = []

    @contextlib.contextmanager
    def graph(g, capture_error_mode="global"):
        captures.append((g, capture_error_mode))
        yield

    monkeypatch.setattr(torch.cuda, "Stream", FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    return captures


def test_graphed_step_feeds_the_capture_the_draws_of_the_eager_step(fake_cuda):
    drawn = []  # every input the samplers hand out, in order

    def next_real():
        drawn.append(torch.full((2, 3), float(len(drawn))))
        return drawn[-1]

    def sample_z(n):
        drawn.append(torch.full((n, 4), 100.0 + len(drawn)))
        return drawn[-1]

    seen = []  # what the step got, per call

    def step(m, real, z, state, tc):  # a gan step's draws with n_critic 2: real, z, real, z, then G's z
        got = [real(), z(2), real(), z(2), z(2)]
        seen.append(got)
        return {"loss": sum(x.sum() for x in got)}

    w = nn.Parameter(torch.ones(3))
    w.grad = torch.ones(3)
    m = types.SimpleNamespace(opts={"G": torch.optim.Adam([w])})
    g = speed.GraphedStep(step, warmup=2)
    for _ in range(2):  # eager warm-up: the samplers' own tensors reach the step
        g(m, next_real, sample_z, {}, None)
        assert all(a is b for a, b in zip(seen[-1], drawn[-5:]))
    assert g.draws == [("real", 0), ("z", 2), ("real", 0), ("z", 2), ("z", 2)] and g.graph is None
    assert w.grad is not None
    g(m, next_real, sample_z, {}, None)  # 3rd: drawn from the samplers, captured, replayed
    assert len(fake_cuda) == 1 and fake_cuda[0][1] == "thread_local" and g.graph.replays == 1
    assert w.grad is None  # set to None before the capture: the graph allocates the gradients in its pool
    assert all(a is b for a, b in zip(seen[-1], g.static_in))  # the capture read the static buffers
    assert [tuple(b.shape) for b in g.static_in] == [(2, 3), (2, 4), (2, 3), (2, 4), (2, 4)]  # real, z in order
    assert all(torch.equal(b, x) for b, x in zip(g.static_in, drawn[10:15]))  # holding the 3rd step's draws
    buffers = list(g.static_in)
    stats = g(m, next_real, sample_z, {}, None)  # 4th: replay only, buffers refilled in place
    assert len(seen) == 3 and len(fake_cuda) == 1 and g.graph.replays == 2
    assert len(drawn) == 20 and all(a is b for a, b in zip(g.static_in, buffers))
    assert all(torch.equal(b, x) for b, x in zip(g.static_in, drawn[15:20]))
    assert stats["loss"] is not g.static_out["loss"] and torch.equal(stats["loss"], g.static_out["loss"])


def test_graphed_step_refuses_a_step_whose_draws_change(fake_cuda):
    sizes = iter([4, 4, 8])

    def step(m, real, z, state, tc):
        return {"z": z(next(sizes)).sum()}

    g = speed.GraphedStep(step, warmup=3)
    g(None, None, lambda n: torch.zeros(n, 2), {}, None)
    g(None, None, lambda n: torch.zeros(n, 2), {}, None)
    with pytest.raises(RuntimeError, match=r"speed\.cuda_graphs: the step drew \[\('z', 8\)\].*same inputs"):
        g(None, None, lambda n: torch.zeros(n, 2), {}, None)
