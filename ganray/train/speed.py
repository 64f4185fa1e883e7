"""Speed options (`cfg.speed`): the same family step, computed faster. Each is off by default
until a GPU measurement (bench/gpu_check.py) says it pays; each has a CPU test that it
computes the same step (tests/test_speed.py).

- `speed.adam`: Adam's kernels (for-loop, foreach, fused) — chosen where the optimisers are
  built (`ganray.families.adam`); nothing to do here.
- `speed.channels_last`: image models' parameters (and Adam's moments) and every real batch in
  NHWC memory order, which cuDNN's and oneDNN's convolutions prefer.
- `speed.compile`: G's and D's forward (and so their backward) through torch.compile, in
  place (`compile_forward`); G's alone for wgan-gp (`DOUBLE_BACKWARD_THROUGH_D`). G and D are compiled, not the step: the step's optimizer
  updates and `frozen(D)` are Python that the compiler would break the graph on anyway.
- `speed.cuda_graphs` (GPU only): the whole step — n_critic D updates and the G update,
  optimizer steps included — captured once in a CUDA graph and replayed; see `GraphedStep`.

`prepare(s, device)` applies them to a built (and restored) run before the DDP wrap and
returns the step function the loop calls.
"""
from __future__ import annotations

import types
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ganray.config import ConfigError, TrainConfig, is_2d
from ganray.families import Models, NextReal, SampleZ, Stats
from ganray.train.state import TrainingState, layout_like_params

StepFn = Callable[[Models, NextReal, SampleZ, dict, TrainConfig], Stats]


def prepare(s: TrainingState, device: torch.device) -> StepFn:
    """Apply s.cfg.speed to the run `s` (built and restored, models not yet DDP-wrapped)
    and return the step function the loop calls in place of `s.family.step`."""
    sp = s.cfg.speed
    if sp.cuda_graphs and device.type != "cuda":  # the config check sees the settings; this, the device
        raise ConfigError(f"speed.cuda_graphs: CUDA-graph capture needs a CUDA device; this run trains on {device}")
    step: StepFn = s.family.step
    if sp.channels_last and not is_2d(s.cfg.data.dataset):
        to_channels_last(s.m)
        step = channels_last_batches(step)
    if sp.compile:
        for module in compiled_modules(s):
            compile_forward(module, sp.compile_backend)
    if sp.cuda_graphs:
        step = GraphedStep(step)
    return step


# ---- channels_last ---------------------------------------------------------------------


def to_channels_last(m: Models) -> None:
    """G, D, G_ema and the optimisers' per-parameter state (Adam's moments, also when restored
    from a checkpoint written without the option) in channels_last memory format."""
    for module in (*m.nets.values(), m.G_ema):
        if module is not None:
            module.to(memory_format=torch.channels_last)  # in place: the optimisers keep their parameters
    for opt in m.opts.values():
        layout_like_params(opt)  # the moments follow their (now NHWC) parameters


def channels_last_batches(step: StepFn) -> StepFn:
    """`step` fed real batches [N, C, H, W] in channels_last memory format (a copy per batch)."""

    def nhwc(batch):  # an image batch, or a (images, condition) / (A, B) pair of a conditional or two-domain family
        if isinstance(batch, tuple):
            return tuple(nhwc(b) for b in batch)
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 else batch

    def cl_step(m: Models, next_real: NextReal, sample_z: SampleZ, state: dict, tc: TrainConfig) -> Stats:
        return step(m, lambda: nhwc(next_real()), sample_z, state, tc)

    return cl_step


# ---- CUDA graphs -----------------------------------------------------------------------


