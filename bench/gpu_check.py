"""The GPU check: one JSON line per check, in under 8 minutes on one H200.

    python bench/gpu_check.py --out gpu_check.jsonl     # on a machine with a GPU
    python bench/gpu_check.py --dry-run                 # every check end to end on the CPU, tiny sizes (CI)

Each line goes to stdout and to --out (default: $OUT/gpu_check.jsonl when $OUT is set, else
./gpu_check.jsonl), written as it finishes, so a check that runs out of time leaves the
lines before it. Every line has `check`, `status` (ok | failed | skipped), `wall_sec` and
the check's numbers; a GPU-only check on a machine without one says `"status": "skipped",
"skipped": "no GPU"`, and a check left when --budget-sec is spent says so too.

Each check runs in its own process with a hard timeout (TIMEOUT_SEC, never past --budget-sec
from the start): one that runs out of time is killed (its whole process group: Ray's processes
too) and its line says `"timed_out": true`; one that crashes its process (or cannot compile:
no C compiler, no Triton) is a failed line with its `error`. Either way the next check runs,
and the script ends within --budget-sec (450 s; 1200 s in a dry run) plus a few seconds. speed_compile runs last:
it is the one that may spend minutes compiling. The checks (docs/performance.md, "GPU check",
says how to read each):

  env                 torch, Ray, the device, the sizes of this run
  trial_fp32          one trial as `ganray train --local` runs it: steps/s, final metrics and verdict
  trial_bf16          the same with train.bf16
  bf16_correctness    inside the loop's autocast region (ganray.train.loop.step_precision): a D
                      forward after opt_D.step() equals a fresh forward; G's weights get gradients
                      after a no_grad use of G in the same region; and whether torch's weight cache
                      (the old single region) would have served stale weights
  eval_10k            the evaluator on 10,000 generated samples on the device: build and call time
  plain_vs_ray_train  the plain loop against a 1-worker Ray Train run: steps/s of each, the ratio
  sweep_quarter_gpus  four 0.25-GPU trials in one sweep (dry run: two CPU trials): wall time, each
                      trial's steps/s, the slot efficiency, GPU utilisation sampled with nvidia-smi
  speed_<option>      the step with each speed option (docs/config.md): steps/s against the plain
                      step, and its equivalence (losses, gradients, parameters after a few steps)
  trial_cuda_graphs   a short trial with speed.cuda_graphs (model.g_ema, evaluations, a checkpoint),
                      then resumed from its checkpoint, against the same two runs eager (GPU only)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ganray import storage  # noqa: E402
from ganray.artifacts import layout, reader  # noqa: E402
from ganray.config import load  # noqa: E402
from ganray.data import load_dataset  # noqa: E402
from ganray.train import speed  # noqa: E402
from ganray.train.state import TrainingState  # noqa: E402

# Sizes: (GPU, dry run). mnist5k ships with ganray: the GPU machine needs no download.
SIZES = {
    "width": (1.0, 0.125),          # model.width: 1.0 = the classic Keras MNIST DCGAN
    "batch": (64, 8),
    "trial_steps": (3000, 12),
    "eval_every": (1000, 6),
    "eval_n": (2000, 60),
    "eval_big_n": (10_000, 200),     # eval_10k's samples
    "ray_steps": (2000, 12),
    "sweep_steps": (2000, 8),
    "sweep_trials": (4, 2),
    "speed_compare_steps": (5, 3),   # steps compared against the plain step
    "speed_warm_steps": (20, 1),     # steps not timed (compilation, CUDA-graph warm-up and capture)
    "speed_timed_steps": (300, 3),
    "graphs_trial_steps": (400, 12),  # trial_cuda_graphs: this many steps, the first half before the resume
}
SPEED_OPTIONS = {  # check name -> the --set items of the option
    "speed_adam_foreach": ["speed.adam=foreach"],
    "speed_adam_fused": ["speed.adam=fused"],
    "speed_channels_last": ["speed.channels_last=true"],
    "speed_cuda_graphs": ["speed.cuda_graphs=true"],
    "speed_cuda_graphs_wgan_gp": ["speed.cuda_graphs=true", "train.family=wgan-gp"],
    "speed_compile": ["speed.compile=true"],  # last (CHECKS): compilation may take minutes, or fail
}
GPU_ONLY = {"speed_cuda_graphs", "speed_cuda_graphs_wgan_gp", "trial_cuda_graphs"}
# Each check's hard timeout in seconds (else DEFAULT_TIMEOUT_SEC), and never past --budget-sec.
TIMEOUT_SEC = {"env": 60, "sweep_quarter_gpus": 180, "trial_cuda_graphs": 180, "speed_compile": 240}
DEFAULT_TIMEOUT_SEC = 120


class Check:
    """What every check gets: the device, the sizes, a scratch storage folder."""

    def __init__(self, dry_run: bool, root: str, compile_backend: str | None = None):
        self.dry_run = dry_run
        # speed_compile's backend: inductor; aot_eager in a dry run (inductor's C++ build: minutes on a small CPU)
        self.compile_backend = compile_backend or ("aot_eager" if dry_run else "inductor")
        self.gpu = torch.cuda.is_available() and not dry_run
        self.device = torch.device("cuda" if self.gpu else "cpu")
        self.root = root
        self.size = {k: v[1 if dry_run else 0] for k, v in SIZES.items()}

    def config(self, name: str, *items: str):
        s = self.size
        return load(None, [f"model.width={s['width']}", f"train.batch_size={s['batch']}", f"eval.n={s['eval_n']}",
                           "eval.n_real=500" if self.dry_run else "eval.n_real=4500",
                           f"storage.uri={self.root}", f"experiment.name={name}",
                           f"scaling.use_gpu={str(self.gpu).lower()}", f"train.device={self.device.type}",
                           *items])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(trial_uri: str) -> float:
    """Steps per second between the first and the last row of the trial's metrics stream."""
    rows = reader.read_rows(trial_uri)
    return (rows[-1]["step"] - rows[0]["step"]) / max(rows[-1]["elapsed_sec"] - rows[0]["elapsed_sec"], 1e-9)


