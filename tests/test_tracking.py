"""Issue 18, tracking: a real MLflow tracking server on 127.0.0.1 and W&B in offline mode.

1. A 2-trial smoke sweep, run as a user runs it (`ganray sweep` from a folder of its own, default
   ./ganray_results), with both trackers on: each trial is an MLflow run and a W&B run whose
   parameters, metric histories (every metrics row of the record, at its step, exact values) and
   verdict (verdict.json's) are read back through MlflowClient and from the W&B run file; and a
   `ganray train --local` run, tracked once it has finished.
2. The MLflow callback alone, fed a record by hand: a server that stops answering mid-trial fails
   nothing and loses nothing; a resumed sweep (a new driver) goes on in the same run.
3. Bad input, before Ray starts (exit 2): an unknown URI scheme, a missing package, a server that
   does not answer, W&B without credentials (`ganray validate` and the sweep's main, in this process).
"""
from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_sweep import SWEEP_ENV, tail

from conftest import HOST, TcpRelay, free_port
from ganray import storage
from ganray.artifacts import layout, reader
from ganray.artifacts.layout import VERDICT_CODES
from ganray.artifacts.recorder import TrialRecorder
from ganray.config import load
from ganray.sweep import grid, trial_name

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
MLFLOW_START_SEC = 120.0  # the server migrates its database first; a busy 2-core machine is slow
# log, sample and evaluation cadences that divide neither each other nor the 30 steps by luck;
# the checkpoint only at the end, so step 15's result comes before its row is flushed
STEPS, LOG, SAMPLE, EVAL, CKPT = 30, 7, 10, 15, 30
TRAIN_SETS = [f"train.steps={STEPS}", f"train.log_every={LOG}", f"train.sample_every={SAMPLE}",
              f"train.eval_every={EVAL}", f"train.checkpoint_every={CKPT}"]
SWEEP_SETS = ["sweep.z_dim=[1,10]", *TRAIN_SETS]
LOGGED_STEPS = sorted({s for s in range(1, STEPS + 1) if s % LOG == 0 or s % SAMPLE == 0 or s % EVAL == 0} | {STEPS})


def _set_args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


