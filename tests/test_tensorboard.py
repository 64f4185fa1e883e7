"""TensorBoard on the bucket: event files written by the trial recorder into the real S3 (moto) and
GCS (emulator) servers are served by a real `tensorboard` process through its HTTP API, every
trial a run; `ganray tensorboard` carries the endpoints over and rejects bad storage. The HParams
table of a smoke sweep (and of a resumed trial) is read back through the hparams plugin's API."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.plugins.hparams import metadata as hp_metadata

from conftest import free_port
from ganray import storage
from ganray import tensorboard as gtb
from ganray.artifacts import hparams, layout, reader
from ganray.artifacts.recorder import TrialRecorder
from ganray.config import load

TB_WAIT_SEC = 120.0  # TensorBoard's start-up on a busy 2-core machine, plus its reload interval


ROOT = Path(__file__).resolve().parents[1]
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _get(port: int, path: str, **params):
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(port: int, path: str, body: dict):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class TensorBoardProcess:
    """A tensorboard subprocess on 127.0.0.1:<free port>, killed on exit."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None):
        self.argv, self.env, self.cwd = argv, env, cwd
        self.port = int(argv[argv.index("--port") + 1])

    def __enter__(self) -> "TensorBoardProcess":
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def output(self) -> str:
        return self.proc.stdout.read().decode(errors="replace")[-3000:] if self.proc.poll() is not None else ""

    def wait_for(self, predicate, what: str):
        """Poll until `predicate()` returns something truthy (HTTP errors count as not yet)."""
        deadline = time.monotonic() + TB_WAIT_SEC
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {self.proc.returncode}:\n{self.output()}")
            try:
                last = predicate()
                if last:
                    return last
            except OSError as e:
                last = e
            time.sleep(0.5)
        pytest.fail(f"tensorboard did not show {what} within {TB_WAIT_SEC:.0f} s (last: {last!r})")

    def scalars(self, run: str, tag: str) -> list[tuple[int, float]]:
        """[(step, value)] of one run's tag: GET /data/plugin/scalars/scalars ([wall_time, step, value] rows)."""
        return [(int(step), value) for _, step, value in _get(self.port, "/data/plugin/scalars/scalars", run=run, tag=tag)]

    def tags(self) -> dict:
        return _get(self.port, "/data/plugin/scalars/tags")

    def hparams_experiment(self) -> dict:
        """The HParams columns: POST /data/plugin/hparams/experiment (a GetExperimentRequest)."""
        return _post(self.port, "/data/plugin/hparams/experiment", {"experimentName": ""})

    def session_groups(self) -> list[dict]:
        """The HParams table's rows: POST /data/plugin/hparams/session_groups (a ListSessionGroupsRequest;
        sessions of a status not listed are left out)."""
        body = {"experimentName": "", "allowedStatuses": ALL_STATUSES, "startIndex": 0, "sliceSize": 1000}
        return _post(self.port, "/data/plugin/hparams/session_groups", body).get("sessionGroups", [])


def _loss_g(trial: int, step: int) -> float:
    return round(0.25 * step + trial, 2)  # exact in float32


def _write_trials(exp: str, trials: int, steps: range, **kw) -> None:
    for t in range(trials):
        with TrialRecorder(layout.trial_paths(exp, f"t{t}"), **kw) as art:
            for step in steps:
                art.row(step, {"loss_G": _loss_g(t, step), "d_acc_real": 0.5})


def test_tensorboard_reads_s3_while_the_run_writes(s3_bucket):
    """Plain `tensorboard --logdir s3://…` (the fixture's S3_ENDPOINT) follows a run whose event
    files rotate and are re-sent while it reads: every step arrives once, values intact."""
    exp = f"{s3_bucket}/ganray/exp"
    _write_trials(exp, 1, range(5))  # t0: finished
    port = free_port()
    argv = [os.path.join(os.path.dirname(sys.executable), "tensorboard"), "--logdir", f"{exp}/tensorboard",
            "--port", str(port), "--host", "127.0.0.1", "--load_fast=false", "--reload_interval", "1"]
    with TensorBoardProcess(argv) as tb:
        tb.wait_for(lambda: "t0" in tb.tags(), "run t0")
        # t1 is written while TensorBoard polls: the open file is re-sent, then rotated (k = 3 ticks per file).
        with TrialRecorder(layout.trial_paths(exp, "t1"), upload_every_sec=0.3,
                            rotate_every_sec=0.9) as art:
            for step in range(40):
                art.row(step, {"loss_G": _loss_g(1, step), "d_acc_real": 0.5})
                if step == 10:
                    tb.wait_for(lambda: "t1" in tb.tags(), "run t1 while it is written")
                time.sleep(0.05)
        assert art.stats.event_files >= 2
        got = tb.wait_for(lambda: (s := tb.scalars("t1", "loss_G")) and len(s) >= 40 and s, "all 40 steps of t1")
        assert got == [(s, _loss_g(1, s)) for s in range(40)]
        assert tb.scalars("t0", "loss_G") == [(s, _loss_g(0, s)) for s in range(5)]
        assert set(tb.tags()["t1"]) == {"loss_G", "d_acc_real"}


