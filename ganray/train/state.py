"""Everything a run holds between steps, and its checkpoint: snapshot() writes what restore()
reads back, so that a resumed run continues bit for bit where a straight run would be."""
from __future__ import annotations

import contextlib
import copy
import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ganray.config import Config
from ganray.data import Dataset
from ganray.families import ADAM_FLAGS, Family, Models, get_family
from ganray.train.checkpoint import check_compatible, config_of
from ganray.train.checkpoint import load as load_checkpoint
from ganray.train.sampling import Sampler, condition_kind
from ganray.train.stats import StatsWindow, history_keep

log = logging.getLogger(__name__)


def checkpoint_and_config(uri: str) -> tuple[dict, Config]:
    """The checkpoint at `uri` and its config (what a family's start() reads, e.g. Stage II's Stage I)."""
    state = load_checkpoint(uri)
    return state, config_of(state)


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def rng_state(device: torch.device) -> dict:
    """The global RNG states this process trains with: the CPU's, Python's and, on a GPU, the
    training device's CUDA state only (not every visible GPU's: a resume on a node with another
    GPU count or layout must not depend on GPUs this process never used)."""
    s = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def set_rng_state(s: dict, device: torch.device) -> None:
    """Restore rng_state(); the CUDA state goes onto the training device."""
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    cuda = s.get("cuda")
    if cuda is None:
        return
    if device.type != "cuda":
        log.info("checkpoint holds a CUDA RNG state; training on %s: not restored", device)
        return
    idx = _cuda_index(device)
    if isinstance(cuda, (list, tuple)):  # checkpoints before issue 17: one state per visible GPU
        if idx >= len(cuda):
            log.info("checkpoint holds the CUDA RNG states of %d GPUs, none for cuda:%d: not restored", len(cuda), idx)
            return
        cuda = cuda[idx]
    torch.cuda.set_rng_state(cuda, device)


@contextlib.contextmanager
def isolated_rng(device: torch.device):
    """Evaluation draws from the global RNGs (subsampling, classifier set-up); inside this block
    it cannot move training's streams, so a resumed run (which builds its evaluator after the
    checkpoint's RNG state is set) trains exactly as a straight one."""
    py, np_state = random.getstate(), np.random.get_state()
    # the training device's CUDA state only (fork_rng's default would touch every visible GPU)
    devices = [_cuda_index(device)] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def apply_adam_flags(opt: torch.optim.Optimizer, cfg: Config) -> None:
    """The Adam kernels of cfg.speed on every param group of `opt`, and each parameter's step
    count where they keep it. Optimizer.load_state_dict replaces a group's settings with the
    checkpoint's (foreach, fused, capturable), so without this a resume would run the kernels of
    the run that wrote the checkpoint: a cuda_graphs checkpoint (capturable) fails on a CPU, one
    without capturable fails a capture, speed.adam silently follows the checkpoint.

    Where torch 2.13's Adam keeps `step` (torch/optim/adam.py, _init_group): a float32 tensor on
    the parameter's device when capturable or fused, else a CPU scalar tensor of the default
    float dtype (float32, or float64 under torch.set_default_dtype(torch.float64))."""
    if not isinstance(opt, torch.optim.Adam):
        return
    flags = {"foreach": None, "fused": None, **ADAM_FLAGS[cfg.speed.adam], "capturable": cfg.speed.cuda_graphs}
    for group in opt.param_groups:
        group.update(flags)
        on_device = bool(group["capturable"] or group["fused"])
        for p in group["params"]:
            st = opt.state.get(p)
            if not st or "step" not in st:
                continue
            value = float(st["step"])  # a Python number in old checkpoints, else a 0-dim tensor
            if on_device:
                st["step"] = torch.tensor(value, dtype=torch.float32, device=p.device)
            else:
                dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                st["step"] = torch.tensor(value, dtype=dtype, device="cpu")


def layout_like_params(opt: torch.optim.Optimizer) -> None:
    """Each per-parameter state tensor of `opt` (Adam's moments) in its parameter's memory
    layout (strides). load_state_dict keeps the checkpoint's: moments written by a
    speed.channels_last run stay NHWC while the resumed parameters are NCHW, and the fused
    kernel, which walks parameter and moments as flat memory, then pairs elements that do not
    belong together (wrong updates, no error)."""
    for p, st in opt.state.items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)  # empty_like keeps p's strides


