"""Bytes uploaded ÷ bytes written for a long run, over every file of the trial record (TensorBoard
events, metrics rows, sample PNGs, verdict.json, config.yaml, the GIF), against a real S3 server
(moto_server on 127.0.0.1). Goal: ≤ 1.5 with ganray's defaults.

A long run is simulated in compressed time: 20,000 steps of 10 scalars (one metrics row each),
a 64-image 28×28 sample grid every 100 steps and a verdict every 500, written by
ganray.artifacts.recorder.TrialRecorder at a steady rate over `--duration` seconds while its
background thread uploads every `upload_every_sec`. Time is scaled by `--scale` (default 60):
upload 0.5 s here stands for 30 s in a real run, so 20 s here is a 20-minute run with 40
upload ticks. Policies compared, as seconds of real-run time (upload period / rotation age):

  ganray default   30 / 30     each tick closes the open segments and sends them once
  rotate 2 ticks   30 / 60     an open segment is sent twice before it closes
  rotate 10 ticks  30 / 300    an open segment is re-sent 9 times
  no rotation      30 / never  one growing file per log re-sent whole at every tick: what writing
                               event files or metrics.jsonl straight to s3:// does at each flush

The event and metrics objects in the bucket are checked to add up to exactly the bytes written.

    python bench/bench_upload.py [--steps 20000] [--duration 20] [--scale 60] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the S3 server helper lives with the test fixtures

import torch  # noqa: E402

from conftest import S3Server  # noqa: E402
from ganray.artifacts import layout  # noqa: E402
from ganray.artifacts.recorder import TrialRecorder  # noqa: E402

SCALARS = ("loss_G", "loss_D", "d_acc_real", "d_acc_fake", "grad_norm_G", "grad_norm_D",
           "lr_G", "lr_D", "k_t", "M_global")

# (name, upload period, rotation age) in real-run seconds; None = never rotate by age
POLICIES = [
    ("ganray default", 30.0, 30.0),
    ("rotate 2 ticks", 30.0, 60.0),
    ("rotate 10 ticks", 30.0, 300.0),
    ("no rotation", 30.0, None),
]


def simulate(server: S3Server, name: str, upload_sec: float, rotate_sec: float | None, *, steps: int,
             duration: float, scale: float, sample_every: int, verdict_every: int, n_images: int) -> dict:
    bucket = server.make_bucket()
    never = 1e9
    rec = TrialRecorder(layout.trial_paths(f"s3://{bucket}/exp", "t"), config_yaml="model:\n  z_dim: 10\n",
                        upload_every_sec=upload_sec / scale,
                        rotate_every_sec=(rotate_sec / scale) if rotate_sec else never, rotate_max_bytes=1 << 40)
    g = torch.Generator().manual_seed(0)
    # Smooth 28x28 "digits" (blurred noise), so PNGs compress like real samples rather than pure noise.
    base = torch.nn.functional.avg_pool2d(torch.rand(n_images, 1, 32, 32, generator=g), 5, 1)
    t0 = time.monotonic()
    for step in range(1, steps + 1):
        rec.row(step, {k: float(i + step * 1e-3) for i, k in enumerate(SCALARS)})
        if step % sample_every == 0:
            rec.samples(step, (base + 0.05 * step / steps).clamp(0, 1) * 2 - 1)
        if step % verdict_every == 0:
            rec.verdict({"verdict": "healthy", "step": step, "first_seen_step": None, "reasons": ["10 of 10 classes"],
                         "counts": {"of": "classes", "names": [str(k) for k in range(10)], "counts": [200] * 10,
                                    "n": 2000, "labeller": "the mnist classifier", "step": step}})
        ahead = t0 + duration * step / steps - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # a steady write rate, as a training loop has
    rec.close()
    wall = time.monotonic() - t0
    s = rec.stats
    objects = server.objects(bucket, "exp/")
    events_in_bucket = sum(n for k, n in objects.items() if "tfevents" in k)
    metrics_in_bucket = sum(n for k, n in objects.items() if k.startswith("exp/trials/t/metrics/"))
    assert events_in_bucket == s.event_bytes_written, (name, events_in_bucket, s.event_bytes_written)
    assert metrics_in_bucket == s.metrics_bytes_written, (name, metrics_in_bucket, s.metrics_bytes_written)
    server.delete_bucket(bucket)
    return {
        "policy": name,
        "upload_every_sec_real": upload_sec,
        "rotate_every_sec_real": rotate_sec,
        "bytes_written": s.event_bytes_written + s.metrics_bytes_written + s.other_bytes_written,
        "bytes_uploaded": s.event_bytes_uploaded + s.metrics_bytes_uploaded + s.other_bytes_uploaded,
        "ratio": round(s.upload_ratio, 3),
        "event_ratio": round(s.event_upload_ratio, 3),
        "metrics_ratio": round(s.metrics_bytes_uploaded / s.metrics_bytes_written, 3),
        "other_ratio": round(s.other_bytes_uploaded / s.other_bytes_written, 3),
        "event_bytes_written": s.event_bytes_written,
        "metrics_bytes_written": s.metrics_bytes_written,
        "other_bytes_written": s.other_bytes_written,
        "event_files": s.event_files,
        "metrics_files": s.metrics_files,
        "wall_sec": round(wall, 1),
    }


def markdown(rows: list[dict]) -> str:
    out = ["| policy (upload / rotate, real s) | MB written | MB uploaded | ratio, all files | events | metrics "
           "| PNG/JSON | event + metrics files |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rot = "never" if r["rotate_every_sec_real"] is None else f"{r['rotate_every_sec_real']:.0f}"
        out.append(f"| {r['policy']} ({r['upload_every_sec_real']:.0f} / {rot}) | "
                   f"{r['bytes_written'] / 1e6:.2f} | {r['bytes_uploaded'] / 1e6:.2f} | **{r['ratio']:.2f}** | "
                   f"{r['event_ratio']:.2f} | {r['metrics_ratio']:.2f} | {r['other_ratio']:.2f} | "
                   f"{r['event_files']} + {r['metrics_files']} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of wall time per policy")
    p.add_argument("--scale", type=float, default=60.0, help="real-run seconds per bench second")
    p.add_argument("--sample-every", type=int, default=100)
    p.add_argument("--verdict-every", type=int, default=500)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    rows = []
    with S3Server() as server:
        os.environ.update(server.env)
        for name, upload_sec, rotate_sec in POLICIES:
            rows.append(simulate(server, name, upload_sec, rotate_sec, steps=a.steps, duration=a.duration,
                                 scale=a.scale, sample_every=a.sample_every,
                                 verdict_every=a.verdict_every, n_images=a.images))
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "run": f"{a.steps} steps x {len(SCALARS)} scalars, {a.images}-image grid every {a.sample_every} steps, "
               f"a verdict every {a.verdict_every}, "
               f"{a.duration:.0f} s wall = {a.duration * a.scale / 60:.0f} min of run time",
        "rows": rows,
    }
    print(markdown(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
