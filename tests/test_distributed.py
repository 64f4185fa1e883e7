"""Ray Train with a real local Ray: 2 CPU DDP workers train a tiny DCGAN on mnist5k."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ganray.config import load

pytestmark = pytest.mark.slow

TINY = ["model.width=0.125", "train.batch_size=8", "train.steps=6", "train.log_every=3", "train.eval_every=3",
        "train.sample_every=3", "train.checkpoint_every=3", "eval.metrics=[]", "data.n_train=400",
        "experiment.name=ddp"]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


class RankRecorder:
    """A Ray Train UserCallback (runs in the controller) that appends every rank's metrics to a file."""

    def __new__(cls, path: str):
        from ray.train.v2.api.callback import UserCallback

        class _Recorder(UserCallback):
            def after_report(self, run_context, metrics, checkpoint):
                with open(path, "a") as f:
                    f.write(json.dumps(metrics) + "\n")

        return _Recorder()


def test_two_cpu_workers_ddp(ray_local, tmp_path):
    from ganray.distributed import make_trainer

    cfg = load(None, [*TINY, f"storage.uri={tmp_path / 'store'}", "scaling.num_workers=2"])
    record = tmp_path / "ranks.jsonl"
    result = make_trainer(cfg, "t0", callbacks=[RankRecorder(str(record))]).fit()
    assert result.error is None
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(rows) == 2  # reports at steps 3 and 6
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
    ckpts = sorted(p.name for p in trial.glob("checkpoint_*"))
    assert ckpts == ["checkpoint_000003", "checkpoint_000006"]
    assert (trial / "checkpoint_000006" / "checkpoint.pt").is_file()
    assert (trial / "metrics.jsonl").is_file()
    assert result.metrics["step"] == 6
