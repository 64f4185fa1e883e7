"""The training loop. Knows nothing of Ray: the caller passes `report`, `save_checkpoint`
and `should_stop` callables (and, under DDP, a `wrap` for the modules). The same loop runs
in a unit test, in `ganray train --local`, and inside every Ray Train worker.

It reads as: build → maybe restore → step → at a cadence step: the window's means, the
divergence check, evaluate, checkpoint, report, stop.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch
from torch import nn
from tqdm import tqdm

from ganray.collapse import Evaluator
from ganray.config import Config, TrainConfig
from ganray.data import Dataset, load_dataset
from ganray.families import Models
from ganray.metrics.conditional import condition_scalars
from ganray.train import speed
from ganray.train.sampling import (
    eval_conditions,
    fixed_inputs,
    generate,
    grid_captions,
    sample_fixed,
    translation_grid,
)
from ganray.train.state import TrainingState, isolated_rng

log = logging.getLogger(__name__)

# per-condition scalars go into the rows (and TensorBoard) up to this many conditions; more (CUB's
# 200 species) stay in verdict.json's per-condition record only
PER_CONDITION_SCALARS_MAX = 20


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


@dataclass(frozen=True)
class Cadence:
    """What happens at a step; the last step does everything."""
    log: bool
    eval: bool
    checkpoint: bool
    sample: bool

    @classmethod
    def at(cls, step: int, tc: TrainConfig) -> "Cadence":
        last = step == tc.steps
        return cls(step % tc.log_every == 0 or last, step % tc.eval_every == 0 or last,
                   step % tc.checkpoint_every == 0 or last, step % tc.sample_every == 0 or last)

    @property
    def any(self) -> bool:
        return self.log or self.eval or self.checkpoint or self.sample


def resolve_device(cfg: Config) -> torch.device:
    if cfg.train.device == "cuda" or (cfg.train.device == "auto" and cfg.scaling.use_gpu and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cuda")
    return torch.device("cpu")


def step_precision(tc: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast region of one family step: bf16 on CUDA or the CPU when train.bf16 is on."""
    if not tc.bf16:
        return contextlib.nullcontext()
    # One region spans the whole step: n_critic D updates and the G update, optimizer steps
    # included. Autocast's weight cache (on by default) keeps the bf16 copy of each weight for
    # the life of the region, so after opt_D.step() the next D forward would still read the old
    # weights; and on older torch a cast first made under no_grad (G inside d_step) would leave
    # G's weights without gradients in the G step. With the cache off every forward casts the
    # weights it reads now, so the region may span optimizer steps. One region per step (rather
    # than per forward/backward) keeps autocast out of the pure family steps; the cache would
    # save little anyway, since D's weights change between its forwards and G's first cast is
    # the no_grad one that must not be reused.
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)


def _identity(m: nn.Module) -> nn.Module:
    return m


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    # G_ema <- decay * G_ema + (1 - decay) * G ; buffers (BN running stats) copied as they are
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


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
    data = data if data is not None else load_dataset(cfg.data)
    s = TrainingState.build(cfg, data, rank, world_size, device, resuming=resume_from is not None)
    if resume_from is not None:
        s.restore(resume_from, device)
    family_step = speed.prepare(s, device)  # cfg.speed; all off (the default): s.family.step itself
    s.m.wrap(wrap)
    z_fixed, size = _fixed_grid_inputs(s, data, device)
    if rank == 0 and cfg.eval.metrics:
        with isolated_rng(device):
            s.evaluator = _new_evaluator(s, data, device)
        s.restore_evaluator(resume_from)
    result = TrainResult(step=s.step)
    bar = tqdm(total=tc.steps, initial=s.step, unit="step", dynamic_ncols=True) if progress and rank == 0 else None
    clock = RunClock(s, device)  # a resumed run's rows count on from its checkpoint's seconds

    while s.step < tc.steps:
        if s.family.lr_factor is not None:
            s.apply_lrs()  # the schedule's rates for this step (stackgan, cyclegan)
        with step_precision(tc, device):
            stats = family_step(s.m, s.sampler.next_real, s.sampler.sample_z, s.family_state, tc)
        s.step += 1
        if s.m.G_ema is not None:
            ema_update(s.m.G_ema, s.m.G_module, cfg.model.ema_decay)
        s.window.add(stats)
        if bar is not None:
            bar.update(1)
        at = Cadence.at(s.step, tc)
        if not at.any:
            continue

        metrics = _metrics(s, at, *clock.pause())
        verdict = _divergence(s, metrics, device)
        if verdict is not None:  # every rank breaks at the same step (reports are barriers)
            result.diverged, result.verdict = True, verdict
            report(s.step, metrics, verdict=verdict)
            break
        if at.log:
            s.add_history(metrics)
        samples = _fixed_samples(s, z_fixed, size) if at.sample and rank == 0 else None
        if at.eval and s.evaluator is not None:
            verdict = _evaluate(s, metrics, samples if samples is not None else _fixed_samples(s, z_fixed, size), device)
            result.verdict = verdict
        elif at.log and rank == 0:
            log.info("step %d: %s", s.step, _fmt(metrics))
        result.last_metrics = metrics
        # asked before the checkpoint, so that the checkpoint holds the stopper's count after this step
        stop = at.eval and should_stop(s.step, {**metrics, **({"verdict": verdict["verdict"]} if verdict else {})})
        stopped_early = _final_evaluation(s, metrics, verdict, stop, device)
        if at.checkpoint:
            s.elapsed_sec, s.train_sec = metrics["elapsed_sec"], metrics["train_sec"]
            save_checkpoint(s.step, s.snapshot(), metrics)
        report(s.step, metrics, samples=samples, verdict=verdict)
        if bar is not None:
            bar.set_postfix_str(_fmt(metrics, keys=("loss_D", "loss_G", "classes_covered", "fcd")))
        clock.resume()
        if stop:
            result.stopped_early = stopped_early
            break

    if bar is not None:
        bar.close()
    result.step = s.step
    return result


