"""Shared fixtures: real S3 (moto_server) and GCS (gcp-storage-emulator) servers on 127.0.0.1.

    s3_server   session: a moto_server process; .endpoint, .env, .make_bucket(), .client(),
                .objects(bucket), .stop() / .start() / .restart() / .outage(seconds)
    s3_bucket   function: a fresh bucket, the server's environment set with monkeypatch
                (child processes started afterwards inherit it); yields "s3://<bucket>"
    gcs_server, gcs_bucket   the same for GCS; gcs_bucket yields "gs://<bucket>"

Each server process listens on a private port; clients reach it through a small TCP relay
on the public port (`endpoint`). stop() closes the relay's listening socket and resets its
open connections, so clients get "connection refused" exactly as from a stopped server,
while the server process keeps its buckets and objects (moto and the emulator keep them
only in memory, so stopping the process itself would lose them, unlike a real S3 outage).
start() listens on the same port again.

The classes work outside pytest too (bench/bench_upload.py uses them):

    with S3Server() as s3:
        bucket = s3.make_bucket()
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_TIMEOUT_SEC = 60.0  # moto imports a lot; a busy 2-core machine needs time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class TcpRelay:
    """Forwards HOST:port to HOST:target_port. stop() refuses new connections and resets open
    ones; start() listens on the same port again."""

    def __init__(self, port: int, target_port: int):
        self.port, self.target_port = port, target_port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accepting: threading.Thread | None = None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 10
            while True:
                try:
                    s.bind((HOST, self.port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        s.close()
                        raise
                    time.sleep(0.1)
            s.listen(128)
            s.settimeout(0.1)
            self._stop = threading.Event()
            self._listener = s
            self._accepting = threading.Thread(target=self._accept_loop, args=(s, self._stop),
                                               name=f"relay-{self.port}", daemon=True)
            self._accepting.start()

    def stop(self) -> None:
        with self._lock:
            listener, accepting = self._listener, self._accepting
            if listener is None:
                return
            self._stop.set()
            self._listener = None
        accepting.join(timeout=5)
        listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:  # RST, as a crashed server's kernel would send
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                c.close()
            except OSError:
                pass

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if stop.is_set():
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


class LocalServer:
    """A storage server process on a private port behind a TcpRelay on `port`."""

    kind = ""
    unset_env: tuple[str, ...] = ()

    def __init__(self, log_dir: str | os.PathLike | None = None):
        self.port, self.backend_port = free_port(), free_port()
        self.endpoint = f"http://{HOST}:{self.port}"
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"ganray-{self.kind}-"))
        self.log_path = self.log_dir / f"{self.kind}-server.log"
        self.proc: subprocess.Popen | None = None
        self.relay = TcpRelay(self.port, self.backend_port)

    # -- to override
    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def env(self) -> dict[str, str]:
        raise NotImplementedError

    # -- life cycle
    def launch(self) -> "LocalServer":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=_server_env())
        self._wait_ready()
        self.relay.start()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SEC
        url = f"http://{HOST}:{self.backend_port}/"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status < 500:
                        return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError(f"{self.kind} server did not answer on {url} within {START_TIMEOUT_SEC:.0f} s:\n"
                           f"{self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Refuse connections on `endpoint` (and reset open ones) until start()."""
        self.relay.stop()

    def start(self) -> None:
        self.relay.start()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.relay.running

    def outage(self, seconds: float) -> threading.Thread:
        """Stop now and start again after `seconds` (in a background thread, returned)."""
        self.stop()
        t = threading.Timer(seconds, self.start)
        t.daemon = True
        t.start()
        return t

    def close(self) -> None:
        self.relay.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> "LocalServer":
        return self.launch()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- environment for clients
    def apply_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for k in self.unset_env:
            monkeypatch.delenv(k, raising=False)
        for k, v in self.env.items():
            monkeypatch.setenv(k, v)

    @staticmethod
    def new_bucket_name() -> str:
        return f"ganray-test-{uuid.uuid4().hex[:12]}"


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _script(name: str) -> str:
    """A console script of this venv (next to the interpreter), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


class S3Server(LocalServer):
    kind = "s3"
    unset_env = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")

    def argv(self) -> list[str]:
        return [_script("moto_server"), "-H", HOST, "-p", str(self.backend_port)]

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,  # boto3, pyarrow (via ganray.storage), Ray
            "S3_ENDPOINT": self.endpoint,       # TensorBoard's S3 reader
            "AWS_ACCESS_KEY_ID": "testing",     # moto accepts any key
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on a laptop
        }

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing")

    def make_bucket(self, name: str | None = None) -> str:
        name = name or self.new_bucket_name()
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}

    def delete_bucket(self, name: str) -> None:
        client = self.client()
        keys = list(self.objects(name))
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=name, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        client.delete_bucket(Bucket=name)


class GCSServer(LocalServer):
    kind = "gcs"
    unset_env = ("GOOGLE_APPLICATION_CREDENTIALS",)

    def argv(self) -> list[str]:
        return [_script("gcp-storage-emulator"), "start", "--host", HOST, "--port", str(self.backend_port),
                "--in-memory"]

    @property
    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,  # google-cloud-storage, gcsfs, ganray.storage
            "GOOGLE_CLOUD_PROJECT": "ganray-test",
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # gcsfs: no storage-control API here
        }

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="ganray-test", credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.endpoint})

    def make_bucket(self, name: str | None = None) -> str:
        name = name or self.new_bucket_name()
        self.client().create_bucket(name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        return {b.name: b.size for b in self.client().list_blobs(bucket, prefix=prefix)}

    def delete_bucket(self, name: str) -> None:
        client = self.client()
        for blob in client.list_blobs(name):
            blob.delete()
        client.bucket(name).delete()


# ---- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A moto_server on 127.0.0.1 for the whole session (see S3Server)."""
    with S3Server(tmp_path_factory.mktemp("s3-server")) as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A gcp-storage-emulator on 127.0.0.1 for the whole session (see GCSServer)."""
    with GCSServer(tmp_path_factory.mktemp("gcs-server")) as server:
        yield server


def _bucket_fixture(server: LocalServer, monkeypatch: pytest.MonkeyPatch, scheme: str):
    server.start()  # a test that stopped the server may have failed before starting it again
    server.apply_env(monkeypatch)
    name = server.make_bucket()
    yield f"{scheme}://{name}"
    server.start()
    try:
        server.delete_bucket(name)
    except Exception as e:  # noqa: BLE001 — cleanup only; the next test gets a fresh bucket anyway
        print(f"could not delete {scheme}://{name}: {e}", file=sys.stderr)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """"s3://<fresh bucket>", with AWS_ENDPOINT_URL, S3_ENDPOINT and test credentials set."""
    yield from _bucket_fixture(s3_server, monkeypatch, "s3")


@pytest.fixture
def gcs_bucket(gcs_server, monkeypatch):
    """"gs://<fresh bucket>", with STORAGE_EMULATOR_HOST set."""
    yield from _bucket_fixture(gcs_server, monkeypatch, "gs")
