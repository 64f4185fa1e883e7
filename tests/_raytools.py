"""Shared helpers for tests that use a real local Ray (imported by test modules)."""
from __future__ import annotations

import json
import os
import signal
import time

import psutil
import pytest


@pytest.fixture(scope="module")
def ray_local():
    """A real local Ray instance with this machine's 2 CPUs, shut down after the module.

    Its Ray Train controllers poll at ganray's interval (REPORT_POLL_SEC), as in a real run:
    ray_env() sets it in this process, as init_ray() does with Ray already up, after ray.init,
    so Ray's own processes never inherit it and Ray Train passes it to each controller (at Ray's
    2 s default every report and every run's end waited up to 2 s)."""
    import ray

    from ganray.distributed import REPORT_POLL_ENV, ray_env

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    before = os.environ.get(REPORT_POLL_ENV)
    ray_env()
    yield ray
    ray.shutdown()
    if before is None:
        os.environ.pop(REPORT_POLL_ENV, None)
    else:
        os.environ[REPORT_POLL_ENV] = before


def rank_recorder(path: str):
    """A Ray Train UserCallback (it runs in the controller) appending every rank's metrics to `path`."""
    from ray.train.v2.api.callback import UserCallback

    class RankRecorder(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            with open(path, "a") as f:
                f.write(json.dumps(metrics) + "\n")

    return RankRecorder()


def read_records(path) -> list[list[dict]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_worker_pids() -> list[int]:
    """PIDs of live Ray Train worker processes (Ray titles them 'ray::RayTrainWorker...')."""
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cmd.startswith("ray::RayTrainWorker"):
            pids.append(p.pid)
    return pids


def kill_one_train_worker(timeout: float = 60.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = train_worker_pids()
        if pids:
            os.kill(pids[-1], signal.SIGKILL)
            return pids[-1]
        time.sleep(0.2)
    raise TimeoutError("no Ray Train worker process found to kill")
