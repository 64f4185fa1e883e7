"""bench/gpu_check.py --dry-run: every check of the GPU check runs end to end on the CPU (so the
script cannot rot before a GPU arrives), one JSON line per check, GPU-only checks skipped aloud.
A real local Ray (a 1-worker Ray Train run, a 2-trial sweep); each check in its own process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ["env", "trial_fp32", "trial_bf16", "bf16_correctness", "eval_10k", "plain_vs_ray_train",
          "sweep_quarter_gpus", "speed_adam_foreach", "speed_adam_fused", "speed_channels_last",
          "speed_cuda_graphs", "speed_cuda_graphs_wgan_gp", "trial_cuda_graphs",
          "speed_compile"]  # last: it may compile for minutes, or fail to
GPU_ONLY = {"speed_cuda_graphs", "speed_cuda_graphs_wgan_gp", "trial_cuda_graphs"}
KEYS = {  # what each check's line must carry besides check, status and wall_sec
    "env": {"torch", "ray", "device", "dry_run", "sizes"},
    "trial_fp32": {"steps", "steps_per_sec", "verdict", "final"},
    "trial_bf16": {"steps", "steps_per_sec", "verdict", "final"},
    "bf16_correctness": {"d_after_step_equals_fresh", "d_output_moved", "g_weights_got_gradients",
                         "torch_weight_cache_serves_stale_weights"},
    "eval_10k": {"samples", "evaluator_build_sec", "generate_sec", "evaluate_sec", "verdict"},
    "plain_vs_ray_train": {"plain_steps_per_sec", "ray_1_worker_steps_per_sec", "ratio"},
    "sweep_quarter_gpus": {"trials", "trial_steps_per_sec", "slot_efficiency", "gpu_utilisation_pct"},
    **{c: {"option", "plain_steps_per_sec", "steps_per_sec", "speedup", "loss_rel_diff", "grad_rel_diff",
           "param_abs_diff"} for c in CHECKS if c.startswith("speed_") and c not in GPU_ONLY},
}


def test_the_gpu_check_dry_run_writes_one_line_per_check(tmp_path):
    out = tmp_path / "lines.jsonl"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-4000:]
    printed = [json.loads(line) for line in run.stdout.splitlines()]  # stdout: JSON lines and nothing else
    assert [json.loads(line) for line in out.read_text().splitlines()] == printed
    assert [line["check"] for line in printed] == CHECKS
    for line in printed:
        name = line["check"]
        if name in GPU_ONLY:
            assert line["status"] == "skipped" and line["skipped"] == "no GPU", line
            continue
        assert line["status"] == "ok", line
        assert KEYS[name] <= line.keys(), (name, KEYS[name] - line.keys())
        assert line["wall_sec"] >= 0
    by = {line["check"]: line for line in printed}
    assert by["env"]["dry_run"] is True
    assert by["trial_fp32"]["steps"] == by["trial_bf16"]["steps"] > 0 and by["trial_bf16"]["steps_per_sec"] > 0
    assert by["trial_fp32"]["final"] != by["trial_bf16"]["final"]  # bf16 really ran (on the CPU too)
    bf16 = by["bf16_correctness"]
    assert bf16["d_after_step_equals_fresh"] and bf16["d_output_moved"] and bf16["g_weights_got_gradients"]
    assert len(by["sweep_quarter_gpus"]["trial_steps_per_sec"]) == 2
    assert by["sweep_quarter_gpus"]["gpu_utilisation_pct"] == "skipped: no GPU"
    assert by["plain_vs_ray_train"]["ray_1_worker_steps_per_sec"] > 0
    assert by["speed_adam_foreach"]["param_abs_diff"] == 0.0  # bitwise on the CPU
    assert by["speed_compile"]["option"][-1] == "speed.compile_backend=aot_eager"


def test_the_gpu_check_kills_a_check_at_the_budget_and_skips_the_rest(tmp_path):
    """--budget-sec bounds the whole run: a check still running at the deadline is killed (its line
    says timed_out, and its process group goes: Ray's too) and none starts after it.
    plain_vs_ray_train (a plain run, a Ray start, a Ray Train run) takes 20-60 s here; 7 s cut it."""
    out = tmp_path / "lines.jsonl"
    t0 = time.time()
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out),
                          "--budget-sec", "7", "--only", "plain_vs_ray_train", "env"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t0
    assert run.returncode == 1, run.stderr[-4000:]  # a check failed: the timed-out one
    ray, env = [json.loads(line) for line in run.stdout.splitlines()]
    assert ray["check"] == "plain_vs_ray_train" and ray["status"] == "failed" and ray["timed_out"] is True, ray
    assert 6 <= ray["wall_sec"] <= 15 and "hard timeout of 7 s" in ray["error"]
    assert env == {"check": "env", "status": "skipped", "skipped": "time budget of 7 s spent", "wall_sec": 0.0}
    assert wall < 7 + 25  # the budget plus the parent's start-up and the kill, not the check's own time