def _floats(d: dict, keys: tuple[str, ...]) -> dict[str, float]:
    return {k: round(float(d[k]), 5) for k in keys if isinstance(d.get(k), (int, float))}


# ---- checks ----------------------------------------------------------------------------


def check_env(c: Check) -> dict:
    import ray

    return {"torch": torch.__version__, "ray": ray.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name() if c.gpu else f"cpu ({os.cpu_count()} cores)",
            "cuda": torch.version.cuda, "dry_run": c.dry_run, "sizes": c.size}


def _trial(c: Check, bf16: bool) -> dict:
    from ganray.local import run_local

    s = c.size
    cfg = c.config(f"trial-{'bf16' if bf16 else 'fp32'}", f"train.steps={s['trial_steps']}",
                   f"train.eval_every={s['eval_every']}", f"train.checkpoint_every={s['eval_every']}",
                   f"train.sample_every={s['eval_every']}", f"train.log_every={max(s['trial_steps'] // 30, 1)}",
                   f"train.bf16={str(bf16).lower()}")
    result = run_local(cfg, progress=False)
    rate = _rate(layout.trial_paths(storage.experiment_uri(cfg), "train").trial)
    m = result.last_metrics
    out = {"steps": result.step, "steps_per_sec": round(rate, 2), "verdict": (result.verdict or {}).get("verdict"),
           "final": _floats(m, ("loss_D", "loss_G", "fcd", "classes_covered", "kl_uniform", "precision",
                                "recall", "duplicate_share", "near_real_share"))}
    finite = all(v == v and abs(v) != float("inf") for v in out["final"].values())
    return {**out, "ok": result.step == s["trial_steps"] and not result.diverged and finite}


def check_trial_fp32(c: Check) -> dict:
    return _trial(c, bf16=False)


def check_trial_bf16(c: Check) -> dict:
    return _trial(c, bf16=True)


