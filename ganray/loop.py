"""The training loop. Knows nothing of Ray: the caller passes `report`, `save_checkpoint`
and `should_stop` callables (and, under DDP, a `wrap` for the modules). The same loop runs
in a unit test, in `ganray train --local`, and inside every Ray Train worker.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from ganray.checkpoint import CheckpointError, check_compatible
from ganray.config import Config
from ganray.data import Dataset, load_dataset
from ganray.families import Models, get_family

log = logging.getLogger(__name__)

BAD_VERDICTS = ("collapsed", "diverged", "garbage")


def history_keep(cfg: Config) -> int:
    """Logged entries the loop keeps for training_signals (and saves in checkpoints)."""
    return max(2 * cfg.eval.flat_window, 50)


class ReportFn(Protocol):
    def __call__(self, step: int, metrics: dict[str, float], *, samples: torch.Tensor | None = None,
                 verdict: dict | None = None) -> None: ...


@dataclass
class TrainResult:
    step: int                              # generator steps done
    diverged: bool = False
    stopped_early: bool = False            # should_stop said so
    verdict: dict | None = None            # last evaluation's verdict payload
    last_metrics: dict[str, float] = field(default_factory=dict)


def resolve_device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and cfg.scaling.use_gpu and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cuda")
    return torch.device("cpu")


def _identity(m: nn.Module) -> nn.Module:
    return m


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    # G_ema <- decay * G_ema + (1 - decay) * G ; buffers (BN running stats) copied as they are
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


class Sampler:
    """Random minibatches of one rank's data shard and latent vectors, from recorded generators."""

    def __init__(self, data: Dataset, batch_size: int, z_dim: int, seed: int, device: torch.device):
        self.x = data.x.to(device)
        self.batch_size = batch_size
        self.z_dim = z_dim
        self.device = device
        self.g_data = torch.Generator().manual_seed(seed)
        self.g_z = torch.Generator().manual_seed(seed + 1_000_003)

    def next_real(self) -> torch.Tensor:
        idx = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=self.g_data)
        self.last_idx = idx
        return self.x[idx.to(self.x.device)]

    def sample_z(self, n: int) -> torch.Tensor:
        # z ~ N(0, I)  [n, z_dim]
        z = torch.randn(n, self.z_dim, generator=self.g_z)
        self.last_z = z
        return z.to(self.device, non_blocking=True)

    def fingerprint(self) -> dict[str, float]:
        """Sums of the last real batch and the last z: they differ between ranks."""
        real = self.x[self.last_idx.to(self.x.device)].double().sum()
        return {"ddp_data_fingerprint": float(real), "ddp_z_fingerprint": float(self.last_z.double().sum())}

    def state(self) -> dict:
        return {"data": self.g_data.get_state(), "z": self.g_z.get_state()}

    def load_state(self, s: dict) -> None:
        self.g_data.set_state(s["data"])
        self.g_z.set_state(s["z"])


def fixed_z(cfg: Config, device: torch.device) -> torch.Tensor:
    """The same z batch on every rank and every resume: samples, GIF frames and flip rate use it."""
    g = torch.Generator().manual_seed(10_007 * (cfg.experiment.seed + 1))
    return torch.randn(cfg.eval.n_fixed_z, cfg.model.z_dim, generator=g).to(device)


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, device: torch.device, seed: int, batch: int = 1000) -> torch.Tensor:
    """n samples from G in eval mode (BN running statistics), from a generator of their own
    so that evaluation never moves the training RNG."""
    g = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    out = [G(torch.randn(min(batch, n - i), z_dim, generator=g).to(device)).float().cpu() for i in range(0, n, batch)]
    G.train(was_training)
    return torch.cat(out)


class StatsWindow:
    """Per-step training statistics since the last log step, as sums and counts (stylegan2-ada's
    `training_stats`): a mean is the sum / the number of values added, whatever other cadence
    (evaluation, samples, checkpoints) read the window in between. Only a log step resets it."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        # note: .item() is a CPU-GPU sync point; it runs only at logged/evaluated steps
        return {k: v.item() / self.counts[k] for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.counts = {}, {}

    def state_dict(self) -> dict:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "counts": dict(self.counts)}

    def load_state_dict(self, d: dict, device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in d.get("sums", {}).items()}
        self.counts = dict(d.get("counts", {}))


def _rng_state() -> dict:
    s = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate(s["python"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


@contextlib.contextmanager
def isolated_rng(device: torch.device):
    """Evaluation draws from the global RNGs (subsampling, classifier set-up); inside this block
    it cannot move training's streams, so a resumed run (which builds its evaluator after the
    checkpoint's RNG state is set) trains exactly as a straight one."""
    py, np_state = random.getstate(), np.random.get_state()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def _finite(stats: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in stats.values())


