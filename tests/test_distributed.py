"""Ray Train with a real local Ray: 2 CPU DDP workers train a tiny DCGAN on mnist5k."""
from __future__ import annotations

import json
import threading
import time

import pytest
from _raytools import kill_one_train_worker, rank_recorder, ray_local, read_records  # noqa: F401

from ganray.config import load

pytestmark = pytest.mark.slow

TINY = ["model.width=0.125", "train.batch_size=8", "train.steps=6", "train.log_every=3", "train.eval_every=3",
        "train.sample_every=3", "train.checkpoint_every=3", "eval.metrics=[]", "data.n_train=400",
        "experiment.name=ddp"]


def test_two_cpu_workers_ddp(ray_local, tmp_path):
    from ganray.distributed import make_trainer

    # log every step, evaluate and checkpoint every 3rd: only evaluations and checkpoints go to
    # ray.train.report (each report waits for Ray's controller); every logged step reaches metrics.jsonl
    cfg = load(None, [*TINY, f"storage.uri={tmp_path / 'store'}", "scaling.num_workers=2", "train.log_every=1"])
    record = tmp_path / "ranks.jsonl"
    result = make_trainer(cfg, "t0", callbacks=[rank_recorder(str(record))]).fit()
    assert result.error is None
    rows = read_records(record)
    assert [[r["step"] for r in per_rank] for per_rank in rows] == [[3, 3], [6, 6]]
    for per_rank in rows:
        r0, r1 = per_rank
        assert r0["step"] == r1["step"]
        # same parameters on both ranks after the all-reduced steps...
        assert r0["ddp_param_checksum"] == r1["ddp_param_checksum"]
        # ...but different data and different z
        assert r0["ddp_data_fingerprint"] != r1["ddp_data_fingerprint"]
        assert r0["ddp_z_fingerprint"] != r1["ddp_z_fingerprint"]
    assert rows[0][0]["ddp_param_checksum"] != rows[1][0]["ddp_param_checksum"]  # and they did train
    trial = tmp_path / "store" / "ddp" / "trials" / "t0"
    ckpts = sorted(p.name for p in trial.glob("checkpoint_0*"))
    assert ckpts == ["checkpoint_000003", "checkpoint_000006"]
    assert (trial / "checkpoint_000006" / "checkpoint.pt").is_file()
    logged = [json.loads(line)["step"] for line in (trial / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]
    assert result.metrics["step"] == 6


def test_killed_worker_resumes_from_latest_checkpoint(ray_local, tmp_path):
    """Kill one Ray Train worker process mid-run: the run restarts from its latest checkpoint,
    loses at most one checkpoint interval, and ends at the right step."""
    from ganray.distributed import make_trainer

    every = 10
    cfg = load(None, [*TINY, f"storage.uri={tmp_path / 'store'}", "scaling.num_workers=2", "train.steps=60",
                      "train.log_every=5", "train.eval_every=5", "train.sample_every=30",
                      f"train.checkpoint_every={every}", "scaling.max_failures=2"])
    record = tmp_path / "ranks.jsonl"
    trial = tmp_path / "store" / "ddp" / "trials" / "ft"
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("r", make_trainer(
        cfg, "ft", callbacks=[rank_recorder(str(record))]).fit()))
    t.start()
    deadline = time.time() + 240
    while not (trial / "checkpoint_000020").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (trial / "checkpoint_000020").exists(), "no checkpoint appeared"
    killed_after = max(r[0]["step"] for r in read_records(record))
    kill_one_train_worker()
    t.join(timeout=300)
    result = out["r"]
    assert result.error is None
    assert result.metrics["step"] == 60
    rows = [r[0] for r in read_records(record)]
    steps = [r["step"] for r in rows]
    # the restarted loop's clock starts again from zero
    restart = next(i for i in range(1, len(rows)) if rows[i]["elapsed_sec"] < rows[i - 1]["elapsed_sec"])
    resumed_from = steps[restart] - cfg.train.log_every
    assert killed_after - resumed_from <= every, (steps, killed_after)
    assert resumed_from >= every  # from a checkpoint, not from scratch
    assert steps[-1] == 60
