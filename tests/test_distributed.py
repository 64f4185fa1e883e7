"""Ray Train with a real local Ray: 2 CPU DDP workers train a tiny DCGAN on mnist5k."""
from __future__ import annotations

import json
import threading
import time

import pytest

from _raytools import kill_one_train_worker, rank_recorder, ray_local, read_records  # noqa: F401
from ganray.artifacts import reader
from ganray.config import load
from ganray.train.loop import CLOCK_FIELDS

pytestmark = pytest.mark.slow

TINY = ["model.width=0.125", "train.batch_size=8", "train.steps=6", "train.log_every=3", "train.eval_every=3",
        "train.sample_every=3", "train.checkpoint_every=3", "eval.metrics=[]", "data.n_train=400",
        "experiment.name=ddp"]


def test_two_cpu_workers_ddp(ray_local, tmp_path):
    from ganray.distributed import make_trainer

    # log every step, evaluate and checkpoint every 3rd: only evaluations and checkpoints go to
    # ray.train.report (each report waits for Ray's controller); every logged step reaches the metrics stream
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
    logged = [row["step"] for row in reader.read_rows(str(trial))]
    assert logged == [1, 2, 3, 4, 5, 6]
    assert result.metrics["step"] == 6


def test_the_controller_takes_reports_at_ganrays_short_polling_interval(ray_local, tmp_path, monkeypatch):
    """Ray Train's controller actor reads RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default) and
    takes a report only when it polls: after init_ray() (which, with Ray already up, sets it in
    the driver alone) the controller runs with 0.2 s, so 6 back-to-back reports reach it about
    0.2 s apart instead of 2 s."""
    import os

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.callback import UserCallback

    from ganray.distributed import REPORT_POLL_ENV, init_ray

    # set, then removed: monkeypatch restores the variable's absence after the test (a delenv of an
    # unset variable records nothing, and init_ray/ray_env would leave their value for later tests)
    monkeypatch.setenv(REPORT_POLL_ENV, "unset by the test")
    monkeypatch.delenv(REPORT_POLL_ENV)
    init_ray()
    seen = tmp_path / "seen.jsonl"

    class Seen(UserCallback):  # runs in the controller
        def after_report(self, run_context, metrics, checkpoint):
            with open(seen, "a") as f:
                f.write(json.dumps({"env": os.environ.get(REPORT_POLL_ENV), "pid": os.getpid(), "t": time.time()}) + "\n")

    def loop(config):
        for i in range(6):
            ray.train.report({"i": i})

    TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1),
                 run_config=RunConfig(name="poll", storage_path=str(tmp_path), callbacks=[Seen()])).fit()
    rows = [json.loads(line) for line in seen.read_text().splitlines()]
    assert len(rows) == 6 and {r["env"] for r in rows} == {"0.2"} and rows[0]["pid"] != os.getpid()
    gaps = [b["t"] - a["t"] for a, b in zip(rows, rows[1:])]
    assert max(gaps) < 1.0, gaps  # at the default interval each gap is >= 2 s


def test_ray_env_keeps_the_users_interval_and_leaves_a_jobs_own_to_it(monkeypatch):
    from ganray.distributed import REPORT_POLL_ENV, ray_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    # set, then removed: monkeypatch restores the variable's absence after the test (a delenv of an
    # unset variable records nothing, and init_ray/ray_env would leave their value for later tests)
    monkeypatch.setenv(REPORT_POLL_ENV, "unset by the test")
    monkeypatch.delenv(REPORT_POLL_ENV)
    assert ray_env()[REPORT_POLL_ENV] == "0.2"
    monkeypatch.setenv(REPORT_POLL_ENV, "0.05")
    assert ray_env()[REPORT_POLL_ENV] == "0.05"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"env_vars": {REPORT_POLL_ENV: "1"}}}))
    assert REPORT_POLL_ENV not in ray_env()  # `ray job submit --runtime-env-json`: the job's value stands


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
    # the restarted loop logs again from the checkpoint it resumed from: the first step that does not
    # increase (none when the kill came right at a checkpoint: then nothing was lost); its clock goes
    # on from the checkpoint's elapsed_sec
    restart = next((i for i in range(1, len(rows)) if steps[i] <= steps[i - 1]), None)
    resumed_from = steps[restart] - cfg.train.log_every if restart is not None else killed_after
    if restart is not None:
        assert rows[restart]["elapsed_sec"] > [r["elapsed_sec"] for r in rows if r["step"] == resumed_from][0]
    assert killed_after - resumed_from <= every, (steps, killed_after)
    assert resumed_from >= every  # from a checkpoint, not from scratch
    assert steps[-1] == 60


