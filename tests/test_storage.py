"""ganray.storage against a local folder and real S3 (moto_server) / GCS (gcp-storage-emulator)
servers on 127.0.0.1: round trips, preflight errors, atomic puts, retries through an outage."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pyarrow.fs as pafs
import pytest

from conftest import free_port
from ganray import storage
from ganray.config import Config
from ganray.storage import s3 as s3_backend
from ganray.storage.retry import Budget, with_retry

KINDS = ["local", "s3", "gs"]


@pytest.fixture(params=KINDS)
def base_uri(request, tmp_path):
    """A writable storage root of each kind (the servers start only for their kind)."""
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_bucket" if request.param == "s3" else "gcs_bucket")


def _server(request, uri: str):
    return request.getfixturevalue("s3_server" if uri.startswith("s3://") else "gcs_server")


# ---- round trips ---------------------------------------------------------------------


def test_put_read_list_exists_round_trip(base_uri, tmp_path):
    exp = storage.join(base_uri, "ganray", "exp")
    storage.put_bytes(storage.join(exp, "trials/t1/metrics.jsonl"), b'{"step": 1}\n')
    storage.put_bytes(storage.join(exp, "config.yaml"), b"a: 1\n")
    src = tmp_path / "grid.png"
    src.write_bytes(os.urandom(70_000))
    storage.upload_file(src, storage.join(exp, "trials/t1/samples/step_000001.png"))

    assert storage.read_bytes(storage.join(exp, "config.yaml")) == b"a: 1\n"
    assert storage.list_files(exp) == [
        storage.join(exp, "config.yaml"),
        storage.join(exp, "trials/t1/metrics.jsonl"),
        storage.join(exp, "trials/t1/samples/step_000001.png"),
    ]
    assert storage.list_files(storage.join(exp, "nothing-here")) == []
    assert storage.exists(storage.join(exp, "config.yaml"))
    assert storage.exists(storage.join(exp, "trials"))  # a folder / prefix holding objects
    assert not storage.exists(storage.join(exp, "trials/t2"))
    assert not storage.exists(storage.join(exp, "config.yam"))  # a key prefix is not a folder

    dst = tmp_path / "back" / "grid.png"
    storage.download_file(storage.join(exp, "trials/t1/samples/step_000001.png"), dst)
    assert dst.read_bytes() == src.read_bytes()

    with pytest.raises(FileNotFoundError, match="no such"):
        storage.read_bytes(storage.join(exp, "missing.json"))
    with pytest.raises(storage.StorageNotFoundError):
        storage.download_file(storage.join(exp, "missing.json"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_objects_seen_by_native_client_and_pyarrow(request, kind):
    """What ganray writes is what boto3 / google-cloud-storage and pyarrow (Ray's view) list."""
    base_uri = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    uri = storage.join(base_uri, "exp/verdict.json")
    storage.put_bytes(uri, b'{"verdict": "healthy"}')
    bucket = base_uri.split("://", 1)[1]
    assert _server(request, base_uri).objects(bucket) == {"exp/verdict.json": 22}
    fs, path = storage.filesystem(uri)
    info = fs.get_file_info(path)
    assert info.type == pafs.FileType.File and info.size == 22
    with fs.open_input_stream(path) as f:
        assert f.read() == b'{"verdict": "healthy"}'


def test_list_files_pages_past_one_listing(s3_bucket):
    """More keys than one S3 LIST page (1000) are all returned."""
    exp = storage.join(s3_bucket, "many")
    client = s3_backend.BACKEND.client()
    bucket = s3_bucket.removeprefix("s3://")
    for i in range(1005):
        client.put_object(Bucket=bucket, Key=f"many/k{i:05d}", Body=b"")
    files = storage.list_files(exp)
    assert len(files) == 1005 and files[0] == f"{exp}/k00000" and files[-1] == f"{exp}/k01004"


# ---- atomic puts ---------------------------------------------------------------------


def test_put_is_atomic_for_concurrent_readers(base_uri):
    """A reader racing a writer that replaces a 1 MiB object sees one whole version, never a mix or a part."""
    uri = storage.join(base_uri, "ckpt/checkpoint.pt")
    versions = [bytes([i]) * (1 << 20) for i in range(4)]
    storage.put_bytes(uri, versions[0])
    seen: list[bytes] = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(storage.read_bytes(uri))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for v in versions[1:] * 3:
            storage.put_bytes(uri, v)
    finally:
        stop.set()
        t.join(timeout=60)
    assert seen and all(s in versions for s in seen), {len(s) for s in seen}
    assert storage.read_bytes(uri) == versions[-1]
    assert storage.list_files(storage.join(base_uri, "ckpt")) == [uri]  # no temporary leftovers


def test_failed_local_write_leaves_nothing(tmp_path):
    """A local write that fails halfway (here: the producer raises after half the data) leaves
    neither a partial file nor a temporary one, and the old version stays."""
    target = tmp_path / "out" / "checkpoint.pt"
    storage.put_bytes(str(target), b"old version")

    def half_then_fail(f):
        f.write(b"new ver")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        storage.atomic_local_write(str(target), half_then_fail)
    assert target.read_bytes() == b"old version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["checkpoint.pt"]


# ---- retries -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_put_retries_through_a_server_outage(request, kind, caplog):
    """The server refuses connections for 3 s; put_bytes retries (logging each try) and succeeds."""
    base = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    server = _server(request, base)
    uri = storage.join(base, "exp/checkpoint.pt")
    t0 = time.monotonic()
    back = server.outage(3.0)
    with caplog.at_level(logging.WARNING, logger="ganray.storage"):
        storage.put_bytes(uri, b"state" * 1000)
    elapsed = time.monotonic() - t0
    back.join()
    assert elapsed >= 2.5, "the put should have waited for the server"
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert retries and "connection refused" in retries[0].getMessage()
    assert storage.read_bytes(uri) == b"state" * 1000


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_put_gives_up_after_the_retry_budget(request, kind):
    base = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    server = _server(request, base)
    server.stop()
    try:
        t0 = time.monotonic()
        with pytest.raises(storage.StorageError, match=r"cannot write after \d+ tries in 2 s: cannot reach .* \(connection refused\)"):
            storage.put_bytes(storage.join(base, "x"), b"x", retry_sec=2)
        assert time.monotonic() - t0 < 10
    finally:
        server.start()
    assert not storage.exists(storage.join(base, "x"))


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_permanent_errors_are_not_retried(request, kind):
    """A missing bucket fails at once, however long the retry budget."""
    base = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    scheme = base.split("://")[0]
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError, match="cannot write") as e:
        storage.put_bytes(f"{scheme}://no-such-bucket-{free_port()}/x", b"x", retry_sec=60)
    assert time.monotonic() - t0 < 5
    assert e.value.__cause__ is not None  # the library's error is kept as the root cause


