"""TensorBoard on the bucket: event files written by the trial recorder into the real S3 (moto) and
GCS (emulator) servers are served by a real `tensorboard` process through its HTTP API, every
trial a run; `ganray tensorboard` carries the endpoints over and rejects bad storage."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from conftest import free_port
from ganray import tensorboard as gtb
from ganray.artifacts import layout
from ganray.artifacts.recorder import TrialRecorder

TB_WAIT_SEC = 120.0  # TensorBoard's start-up on a busy 2-core machine, plus its reload interval


def _get(port: int, path: str, **params):
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class TensorBoardProcess:
    """A tensorboard subprocess on 127.0.0.1:<free port>, killed on exit."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.argv, self.env = argv, env
        self.port = int(argv[argv.index("--port") + 1])

    def __enter__(self) -> "TensorBoardProcess":
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