class GraphedStep:
    """The family step captured in a CUDA graph after `warmup` eager steps, then replayed.

    A replay runs the kernels of the captured step on the same memory, so what changes between
    steps must be written into that memory first: the step's inputs (real batches and z) are
    drawn outside the graph, from the run's own samplers in the order the eager step draws
    them (recorded during the warm-up), and copied into static buffers. Outside the inputs a
    step must be the same kernels every time: no host syncs, no Python state (hence gan and
    wgan-gp only), Adam `capturable` (its step count on the device), constant learning rates.
    Random numbers drawn inside the step (WGAN-GP's interpolation ε) come from the default CUDA
    generator, whose offset a replay advances. The warm-up steps (real training steps) run on a
    side stream, as CUDA-graph capture asks, and create cuBLAS/cuDNN workspaces and Adam's state
    before the capture. The stats a replay returns are copies: the graph's own outputs are
    overwritten by the next replay.
    """

    def __init__(self, step: StepFn, warmup: int = 3):
        self.step, self.warmup = step, warmup
        self.eager_steps = 0
        self.draws: list[tuple[str, int]] | None = None  # ("real", 0) or ("z", n), in the step's order
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_in: list[Tensor] = []
        self.static_out: Stats = {}

    def __call__(self, m: Models, next_real: NextReal, sample_z: SampleZ, state: dict, tc: TrainConfig) -> Stats:
        if self.graph is None and self.eager_steps < self.warmup:
            return self._eager(m, next_real, sample_z, state, tc)
        inputs = [next_real() if kind == "real" else sample_z(n) for kind, n in self.draws]
        if self.graph is None:
            self._capture(m, inputs, state, tc)
        for buf, x in zip(self.static_in, inputs):
            buf.copy_(x)
        self.graph.replay()
        return {k: v.clone() for k, v in self.static_out.items()}

    def _eager(self, m: Models, next_real: NextReal, sample_z: SampleZ, state: dict, tc: TrainConfig) -> Stats:
        draws: list[tuple[str, int]] = []

        def real() -> Tensor:
            draws.append(("real", 0))
            return next_real()

        def z(n: int) -> Tensor:
            draws.append(("z", n))
            return sample_z(n)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            stats = self.step(m, real, z, state, tc)
        torch.cuda.current_stream().wait_stream(side)
        if self.draws is not None and draws != self.draws:
            raise RuntimeError(f"speed.cuda_graphs: the step drew {draws}, the previous one {self.draws}; "
                               "a captured step needs the same inputs every step")
        self.draws = draws
        self.eager_steps += 1
        return stats

    def _capture(self, m: Models, inputs: list[Tensor], state: dict, tc: TrainConfig) -> None:
        self.static_in = [x.clone() for x in inputs]
        feed: Iterator[Tensor] = iter(self.static_in)
        for opt in m.opts.values():
            opt.zero_grad(set_to_none=True)  # gradients allocated in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        # records the kernels, runs nothing until replay(); thread_local: only this thread's unsafe
        # calls abort the capture (not, say, a recorder thread's)
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.static_out = self.step(m, lambda: next(feed), lambda n: next(feed), state, tc)


# ---- torch.compile ---------------------------------------------------------------------

# Families whose D step differentiates D's gradient: WGAN-GP's penalty E[(||∇_x D(x_hat)||_2 - 1)^2]
# takes ∇_x D with create_graph=True and loss_D.backward() then differentiates through that
# backward (a double backward), which AOTAutograd's compiled backward does not support
# ("torch.compile with aot_autograd does not currently support double backward"). For them only G
# is compiled: G is never double-differentiated (the fakes are drawn under no_grad and x_hat is
# detached), so its compiled forward and backward stay exact, and a speed.compile sweep over
# sweep.family grids [gan, wgan-gp] still runs every trial instead of refusing the whole sweep.
DOUBLE_BACKWARD_THROUGH_D = frozenset({"wgan-gp"})


def compiled_modules(s: TrainingState) -> list[nn.Module]:
    """What speed.compile compiles: G and D, or G alone for DOUBLE_BACKWARD_THROUGH_D families."""
    if s.cfg.train.family in DOUBLE_BACKWARD_THROUGH_D:
        return [s.m.G]
    return list(s.m.nets.values())


def compile_forward(module: nn.Module, backend: str) -> None:
    """`module.forward` through torch.compile, in place: the module stays the module (state_dict
    keys, `unwrap`, DDP's hooks, checkpoints unchanged), and a deep copy's forward is bound to
    the copy. The forward rather than nn.Module.compile()'s `_call_impl`: module hooks (DDP's)
    stay outside the graph."""
    module.forward = types.MethodType(torch.compile(type(module).forward, backend=backend), module)


def compiled(module: nn.Module) -> bool:
    """Whether `prepare` compiled `module`'s forward (speed.compile)."""
    return isinstance(module.__dict__.get("forward"), types.MethodType)


# ---- what an equivalence check compares ------------------------------------------------


def bn_cancelled(module: nn.Module) -> set[str]:
    """Names of the biases of layers directly followed by BatchNorm (in a Sequential). Their
    gradient is 0 in exact arithmetic — BN subtracts the batch mean, so they change no output —
    and its float value is rounding noise that Adam normalises into a step of about ±lr: any
    faster kernel that sums in another order moves them by up to 2·lr a step. Equivalence
    checks of the speed options (tests/test_speed.py, bench/gpu_check.py) leave them out."""
    names = set()
    for prefix, seq in module.named_modules():
        if isinstance(seq, nn.Sequential):
            kids = list(seq.named_children())
            for (name, layer), (_, nxt) in zip(kids, kids[1:]):
                if isinstance(nxt, nn.modules.batchnorm._BatchNorm) and getattr(layer, "bias", None) is not None:
                    names.add(f"{prefix}.{name}.bias" if prefix else f"{name}.bias")
    return names