def _fixed_grid_inputs(s: TrainingState, data: Dataset, device: torch.device):
    """(the fixed grid's inputs, the size its images are shown at): rank 0 draws the grid (cyclegan's
    inputs are test images, loaded there only); stackgan's Stage I samples are shown at the data's size."""
    z_fixed = fixed_inputs(s.cfg, data, device) if s.rank == 0 or not s.family.translation else None
    return z_fixed, data.shape[-1] if data.is_image else 0


def _new_evaluator(s: TrainingState, data: Dataset, device: torch.device):
    """The run's evaluator: the collapse verdict of G's samples, or of a translation run's test-split
    translations (cyclegan: ganray.metrics.translation)."""
    if s.family.translation:
        from ganray.metrics.translation import TranslationEvaluator  # noqa: PLC0415

        return TranslationEvaluator(s.cfg, device)
    return Evaluator(s.cfg, data, device)


def _fixed_samples(s: TrainingState, z_fixed, size: int) -> torch.Tensor:
    """The fixed grid: G's samples of the fixed inputs, or a translation run's rows of fixed test images."""
    if s.family.translation:
        return translation_grid({k: s.m.module(k) for k in ("G_AB", "G_BA")}, z_fixed)
    return sample_fixed(_G_eval(s.m), z_fixed, size)


def _G_eval(m: Models) -> nn.Module:
    return m.G_ema if m.G_ema is not None else m.G_module


CLOCK_FIELDS = ("elapsed_sec", "train_sec")  # a row's fields measured by RunClock (they vary with the load)


class RunClock:
    """A run's two clocks, both counted on over resumes from the checkpoint's: elapsed_sec, the
    seconds since the loop started (set-up before it left out), and train_sec, those of its
    training steps alone (the cadence steps' work, from the window's means to the report, left
    out: evaluations, sample grids, checkpoints and their uploads). Intervals of the monotonic
    clock. The report's steps/s is step / train_sec."""

    def __init__(self, s: TrainingState, device: torch.device):
        self.device = device
        self.start = self.paused_at = time.monotonic()
        self.elapsed0, self.train0 = s.elapsed_sec, s.train_sec
        self.paused = 0.0  # this run's seconds outside training steps

    def pause(self) -> tuple[float, float]:
        """At a cadence step, before its work: (elapsed_sec, train_sec) up to the end of this step."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the steps' queued kernels are training time
        self.paused_at = time.monotonic()
        run = self.paused_at - self.start
        return self.elapsed0 + run, self.train0 + run - self.paused

    def resume(self) -> None:
        """After the cadence step's work: training time counts again."""
        self.paused += time.monotonic() - self.paused_at


def _metrics(s: TrainingState, at: Cadence, elapsed_sec: float, train_sec: float) -> dict[str, Any]:
    """The row of this step: the window's means since the last log step, and what identifies it."""
    metrics: dict[str, Any] = s.window.means()
    if at.log:
        s.window.reset()
    metrics.update(step=s.step, seed=s.seed, elapsed_sec=elapsed_sec, train_sec=train_sec)
    if s.world_size > 1:  # DDP consistency: parameters must agree across ranks, data and z must not
        metrics.update(s.sampler.fingerprint(), ddp_param_checksum=_param_checksum(s.m))
    if "k_t" in s.family_state:
        metrics["k_t"] = float(s.family_state["k_t"])
    return metrics


