"""Steps per second of the Ray Train loop (1 worker) vs the plain in-process loop.

Same model, batch, data and thread count; throughput is taken from the loop's own reports
(steps between the first and last report ÷ the time between them), so start-up (Ray
workers, dataset load) is excluded from both and the per-report `ray.train.report` barrier
is included in the Ray number. Goal: ratio >= 0.97.

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
from ganray.loop import train  # noqa: E402


def _rate(reports: list[tuple[int, float]]) -> float:
    (s0, t0), (s1, t1) = reports[0], reports[-1]
    return (s1 - s0) / (t1 - t0)


def plain(cfg) -> float:
    reports: list[tuple[int, float]] = []
    train(cfg, report=lambda step, m, **kw: reports.append((step, m["elapsed_sec"])),
          save_checkpoint=lambda *a: None, should_stop=lambda *a: False)
    return _rate(reports)


def on_ray(cfg, workdir: str) -> float:
    import ray
    from ray.train.v2.api.callback import UserCallback

    from ganray.distributed import make_trainer

    path = os.path.join(workdir, "reports.jsonl")

    class Record(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps([metrics[0]["step"], metrics[0]["elapsed_sec"]]) + "\n")

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    if os.path.exists(path):
        os.remove(path)
    result = make_trainer(cfg, f"bench-{os.getpid()}-{len(os.listdir(workdir))}", callbacks=[Record()]).fit()
    if result.error:
        raise result.error
    rows = [tuple(json.loads(line)) for line in Path(path).read_text().splitlines()]
    return _rate(rows)


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
        for _ in range(a.repeats):  # interleaved, so drifts in machine load hit both
            plain_rates.append(plain(cfg))
            ray_rates.append(on_ray(cfg, d))
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