def check_bf16_correctness(c: Check) -> dict:
    """The loop's autocast region across an optimizer step, on D and G of the DCGAN."""
    from ganray.models import build_discriminator, build_generator
    from ganray.train.loop import step_precision

    cfg = c.config("bf16", "train.bf16=true")
    torch.manual_seed(0)
    D = build_discriminator(cfg.model, (1, 28, 28), "gan").to(c.device).eval()  # eval: no Dropout
    G = build_generator(cfg.model, (1, 28, 28)).to(c.device)
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    x = torch.randn(16, 1, 28, 28, device=c.device)
    z = torch.randn(16, cfg.model.z_dim, device=c.device)
    with step_precision(cfg.train, c.device):  # the region the loop runs one family step in
        before = D(x)
        before.mean().backward()
        opt.step()
        after = D(x)  # after the step, in the same region
        with torch.no_grad():
            G(z)  # G's first use in the region under no_grad, as in d_step
        D(G(z)).mean().backward()
    with step_precision(cfg.train, c.device):
        fresh = D(x)  # a new region: casts the weights as they are now
    g_grads = [p.grad for p in G.parameters()]
    with torch.autocast(device_type=c.device.type, dtype=torch.bfloat16):  # the cache on: the old region
        y0 = D(x)
        y0.mean().backward()
        opt.step()
        cached_after = D(x)
    cache_stale = bool(torch.equal(cached_after, y0))
    out = {"d_after_step_equals_fresh": bool(torch.equal(after, fresh)),
           "d_output_moved": not bool(torch.equal(after, before)),
           "g_weights_got_gradients": all(g is not None and bool(g.abs().sum() > 0) for g in g_grads),
           "torch_weight_cache_serves_stale_weights": cache_stale,  # what the single cached region did
           "max_abs_diff_after_vs_fresh": float((after.detach().float() - fresh.detach().float()).abs().max())}
    out["ok"] = out["d_after_step_equals_fresh"] and out["d_output_moved"] and out["g_weights_got_gradients"]
    return out


def check_eval_10k(c: Check) -> dict:
    from ganray.collapse import Evaluator
    from ganray.metrics.classifier.ready import prepare
    from ganray.train.sampling import generate

    n = c.size["eval_big_n"]
    cfg = c.config("eval", f"eval.n={n}")
    prepare(cfg, say=lambda *_: None)
    data = load_dataset(cfg.data)
    from ganray.models import build_generator

    G = build_generator(cfg.model, data.shape).to(c.device)
    t0 = time.time()
    ev = Evaluator(cfg, data, c.device)
    _sync(c.device)
    build = time.time() - t0
    t0 = time.time()
    samples = generate(G, n, cfg.model.z_dim, c.device, seed=1)
    gen = time.time() - t0
    fixed = generate(G, cfg.eval.n_fixed_z, cfg.model.z_dim, c.device, seed=2)
    t0 = time.time()
    res = ev(samples, fixed, 1, [])
    _sync(c.device)
    call = time.time() - t0
    return {"samples": n, "evaluator_build_sec": round(build, 3), "generate_sec": round(gen, 3),
            "evaluate_sec": round(call, 3), "verdict": res.verdict, "metrics": len(res.metrics), "ok": bool(res.metrics)}


def _ray_init(c: Check) -> None:
    import ray

    from ganray.distributed import ray_env

    if not ray.is_initialized():
        kw = {"num_cpus": 2} if c.dry_run else {}
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": ray_env()}, **kw)


