"""GAN families: pure step functions over (G, D, optimizers). No Ray, no I/O.

A `Family` bundles what the training loop needs:

    fam = get_family(cfg.train.family)
    m = fam.build(cfg, dataset.shape, wrap=ddp_wrap, device=device)   # G, D, opt_G, opt_D
    state = fam.init_state()                                            # saved in checkpoints
    stats = fam.step(m, next_real, sample_z, state, cfg.train)          # one generator iteration

Under train.bf16 the networks compute in bf16 (the loop's autocast region); every step widens
their outputs to float32 (`widen`: bf16/fp16 only, fp32 and fp64 untouched) before losses and
statistics, so losses, the Wasserstein estimate and the KL are float32 sums on the CPU as on CUDA.

`step` runs tc.n_critic D steps (each on a fresh `next_real()` batch) and then one G step, and
returns detached 0-dim tensors (no `.item()`, so a GPU is not synchronised every step). The
stats of the D step are those of the last of the n_critic D steps.

Each GAN family module also exposes `d_step(G, D, opt_D, real, z, state, tc)` and
`g_step(G, D, opt_G, z, state, tc)`, with the objective written above each.

DDP: the Ray layer passes `wrap` (a DistributedDataParallel wrapper, broadcast_buffers=False).
Optimizers are built over the unwrapped parameters. D steps generate fakes under no_grad and run
ONE forward of D over [real, fake] (with model.pack m: one output per pack of m, the first half
real packs; ganray.models.remedies) and one backward (gan with train.d_updates fake_then_real: one
of each per batch, two optimizer steps; simultaneous: `gan.simultaneous_step`, one family step
for both nets). G steps get the unwrapped D with its parameters frozen (`frozen(D)`), so D's
gradients are neither computed nor all-reduced.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ganray.config import FAMILIES, Config, ConfigError, SpeedConfig, TrainConfig

NextReal = Callable[[], Tensor]  # () -> a batch of real examples [N, *shape] on the device
SampleZ = Callable[[int], Tensor]  # n -> z [n, z_dim] on the device
Wrap = Callable[[nn.Module], nn.Module]
Stats = dict[str, Tensor]
DStep = Callable[[nn.Module, nn.Module, torch.optim.Optimizer, Tensor, Tensor, dict, TrainConfig], Stats]
GStep = Callable[[nn.Module, nn.Module, torch.optim.Optimizer, Tensor, dict, TrainConfig], Stats]


def widen(t: Tensor) -> Tensor:
    """A network's bf16/fp16 output (autocast) as float32 for losses and statistics; others as they are."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def identity(module: nn.Module) -> nn.Module:
    return module


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel / torch.compile wrapper."""
    while True:
        if isinstance(module, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            module = module.module
        elif hasattr(module, "_orig_mod"):  # torch.compile's OptimizedModule
            module = module._orig_mod
        else:
            return module


@dataclass
class Models:
    """Every network of a run by name, and its optimizers.

    The two-network families (gan, wgan-gp, began, vae, cgan, stackgan) name theirs "G" and "D"
    (BEGAN: D the autoencoder; VAE: G the decoder, D the encoder); cyclegan "G_AB", "G_BA", "D_A",
    "D_B". Optimizers by side: "G" over every generator, "D" over every discriminator (VAE: "G"
    only, over encoder + decoder). Checkpoints hold each network under its name and each
    optimizer under "opt_<side>" (ganray.train.state)."""

    nets: dict[str, nn.Module]  # possibly DDP-wrapped by the caller
    opts: dict[str, torch.optim.Optimizer]
    G_ema: nn.Module | None = None  # kept by the loop, not by families

    @classmethod
    def pair(cls, G: nn.Module, D: nn.Module, opt_G: torch.optim.Optimizer,
             opt_D: torch.optim.Optimizer | None) -> "Models":
        return cls(nets={"G": G, "D": D}, opts={"G": opt_G, **({"D": opt_D} if opt_D is not None else {})})

    def module(self, name: str) -> nn.Module:
        """The network `name` without its DDP / compile wrapper."""
        return unwrap(self.nets[name])

    def wrap(self, fn: Wrap) -> None:
        """Pass every network with trainable parameters through `fn` (DDP) in place."""
        for name, net in self.nets.items():
            if any(p.requires_grad for p in net.parameters()):
                self.nets[name] = fn(net)

    @property
    def G(self) -> nn.Module:
        return self.nets["G"]

    @G.setter
    def G(self, module: nn.Module) -> None:
        self.nets["G"] = module

    @property
    def D(self) -> nn.Module:
        return self.nets["D"]

    @D.setter
    def D(self, module: nn.Module) -> None:
        self.nets["D"] = module

    @property
    def opt_G(self) -> torch.optim.Optimizer:
        return self.opts["G"]

    @property
    def opt_D(self) -> torch.optim.Optimizer | None:
        return self.opts.get("D")

    @property
    def G_module(self) -> nn.Module:
        return unwrap(self.G)

    @property
    def D_module(self) -> nn.Module:
        return unwrap(self.D)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """requires_grad_(False) on every parameter of `module` for the block; previous flags restored."""
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


# speed.adam -> torch.optim.Adam's flags: one update rule, three kernels (tests/test_speed.py)
ADAM_FLAGS: dict[str, dict[str, bool]] = {"default": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True},
                                          "fused": {"fused": True}}


def adam(params, lr: float, tc: TrainConfig, speed: SpeedConfig | None = None) -> torch.optim.Adam:
    """Adam(lr, betas (beta1, beta2)) in speed.adam's implementation; capturable (its step count
    on the device) when speed.cuda_graphs replays the step in a CUDA graph."""
    flags = dict(ADAM_FLAGS[speed.adam]) if speed is not None else {}
    if speed is not None and speed.cuda_graphs:
        flags["capturable"] = True
    return torch.optim.Adam(params, lr=lr, betas=(tc.beta1, tc.beta2), **flags)


def build_adversarial(cfg: Config, shape: tuple[int, ...], wrap: Wrap = identity,
                      device: torch.device | str = "cpu", *, family: str) -> Models:
    """G and D for `family` from cfg.model, moved to `device`, each passed through `wrap`;
    Adam(lr_g) over G's and Adam(lr_d) over D's unwrapped parameters, betas (beta1, beta2)."""
    from ganray.data import num_classes  # noqa: PLC0415
    from ganray.models import build_discriminator, build_generator  # noqa: PLC0415

    k = num_classes(cfg.data.dataset)  # cgan: the classes G and D embed
    G = build_generator(cfg.model, shape, family, k).to(device)
    D = build_discriminator(cfg.model, shape, family, k).to(device)
    opt_G = adam(G.parameters(), cfg.train.lr_g, cfg.train, cfg.speed)
    opt_D = adam(D.parameters(), cfg.train.lr_d, cfg.train, cfg.speed)
    return Models.pair(wrap(G), wrap(D), opt_G, opt_D)


def adversarial_builder(family: str) -> Callable[..., Models]:
    """build(cfg, shape, wrap=identity, device="cpu") for a GAN family."""
    return functools.partial(build_adversarial, family=family)


def adversarial_step(d_step: DStep, g_step: GStep) -> Callable[..., Stats]:
    """step(m, next_real, sample_z, state, tc): tc.n_critic D steps, then one G step."""

    def step(m: Models, next_real: NextReal, sample_z: SampleZ, state: dict, tc: TrainConfig) -> Stats:
        if m.opt_D is None:
            raise ValueError("adversarial step: Models.opt_D is None; build the models with the family's build()")
        stats: Stats = {}
        n = 0
        for _ in range(tc.n_critic):
            real = next_real()
            n = (real[0] if isinstance(real, tuple) else real).shape[0]  # conditional: (x, cond)
            # G's forward runs under no_grad inside d_step, so the unwrapped G is enough (no DDP hooks).
            stats = d_step(m.G_module, m.D, m.opt_D, real, sample_z(n), state, tc)
        # D unwrapped (its gradients must not be all-reduced); g_step freezes its parameters.
        stats.update(g_step(m.G, m.D_module, m.opt_G, sample_z(n), state, tc))
        return stats

    return step


def no_state() -> dict:
    return {}


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., Models]  # (cfg, shape, wrap=identity, device="cpu") -> Models
    init_state: Callable[[], dict]  # family state saved in checkpoints (BEGAN: {"k_t": 0.0})
    step: Callable[..., Stats]  # (m, next_real, sample_z, state, tc) -> {name: 0-dim tensor}
    d_step: DStep | None = None  # None for the VAE (one optimizer, no adversary)
    g_step: GStep | None = None
    # step -> the factor on the config's learning rates at that step (None: constant); the loop
    # sets the rates before every step, and a resume at step s sets those of step s
    lr_factor: Callable[[int, TrainConfig], float] | None = None
    conditional: bool = False  # next_real() -> (x, cond), sample_z(n) -> (z, cond); G(z, cond), D(x, cond)
    translation: bool = False  # next_real() -> (a, b) of two unpaired domains; nets G_AB, G_BA, D_A, D_B
    # before a new run's first step, with the train layer's checkpoint reader uri -> (state, config)
    # (stackgan Stage II: load Stage I)
    start: Callable[[Models, Config, Callable[[str], tuple[dict, Config]]], None] | None = None


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    _FAMILIES[family.name] = family
    return family


def _import_all() -> None:
    from ganray.families import began, cgan, cyclegan, gan, stackgan, vae, wgan_gp  # noqa: F401, PLC0415 (register)


def family_names() -> tuple[str, ...]:
    """Registered family names, in the order of ganray.config.FAMILIES."""
    _import_all()
    return tuple(n for n in FAMILIES if n in _FAMILIES) + tuple(n for n in _FAMILIES if n not in FAMILIES)


def get_family(name: str) -> Family:
    _import_all()
    if name not in _FAMILIES:
        raise ConfigError(f"train.family: unknown family {name!r}; allowed: {', '.join(family_names())}")
    return _FAMILIES[name]