def test_retry_budget_from_environment(monkeypatch):
    monkeypatch.setenv(storage.RETRY_ENV, "7.5")
    assert storage.retry_budget_sec() == 7.5
    assert storage.retry_budget_sec(2) == 2.0
    monkeypatch.setenv(storage.RETRY_ENV, "soon")
    with pytest.raises(storage.StorageError, match="GANRAY_STORAGE_RETRY_SEC='soon' is not a number"):
        storage.retry_budget_sec()
    monkeypatch.delenv(storage.RETRY_ENV)
    assert storage.retry_budget_sec() == storage.DEFAULT_RETRY_SEC


# ---- preflight -----------------------------------------------------------------------


def test_check_storage_passes_and_leaves_nothing(request, base_uri):
    exp = storage.join(base_uri, "ganray/exp")
    storage.check_storage(exp)
    if base_uri.startswith("/"):
        assert os.path.isdir(exp) and os.listdir(exp) == []
    else:
        assert _server(request, base_uri).objects(base_uri.split("://", 1)[1]) == {}  # probe deleted


@pytest.mark.parametrize("kind", ["s3", "gs"])
def test_check_storage_missing_bucket(request, kind):
    base = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    server = _server(request, base)
    scheme = base.split("://")[0]
    with pytest.raises(storage.StorageError) as e:
        storage.check_storage(f"{scheme}://nope-{free_port()}/exp")
    assert f"does not exist at endpoint {server.endpoint}" in str(e.value)
    assert str(e.value).startswith(f"{scheme}://nope-")


@pytest.mark.parametrize("kind,words", [("s3", "S3"), ("gs", "GCS")])
def test_check_storage_unreachable_endpoint(request, monkeypatch, kind, words):
    base = request.getfixturevalue("s3_bucket" if kind == "s3" else "gcs_bucket")
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL" if kind == "s3" else "STORAGE_EMULATOR_HOST", closed)
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError, match=f"cannot reach {words} endpoint {closed} \\(connection refused\\)"):
        storage.check_storage(storage.join(base, "exp"))
    assert time.monotonic() - t0 < 10