def check_plain_vs_ray_train(c: Check) -> dict:
    from ganray.distributed import make_trainer
    from ganray.local import run_local

    s = c.size
    every = max(s["ray_steps"] // 4, 1)
    items = [f"train.steps={s['ray_steps']}", "eval.metrics=[]", f"train.log_every={max(every // 5, 1)}",
             f"train.eval_every={every}", f"train.sample_every={every}", f"train.checkpoint_every={every}"]
    cfg = c.config("plain", *items)
    run_local(cfg, progress=False)
    plain = _rate(layout.trial_paths(storage.experiment_uri(cfg), "train").trial)
    _ray_init(c)
    cfg = c.config("ray", *items, "scaling.cpus_per_worker=1")
    result = make_trainer(cfg, "train").fit()
    if result.error:
        raise result.error
    on_ray = _rate(layout.trial_paths(storage.experiment_uri(cfg), "train").trial)
    return {"steps": s["ray_steps"], "plain_steps_per_sec": round(plain, 2), "ray_1_worker_steps_per_sec":
            round(on_ray, 2), "ratio": round(on_ray / plain, 3), "ok": True}


class Utilisation(threading.Thread):
    """GPU utilisation (%) from nvidia-smi every 0.5 s while the sweep runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                with contextlib.suppress(Exception):
                    self.samples.append(float(torch.cuda.utilization()))


def check_sweep_quarter_gpus(c: Check) -> dict:
    from ganray.sweep import grid, run_sweep, trial_names

    s = c.size
    n = s["sweep_trials"]
    z = [1, 2, 10, 50][:n]
    gpu = ["scaling.gpus_per_worker=0.25", "scaling.cpus_per_worker=2"] if c.gpu else ["scaling.cpus_per_worker=1"]
    cfg = c.config("sweep", f"train.steps={s['sweep_steps']}", f"sweep.z_dim={z}", "sweep.stopper=false",
                   f"sweep.max_concurrent_trials={n}", f"train.eval_every={s['sweep_steps']}",
                   f"train.log_every={max(s['sweep_steps'] // 20, 1)}", *gpu)
    _ray_init(c)
    util = Utilisation() if c.gpu else None
    if util:
        util.start()
    t0 = time.time()
    exp = run_sweep(cfg, write_report=False)
    wall = time.time() - t0
    if util:
        util.stop.set()
    rates = {}
    for name in trial_names(grid(cfg)):
        rates[name] = round(_rate(layout.trial_paths(exp, name).trial), 2)
    own = sum(s["sweep_steps"] / r for r in rates.values())  # each trial's training time at its own rate
    out = {"trials": n, "wall_sec": round(wall, 1), "trial_steps_per_sec": rates,
           "slot_efficiency": round(own / (wall * n), 3)}
    if util and util.samples:
        out["gpu_utilisation_pct"] = {"mean": round(statistics.mean(util.samples), 1),
                                      "max": max(util.samples), "samples": len(util.samples)}
    else:
        out["gpu_utilisation_pct"] = "skipped: no GPU" if not c.gpu else "no reading (nvidia-smi and pynvml missing)"
    return {**out, "ok": len(rates) == n}


# ---- speed options ---------------------------------------------------------------------


def _steps(c: Check, items: list[str]):
    """A run through speed.prepare as the loop runs it (D's Dropout off: its masks follow memory
    order); the first steps' losses, the gradients and parameters after them, and steps/s."""
    s = c.size
    cfg = c.config("speed", *items)
    data = load_dataset(cfg.data)
    if c.gpu:  # the compared steps without TF32 (cuDNN's convolutions use it by default)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    st = TrainingState.build(cfg, data, 0, 1, c.device)
    for mod in st.m.D.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0
    step = speed.prepare(st, c.device)

    def one():
        return step(st.m, st.sampler.next_real, st.sampler.sample_z, st.family_state, cfg.train)

    losses = [{k: float(v) for k, v in one().items()} for _ in range(s["speed_compare_steps"])]
    grads = {k: {n: p.grad.detach().clone() for n, p in getattr(st.m, k).named_parameters() if p.grad is not None}
             for k in "GD"}
    params = {k: {n: p.detach().clone() for n, p in getattr(st.m, k).named_parameters()} for k in "GD"}
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults
    for _ in range(s["speed_warm_steps"]):
        one()
    _sync(c.device)
    t0 = time.time()
    for _ in range(s["speed_timed_steps"]):
        one()
    _sync(c.device)
    return st, losses, grads, params, s["speed_timed_steps"] / (time.time() - t0)


def _compare(ref, got) -> dict[str, float]:
    st = ref[0]
    loss = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-3) for a, b in zip(ref[1], got[1]) for k in a)
    grad = max(float((g - got[2][k][n]).abs().max() / max(float(gg.abs().max()) for gg in ref[2][k].values()))
               for k in "GD" for n, g in ref[2][k].items())
    param = max(float((p - got[3][k][n]).abs().max()) for k in "GD" for n, p in ref[3][k].items()
                if n not in speed.bn_cancelled(getattr(st.m, k)))
    return {"loss_rel_diff": loss, "grad_rel_diff": grad, "param_abs_diff": param}


def speed_check(name: str) -> Callable[[Check], dict]:
    def run(c: Check) -> dict:
        items = SPEED_OPTIONS[name]
        if "speed.compile=true" in items:
            items = [*items, f"speed.compile_backend={c.compile_backend}"]
        family = [i for i in items if i.startswith("train.family=")]
        ref = _steps(c, family)
        got = _steps(c, items)
        diffs = _compare(ref, got)
        # the step's own numbers within the rounding of other kernels (fp32, TF32 off); the parameters
        # are reported, not judged: Adam turns rounding in small gradients into steps of up to lr (2e-4)
        ok = diffs["loss_rel_diff"] <= 1e-4 and diffs["grad_rel_diff"] <= 1e-4
        return {"option": items, "plain_steps_per_sec": round(ref[4], 2), "steps_per_sec": round(got[4], 2),
                "speedup": round(got[4] / ref[4], 3), "compared_steps": c.size["speed_compare_steps"],
                **{k: float(f"{v:.3g}") for k, v in diffs.items()}, "ok": ok}

    return run