def _divergence(s: TrainingState, metrics: dict[str, Any], device: torch.device) -> dict | None:
    """The diverged verdict when a logged value or a parameter of G or D is NaN/inf on any rank."""
    bad = sorted(k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v))
    bad_params = [name for name in s.m.nets if not _finite_params(s.m.module(name))]
    here = bool(bad or bad_params)
    if not _any_rank(here, s.world_size, device):
        return None
    where = ", ".join(bad + [f"{n}'s parameters" for n in bad_params]) if here else "on another rank"
    reason = f"non-finite training values at step {s.step}: {where}"
    log.error("diverged: %s", reason)
    return {"verdict": "diverged", "step": s.step, "first_seen_step": s.step, "reasons": [reason],
            "stopped_early": False, "counts": None, "margin": None, "evaluator": None}


def _eval_samples(s: TrainingState, device: torch.device):
    """cfg.eval.n fresh samples of this step's evaluation (their own seed: the same on every call),
    and for a conditional family what each was asked for (sampling.Asked: a balanced request)."""
    cfg = s.cfg
    seed = cfg.experiment.seed * 7919 + s.step
    cond = eval_conditions(cfg, s.data, cfg.eval.n, seed)
    x = generate(_G_eval(s.m), cfg.eval.n, cfg.model.z_dim, device, seed=seed, cond=None if cond is None else cond[0],
                 size=s.data.shape[-1] if s.data.is_image else 0)
    return x, cond


def _evaluate(s: TrainingState, metrics: dict[str, Any], fixed: torch.Tensor, device: torch.device) -> dict:
    """Score cfg.eval.n fresh samples (their own seed) and the fixed-z batch; the verdict payload."""
    with isolated_rng(device):
        if s.family.translation:  # the evaluator translates the test split itself, both ways
            res = s.evaluator(s.m.module("G_AB"), s.m.module("G_BA"), s.step, s.history)
        else:
            gen, asked = _eval_samples(s, device)
            kw = {} if asked is None else {"conditions": asked.labels, "attributes": asked.attributes}
            res = s.evaluator(gen, fixed, s.step, s.history, **kw)
    # conditional runs: per-condition scalars (condition_fidelity/3, ...) for TensorBoard and the rows
    metrics.update(res.metrics, **condition_scalars(res.conditions, PER_CONDITION_SCALARS_MAX))
    log.info("step %d: %s (%s)", s.step, res.verdict, "; ".join(res.reasons))
    return {"verdict": res.verdict, "step": s.step, "first_seen_step": res.first_seen_step,
            "reasons": list(res.reasons), "stopped_early": False, "counts": res.counts,
            "margin": res.margin,  # the deciding statistic, threshold and interval (ganray.collapse.margin_of)
            **({"conditions": _with_captions(s, res.conditions)} if res.conditions is not None else {}),
            "evaluator": s.evaluator.state_dict()}


def _with_captions(s: TrainingState, conditions: dict) -> dict:
    """The per-condition record, with the caption of each fixed-grid row (text conditions) for the report."""
    captions = grid_captions(s.cfg, s.data)
    return {**conditions, "grid_captions": captions} if captions else conditions


def _final_evaluation(s: TrainingState, metrics: dict[str, Any], verdict: dict | None, stop: bool,
                      device: torch.device) -> bool:
    """Whether the trial stops early here (its verdict then says so). At the trial's final
    evaluation — the last step, or a stop — FID, KID and IS in Inception features join this
    step's metrics when eval.inception is on (scored on the same samples as the verdict)."""
    stopped_early = stop and s.step < s.cfg.train.steps
    if verdict is not None and stopped_early:
        verdict["stopped_early"] = True  # the record says why the trial ended here
    final = verdict is not None and (stop or s.step == s.cfg.train.steps)  # a verdict: this step evaluated
    if final and getattr(s.evaluator, "inception", None) is not None and verdict["verdict"] != "diverged":
        with isolated_rng(device):
            metrics.update(s.evaluator.inception_metrics(_eval_samples(s, device)[0]))
    return stopped_early


def _param_checksum(m: Models) -> float:
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for name in m.nets for p in m.module(name).parameters()))


def _any_rank(flag: bool, world_size: int, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any rank (one all-reduce of a single number)."""
    if world_size < 2 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def _finite_params(module: nn.Module) -> bool:
    # note: one CPU-GPU sync for the whole module, not one per parameter tensor
    flags = [torch.isfinite(p).all() for p in module.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _fmt(metrics: dict, keys: tuple[str, ...] | None = None) -> str:
    items = [(k, v) for k, v in metrics.items() if (keys is None or k in keys) and isinstance(v, float)]
    return " ".join(f"{k}={v:.4g}" for k, v in items if k not in CLOCK_FIELDS)