def test_a_snapshot_cut_off_by_a_kill_is_set_aside_and_the_run_resumes_from_its_newest_checkpoint(ray_local, tmp_path):
    """Ray Train rewrites checkpoint_manager_snapshot.json in place: a driver killed mid-write leaves
    it cut off, and Ray would fail every re-run while parsing it. The re-run sets it aside and goes
    on from the newest checkpoint in the trial folder: every step logged once, the run ends."""
    import logging

    from ganray.artifacts import layout
    from ganray.distributed import make_trainer

    store = tmp_path / "store"
    trial = store / "ddp" / "trials" / "cut"
    assert make_trainer(load(None, [*TINY, f"storage.uri={store}"]), "cut").fit().error is None
    snapshot = trial / layout.RAY_SNAPSHOT
    whole = snapshot.read_bytes()
    snapshot.write_bytes(whole[: len(whole) // 2])  # what a kill during Ray's write leaves
    started = time.time()
    caught: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: caught.append(record.getMessage())
    logging.getLogger("ganray.distributed").addHandler(handler)
    try:
        result = make_trainer(load(None, [*TINY, f"storage.uri={store}", "train.steps=9"]), "cut").fit()
    finally:
        logging.getLogger("ganray.distributed").removeHandler(handler)
    assert result.error is None, result.error
    assert (trial / (layout.RAY_SNAPSHOT + ".cut")).read_bytes() == whole[: len(whole) // 2]
    assert any("was cut off" in m and "checkpoint_000006" in m for m in caught), caught
    rows = reader.read_rows(str(trial))
    assert [r["step"] for r in rows] == [3, 6, 9]  # resumed after 6, not from scratch
    assert [r["step"] for r in rows if r["time"] > started] == [9]
    assert json.loads(snapshot.read_text())["checkpoint_results"]  # Ray wrote a whole one again


def test_killed_worker_resumes_every_rank_and_the_stopper_as_a_straight_run(ray_local, tmp_path):
    """Two DDP workers, a collapse stopper that counts but never stops (patience 1000) and cadences
    that do not line up (logs every 8, evaluations every 11, checkpoints every 10: the checkpoint at 20
    falls inside the log window 17..24, and the evaluation at 22, reported by every rank, averages
    steps from both sides of it). One worker killed after the checkpoint at step 20: from the resume
    on, every rank reports what the straight run reported (their statistics windows came back), and
    the last checkpoint holds the same stopper count and the trial the same verdict.json."""
    import torch

    from ganray.distributed import make_trainer
    from ganray.sweep import make_should_stop

    base = [*TINY, "scaling.num_workers=2", "train.steps=40", "train.log_every=8", "train.eval_every=11",
            "train.sample_every=35", "train.checkpoint_every=10", "scaling.max_failures=2",
            "eval.metrics=[class_coverage,fixed_z_flip_rate]", "eval.n=100", "eval.n_fixed_z=16",
            "sweep.patience=1000", "sweep.grace_steps=0"]

    def run(name: str, kill: bool):
        cfg = load(None, [*base, f"storage.uri={tmp_path / name}"])
        record = tmp_path / f"{name}.jsonl"
        trial = tmp_path / name / "ddp" / "trials" / "t"
        out: dict = {}
        t = threading.Thread(target=lambda: out.setdefault("r", make_trainer(
            cfg, "t", callbacks=[rank_recorder(str(record))], make_should_stop=make_should_stop).fit()))
        t.start()
        if kill:  # after the evaluation at 22 is reported: the resumed run reports it again
            deadline = time.time() + 240
            while not any(rows[0]["step"] >= 22 for rows in read_records(record)) and time.time() < deadline:
                time.sleep(0.05)
            assert (trial / "checkpoint_000020").exists(), "no checkpoint appeared"
            kill_one_train_worker()
        t.join(timeout=400)
        assert out["r"].error is None
        return read_records(record), trial

    straight, trial_a = run("straight", kill=False)
    resumed, trial_b = run("resumed", kill=True)
    drop = CLOCK_FIELDS

    def same(rows):  # a report's rows, one per rank, in no particular order
        return sorted(json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True) for r in rows)

    by_step = {rows[0]["step"]: same(rows) for rows in straight}
    steps_b = [rows[0]["step"] for rows in resumed]
    restart = next(i for i in range(1, len(steps_b)) if steps_b[i] <= steps_b[i - 1])  # the restarted loop's first
    assert steps_b[restart] in (22, 33) and steps_b[-1] == 40, steps_b  # from checkpoint 20 (30 on a slow machine)
    for rows in resumed[restart:]:
        assert same(rows) == by_step[rows[0]["step"]], rows[0]["step"]
    last_a, last_b = (torch.load(t / "checkpoint_000040" / "checkpoint.pt", weights_only=True) for t in (trial_a, trial_b))
    assert last_b["stopper"] == last_a["stopper"] and last_a["stopper"]["bad_in_a_row"] > 0, (last_a["stopper"],
                                                                                                last_b["stopper"])
    assert last_b["evaluator"]["first_seen"] == last_a["evaluator"]["first_seen"]
    assert json.loads((trial_b / "verdict.json").read_text()) == json.loads((trial_a / "verdict.json").read_text())


TOKEN_RUN = r"""
import os, ray
from ganray.distributed import init_ray, shutdown_ray
line = init_ray()
path = os.environ["RAY_AUTH_TOKEN_PATH"]
print("LINE", line)
print("MODE", os.environ.get("RAY_AUTH_MODE"), oct(os.stat(path).st_mode & 0o777))
@ray.remote
def worker_env():
    return os.environ.get("RAY_AUTH_MODE"), os.environ.get("RAY_AUTH_TOKEN_PATH")
print("WORKER", *ray.get(worker_env.remote()))
poll = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
job_env = ray.get_runtime_context().runtime_env.get("env_vars") or {}
print("POLL", ray.get(ray.remote(lambda: os.environ.get(poll)).remote()), job_env.get(poll))
shutdown_ray()
print("AFTER", os.path.exists(path), os.environ.get("RAY_AUTH_MODE"), os.environ.get("RAY_AUTH_TOKEN_PATH"))
"""


def test_a_new_local_ray_authenticates_with_a_private_token_and_leaves_none_behind(tmp_path):
    """A local ray.init() left alone writes ~/.ray/auth_token, after which `ray start --head` turns
    token authentication on and a plain `ray job submit` is refused. ganray's local Ray uses a
    token of its own (a 0600 file, removed at shutdown): authenticated, nothing left in ~/.ray."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"}
    env.update(HOME=str(home), RAY_ADDRESS="local", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", TOKEN_RUN], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in r.stdout.splitlines() if line[:4] in ("LINE", "MODE", "WORK", "AFTE", "POLL"))
    assert out["POLL"] == "0.2 0.2"  # Ray's processes have the controller's polling interval, also through the job's env
    assert out["MODE"] == "token 0o600"
    assert out["WORKER"].startswith("token /") and "ganray-ray-token-" in out["WORKER"]  # Ray's processes use it
    assert out["AFTER"] == "False None None"  # file removed, variables gone with it
    assert "this run's token is in" in out["LINE"]
    assert not (home / ".ray").exists()
    # and a user's own token is left to Ray: nothing private is made
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("0" * 64)
    r = subprocess.run([sys.executable, "-c", "import os\nfrom ganray.distributed import _private_token_for_a_new_local_ray"
                        " as p\nprint(p(), os.environ.get('RAY_AUTH_TOKEN_PATH'))"], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.stdout.split() == ["None", "None"], r.stderr[-2000:]