@dataclass
class TrainingState:
    """The models, optimisers, family state, data streams and statistics of one rank's run."""

    cfg: Config
    family: Family
    m: Models
    family_state: dict[str, Any]
    sampler: Sampler
    rank: int
    world_size: int
    step: int = 0
    elapsed_sec: float = 0.0  # the loop's seconds up to `step`, over resumes (the rows' elapsed_sec)
    train_sec: float = 0.0  # of those, the training steps' (the rows' train_sec; loop.RunClock)
    window: StatsWindow = field(default_factory=StatsWindow)  # statistics since the last log step
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per log step (training_signals)
    evaluator: Any = None  # ganray.collapse.Evaluator on rank 0 when metrics are configured
    data: Dataset | None = None  # the whole training set (conditional families draw evaluation conditions from it)

    @classmethod
    def build(cls, cfg: Config, data: Dataset, rank: int, world_size: int, device: torch.device,
              resuming: bool = False) -> "TrainingState":
        seed = cfg.experiment.seed * world_size + rank  # recorded in every report
        torch.manual_seed(seed)
        random.seed(seed)
        family = get_family(cfg.train.family)
        torch.manual_seed(cfg.experiment.seed)  # identical initial weights on every rank
        m = family.build(cfg, data.shape)
        if family.start is not None and not resuming:  # a resume restores what it would load (restore)
            family.start(m, cfg, checkpoint_and_config)
        for net in m.nets.values():
            net.to(device)
        if cfg.model.g_ema:
            m.G_ema = copy.deepcopy(m.G).eval().requires_grad_(False)
        sampler = Sampler(data.shard(rank, world_size), cfg.train.batch_size, cfg.model.z_dim, seed, device,
                          condition_kind(cfg))
        torch.manual_seed(seed)  # per-rank stream for dropout etc. (a restore replaces it)
        return cls(cfg, family, m, family.init_state(), sampler, rank, world_size, data=data)

    @property
    def seed(self) -> int:
        return self.cfg.experiment.seed * self.world_size + self.rank

    def add_history(self, metrics: dict[str, Any]) -> None:
        self.history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        # training_signals reads the last flat_window entries, so memory and checkpoints stay bounded
        del self.history[:-history_keep(self.cfg)]

    def restore(self, ckpt: dict, device: torch.device) -> None:
        """Continue from a checkpoint written by snapshot() (of this config's family and shapes)."""
        check_compatible(ckpt, self.cfg, "resume checkpoint")
        m = self.m
        for name, net in m.nets.items():
            net.load_state_dict(ckpt[name])
        if m.G_ema is not None and ckpt.get("G_ema") is not None:
            m.G_ema.load_state_dict(ckpt["G_ema"])
        for side, opt in m.opts.items():
            if ckpt.get(f"opt_{side}") is not None:
                opt.load_state_dict(ckpt[f"opt_{side}"])
        self.step = int(ckpt["step"])
        self.apply_lrs()  # learning rates come from the config, not the checkpoint (a sweep may change them)
        for opt in m.opts.values():
            apply_adam_flags(opt, self.cfg)  # so do Adam's kernels (speed.adam, speed.cuda_graphs)
            layout_like_params(opt)  # and the moments' memory layout (the checkpoint's may be channels_last)
        self.family_state = dict(ckpt.get("family_state") or self.family_state)
        self.elapsed_sec = float(ckpt.get("elapsed_sec") or 0.0)  # checkpoints before issue 16: the run restarts at 0
        # checkpoints before train_sec: their elapsed_sec (evaluations included), so the clock goes on
        self.train_sec = float(ckpt["train_sec"] if ckpt.get("train_sec") is not None else self.elapsed_sec)
        self.history = list(ckpt.get("history") or [])
        per_rank = ckpt.get("rng_per_rank") or []
        if ckpt.get("world_size") == self.world_size and self.rank < len(per_rank):
            r = per_rank[self.rank]
            set_rng_state(r["global"], device)
            self.sampler.load_state(r["sampler"], self.step)
            self.window.load_state_dict(r.get("stats_window") or {}, device)
        log.info("resumed at step %d", self.step)

    def restore_evaluator(self, ckpt: dict | None) -> None:
        """The flip-rate baseline and the first-seen step continue where the checkpoint left them."""
        if self.evaluator is not None and ckpt is not None and ckpt.get("evaluator"):
            self.evaluator.load_state_dict(ckpt["evaluator"])

    def snapshot(self) -> dict:
        """The checkpoint state (every rank calls it: the RNG states are gathered to all)."""
        m = self.m
        return {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "elapsed_sec": self.elapsed_sec,
            "train_sec": self.train_sec,
            "nets": list(m.nets),  # the networks' names: each one's state_dict is under its name
            **{name: m.module(name).state_dict() for name in m.nets},
            "G_ema": m.G_ema.state_dict() if m.G_ema is not None else None,
            **{f"opt_{side}": opt.state_dict() for side, opt in m.opts.items()},
            # 0-dim tensors (BEGAN's k_t) as numbers; others (CycleGAN's image pools) as they are
            "family_state": {k: (float(v) if torch.is_tensor(v) and v.dim() == 0 else v)
                             for k, v in self.family_state.items()},
            "world_size": self.world_size,
            "rng_per_rank": self._gather_rng(),
            # what a resumed run needs to log and judge exactly as a straight run
            "history": list(self.history),
            "evaluator": self.evaluator.state_dict() if self.evaluator is not None else None,
        }

    def apply_lrs(self) -> None:
        """The config's learning rates (G side lr_g, D side lr_d), times the family's lr_factor at
        this step where it has one (cyclegan: linear to 0 in the second half; stackgan's step sets
        its halving schedule itself, from the clock in its family state)."""
        factor = self.family.lr_factor(self.step, self.cfg.train) if self.family.lr_factor is not None else 1.0
        for side, opt in self.m.opts.items():
            lr = self.cfg.train.lr_d if side == "D" else self.cfg.train.lr_g
            for g in opt.param_groups:
                g["lr"] = lr * factor

    def _gather_rng(self) -> list[dict]:
        """Every rank's RNG state and statistics window (rank 0 writes the checkpoint, so it needs them all)."""
        mine = {"global": rng_state(self.sampler.device), "sampler": self.sampler.state(),
                "stats_window": self.window.state_dict()}
        if self.world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
            return [mine]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, mine)
        return out
