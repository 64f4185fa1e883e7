"""Steps per second of the Ray Train loop (1 worker) vs the plain in-process loop.

Same model, batch, data, thread count and artifacts (TensorBoard events, the metrics stream,
samples, checkpoints through the trial recorder); throughput is taken from each run's own
the metrics stream (steps between the first and last report ÷ the time between them), so start-up
(Ray workers, dataset load) is excluded from both and the per-report `ray.train.report`
barrier is included in the Ray number. Each measurement runs in a fresh process, plain and Ray
alternating, and the ratio is the median over the pairs. Goal: ratio >= 0.97.

    python bench/bench_ray_overhead.py [--steps 300] [--width 0.25] [--batch 64] [--pairs 4]
                                       [--log-every 20] [--report-every 100] [--gpu]

Every --report-every steps both sides write a sample grid and a checkpoint (the Ray side
through ray.train.report and its upload), so two of them fall inside the measured window of
a 300-step run.
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

from ganray import storage  # noqa: E402
from ganray.artifacts import layout, reader  # noqa: E402
from ganray.config import load  # noqa: E402
from ganray.local import run_local  # noqa: E402


def _rate(trial_dir: str) -> float:
    """Steps per second between the first and the last report in the trial's metrics stream."""
    rows = reader.read_rows(trial_dir)
    first, last = rows[0], rows[-1]
    return (last["step"] - first["step"]) / (last["elapsed_sec"] - first["elapsed_sec"])


def plain(cfg, name: str) -> float:
    """The in-process loop as `ganray train --local` runs it (same artifacts as a Ray run)."""
    cfg = cfg.replace(**{"experiment.name": name})
    run_local(cfg, progress=False)
    return _rate(layout.trial_paths(storage.experiment_uri(cfg), "train").trial)


def on_ray(cfg, name: str) -> float:
    import ray

    from ganray.distributed import make_trainer

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)  # a local Ray, as `ganray train` starts
    cfg = cfg.replace(**{"experiment.name": name})
    result = make_trainer(cfg, "train").fit()
    if result.error:
        raise result.error
    return _rate(layout.trial_paths(storage.experiment_uri(cfg), "train").trial)


MARK = "BENCH-RESULT "  # tags the child's result line among whatever else it prints


def _config(a, storage_uri: str, threads: int):
    return load(None, [f"train.steps={a.steps}", f"model.width={a.width}", f"train.batch_size={a.batch}",
                       f"train.log_every={a.log_every}", f"train.eval_every={a.report_every}",
                       f"train.sample_every={a.report_every}", f"train.checkpoint_every={a.report_every}",
                       "eval.metrics=[]",
                       f"storage.uri={storage_uri}", "experiment.name=bench", f"scaling.cpus_per_worker={threads}",
                       f"scaling.use_gpu={str(a.gpu).lower()}", f"train.device={'cuda' if a.gpu else 'cpu'}"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--pairs", type=int, default=4, help="(plain, Ray) pairs, each side in a fresh process")
    p.add_argument("--log-every", type=int, default=20, help="train.log_every (the default is 20)")
    p.add_argument("--report-every", type=int, default=100,
                   help="eval/sample/checkpoint interval: a sample grid, a checkpoint and a ray.train.report")
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--side", choices=("plain", "ray"), help=argparse.SUPPRESS)  # one measurement, internal
    a = p.parse_args()
    threads = os.cpu_count() or 1
    if a.side:  # a child: measure one side in this fresh process and print its rate
        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as d:
            cfg = _config(a, d, threads)
            rate = plain(cfg, "plain") if a.side == "plain" else on_ray(cfg, "ray")
            print(MARK + json.dumps({"rate": rate}))
        return
    import statistics
    import subprocess

    def measure(side: str) -> float:
        argv = [sys.executable, __file__, "--side", side, f"--steps={a.steps}", f"--width={a.width}",
                f"--batch={a.batch}", f"--log-every={a.log_every}", f"--report-every={a.report_every}"]
        run = subprocess.run(argv + (["--gpu"] if a.gpu else []), capture_output=True, text=True)
        lines = [line for line in run.stdout.splitlines() if line.startswith(MARK)]
        if run.returncode != 0 or not lines:
            sys.exit(f"the {side} measurement failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        return json.loads(lines[-1][len(MARK):])["rate"]

    plain_rates, ray_rates = [], []
    load_before = os.getloadavg()[0]
    for i in range(a.pairs):  # alternated, so drifts in the machine's speed hit both sides
        plain_rates.append(measure("plain"))
        ray_rates.append(measure("ray"))
        print(f"pair {i + 1}/{a.pairs}: plain {plain_rates[-1]:.2f}, Ray {ray_rates[-1]:.2f} steps/s", file=sys.stderr)
    ratios = [r / p_ for p_, r in zip(plain_rates, ray_rates)]
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {threads} cores"
                   + (f", {torch.cuda.get_device_name()}" if a.gpu else ""),
        "model": f"DCGAN width {a.width}, batch {a.batch}, {a.steps} steps, log_every {a.log_every}, "
                 f"evaluation/samples/checkpoint/report every {a.report_every}",
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "plain_steps_per_sec": [round(r, 2) for r in plain_rates],
        "ray_1_worker_steps_per_sec": [round(r, 2) for r in ray_rates],
        "pair_ratios": [round(r, 3) for r in ratios],
        "ratio_median_of_pairs": round(statistics.median(ratios), 3),
        "ratio_median_rates": round(statistics.median(ray_rates) / statistics.median(plain_rates), 3),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