def train(
    cfg: Config,
    *,
    report: ReportFn,                                   # rank 0 (and, under Ray, every rank): metrics, samples, verdicts
    save_checkpoint: Callable[[int, dict, dict], None],  # (step, state, metrics): persist a checkpoint
    should_stop: Callable[[int, dict], bool],           # (step, metrics) -> stop now? asked after each evaluation
    resume_from: dict | None = None,                    # a loaded checkpoint state
    rank: int = 0,                                      # this worker's rank
    world_size: int = 1,                                # number of DDP workers
    wrap: Callable[[nn.Module], nn.Module] = _identity, # DDP wrapper from the Ray layer
    device: torch.device | None = None,                 # default: from cfg.train.device / scaling.use_gpu
    data: Dataset | None = None,                        # default: load_dataset(cfg.data)
    progress: bool = False,                             # console progress bar (rank 0)
) -> TrainResult:
    """Train cfg.train.steps generator steps; evaluate, sample and checkpoint as configured."""
    tc = cfg.train
    device = device or resolve_device(cfg)
    seed = cfg.experiment.seed * world_size + rank  # recorded in every report
    torch.manual_seed(seed)
    random.seed(seed)

    data = data if data is not None else load_dataset(cfg.data)
    shard = data.shard(rank, world_size)
    family = get_family(tc.family)
    torch.manual_seed(cfg.experiment.seed)  # identical initial weights on every rank
    m: Models = family.build(cfg, data.shape, wrap=_identity)
    m.G.to(device)
    m.D.to(device)
    if cfg.model.g_ema:
        m.G_ema = copy.deepcopy(m.G).eval().requires_grad_(False)
    state = family.init_state()
    sampler = Sampler(shard, tc.batch_size, cfg.model.z_dim, seed, device)
    step = 0
    window = StatsWindow()                 # training statistics since the last log step
    history: list[dict[str, float]] = []   # one entry per log step: what training_signals reads

    if resume_from is not None:
        try:
            check_compatible(resume_from, cfg, "resume checkpoint")
        except CheckpointError:
            raise
        m.G.load_state_dict(resume_from["G"])
        m.D.load_state_dict(resume_from["D"])
        if m.G_ema is not None and resume_from.get("G_ema") is not None:
            m.G_ema.load_state_dict(resume_from["G_ema"])
        m.opt_G.load_state_dict(resume_from["opt_G"])
        if m.opt_D is not None and resume_from.get("opt_D") is not None:
            m.opt_D.load_state_dict(resume_from["opt_D"])
        # Learning rates come from the config, not the checkpoint (a sweep may change them).
        _apply_lrs(m, cfg)
        state = dict(resume_from.get("family_state") or state)
        step = int(resume_from["step"])
        history = list(resume_from.get("history") or [])
        if resume_from.get("world_size") == world_size and resume_from.get("rng_per_rank"):
            r = resume_from["rng_per_rank"][rank] if rank < len(resume_from["rng_per_rank"]) else None
            if r is not None:
                _set_rng_state(r["global"])
                sampler.load_state(r["sampler"])
                window.load_state_dict(r.get("stats_window") or {}, device)
        log.info("resumed at step %d", step)
    else:
        torch.manual_seed(seed)  # per-rank stream for dropout etc.

    m.G = wrap(m.G)
    m.D = wrap(m.D)
    z_fixed = fixed_z(cfg, device)
    with isolated_rng(device):
        evaluator = _make_evaluator(cfg, data, device) if rank == 0 else None
    if evaluator is not None and resume_from is not None and resume_from.get("evaluator"):
        # the flip-rate baseline and the first-seen step continue where the checkpoint left them
        evaluator.load_state_dict(resume_from["evaluator"])
    amp = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if tc.bf16 and device.type == "cuda"
        else contextlib.nullcontext()
    )
    result = TrainResult(step=step)
    bar = _progress(tc.steps, step) if progress and rank == 0 else None
    t0 = time.time()

    def checkpoint_state() -> dict:
        return {
            "config": cfg.to_dict(),
            "step": step,
            "G": m.G_module.state_dict(),
            "D": m.D_module.state_dict(),
            "G_ema": m.G_ema.state_dict() if m.G_ema is not None else None,
            "opt_G": m.opt_G.state_dict(),
            "opt_D": m.opt_D.state_dict() if m.opt_D is not None else None,
            "family_state": {k: (float(v) if torch.is_tensor(v) else v) for k, v in state.items()},
            "world_size": world_size,
            "rng_per_rank": _gather_rng(rank, world_size, sampler, window),
            # what a resumed run needs to log and judge exactly as a straight run
            "history": list(history),
            "evaluator": evaluator.state_dict() if evaluator is not None else None,
        }

    while step < tc.steps:
        with amp:
            stats = family.step(m, sampler.next_real, sampler.sample_z, state, tc)
        step += 1
        if m.G_ema is not None:
            ema_update(m.G_ema, m.G_module, cfg.model.ema_decay)
        window.add(stats)
        if bar is not None:
            bar.update(1)

        log_now = step % tc.log_every == 0 or step == tc.steps
        eval_now = step % tc.eval_every == 0 or step == tc.steps
        ckpt_now = step % tc.checkpoint_every == 0 or step == tc.steps
        sample_now = step % tc.sample_every == 0 or step == tc.steps
        if not (log_now or eval_now or ckpt_now or sample_now):
            continue

        metrics: dict[str, Any] = window.means()  # means since the last log step
        if log_now:
            window.reset()
        metrics.update(step=step, seed=seed, elapsed_sec=time.time() - t0)
        if world_size > 1:  # DDP consistency: parameters must agree across ranks, data and z must not
            metrics.update(sampler.fingerprint(), ddp_param_checksum=_param_checksum(m))
        if "k_t" in state:
            metrics["k_t"] = float(state["k_t"])
        bad_here = not _finite({k: v for k, v in metrics.items() if isinstance(v, float)}) or not _params_finite(m)
        if _any_rank(bad_here, world_size, device):  # every rank breaks at the same step (reports are barriers)
            result.diverged = True
            bad = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
            where = (', '.join(bad) or 'parameters') if bad_here else "on another rank"
            reason = f"non-finite training values at step {step}: {where}"
            verdict = {"verdict": "diverged", "step": step, "first_seen_step": step, "reasons": [reason]}
            log.error("diverged: %s", reason)
            report(step, metrics, verdict=verdict)
            result.verdict = verdict
            break
        if log_now:
            history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            # training_signals reads the last flat_window entries (a non-finite entry ends the run
            # above, before it is added), so memory and checkpoints stay bounded in long runs
            del history[:-history_keep(cfg)]

        samples = None
        if sample_now and rank == 0:
            samples = _sample_fixed(m, z_fixed)
        verdict = None
        if eval_now and evaluator is not None:
            G_eval = m.G_ema if m.G_ema is not None else m.G_module
            gen = generate(G_eval, cfg.eval.n, cfg.model.z_dim, device, seed=cfg.experiment.seed * 7919 + step)
            fixed = samples if samples is not None else _sample_fixed(m, z_fixed)
            with isolated_rng(device):
                res = evaluator(gen, fixed, step, history)
            metrics.update(res.metrics)
            verdict = {"verdict": res.verdict, "step": step, "first_seen_step": res.first_seen_step,
                       "reasons": list(res.reasons)}
            result.verdict = verdict
            log.info("step %d: %s (%s)", step, res.verdict, "; ".join(res.reasons))
        elif log_now and rank == 0:
            log.info("step %d: %s", step, _fmt(metrics))
        result.last_metrics = metrics
        # asked before the checkpoint, so that the checkpoint holds the stopper's count after this step
        stop = eval_now and should_stop(step, {**metrics, **({"verdict": verdict["verdict"]} if verdict else {})})
        if ckpt_now:
            save_checkpoint(step, checkpoint_state(), metrics)
        report(step, metrics, samples=samples, verdict=verdict)
        if bar is not None:
            bar.set_postfix_str(_fmt(metrics, keys=("loss_D", "loss_G", "classes_covered", "fcd")))
        if stop:
            result.stopped_early = step < tc.steps
            break

    if bar is not None:
        bar.close()
    result.step = step
    return result