def test_check_storage_no_aws_credentials(s3_bucket, monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(storage.StorageError, match="no AWS credentials found in the standard chain"):
        storage.check_storage(storage.join(s3_bucket, "exp"))


def test_check_storage_no_gcp_credentials(monkeypatch, tmp_path):
    """Real GCS (no emulator) without Application Default Credentials."""
    for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/gcloud here
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")  # no metadata server either
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")
    with pytest.raises(storage.StorageError, match="no Google Cloud credentials found in the standard chain"):
        storage.check_storage("gs://some-bucket/exp", timeout_sec=2)


@pytest.mark.parametrize("uri", ["s3://", "gs://", "s3:/bucket/x", "http://example.com/x", "s3://Upper_Case/x", ""])
def test_check_storage_malformed_uri(uri):
    with pytest.raises(storage.StorageError, match="malformed storage URI|must be a local path"):
        storage.check_storage(uri)


def test_check_storage_local_not_creatable(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(storage.StorageError, match="cannot create local storage folder"):
        storage.check_storage(str(tmp_path / "a-file" / "exp"))


def test_local_writes_are_readable_by_the_group_and_others_as_open_would_make_them(tmp_path):
    """Reports, configs and checkpoints get 0666 less the umask (mkstemp alone gives 0600)."""
    import os

    from ganray.train import checkpoint

    mask = os.umask(0o022)
    os.umask(mask)
    storage.put_bytes(str(tmp_path / "report.html"), b"<html>")
    checkpoint.save({"config": {}, "step": 1, "G": {}, "D": {}}, tmp_path / "c" / "checkpoint.pt")
    with open(tmp_path / "plain.txt", "w"):  # what open() makes under the same umask
        pass
    expected = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert expected == 0o666 & ~mask and expected != 0o600
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == expected
    assert (tmp_path / "c" / "checkpoint.pt").stat().st_mode & 0o777 == expected


def test_retry_counts_tries_backs_off_and_keeps_the_last_error():
    """The one retry loop: transient errors retried up to the budget, then give_up raised from
    the last error; an error classify does not call transient is raised as it is, at once."""
    calls = []

    def flaky():
        calls.append(time.monotonic())
        raise ConnectionError(f"refused #{len(calls)}")

    def classify(e):
        return str(e) if isinstance(e, ConnectionError) else None

    with pytest.raises(RuntimeError, match=r"gave up after 3: refused #3") as e:
        with_retry("fetch", "here", flaky, Budget(tries=3, first_pause_sec=0.01, jitter=0.0), classify,
                   lambda tries, last: RuntimeError(f"gave up after {tries}: {last}"))
    assert len(calls) == 3 and isinstance(e.value.__cause__, ConnectionError)
    assert calls[2] - calls[1] >= calls[1] - calls[0] >= 0.01  # the pause doubles

    def broken():
        calls.append(0)
        raise KeyError("not transient")

    calls.clear()
    with pytest.raises(KeyError):
        with_retry("fetch", "here", broken, Budget(tries=5, first_pause_sec=0.0), classify,
                   lambda tries, last: RuntimeError(last))
    assert calls == [0]


# ---- the URI grammar -------------------------------------------------------------------------


def test_config_uri_errors_name_the_key():
    assert storage.config_uri_errors(Config()) == []  # '' storage (the default) and no data.source
    cfg = Config().replace(**{"storage.uri": "s3:/x", "data.source": "gs://"})
    errs = storage.config_uri_errors(cfg)
    assert len(errs) == 2
    assert errs[0].startswith("storage.uri: malformed storage URI 's3:/x'") and "s3://bucket/prefix" in errs[0]
    assert errs[1].startswith("data.source: malformed storage URI 'gs://'")
    assert storage.check_storage_uri("s3://ok-bucket/x", "--out") == []
    assert storage.check_storage_uri("http://example.com/x", "--out")[0].startswith("--out: malformed")
    assert storage.check_storage_uri("", "--out")[0].startswith("--out: must be a local path")


def test_importing_storage_loads_no_cloud_library(tmp_path):
    """`ganray validate` and the report of a local sweep import ganray.storage; the backends'
    libraries (and pyarrow) load only with a URI of their scheme."""
    code = ("import sys, ganray.storage as s; s.put_bytes(sys.argv[1], b'x'); assert s.read_bytes(sys.argv[1]) == b'x';"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pyarrow', 'boto3', 'botocore', 'google', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