def check_trial_cuda_graphs(c: Check) -> dict:
    """A trial as `ganray train --local` runs it with speed.cuda_graphs, model.g_ema on, evaluations and
    a checkpoint at half way; then the same trial resumed from that checkpoint to the end (a fresh
    process's run: a new capture, Adam's state restored capturable). The same two runs eager;
    the losses of both at every logged step compared."""
    from ganray.local import run_local

    n = c.size["graphs_trial_steps"]
    half = n // 2
    every = max(half // 2, 1)
    common = ["model.g_ema=true", f"train.eval_every={every}", f"train.checkpoint_every={half}",
              f"train.sample_every={half}", f"train.log_every={max(half // 10, 1)}"]
    runs = {}
    for mode, extra in (("eager", []), ("graphed", ["speed.cuda_graphs=true"])):
        first = run_local(c.config(f"graphs-{mode}", f"train.steps={half}", *common, *extra), progress=False)
        cfg = c.config(f"graphs-{mode}", f"train.steps={n}", *common, *extra)  # the same trial: it resumes
        second = run_local(cfg, progress=False)
        rows = reader.read_rows(layout.trial_paths(storage.experiment_uri(cfg), "train").trial)
        runs[mode] = {"first": first, "second": second, "rows": rows,
                      "losses": {r["step"]: (r.get("loss_D"), r.get("loss_G")) for r in rows
                                 if isinstance(r.get("loss_D"), (int, float))}}
    eager, graphed = runs["eager"], runs["graphed"]
    common_steps = sorted(set(eager["losses"]) & set(graphed["losses"]))
    rel = [max(abs(a - b) / max(abs(a), 1e-3) for a, b in zip(eager["losses"][k], graphed["losses"][k]))
           for k in common_steps]
    out = {"steps": n, "resumed_at": half, "steps_done": [runs[m]["second"].step for m in runs],
           "logged_steps_compared": len(common_steps),
           "first_loss_rel_diff": float(f"{rel[0]:.3g}") if rel else None,
           "max_loss_rel_diff": float(f"{max(rel):.3g}") if rel else None,
           "eager_final": _floats(eager["second"].last_metrics, ("loss_D", "loss_G", "fcd", "classes_covered")),
           "graphed_final": _floats(graphed["second"].last_metrics, ("loss_D", "loss_G", "fcd", "classes_covered")),
           "graphed_steps_per_sec": round(_rate(layout.trial_paths(storage.experiment_uri(cfg), "train").trial), 2)}
    finite = all(v == v and abs(v) != float("inf") for v in out["graphed_final"].values())
    # judged: both ran to the end across the resume, finite, and the first logged losses agree
    # (later ones drift apart: Adam's capturable kernel rounds otherwise, and a GAN amplifies it)
    out["ok"] = (out["steps_done"] == [n, n] and all(runs[m]["first"].step == half for m in runs) and finite
                 and rel and rel[0] <= 1e-2)
    return out


CHECKS: dict[str, Callable[[Check], dict]] = {
    "env": check_env,
    "trial_fp32": check_trial_fp32,
    "trial_bf16": check_trial_bf16,
    "bf16_correctness": check_bf16_correctness,
    "eval_10k": check_eval_10k,
    "plain_vs_ray_train": check_plain_vs_ray_train,
    "sweep_quarter_gpus": check_sweep_quarter_gpus,
    **{name: speed_check(name) for name in SPEED_OPTIONS if name != "speed_compile"},
    "trial_cuda_graphs": check_trial_cuda_graphs,
    "speed_compile": speed_check("speed_compile"),  # last: may compile for minutes, or fail to (no compiler)
}


def run_one(name: str, dry_run: bool, root: str, result: str, compile_backend: str | None) -> int:
    """The child process of one check: its result (or its error) as JSON in the file `result`."""
    if dry_run:
        torch.set_num_threads(1)
    sys.stdout = sys.stderr  # Ray's threads print; the parent's stdout carries the JSON lines only
    try:
        res = CHECKS[name](Check(dry_run, root, compile_backend))
        ok = res.pop("ok", True)
        line = {"status": "ok" if ok else "failed", **res}
    except Exception as e:  # e.g. inductor without a C compiler or Triton: this check's error line
        line = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        traceback.print_exc(file=sys.stderr)
    finally:
        with contextlib.suppress(Exception):
            import ray

            ray.shutdown()
    Path(result).write_text(json.dumps(line, default=str))
    return 0


def _kill_group(proc: subprocess.Popen) -> None:
    """The check's process and everything it started (Ray's raylet and workers: one process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def run_checks(dry_run: bool, root: str, names: list[str], emit: Callable[[dict], None], budget_sec: float,
               timeout_sec: float | None = None, compile_backend: str | None = None) -> bool:
    """Each check in a fresh process (`--child`) with a hard timeout: its own (TIMEOUT_SEC, or
    timeout_sec; twice as long in a dry run, on a slow CPU), never past `budget_sec` from the start.
    A check that times out is killed and its line says so; one whose process dies is a failed line."""
    deadline = time.time() + budget_sec
    gpu = torch.cuda.is_available() and not dry_run
    all_ok = True
    for name in names:
        line: dict[str, Any] = {"check": name}
        left = deadline - time.time()
        limit = min(timeout_sec or TIMEOUT_SEC.get(name, DEFAULT_TIMEOUT_SEC) * (2 if dry_run else 1), left)
        if name in GPU_ONLY and not gpu:
            line.update(status="skipped", skipped="no GPU", wall_sec=0.0)
        elif left < 5:
            line.update(status="skipped", skipped=f"time budget of {budget_sec:.0f} s spent", wall_sec=0.0)
        else:
            result = Path(root) / f"{name}.result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--root", root,
                   "--result", str(result), *(["--dry-run"] if dry_run else []),
                   *(["--compile-backend", compile_backend] if compile_backend else [])]
            t0 = time.time()
            # its own session (process group), so that a timeout kills Ray's processes with it;
            # its stdout on our stderr: our stdout carries the JSON lines only
            proc = subprocess.Popen(cmd, stdout=sys.stderr, start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                line.update(status="failed", timed_out=True,
                            error=f"killed after its hard timeout of {limit:.0f} s")
            else:
                _kill_group(proc)  # whatever it left running (a Ray worker) goes too
                if result.exists():
                    line.update(json.loads(result.read_text()))
                else:
                    line.update(status="failed", error=f"its process ended with exit status {rc} and no result "
                                                       "(a crash: its output is on stderr)")
            line["wall_sec"] = round(time.time() - t0, 2)
        all_ok &= line["status"] != "failed"
        emit(line)
    return all_ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every check on the CPU with tiny sizes (seconds)")
    p.add_argument("--out", help="the JSON lines file (default: $OUT/gpu_check.jsonl, else ./gpu_check.jsonl)")
    p.add_argument("--only", nargs="+", metavar="CHECK", choices=list(CHECKS), help="run only these checks")
    p.add_argument("--budget-sec", type=float,
                   help="the whole run's hard bound: no check runs past this many seconds from the start, and "
                        "none starts with under 5 left (default 450, 7.5 minutes; 1200 in a dry run, whose CPU "
                        "need not keep the GPU's 8 minutes)")
    p.add_argument("--check-timeout-sec", type=float,
                   help=f"every check's hard timeout (default: per check, {DEFAULT_TIMEOUT_SEC} s or TIMEOUT_SEC)")
    p.add_argument("--compile-backend", choices=("inductor", "aot_eager", "eager"),
                   help="speed_compile's torch.compile backend (default: inductor; aot_eager in a dry run)")
    p.add_argument("--child", metavar="CHECK", choices=list(CHECKS), help=argparse.SUPPRESS)  # one check's process
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return run_one(a.child, a.dry_run, a.root, a.result, a.compile_backend)
    out = Path(a.out or Path(os.environ.get("OUT", ".")) / "gpu_check.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    names = a.only or list(CHECKS)
    budget = a.budget_sec if a.budget_sec is not None else (1200.0 if a.dry_run else 450.0)
    if not a.dry_run and not torch.cuda.is_available():
        print("gpu_check: no GPU here (torch.cuda.is_available() is False); --dry-run runs the checks on the CPU "
              "with tiny sizes", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as root, open(out, "w") as f:
        def emit(line: dict) -> None:
            text = json.dumps(line)
            print(text, flush=True)
            f.write(text + "\n")
            f.flush()

        ok = run_checks(a.dry_run, root, names, emit, budget, a.check_timeout_sec, a.compile_backend)
    print(f"gpu_check: {'all checks ok' if ok else 'a check failed'}; lines in {out}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