def _apply_lrs(m: Models, cfg: Config) -> None:
    for g in m.opt_G.param_groups:
        g["lr"] = cfg.train.lr_g
    if m.opt_D is not None:
        for g in m.opt_D.param_groups:
            g["lr"] = cfg.train.lr_d


def _gather_rng(rank: int, world_size: int, sampler: Sampler, window: StatsWindow) -> list[dict]:
    """Every rank's RNG state and statistics window (rank 0 writes the checkpoint, so it needs them all)."""
    mine = {"global": _rng_state(), "sampler": sampler.state(), "stats_window": window.state_dict()}
    if world_size <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return [mine]
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, mine)
    return out


def _param_checksum(m: Models) -> float:
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for mod in (m.G_module, m.D_module) for p in mod.parameters()))


def _any_rank(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any rank (one all-reduce of a single number)."""
    if world_size < 2 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def _params_finite(m: Models) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in m.G_module.parameters())


@torch.no_grad()
def _sample_fixed(m: Models, z: torch.Tensor) -> torch.Tensor:
    G = m.G_ema if m.G_ema is not None else m.G_module
    was = G.training
    G.eval()
    out = G(z).float().cpu()
    G.train(was)
    return out


def _make_evaluator(cfg: Config, data: Dataset, device: torch.device):
    if not cfg.eval.metrics:
        return None
    from ganray.collapse import Evaluator  # noqa: PLC0415 (evaluation is optional)

    return Evaluator(cfg, data, device)


def _fmt(metrics: dict, keys: tuple[str, ...] | None = None) -> str:
    items = [(k, v) for k, v in metrics.items() if (keys is None or k in keys) and isinstance(v, float)]
    return " ".join(f"{k}={v:.4g}" for k, v in items if k not in ("elapsed_sec",))


def _progress(total: int, start: int):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