def test_ganray_tensorboard_on_gcs(gcs_bucket):
    """`ganray tensorboard gs://…/exp` against the emulator shows every trial as a run."""
    exp = f"{gcs_bucket}/ganray/exp"
    _write_trials(exp, 2, range(6))
    port = free_port()
    argv = [sys.executable, "-m", "ganray.tensorboard", exp, "--port", str(port), "--host", "127.0.0.1",
            "--reload_interval", "1"]
    with TensorBoardProcess(argv) as tb:
        tb.wait_for(lambda: {"t0", "t1"} <= set(tb.tags()), "runs t0 and t1")
        for t in (0, 1):
            got = tb.wait_for(lambda t=t: (s := tb.scalars(f"t{t}", "loss_G")) and len(s) == 6 and s, f"t{t}")
            assert got == [(s, _loss_g(t, s)) for s in range(6)]


def test_ganray_tensorboard_on_local_storage(tmp_path):
    exp = str(tmp_path / "store" / "exp")
    _write_trials(exp, 1, range(4))
    port = free_port()
    argv = [sys.executable, "-m", "ganray.tensorboard", exp, "--port", str(port), "--host", "127.0.0.1",
            "--reload_interval", "1"]
    with TensorBoardProcess(argv) as tb:
        got = tb.wait_for(lambda: "t0" in tb.tags() and tb.scalars("t0", "loss_G"), "run t0")
        assert got == [(s, _loss_g(0, s)) for s in range(4)]


