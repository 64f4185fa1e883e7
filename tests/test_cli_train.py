"""`ganray train` end to end as a user runs it: subprocesses, real local Ray, real S3/GCS servers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganray.artifacts import reader
from ganray.train.loop import CLOCK_FIELDS

ROOT = Path(__file__).resolve().parents[1]
LOCAL = str(ROOT / "configs" / "zdim_mnist_local.yaml")


def ganray(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "RAY_ADDRESS": "local", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ganray.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)


def test_local_ring8_run_writes_metrics(tmp_path):
    t0 = time.time()
    # the preset's cadences (log 100, evaluations 250, samples and checkpoints 500) over 600 of its 1,500 steps
    r = ganray("train", "--local", "configs/ring8.yaml", "--storage", str(tmp_path), "--quiet", "--set", "train.steps=600")
    took = time.time() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    trial = tmp_path / "ring8" / "trials" / "train"
    rows = reader.read_rows(str(trial))
    assert rows[-1]["step"] == 600 and all("time" in row for row in rows)
    assert [row["step"] for row in rows if "modes_covered" in row] == [250, 500, 600]  # and at the last step
    assert "modes_covered" in rows[-1]  # the loop's evaluation ran
    assert json.loads((trial / "verdict.json").read_text())["verdict"] in (
        "healthy", "partial_collapse", "collapsed", "garbage")
    print(f"ring8 local run: {took:.1f} s")


@pytest.mark.parametrize("local", [True, False], ids=["local", "ray"])
def test_nan_run_is_diverged_keeps_last_good_checkpoint_and_exits_1(tmp_path, local):
    """A healthy first run leaves checkpoints at 3 and 6; re-running the same experiment with
    learning rates of 1e30 resumes at step 6 (learning rates come from the config) and blows up."""
    mode = ["--local"] if local else []
    base = ["train", LOCAL, *mode, "--smoke", "--storage", str(tmp_path), "--quiet"] if local else \
        ["train", LOCAL, "--smoke", "--storage", str(tmp_path)]
    r = ganray(*base, "--set", "eval.metrics=[]")
    assert r.returncode == 0, r.stderr[-3000:]
    trial = tmp_path / "zdim-mnist-local-smoke" / "trials" / "train"
    before = sorted(p.name for p in trial.glob("checkpoint_0*"))
    r = ganray(*base, "--set", "eval.metrics=[]", "--set", "train.steps=12",
               "--set", "train.lr_g=1e30", "--set", "train.lr_d=1e30")
    assert r.returncode == 1, (r.stdout[-2000:], r.stderr[-3000:])
    assert "diverged" in r.stderr and "non-finite training values at step 9" in r.stderr
    after = sorted(p.name for p in trial.glob("checkpoint_0*"))
    assert after == before and after[-1] == "checkpoint_000006"
    assert (trial / "checkpoint_000006" / "checkpoint.pt").is_file()
    verdict = json.loads((trial / "verdict.json").read_text())
    assert verdict["verdict"] == "diverged" and verdict["step"] == 9


def test_bad_storage_exits_2_before_ray_starts(tmp_path, s3_bucket, s3_server):
    missing = s3_bucket + "-missing"
    r = ganray("train", LOCAL, "--smoke", "--storage", f"{missing}/x")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and missing.removeprefix("s3://") in r.stderr
    assert "Started a local Ray instance" not in r.stderr + r.stdout
    # an endpoint nobody listens on
    r = ganray("train", LOCAL, "--smoke", "--storage", f"{s3_bucket}/x", env={
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "S3_ENDPOINT": "http://127.0.0.1:9"})
    assert r.returncode == 2 and "127.0.0.1:9" in r.stderr, r.stderr[-2000:]
    assert "Started a local Ray instance" not in r.stderr + r.stdout
    for bad in ("s3:/x", "gs://", "ftp://host/x"):
        r = ganray("train", LOCAL, "--smoke", "--storage", bad)
        assert r.returncode == 2 and "storage.uri" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_ray_run_on_bucket_leaves_every_artifact(tmp_path, request, scheme):
    bucket_uri = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    server = request.getfixturevalue("s3_server" if scheme == "s3" else "gcs_server")
    r = ganray("train", LOCAL, "--smoke", "--storage", f"{bucket_uri}/runs")
    assert r.returncode == 0, r.stderr[-4000:]
    objects = server.objects(bucket_uri.split("://")[1], "runs/zdim-mnist-local-smoke/")
    names = list(objects)
    prefix = "runs/zdim-mnist-local-smoke/"
    assert f"{prefix}config.yaml" in names
    assert any(n.startswith(f"{prefix}trials/train/checkpoint_000006/") and n.endswith("checkpoint.pt")
               for n in names), names
    assert any(n.startswith(f"{prefix}tensorboard/train/events.out.tfevents") for n in names), names
    assert any(n.startswith(f"{prefix}trials/train/samples/step_") and n.endswith(".png") for n in names)
    for f in ("fixed_z.gif", "metrics/000000.jsonl", "verdict.json"):
        assert f"{prefix}trials/train/{f}" in names, f
        assert objects[f"{prefix}trials/train/{f}"] > 0


@pytest.mark.slow
def test_s3_outage_mid_run_is_ridden_out_without_gaps(tmp_path, s3_bucket, s3_server):
    """Stop the S3 server for a few seconds while a Ray run writes to it: uploads retry, every
    checkpoint in the bucket is whole, the metrics stream has every logged step, the run ends healthy."""
    import threading

    bucket = s3_bucket.removeprefix("s3://")
    prefix = "out/zdim-mnist-local-smoke/trials/train/"
    steps, every = 40, 5
    args = ["train", LOCAL, "--smoke", "--storage", f"{s3_bucket}/out", "--set", f"train.steps={steps}",
            "--set", f"train.checkpoint_every={every}", "--set", "train.log_every=5", "--set", "train.eval_every=10",
            "--set", "train.sample_every=10"]
    outage = {}

    def cut_power():
        deadline = time.time() + 300
        while time.time() < deadline:
            if any(k.endswith("checkpoint.pt") for k in s3_server.objects(bucket, prefix)):
                outage["at"] = time.time()
                s3_server.outage(6)  # stop(), 6 s of "connection refused", start()
                return
            time.sleep(0.2)

    t = threading.Thread(target=cut_power)
    t.start()
    r = ganray(*args, env={"GANRAY_STORAGE_RETRY_SEC": "90"})
    t.join()
    assert "at" in outage, "the outage never happened"
    assert r.returncode == 0, r.stderr[-4000:]
    objects = s3_server.objects(bucket, prefix)
    ckpts = sorted(k for k in objects if k.endswith("/checkpoint.pt"))
    assert ckpts and ckpts[-1].endswith(f"checkpoint_{steps:06d}/checkpoint.pt")
    from ganray.train import checkpoint

    for key in ckpts:  # every checkpoint in the bucket loads: none is half-written
        state = checkpoint.load(f"{s3_bucket}/{key}")
        assert state["step"] == int(key.split("checkpoint_")[1][:6])
    rows = reader.read_rows(f"{s3_bucket}/{prefix}")
    logged = sorted({row["step"] for row in rows})
    assert logged == list(range(5, steps + 1, 5)), logged  # no silent gap


# ---- a run killed after its first non-healthy evaluation resumes to the same verdict ---------------

# Cadences that do not divide each other: the checkpoint at 15 falls inside a log window (12..16)
# and between evaluations (10, 20), so the window, the evaluator (flip-rate baseline, first-seen
# step) and the training-signal history all have to come back from the checkpoint.
RESUME_RUN = ["train", "--local", LOCAL, "--quiet", "--set", "model.width=0.125", "--set", "train.batch_size=16",
              "--set", "train.steps=36", "--set", "train.log_every=4", "--set", "train.eval_every=10",
              "--set", "train.sample_every=7", "--set", "train.checkpoint_every=15", "--set", "eval.n=200",
              "--set", "eval.n_fixed_z=16", "--set", "data.n_train=1000", "--set", "eval.flat_window=3",
              # garbage at every evaluation (near_real_share 0.12-0.2 here), so the verdict first seen at
              # step 10, before the kill, is the one the run ends with
              "--set", "eval.near_real_garbage=0.5"]
KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from ganray.artifacts.recorder import TrialRecorder
_put = TrialRecorder.put_checkpoint
def put(self, step, data):  # SIGKILL this process right after the checkpoint of step {step} is on disk
    out = _put(self, step, data)
    if step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
TrialRecorder.put_checkpoint = put
from ganray.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _rows(trial: Path) -> list[dict]:
    rows = reader.read_rows(str(trial))
    return [{k: v for k, v in r.items() if k not in ("time", *CLOCK_FIELDS)} for r in rows]


def test_killed_after_first_bad_evaluation_then_resumed_ends_as_a_straight_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda *pre, store: subprocess.run(  # noqa: E731
        [sys.executable, *pre, *RESUME_RUN, "--storage", store], capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=600)
    r = run("-m", "ganray.cli", store="straight")  # relative storage, as users give it
    assert r.returncode == 0, r.stderr[-3000:]
    killed = run("-c", KILL_AFTER_CHECKPOINT.format(step=15), store="resumed")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    trial_b = tmp_path / "resumed" / "zdim-mnist-local" / "trials" / "train"
    first = json.loads((trial_b / "verdict.json").read_text())
    assert first["verdict"] != "healthy" and first["step"] == 10  # killed after its first non-healthy evaluation
    assert [row["step"] for row in _rows(trial_b)] == [4, 7, 8, 10, 12, 14, 15]
    r = run("-m", "ganray.cli", store="resumed")  # the same command again resumes from step 15
    assert r.returncode == 0, r.stderr[-3000:]

    trial_a = tmp_path / "straight" / "zdim-mnist-local" / "trials" / "train"
    a, b = (json.loads((t / "verdict.json").read_text()) for t in (trial_a, trial_b))
    assert b == a and a["verdict"] == "garbage" and a["first_seen_step"] == 10, (a, b)
    rows_a, rows_b = _rows(trial_a), _rows(trial_b)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
    assert rows_b == rows_a  # every logged mean, metric and flip rate, exactly
    flips = [r["fixed_z_flip_rate"] for r in rows_a if "fixed_z_flip_rate" in r]
    assert len(flips) == 3  # evaluations 20, 30 and 36 compare with the one before (10 has none)
