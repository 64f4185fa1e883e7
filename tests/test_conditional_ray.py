"""The new families through real Ray Train: 2 CPU DDP workers, `ganray train` as a user runs it,
the record on the S3 server fixture; TensorBoard reads the per-condition scalars back over HTTP."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import free_port
from ganray import storage
from ganray import tensorboard as gtb
from ganray.artifacts import reader
from ganray.train import checkpoint
from test_tensorboard import TensorBoardProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TWO = ["--smoke", "--set", "scaling.num_workers=2", "--set", "train.steps=7", "--set", "train.checkpoint_every=4",
       "--set", "train.eval_every=4", "--set", "train.sample_every=4"]


def ganray(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}
    return subprocess.run([sys.executable, "-m", "ganray.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=900)


def _record(trial: str) -> tuple[list[dict], dict]:
    rows = reader.read_rows(trial)
    verdict = reader.read_verdict(trial)
    assert rows and verdict is not None, trial
    assert [r["step"] for r in rows if "loss_D" in r][-1] == 7
    for f in ("config.yaml", "fixed_z.gif", "verdict.json", "checkpoint_000004/checkpoint.pt",
              "checkpoint_000007/checkpoint.pt", "samples/step_000004.png"):
        assert storage.exists(storage.join(trial, f)), f
    return rows, verdict


def _png(trial: str, step: int) -> Image.Image:
    return Image.open(io.BytesIO(storage.read_bytes(storage.join(trial, f"samples/step_{step:06d}.png"))))


def test_cgan_two_workers_on_s3_with_per_condition_scalars_in_tensorboard(s3_bucket):
    r = ganray("train", "configs/cgan_mnist_local.yaml", *TWO, "--storage", f"{s3_bucket}/runs")
    assert r.returncode == 0, r.stderr[-4000:]
    exp = f"{s3_bucket}/runs/cgan-mnist-local-smoke"
    rows, verdict = _record(f"{exp}/trials/train")
    last = [row for row in rows if "condition_fidelity" in row][-1]
    assert last["step"] == 7 and 0 <= last["condition_fidelity"] <= 1
    assert verdict["conditions"]["names"] == [str(k) for k in range(10)]  # the per-condition record
    assert _png(f"{exp}/trials/train", 4).size == (10 * 30 + 2, 10 * 30 + 2)  # rows: the 10 digits; columns: 10 z
    argv, env = gtb.tensorboard_command(exp, port=free_port(), host="127.0.0.1", extra=["--reload_interval", "1"])
    with TensorBoardProcess(argv, env) as tb:
        # both evaluations (TensorBoard may show a run's first events before it has read the rest)
        got = tb.wait_for(lambda: (s := tb.scalars("train", "condition_fidelity/3")) and len(s) >= 2 and s,
                          "condition_fidelity/3 at both evaluations")
    assert [s for s, _ in got] == [4, 7]
    assert got[-1][1] == pytest.approx(last["condition_fidelity/3"])


def test_stackgan_stage1_then_stage2_two_workers_on_s3(s3_bucket):
    base = ["configs/stackgan_mnist_local.yaml", *TWO, "--set", "sweep.variants=[]", "--set", "model.z_dim=10"]
    r1 = ganray("train", *base, "--storage", f"{s3_bucket}/runs")
    assert r1.returncode == 0, r1.stderr[-4000:]
    s1 = f"{s3_bucket}/runs/stackgan-mnist-local-smoke/trials/train"
    _record(s1)
    r2 = ganray("train", *base, "--set", "train.stage=2", "--set", f"train.stage1_checkpoint={s1}",
                "--set", "experiment.name=stage2", "--storage", f"{s3_bucket}/runs")
    assert r2.returncode == 0, r2.stderr[-4000:]
    s2 = f"{s3_bucket}/runs/stage2-smoke/trials/train"
    rows, _ = _record(s2)
    assert "loss_wrong" in rows[-1] and "kl" in rows[-1]
    g1 = checkpoint.load(f"{s1}/checkpoint_000007/checkpoint.pt")["G"]
    g2 = checkpoint.load(f"{s2}/checkpoint_000007/checkpoint.pt")["G"]
    assert all(torch.equal(g2[f"stage1.{k}"], v) for k, v in g1.items())  # Stage I: loaded and left frozen


def test_cyclegan_two_workers_on_s3_writes_input_translated_reconstructed_grids(s3_bucket):
    r = ganray("train", "configs/cyclegan_digits_local.yaml", *TWO, "--set", "sweep.variants=[]",
               "--storage", f"{s3_bucket}/runs")
    assert r.returncode == 0, r.stderr[-4000:]
    trial = f"{s3_bucket}/runs/cyclegan-digits-local-smoke/trials/train"
    rows, verdict = _record(trial)
    assert {"loss_cycle_A", "loss_idt_B", "loss_D_A"} <= set(rows[-1])
    assert verdict["verdict"] in ("healthy", "content_lost", "many_to_one", "garbage")
    assert _png(trial, 4).size == (6 * 30 + 2, 6 * 30 + 2)  # 6 rows (a, G_AB(a), G_BA(G_AB(a)), b, ...) of 6
