"""Seconds to score 10,000 MNIST samples with every image metric (target: <= 5 s on 2 CPU cores).

What one evaluation in a run costs: the Evaluator's reference statistics (classifier features of
the real data, their mean, covariance and k-NN radii) are built once per run and reported
separately; the timed part is `Evaluator(samples, fixed_samples, step, history)` on 10,000
samples — the mnist5k digits (train + test, 5,000) each shifted/rotated twice at random — with
class_coverage, fcd, prdc, near_real, fixed_z_flip_rate (64 fixed samples), sample_diversity
and training_signals. Median of --repeats runs, per-metric times from one extra run.

    python bench/bench_metrics.py [--n 10000] [--threads 2] [--repeats 3] [--write docs/performance.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ganray.collapse import Evaluator  # noqa: E402
from ganray.config import DataConfig, from_dict  # noqa: E402
from ganray.data import load_dataset  # noqa: E402
from ganray.metrics.calibrate import jittered  # noqa: E402
from ganray.metrics.inputs import MetricInputs  # noqa: E402

IMAGE_METRICS = ["class_coverage", "fcd", "prdc", "near_real", "fixed_z_flip_rate", "sample_diversity", "training_signals"]
SECTION = "## Metrics"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the '## Metrics' section of path, leaving other sections alone."""
    text = path.read_text() if path.is_file() else "# Performance\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "\n".join(lines[:start] + body.rstrip("\n").splitlines() + [""] + lines[end:]).rstrip("\n") + "\n"
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--write", default=None, help="Markdown file whose '## Metrics' section gets the result")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    train, test = (load_dataset(DataConfig(dataset="mnist5k"), s) for s in ("train", "test"))
    g = torch.Generator().manual_seed(0)
    samples = jittered(torch.cat([train.x, test.x]), args.n, g)  # [n, 1, 28, 28], no exact copies
    fixed = samples[:64]
    history = [{"step": 10 * i, "loss_D": 0.6 + 0.01 * (i % 3), "loss_G": 0.9, "d_acc_real": 0.7, "d_acc_fake": 0.6}
               for i in range(20)]
    cfg = from_dict({"data": {"dataset": "mnist5k"}, "eval": {"metrics": IMAGE_METRICS}})

    t0 = time.perf_counter()
    ev = Evaluator(cfg, train, "cpu")
    t_ref = time.perf_counter() - t0
    ev(samples, fixed, 0, history)  # warm-up; also sets the flip rate's previous predictions

    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        res = ev(samples, fixed, r + 1, history)
        times.append(time.perf_counter() - t0)
    total = statistics.median(times)

    # per metric: the shared classifier pass is timed on its own, metrics then reuse it
    inp = MetricInputs(samples, ev.ref, fixed, history, ev.state, flat_window=cfg.eval.flat_window)
    t0 = time.perf_counter()
    _ = inp.labelled
    parts = {"classifier features + labels (shared by all)": time.perf_counter() - t0}
    for m in ev.metrics:
        t0 = time.perf_counter()
        m.fn(inp)
        parts[m.name] = time.perf_counter() - t0

    machine = f"{cpu_model()}, {cpu_count()} cores, torch {torch.__version__}, {args.threads} threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    verdict = f"{res.verdict}: " + "; ".join(res.reasons[:1])
    lines = [
        SECTION,
        "",
        f"`python bench/bench_metrics.py` — every image metric on {args.n:,} MNIST samples "
        f"(mnist5k digits, randomly shifted/rotated), reference = mnist5k train split ({len(train):,} digits).",
        f"Machine: {machine}; 1-minute load average {load_before:.1f} before the run, {load:.1f} after "
        "(the CPU is shared: other jobs' load slows every number here). Target: <= 5 s per evaluation.",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| **one evaluation, all metrics (median of {args.repeats})** | **{total:.2f}** |",
        *[f"| {k} | {v:.2f} |" for k, v in parts.items()],
        f"| reference statistics, once per run | {t_ref:.2f} |",
        "",
        f"Verdict on these samples: {verdict}.",
    ]
    print("\n".join(lines))
    if args.write:
        write_section(Path(args.write), "\n".join(lines))
    return 0 if total <= 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