def test_command_carries_endpoints(monkeypatch):
    monkeypatch.delenv("S3_ENDPOINT", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    argv, env = gtb.tensorboard_command("s3://bkt/ganray/exp", port=6007)
    assert argv[argv.index("--logdir") + 1] == "s3://bkt/ganray/exp/tensorboard"
    assert "--load_fast=false" in argv and env["S3_ENDPOINT"] == "http://127.0.0.1:9000"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")
    argv, env = gtb.tensorboard_command("gs://bkt/exp", extra=["--reload_interval", "2"])
    assert env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:9023" and argv[-2:] == ["--reload_interval", "2"]
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    argv, _ = gtb.tensorboard_command("gs://bkt/exp")
    assert "--load_fast=false" not in argv  # real GCS: TensorBoard's fast data server reads gs:// itself


@pytest.mark.parametrize("uri,message", [
    ("http://example.com/exp", "malformed storage URI"),
    ("s3://", "malformed storage URI"),
])
def test_cli_rejects_malformed_uri(uri, message, capsys):
    assert gtb.main([uri]) == 2
    assert message in capsys.readouterr().err


def test_cli_rejects_missing_bucket(s3_bucket, s3_server, capsys):
    assert gtb.main([f"s3://nope-{free_port()}/exp", "--port", str(free_port())]) == 2
    assert f"does not exist at endpoint {s3_server.endpoint}" in capsys.readouterr().err


def test_gcs_emulator_without_gcsfs_names_the_extra(monkeypatch, capsys):
    """gcsfs is the `gcs` extra, not a core dependency: reading gs:// through fsspec without it
    is exit 2 naming the install, before any bucket is asked or TensorBoard started."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed
    assert gtb.main(["gs://bkt/exp", "--port", str(free_port())]) == 2
    assert "needs gcsfs: pip install -e '.[gcs]' in the ganray checkout" in capsys.readouterr().err


# ---- HParams ---------------------------------------------------------------------------------------


def _metric_values(session: dict) -> dict[str, tuple[int, float]]:
    return {m["name"]["tag"]: (m["trainingStep"], m["value"]) for m in session.get("metricValues", [])}


def _last(rows: list[dict], key: str) -> tuple[int, float]:
    """(step, value as TensorBoard holds it: float32) of the last row with `key`."""
    row = [r for r in rows if key in r][-1]
    return row["step"], float(np.float32(row[key]))


def _hparams_ready(tb: TensorBoardProcess, trials: list[str], tags: list[str]):
    """The session groups once every trial has one whose session has ended and has every metric."""
    groups = tb.session_groups()
    done = {g["name"] for g in groups if g["sessions"][0].get("status") == "STATUS_SUCCESS"
            and set(_metric_values(g["sessions"][0])) == set(tags)}
    return groups if done == set(trials) else None


# Non-dividing cadences: evaluations at 3, 6 and the last step 7, logs at 2, 4, 6, 7.
HP_SWEEP = ("--smoke", "--no-report", "--set", "sweep.z_dim=[2,10]", "--set", "train.steps=7",
            "--set", "train.log_every=2", "--set", "train.eval_every=3", "--set", "train.sample_every=5",
            "--set", "train.checkpoint_every=4")


@pytest.mark.slow
def test_hparams_table_of_a_smoke_sweep_on_s3(s3_bucket):
    """A 2-trial smoke sweep on S3; `ganray tensorboard` on it: the hparams plugin's experiment has
    the sweep's columns (z_dim's domain the grid, the verdict's legend), and its session groups one
    session per trial, ended, with the trial's z_dim, lr_g, lr_d, family, seed (its config.yaml) and
    the last classes_covered, kl_uniform, fcd (its metrics rows) and verdict_code (its verdict.json)."""
    from ganray.sweep import grid, trial_name

    env = {**os.environ, "RAY_ADDRESS": "local", "OMP_NUM_THREADS": "1", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"}
    r = subprocess.run([sys.executable, "jobs/sweep_zdim.py", *HP_SWEEP, "--storage", f"{s3_bucket}/x"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    overrides = [a for i, a in enumerate(HP_SWEEP) if i and HP_SWEEP[i - 1] == "--set"]
    trials = [trial_name(p) for p in grid(load(None, overrides))]
    assert trials == ["z2-s0", "z10-s0"]
    exp = f"{s3_bucket}/x/zdim-mnist-local-smoke"
    tags = ["classes_covered", "kl_uniform", "fcd", "verdict_code"]

    argv, tb_env = gtb.tensorboard_command(exp, port=free_port(), host="127.0.0.1", extra=["--reload_interval", "1"])
    with TensorBoardProcess(argv, tb_env) as tb:
        groups = tb.wait_for(lambda: _hparams_ready(tb, trials, tags), "an ended session per trial, with metrics")
        experiment = tb.hparams_experiment()

    infos = {h["name"]: h for h in experiment["hparamInfos"]}
    assert set(infos) == {"z_dim", "lr_g", "lr_d", "family", "seed"}
    assert infos["z_dim"]["domainDiscrete"] == [2, 10] and infos["z_dim"]["differs"] is True
    assert infos["family"]["type"] == "DATA_TYPE_STRING" and infos["z_dim"]["type"] == "DATA_TYPE_FLOAT64"
    metrics = {m["name"]["tag"]: m for m in experiment["metricInfos"]}
    assert list(metrics) == tags
    assert layout.VERDICT_LEGEND in metrics["verdict_code"]["description"]
    assert layout.VERDICT_LEGEND == ("0 healthy, 1 partial_collapse, 2 collapsed, 3 garbage, 4 diverged, "
                                     "5 ignores_condition, 6 collapsed_per_condition, 7 content_lost, 8 many_to_one")

    assert sorted(g["name"] for g in groups) == sorted(trials)
    for group in groups:
        assert len(group["sessions"]) == 1
        session = group["sessions"][0]
        assert session["name"] == group["name"]  # the trial's run
        paths = layout.trial_paths(exp, group["name"])
        cfg = reader.read_trial(paths, paths.name).config
        assert group["hparams"] == {"z_dim": cfg.model.z_dim, "lr_g": cfg.train.lr_g, "lr_d": cfg.train.lr_d,
                                    "family": cfg.train.family, "seed": cfg.experiment.seed}
        assert group["hparams"]["z_dim"] == int(group["name"][1:].split("-")[0])
        rows = reader.read_rows(paths.trial)
        verdict = json.loads(storage.read_bytes(storage.join(paths.trial, layout.VERDICT)))
        assert verdict["step"] == 7
        assert _metric_values(session) == {
            "classes_covered": _last(rows, "classes_covered"), "kl_uniform": _last(rows, "kl_uniform"),
            "fcd": _last(rows, "fcd"), "verdict_code": (7, layout.VERDICT_CODES[verdict["verdict"]])}
        assert _last(rows, "fcd")[0] == 7


def _events(folder: Path) -> list[Event]:
    return [Event.FromString(raw) for p in sorted(folder.iterdir()) for raw in RawEventFileLoader(str(p)).Load()]


def _report(rec: TrialRecorder, step: int, evals: set[int], covered: float) -> None:
    """One loop report; an evaluation (metrics and a verdict) at the steps in `evals`."""
    if step not in evals:
        rec.report(step, {"loss_G": 0.5})
        return
    verdict = {"verdict": "healthy" if covered > 5 else "collapsed", "step": step, "reasons": []}
    rec.report(step, {"loss_G": 0.5, "classes_covered": covered, "kl_uniform": 1 / covered, "fcd": 3.5 * step},
               verdict=verdict)


def test_resumed_trial_is_one_session_with_the_resumed_metrics(tmp_path):
    """A trial whose first writer fails after step 4 (its close() writes no session end) and is resumed
    from its step-2 checkpoint: its run holds one session start (the first writer's) and one session
    end; `ganray tensorboard store/exp` (a relative path) shows one ended session whose metrics are
    those of the resumed run's last evaluation; steps the resumed run redid are dropped."""
    cfg = load(None, ["sweep.z_dim=[3]", "model.z_dim=3", "train.steps=6", "train.eval_every=2"])
    paths = layout.trial_paths(str(tmp_path / "store" / "exp"), "z3-s0")
    with TrialRecorder(paths, config_yaml=cfg.to_yaml()) as first:
        for step in range(1, 5):
            _report(first, step, {2, 4}, covered=8.0)   # 4 is redone by the resumed run
    with TrialRecorder(paths, config_yaml=cfg.to_yaml(), resume_step=3) as second:
        for step in range(3, 7):
            _report(second, step, {4, 6}, covered=2.0)
    events = _events(tmp_path / "store/exp/tensorboard/z3-s0")
    tags = [v.tag for ev in events for v in ev.summary.value]
    assert tags.count(hparams.SESSION_START_INFO_TAG) == 1 and tags.count(hparams.SESSION_END_INFO_TAG) == 1
    assert tags.count(hparams.EXPERIMENT_TAG) == 1

    argv = [sys.executable, "-m", "ganray.tensorboard", "store/exp", "--port", str(free_port()),
            "--host", "127.0.0.1", "--reload_interval", "1"]
    with TensorBoardProcess(argv, cwd=tmp_path) as tb:
        groups = tb.wait_for(lambda: _hparams_ready(tb, ["z3-s0"], ["classes_covered", "kl_uniform", "fcd",
                                                                   "verdict_code"]), "the resumed session")
    (group,) = groups
    assert group["hparams"]["z_dim"] == 3 and len(group["sessions"]) == 1
    assert _metric_values(group["sessions"][0]) == {
        "classes_covered": (6, 2.0), "kl_uniform": (6, 0.5), "fcd": (6, 21.0),
        "verdict_code": (6, layout.VERDICT_CODES["collapsed"])}


def test_hparams_columns_follow_the_config():
    """The plugin's tag names; 2D data gets the mixture metrics; a run outside its config's grid gets no
    domain (its value would be filtered out of the table); sweeping the family makes its learning rates
    differ; the verdict codes follow layout.VERDICTS."""
    assert (hparams.EXPERIMENT_TAG, hparams.SESSION_START_INFO_TAG, hparams.SESSION_END_INFO_TAG) == (
        hp_metadata.EXPERIMENT_TAG, hp_metadata.SESSION_START_INFO_TAG, hp_metadata.SESSION_END_INFO_TAG)
    assert (hparams.PLUGIN_NAME, hparams.PLUGIN_DATA_VERSION) == (hp_metadata.PLUGIN_NAME,
                                                                  hp_metadata.PLUGIN_DATA_VERSION)
    assert list(layout.VERDICT_CODES) == list(layout.VERDICTS) and layout.VERDICT_CODES["diverged"] == 4
    ring = hparams.hparams_table(load(None, ["data.dataset=ring8", "sweep.z_dim=[2,4]", "model.z_dim=4"]))
    assert [t for t, _, _ in ring.metrics] == ["modes_covered", "reverse_kl", "hq_share", "verdict_code"]
    z = {h.name: h for h in ring.hparams}["z_dim"]
    assert (z.value, z.domain, z.differs) == (4, (2, 4), True)
    local = hparams.hparams_table(load(None, ["sweep.z_dim=[2,4]", "model.z_dim=64"]))
    assert {h.name: h for h in local.hparams}["z_dim"].domain == ()
    fam = {h.name: h for h in hparams.hparams_table(load(None, ["sweep.family=[gan,wgan-gp]"])).hparams}
    assert fam["lr_g"].differs and fam["family"].domain == ("gan", "wgan-gp") and not fam["seed"].differs
    assert "variant" not in fam  # no sweep.variants: no variant column
    var = load(None, ['sweep.variants=["baseline", "sn: model.spectral_norm=true"]', "experiment.variant=sn"])
    col = {h.name: h for h in hparams.hparams_table(var).hparams}["variant"]
    assert (col.key, col.value, col.domain, col.differs) == ("experiment.variant", "sn", ("baseline", "sn"), True)
