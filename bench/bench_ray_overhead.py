"""Steps per second of the Ray Train loop (1 worker) vs the plain in-process loop.

Same model, batch, data, thread count and artifacts (TensorBoard events, metrics.jsonl,
samples, checkpoints through TrialArtifacts); throughput is taken from each run's own
metrics.jsonl (steps between the first and last report ÷ the time between them), so start-up
(Ray workers, dataset load) is excluded from both and the per-report `ray.train.report`
barrier is included in the Ray number. Goal: ratio >= 0.97.

    python bench/bench_ray_overhead.py [--steps 300] [--width 0.25] [--batch 64] [--repeats 2] [--gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ganray.config import load  # noqa: E402
from ganray.local import run_local, trial_uris  # noqa: E402


def _rate(trial_dir: str) -> float:
    """Steps per second between the first and the last report in the trial's metrics.jsonl."""
    rows = [json.loads(line) for line in Path(trial_dir, "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    return (last["step"] - first["step"]) / (last["elapsed_sec"] - first["elapsed_sec"])


def plain(cfg, name: str) -> float:
    """The in-process loop as `ganray train --local` runs it (same artifacts as a Ray run)."""
    cfg = cfg.replace(**{"experiment.name": name})
    run_local(cfg, progress=False)
    return _rate(trial_uris(cfg, "train")[0])


def on_ray(cfg, name: str) -> float:
    import ray

    from ganray.distributed import make_trainer, run_paths

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    cfg = cfg.replace(**{"experiment.name": name})
    result = make_trainer(cfg, "train").fit()
    if result.error:
        raise result.error
    return _rate(run_paths(cfg, "train").trial)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--gpu", action="store_true")
    a = p.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        cfg = load(None, [f"train.steps={a.steps}", f"model.width={a.width}", f"train.batch_size={a.batch}",
                          "train.log_every=25", f"train.eval_every={a.steps}", f"train.sample_every={a.steps}",
                          f"train.checkpoint_every={a.steps}", "eval.metrics=[]", f"storage.uri={d}",
                          "experiment.name=bench", f"scaling.cpus_per_worker={threads}",
                          f"scaling.use_gpu={str(a.gpu).lower()}", f"train.device={'cuda' if a.gpu else 'cpu'}"])
        plain_rates, ray_rates = [], []
        for i in range(a.repeats):  # interleaved, so drifts in machine load hit both
            plain_rates.append(plain(cfg, f"plain-{i}"))
            ray_rates.append(on_ray(cfg, f"ray-{i}"))
    best_plain, best_ray = max(plain_rates), max(ray_rates)
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {threads} cores"
                   + (f", {torch.cuda.get_device_name()}" if a.gpu else ""),
        "model": f"DCGAN width {a.width}, batch {a.batch}, {a.steps} steps",
        "plain_steps_per_sec": [round(r, 2) for r in plain_rates],
        "ray_1_worker_steps_per_sec": [round(r, 2) for r in ray_rates],
        "ratio_best": round(best_ray / best_plain, 3),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