class MlflowServer:
    """`mlflow server` on 127.0.0.1:<free port>, an SQLite store and an artifact folder in `root`."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://{HOST}:{self.port}"

    def __enter__(self) -> "MlflowServer":
        argv = [str(BIN / "mlflow"), "server", "--host", HOST, "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--default-artifact-root", str(self.root / "artifacts")]
        self.log = open(self.root / "server.log", "wb")
        # a session of its own: the server's workers are stopped with it (its process group)
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + MLFLOW_START_SEC
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        self.__exit__()
        pytest.fail(f"mlflow server not up within {MLFLOW_START_SEC:.0f} s:\n{self.output()}")

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        self.log.close()

    def output(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-3000:]

    def client(self, uri: str | None = None):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=uri or self.uri)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    with MlflowServer(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


# ---- the W&B run file ------------------------------------------------------------------------------


def wandb_records(path: Path):
    """The records of a .wandb run file, as wandb's own protobuf `Record`s. The file is a LevelDB
    log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each
    crc32 (4 bytes), length (2), type (1: full, 2: first, 3: middle, 4: last) and data."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), data[:7]
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_run(run_dir: Path) -> dict:
    """{"run": RunRecord, "config": {key: value}, "history": {step: {key: value}}, "summary": {key: value}}."""
    (path,) = run_dir.glob("run-*.wandb")
    out: dict = {"config": {}, "history": {}, "summary": {}}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out["run"] = rec.run
            out["config"].update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "history":
            row = {(i.key or ".".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            out["history"][row["_step"]] = row
        elif kind == "summary":
            out["summary"].update({(u.key or ".".join(u.nested_key)): json.loads(u.value_json)
                                   for u in rec.summary.update})
    return out


# ---- 1. a tracked sweep -----------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_trials_are_mlflow_and_wandb_runs_with_params_histories_and_verdicts(tmp_path, mlflow_server):
    env = {**os.environ, **SWEEP_ENV, "WANDB_MODE": "offline", "WANDB_DIR": "wandb-files"}  # relative: ./wandb-files
    env.pop("WANDB_API_KEY", None)
    sets = [*SWEEP_SETS, f"tracking.mlflow_uri={mlflow_server.uri}", "tracking.wandb_project=ganray-test"]
    r = subprocess.run([str(BIN / "ganray"), "sweep", "--smoke", "--no-report", *_set_args(sets)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, tail(r)
    assert f"tracking  MLflow {mlflow_server.uri} (experiment zdim-mnist-local-smoke)" in r.stdout, tail(r)
    names = [trial_name(p) for p in grid(load(None, SWEEP_SETS))]
    exp = tmp_path / "ganray_results" / "zdim-mnist-local-smoke"
    records = {n: reader.read_trial(str(exp), n) for n in names}
    for rec in records.values():
        assert [row["step"] for row in rec.rows] == LOGGED_STEPS and rec.verdict is not None, rec

    # MLflow: the experiment is experiment.name; one finished run per trial
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name("zdim-mnist-local-smoke")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(names)
    wandb_dirs = sorted((tmp_path / "wandb-files" / "wandb").glob("offline-run-*"))
    assert len(wandb_dirs) == 2, wandb_dirs
    wandb_runs = {(w := wandb_run(d))["run"].display_name: w for d in wandb_dirs}
    assert sorted(wandb_runs) == sorted(names)
    assert sorted(rec.config.model.z_dim for rec in records.values()) == [1, 10]

    for name, rec in records.items():
        run, verdict = runs[name], rec.verdict
        assert run.info.status == "FINISHED"
        p = run.data.params
        cfg = rec.config
        assert (p["trial"], p["z_dim"], p["model.z_dim"], p["family"], p["seed"]) == \
            (name, str(cfg.model.z_dim), str(cfg.model.z_dim), "gan", "0")
        assert (p["lr_g"], p["lr_d"], p["train.log_every"]) == (str(cfg.train.lr_g), str(cfg.train.lr_d), str(LOG))
        # every metrics row at its own step, the values exactly the record's
        for key in ("loss_D", "d_acc_real", "fcd", "classes_covered"):
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert history == [(row["step"], row[key]) for row in rec.rows if key in row], key
            assert history, key
        codes = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "verdict_code"))
        assert [s for s, _ in codes] == [EVAL, STEPS] and codes[-1][1] == VERDICT_CODES[verdict["verdict"]], codes
        tags = run.data.tags
        assert tags["verdict"] == verdict["verdict"] and tags["verdict_step"] == str(verdict["step"]) == str(STEPS)
        assert tags["reasons"] == "; ".join(verdict["reasons"])[:5000] and tags["stopped_early"] == "false"
        assert tags["trial_uri"] == rec.uri and tags["verdict_legend"] == layout.VERDICT_LEGEND
        grids = {k: v for k, v in tags.items() if k.startswith("sample_grid/")}
        assert grids == {f"sample_grid/step_{s:06d}": uri for s, uri in rec.samples}
        assert sorted(s for s, _ in rec.samples) == [10, 20, 30] and all(Path(u).is_file() for u in grids.values())
        assert tags["last_sample_grid"] == rec.samples[-1][1]
        assert verdict["verdict"] in tags["mlflow.note.content"]

        # W&B: the run's id is the Tune trial's (as in MLflow's tags), its config, history, summary
        w = wandb_runs[name]
        assert w["run"].run_id == tags["ray_trial_id"] and w["run"].run_group == "zdim-mnist-local-smoke"
        assert w["run"].project == "ganray-test"
        assert (w["config"]["trial"], w["config"]["z_dim"], w["config"]["lr_g"], w["config"]["family"]) == \
            (name, cfg.model.z_dim, cfg.train.lr_g, "gan")
        assert w["config"]["model"]["z_dim"] == cfg.model.z_dim and w["config"]["train"]["steps"] == STEPS
        assert sorted(w["history"]) == LOGGED_STEPS
        for row in rec.rows:
            logged = w["history"][row["step"]]
            assert {k: logged[k] for k in row if k not in ("step", "time")} == \
                {k: v for k, v in row.items() if k not in ("step", "time")}, row["step"]
        assert [w["history"][s].get("verdict_code") for s in LOGGED_STEPS if "verdict_code" in w["history"][s]] == \
            [v for _, v in codes]
        s = w["summary"]
        assert (s["verdict"], s["verdict_code"], s["verdict_step"]) == \
            (verdict["verdict"], VERDICT_CODES[verdict["verdict"]], STEPS)
        assert s["sample_grids"] == [u for _, u in rec.samples] and s["trial_uri"] == rec.uri


def test_a_ganray_train_run_is_tracked_once_it_has_finished(tmp_path, mlflow_server):
    """`ganray train --local` (no Ray, no Tune): one MLflow run and one W&B run holding the whole
    record, under the configured experiment and group."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wb"), "OMP_NUM_THREADS": "1"}
    sets = [*TRAIN_SETS, f"tracking.mlflow_uri={mlflow_server.uri}",
            "tracking.mlflow_experiment=single-runs", "tracking.wandb_project=ganray-test", "tracking.wandb_group=g"]
    r = subprocess.run([str(BIN / "ganray"), "train", str(ROOT / "configs" / "ring8.yaml"), "--local", "--quiet",
                        "--smoke", *_set_args(sets)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, tail(r)
    rec = reader.read_trial(str(tmp_path / "ganray_results" / "ring8-smoke"), "train")
    assert [row["step"] for row in rec.rows] == LOGGED_STEPS and rec.verdict is not None, rec
    client = mlflow_server.client()
    (run,) = client.search_runs([client.get_experiment_by_name("single-runs").experiment_id])
    assert (run.info.run_name, run.info.status, run.data.params["z_dim"]) == ("train", "FINISHED", "2")
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss_D"))
    assert history == [(row["step"], row["loss_D"]) for row in rec.rows]
    # without Tune's results only verdict.json's verdict is known: one point, at its step
    codes = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "verdict_code")]
    assert codes == [(STEPS, VERDICT_CODES[rec.verdict["verdict"]])]
    assert run.data.tags["verdict"] == rec.verdict["verdict"]
    (run_dir,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    w = wandb_run(run_dir)
    assert (w["run"].display_name, w["run"].run_group, w["config"]["z_dim"]) == ("train", "g", 2)
    assert sorted(w["history"]) == LOGGED_STEPS and w["summary"]["verdict"] == rec.verdict["verdict"]


# ---- 2. the MLflow callback on a record written by hand -----------------------------------------------


class FakeTrial:
    """What the callbacks use of a Tune trial of ganray.sweep: its config, id and name."""

    def __init__(self, cfg, name: str, trial_id: str):
        self.config = {"point": {"config": cfg, "trial": name}}
        self.trial_id, self.name = trial_id, name

    def __str__(self) -> str:
        return self.name


def _report(rec: TrialRecorder, step: int, verdict: str | None = None) -> dict:
    metrics = {"loss_D": 1.0 / step, "loss_G": float(step)}
    v = {"verdict": verdict, "step": step, "reasons": [f"reason at {step}"]} if verdict else None
    rec.report(step, metrics, samples=np.random.default_rng(step).normal(size=(16, 2)) if step % 10 == 0 else None,
               verdict=v)
    rec.flush()
    return {**metrics, "step": step, **({"verdict": verdict} if verdict else {})}


def test_mlflow_outage_mid_trial_loses_nothing_and_a_resumed_sweep_goes_on_in_the_same_run(
        tmp_path, mlflow_server, monkeypatch, caplog):
    from ganray.tracking.mlflow_callback import GanrayMLflowCallback

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not after back-off
    relay = TcpRelay(free_port(), mlflow_server.port)
    relay.start()
    uri = f"http://{HOST}:{relay.port}"
    cfg = load(None, ["data.dataset=ring8", f"storage.uri={tmp_path}", "experiment.name=by-hand"])
    paths = layout.trial_paths(str(tmp_path / "by-hand"), "t0")
    rec = TrialRecorder(paths, config_yaml=cfg.to_yaml())
    try:
        cb = GanrayMLflowCallback(uri, "by-hand")
        cb.setup()
        trial = FakeTrial(cfg, "t0", "abc12_00000")
        cb.log_trial_start(trial)
        cb.log_trial_result(1, trial, _report(rec, 5))
        relay.stop()  # the server stops answering: results 2 and 3 are not delivered, and nothing raises
        for step in (10, 15):
            cb.log_trial_result(2, trial, _report(rec, step, "garbage" if step == 10 else None))
        assert "could not log the results of trial t0" in caplog.text
        relay.start()
        cb.log_trial_result(3, trial, _report(rec, 20, "collapsed"))  # back: 10, 15 and 20 go together
        # the driver stops here (killed); a new one resumes the sweep with the same Tune trial id
        cb2 = GanrayMLflowCallback(uri, "by-hand")
        cb2.setup()
        again = FakeTrial(cfg, "t0", "abc12_00000")
        cb2.log_trial_start(again)
        cb2.log_trial_result(1, again, _report(rec, 25))
        _report(rec, 30, "partial_collapse")
        rec.close()
        cb2.log_trial_end(again)
    finally:
        relay.stop()
    client = mlflow_server.client()
    runs = client.search_runs([client.get_experiment_by_name("by-hand").experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]  # the resumed trial kept its run
    run_id = runs[0].info.run_id
    rows = reader.read_rows(paths.trial)
    for key in ("loss_D", "loss_G"):
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        assert sorted(history) == [(r["step"], r[key]) for r in rows]  # each step once
    codes = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "verdict_code"))
    assert codes == [(10, VERDICT_CODES["garbage"]), (20, VERDICT_CODES["collapsed"]),
                     (30, VERDICT_CODES["partial_collapse"])]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["verdict"] == "partial_collapse"
    assert sorted(k for k in run.data.tags if k.startswith("sample_grid/")) == \
        ["sample_grid/step_000010", "sample_grid/step_000020", "sample_grid/step_000030"]


# ---- 3. bad input: exit 2 before Ray starts ------------------------------------------------------------


def test_bad_tracking_input_exits_2_before_ray_starts(tmp_path, monkeypatch, capsys):
    from ganray.cli import main
    from ganray.sweep import main as sweep_main

    # an unknown scheme, and a name for a tracker that is off: `ganray validate` says both
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracking:\n  mlflow_uri: ftp://host/x\n  wandb_group: g\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    secret = tmp_path / "secret.yaml"  # credentials come from the environment, never from configs
    secret.write_text("tracking:\n  mlflow_uri: https://me:pw@mlflow.example.com\n")
    assert main(["validate", str(secret)]) == 2
    assert "tracking.mlflow_uri: holds credentials" in capsys.readouterr().err
    assert "tracking.mlflow_uri: 'ftp://host/x' is not an MLflow tracking URI" in err, err
    assert "tracking.wandb_group: 'g' given, but tracking.wandb_project is ''" in err, err

    # a tracker whose package is not installed (hidden from this process)
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"tracking:\n  mlflow_uri: http://{HOST}:1\n  wandb_project: p\n")
    with monkeypatch.context() as hidden:
        hidden.setitem(sys.modules, "mlflow", None)
        hidden.setitem(sys.modules, "wandb", None)
        assert main(["validate", str(ok)]) == 2
    err = capsys.readouterr().err
    assert "tracking.mlflow_uri: the mlflow package is not installed: pip install -e '.[mlflow]' in the ganray checkout" in err, err
    assert "tracking.wandb_project: the wandb package is not installed: pip install -e '.[wandb]' in the ganray checkout" in err, err

    # a server that does not answer: exit 2 with the URI, before Ray starts or anything is written
    monkeypatch.chdir(tmp_path)
    dead = f"http://{HOST}:{free_port()}"
    t0 = time.monotonic()
    assert sweep_main(["--smoke", "--set", f"tracking.mlflow_uri={dead}"]) == 2
    out, err = capsys.readouterr()
    assert f"error: tracking.mlflow_uri: the MLflow tracking server at {dead} cannot be used" in err, err
    assert time.monotonic() - t0 < 30 and "Ray " not in out, out
    assert not (tmp_path / "ganray_results" / "zdim-mnist-local-smoke").exists()

    # W&B online without credentials (no key, no ~/.netrc)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert sweep_main(["--smoke", "--set", "tracking.wandb_project=p"]) == 2
    err = capsys.readouterr().err
    assert "error: tracking.wandb_project: no W&B credentials: set WANDB_API_KEY" in err, err


# ---- 4. credentials never in a config, and never shown ---------------------------------------------------

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize("uri, where", [
    (f"postgresql://ganray:{SECRET}@db.example.com:5432/mlflow", "~/.pgpass"),
    (f"postgresql+psycopg2://ganray:{SECRET}@db.example.com/mlflow", "~/.pgpass"),
    (f"mysql://ganray:{SECRET}@db.example.com/mlflow", "~/.pgpass"),
    (f"mssql+pyodbc:///?odbc_connect=DRIVER%3Dodbc%3BUID%3Dme%3BPWD%3D{SECRET}", "~/.pgpass"),
    (f"postgresql://db.example.com/mlflow?sslmode=require&password={SECRET}", "~/.pgpass"),
    (f"https://me:{SECRET}@mlflow.example.com", "MLFLOW_TRACKING_USERNAME"),
    (f"https://{SECRET}@mlflow.example.com", "MLFLOW_TRACKING_TOKEN"),
    (f"databricks://me:{SECRET}@workspace", "MLFLOW_TRACKING_TOKEN"),
])
def test_a_tracking_uri_holding_a_password_is_refused_for_every_scheme_and_never_shown(tmp_path, capsys, uri, where):
    """A config is copied into every trial's config.yaml, its checkpoints and tuner.pkl: `ganray
    validate` (every entry point's config check) exits 2 naming the key and where credentials go,
    and shows the URI redacted."""
    from ganray.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"tracking:\n  mlflow_uri: '{uri}'\n")
    assert main(["validate", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert "tracking.mlflow_uri: holds credentials" in err and where in err, err
    assert SECRET not in out + err, err


def test_a_database_uri_with_a_user_name_only_or_a_driver_is_a_tracking_uri():
    from ganray.args import redact_uri, tracking_errors

    for uri in ("postgresql://ganray@db.example.com/mlflow", "mysql+pymysql://db.example.com/mlflow",
                "sqlite:////abs/mlflow.db", "file:/abs/mlruns", "databricks://profile"):
        assert tracking_errors(load(None, [f"tracking.mlflow_uri={uri}"])) == [], uri
    assert redact_uri("postgresql://ganray@db.example.com/mlflow") == "postgresql://***@db.example.com/mlflow"
    assert redact_uri("sqlite:////abs/mlflow.db") == "sqlite:////abs/mlflow.db"  # unchanged, its four slashes kept


def test_the_preflight_error_and_the_callbacks_warnings_show_the_uri_redacted(monkeypatch, caplog):
    """Where a URI is printed or logged it is redacted (the config check refuses such a URI; the
    callbacks and the preflight may still be handed one)."""
    from ganray import tracking
    from ganray.tracking.mlflow_callback import GanrayMLflowCallback

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    uri = f"http://me:{SECRET}@{HOST}:{port}"
    with pytest.raises(tracking.TrackerUnavailable) as e:
        tracking._check_mlflow(uri)
    assert f"the MLflow tracking server at http://***@{HOST}:{port} cannot be used" in str(e.value), e.value
    assert SECRET not in str(e.value), e.value
    cfg = load(None, [f"tracking.mlflow_uri=http://{HOST}:{port}"])
    assert SECRET not in tracking.describe(cfg.replace(**{"tracking.mlflow_uri": uri}))
    cb = GanrayMLflowCallback(uri, "x")
    with caplog.at_level("WARNING"):
        cb.setup()  # the server does not answer: a warning, with the URI redacted
    assert f"MLflow (http://***@{HOST}:{port}): could not open the experiment" in caplog.text, caplog.text
    assert SECRET not in caplog.text, caplog.text


# ---- 5. W&B: the preflight asks what Ray's callback will ask --------------------------------------------

@pytest.mark.parametrize("mode", [None, "offline", "disabled", "Offline", "OFFLINE", " offline", "dryrun", "online", ""])
def test_wandb_preflight_passes_exactly_when_rays_callback_setup_will(tmp_path, monkeypatch, mode):
    """Without a key: Ray's WandbLoggerCallback.setup (_set_api_key) goes on only for WANDB_MODE
    exactly 'offline' or 'disabled'; the preflight agrees for every spelling, so no sweep starts to
    fail in Tuner.fit with "No WandB API key found"."""
    from ray.air.integrations.wandb import _set_api_key

    from ganray import tracking

    for var in ("WANDB_API_KEY", "WANDB_SETUP_API_KEY_HOOK", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no wandb settings
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    if mode is not None:
        monkeypatch.setenv("WANDB_MODE", mode)
    try:
        _set_api_key()
        ray_ok = True
    except ValueError:  # no key (or, from wandb's settings, a mode it does not take)
        ray_ok = False
    try:
        tracking._check_wandb()
        ours_ok = True
    except tracking.TrackerUnavailable:
        ours_ok = False
    assert ours_ok == ray_ok == (mode in ("offline", "disabled")), (mode, ours_ok, ray_ok)


@pytest.mark.parametrize("mode, said", [
    ("Offline", "WANDB_MODE='Offline' is not a W&B mode"),
    ("dryrun", "WANDB_MODE=dryrun without W&B credentials"),
])
def test_a_wandb_mode_ray_refuses_without_a_key_exits_2_before_ray_starts(tmp_path, monkeypatch, capsys, mode, said):
    from ganray.sweep import main as sweep_main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_MODE", mode)
    assert sweep_main(["--smoke", "--set", "tracking.wandb_project=p"]) == 2
    out, err = capsys.readouterr()
    assert f"error: tracking.wandb_project: {said}" in err and "WANDB_MODE=offline" in err, err
    assert "Ray " not in out and not (tmp_path / "ganray_results" / "zdim-mnist-local-smoke").exists()


# ---- 6. the record read incrementally, once for both trackers -------------------------------------------

class CountingReads:
    """storage.read_bytes and storage.list_files counted, by URI, while `on`."""

    def __init__(self, monkeypatch):
        self.reads: dict[str, int] = {}
        self.lists: dict[str, int] = {}
        self.on = False
        read, listing = storage.read_bytes, storage.list_files

        def counted_read(uri, **kw):
            if self.on:
                self.reads[uri] = self.reads.get(uri, 0) + 1
            return read(uri, **kw)

        def counted_list(uri, **kw):
            if self.on:
                self.lists[uri] = self.lists.get(uri, 0) + 1
            return listing(uri, **kw)

        monkeypatch.setattr(storage, "read_bytes", counted_read)
        monkeypatch.setattr(storage, "list_files", counted_list)


def _reference_take(paths, sent_step: int, upto) -> list[tuple[int, dict]]:
    """What a follower took before the record was read incrementally: read_trial's rows after the
    last delivered step, up to `upto`."""
    rec = reader.read_trial(paths, paths.name)
    return [(r["step"], {k: v for k, v in r.items() if k not in ("step", "time")}) for r in rec.rows
            if isinstance(r.get("step"), int) and sent_step < r["step"] <= upto]


def _taken(rows) -> list[tuple[int, dict]]:
    return [(r.step, {k: v for k, v in r.metrics.items() if k != "verdict_code"}) for r in rows]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_both_trackers_share_one_incremental_read_each_final_segment_read_once(tmp_path, monkeypatch, request,
                                                                              where):
    """8 results, each flushing a metrics segment of its own (on S3 a flush rotates; locally every
    row fills a segment): the two trackers' followers of the trial read each segment twice in all
    (once newest, once final, never again), verdict.json once at the end, the sample grids at the
    evaluations and the end; every take equals what reading the whole record gave."""
    from ganray.tracking.follow import Records, TrialFollower, result_token

    base = request.getfixturevalue("s3_bucket") if where == "s3" else str(tmp_path)
    cfg = load(None, ["data.dataset=ring8", f"storage.uri={base}", "experiment.name=counted"])
    paths = layout.trial_paths(f"{base}/counted", "t0")
    rec = TrialRecorder(paths, config_yaml=cfg.to_yaml(), **({} if where == "s3" else {"rotate_max_bytes": 1}))
    records = Records()
    followers = [TrialFollower(cfg, "t0", records), TrialFollower(cfg, "t0", records)]  # MLflow's, W&B's
    assert followers[0].reader is followers[1].reader and len(records) == 1
    counts = CountingReads(monkeypatch)
    taken: list[list] = [[], []]
    steps = list(range(5, 45, 5))
    for i, step in enumerate(steps):
        result = _report(rec, step, "healthy" if step % 10 == 0 else None)
        for f, out in zip(followers, taken):
            f.note_verdict(step, result.get("verdict"))
            counts.on = True
            rows = f.take(step, evaluated="verdict" in result, token=result_token(i + 1, result))
            counts.on = False
            assert _taken(rows) == _reference_take(paths, f.sent_step, step), step
            f.sent(rows, f.new_samples())
            out += rows
    rec.close()
    for f, out in zip(followers, taken):
        counts.on = True
        rows = f.take(final=True, token=("end", 99))
        counts.on = False
        assert _taken(rows) == _reference_take(paths, f.sent_step, math.inf)
        f.sent(rows, f.new_samples())
        out += rows
    full = reader.read_trial(paths, "t0")
    segments = sorted(storage.join(paths.trial, rel) for rel in reader.metrics_files(
        {u[len(paths.trial) + 1:] for u in storage.list_files(paths.trial)}))
    assert len(segments) == len(steps)
    assert {u: counts.reads.get(u, 0) for u in segments} == {u: 2 for u in segments}, counts.reads
    assert counts.reads[storage.join(paths.trial, layout.VERDICT)] == 1
    assert set(counts.reads) == {*segments, storage.join(paths.trial, layout.VERDICT)}
    assert counts.lists == {storage.join(paths.trial, layout.METRICS_DIR): len(steps) + 1,
                            storage.join(paths.trial, layout.SAMPLES_DIR): 4 + 1}, counts.lists
    for f, out in zip(followers, taken):
        assert [(r.step, r.metrics) for r in out] == [
            (r["step"], {**{k: v for k, v in r.items() if k not in ("step", "time")},
                         **({"verdict_code": float(VERDICT_CODES["healthy"])} if r["step"] % 10 == 0 else {})})
            for r in full.rows]
        assert f.final().samples == full.samples and f.final().verdict == full.verdict
        assert [u for _, u in f.samples[:f.sent_samples]] == [u for _, u in full.samples]
        f.close()
    assert len(records) == 0


def test_a_resumed_run_rewriting_segments_already_read_is_followed_exactly(tmp_path):
    """A trial restarted from its checkpoint (Ray Train's FailureConfig, unseen by Tune) rewrites the
    newest segments, dropping the rows it writes again: followers that last read at different times
    (after every row, before the crash, between the rewrite and the new rows) each take exactly what
    reading the whole record gives, and their readers hold the record's rows."""
    from ganray.tracking.follow import TrialFollower

    cfg = load(None, ["data.dataset=ring8", f"storage.uri={tmp_path}", "experiment.name=resumed"])
    paths = layout.trial_paths(str(tmp_path / "resumed"), "t0")
    every, before, between = (TrialFollower(cfg, "t0") for _ in range(3))
    sent: dict[int, list] = {id(f): [] for f in (every, before, between)}

    def take(f, upto):
        rows = f.take(upto)
        assert _taken(rows) == _reference_take(paths, f.sent_step, upto)
        assert f.reader.rows == reader.read_trial(paths, "t0").rows
        f.sent(rows)
        sent[id(f)] += _taken(rows)

    rec = TrialRecorder(paths, config_yaml=cfg.to_yaml(), rotate_max_bytes=1)
    for step in range(5, 35, 5):
        rec.report(step, {"loss_D": float(step)})
        take(every, step)
        take(between, min(step, 20))
    take(before, 20)  # rows 25 and 30 read (final segments), not sent
    rec.close()
    rec = TrialRecorder(paths, config_yaml=cfg.to_yaml(), rotate_max_bytes=1, resume_step=21)  # back to step 20
    take(between, 30)  # rows 25 and 30 dropped, none written yet
    for step in (25, 30, 35):
        rec.report(step, {"loss_D": 100.0 + step})
        take(every, step)
    rec.close()
    for f in (every, before, between):
        take(f, math.inf)
    assert [s for s, _ in sent[id(before)]] == [5, 10, 15, 20, 25, 30, 35]
    assert sent[id(before)][4] == (25, {"loss_D": 125.0}) and sent[id(between)][4] == (25, {"loss_D": 125.0})
    assert [s for s, _ in sent[id(every)]] == [5, 10, 15, 20, 25, 30, 35]  # 25, 30 as first logged (sent)


def test_a_finished_run_is_read_once_for_both_trackers(tmp_path, monkeypatch):
    """`ganray train`'s tracking (track_finished_run): MLflow's and W&B's ends share one read of
    the record: each metrics segment and verdict.json read once."""
    from ganray import tracking

    monkeypatch.setenv("WANDB_MODE", "disabled")  # wandb.init without a run: the reads are what is counted
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store, opted into: no server needed
    uri = (tmp_path / "mlruns").as_uri()
    cfg = load(None, ["data.dataset=ring8", f"storage.uri={tmp_path}", "experiment.name=single",
                      f"tracking.mlflow_uri={uri}", "tracking.wandb_project=p"])
    paths = layout.trial_paths(str(tmp_path / "single"), "train")
    rec = TrialRecorder(paths, config_yaml=cfg.to_yaml(), rotate_max_bytes=1)
    for step in (5, 10, 15):
        _report(rec, step, "healthy" if step == 10 else None)
    rec.close()
    counts = CountingReads(monkeypatch)
    counts.on = True
    tracking.track_finished_run(cfg, "train")
    counts.on = False
    segments = [storage.join(paths.trial, layout.metrics_segment(i)) for i in range(3)]
    assert {u: n for u, n in counts.reads.items() if u.startswith(paths.trial)} == \
        {**dict.fromkeys(segments, 1), storage.join(paths.trial, layout.VERDICT): 1}, counts.reads
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss_G")) == \
        [(5, 5.0), (10, 10.0), (15, 15.0)]
    assert run.data.tags["verdict"] == "healthy" and run.info.status == "FINISHED"
