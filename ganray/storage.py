"""Storage URIs -> filesystems: a local path, s3://bucket/prefix or gs://bucket/prefix.

Custom endpoints come from the standard environment and are passed on explicitly so
that pyarrow, boto3, google-cloud-storage and TensorBoard all talk to the same server:
  S3:  AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL (or S3_ENDPOINT, TensorBoard's name),
       AWS_REGION/AWS_DEFAULT_REGION
  GCS: STORAGE_EMULATOR_HOST (e.g. http://127.0.0.1:9023)
Credentials come only from the standard chains (environment, instance or workload
identity); they are never read from configs and never logged.

Two kinds of clients, one set of endpoints:
- `filesystem(uri)` gives a pyarrow filesystem: what Ray's `storage_filesystem` takes.
- ganray's own object operations (`put_bytes`, `upload_file`, `read_bytes`, `exists`,
  `list_files`, `download_file`, `check_storage`) go through boto3 / google-cloud-storage:
  a put is one request (whole object or none), and their typed errors tell a transient
  failure (connection refused or reset, 5xx, throttling: retried with backoff for a bounded
  time) from a permanent one (missing bucket, access denied: raised at once).
docs/storage.md explains the choices, including the credential-refresh pitfall of
pyarrow's S3 client in long runs (a fresh client is built after a credential error).
"""
from __future__ import annotations

import datetime
import logging
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_SEC = 60.0                # how long one operation keeps retrying transient errors
RETRY_ENV = "GANRAY_STORAGE_RETRY_SEC"  # overrides DEFAULT_RETRY_SEC
CONNECT_TIMEOUT_SEC = 5.0               # one try: TCP connect
READ_TIMEOUT_SEC = 60.0                 # one try: waiting for a response
_BACKOFF_FIRST_SEC, _BACKOFF_MAX_SEC = 0.5, 8.0


class StorageError(RuntimeError):
    """Storage unusable: malformed URI, missing bucket, no credentials, unreachable endpoint."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object (or local file) does not exist. Also a FileNotFoundError."""


# ---- URIs ----------------------------------------------------------------------------


def split_uri(uri: str) -> tuple[str, str]:
    """("s3" | "gs" | "file", path) where path is "bucket/prefix" for buckets."""
    if uri.startswith(("s3://", "gs://")):
        p = urlparse(uri)
        return p.scheme, (p.netloc + p.path).rstrip("/")
    return "file", os.path.abspath(os.path.expanduser(uri))


STORAGE_ENV = "GANRAY_STORAGE"    # the default storage when set (the k8s manifests set it)
LOCAL_DEFAULT = "ganray_results"  # else: ./ganray_results, or ~/ganray_results in a Ray job's driver


def in_ray_job_driver() -> bool:
    """True in the driver of `ray job submit` (Ray's job supervisor sets this variable for the
    driver only): its working directory is an unpacked copy of --working-dir that Ray deletes
    later, so nothing durable may be written under it."""
    return bool(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"))


def resolve_uri(uri: str) -> str:
    """The storage URI every process of a run is given, resolved once where the user's command
    runs: buckets as they are; '' -> $GANRAY_STORAGE, else ./ganray_results (~/ganray_results
    in a Ray job's driver); local paths absolute, ~ expanded. Tune runs each trial in a working
    directory of its own, so a relative path would mean a different folder in every process."""
    explicit = bool(uri)
    if not uri:
        uri = os.environ.get(STORAGE_ENV, "").strip() or (
            os.path.join("~", LOCAL_DEFAULT) if in_ray_job_driver() else LOCAL_DEFAULT)
    validate_uri(uri)
    if uri.startswith(("s3://", "gs://")):
        return uri
    path = os.path.expanduser(uri)
    if not os.path.isabs(path) and in_ray_job_driver():
        where = "--storage" if explicit else f"${STORAGE_ENV}"
        raise StorageError(
            f"storage {uri!r} ({where}) is relative: under `ray job submit` it would land in the job's working "
            f"directory {os.getcwd()}, which Ray deletes; give an absolute path, ~/..., s3:// or gs://")
    return os.path.abspath(path)


def resolve_config(cfg):
    """`cfg` with storage.uri resolved (resolve_uri); the same object when it already is."""
    uri = resolve_uri(cfg.storage.uri)
    return cfg if uri == cfg.storage.uri else cfg.replace(**{"storage.uri": uri})


def experiment_uri(cfg) -> str:
    """<storage>/<experiment> of a config, its storage resolved (resolve_uri)."""
    return join(resolve_uri(cfg.storage.uri), cfg.experiment.name)


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for part in parts:
        if part:
            out += "/" + part.strip("/")
    return out


def _bucket_key(uri: str) -> tuple[str, str]:
    """("bucket", "key/inside") of an s3:// or gs:// URI."""
    _, path = split_uri(uri)
    bucket, _, key = path.partition("/")
    return bucket, key


def validate_uri(uri: str) -> None:
    """Raise StorageError for a malformed URI (same rules as the config's storage.uri)."""
    from ganray.config import check_storage_uri  # the config layer owns the URI grammar

    errors = check_storage_uri(uri, "storage URI")
    if errors:
        raise StorageError(errors[0])


# ---- endpoints and clients -----------------------------------------------------------


def s3_endpoint() -> str | None:
    ep = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
    if ep and "://" not in ep:
        ep = "http://" + ep
    return ep or None


def gcs_endpoint() -> str | None:
    ep = os.environ.get("STORAGE_EMULATOR_HOST")
    if ep and "://" not in ep:
        ep = "http://" + ep
    return ep or None


def _s3_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def _endpoint_words(scheme: str) -> str:
    """"endpoint http://127.0.0.1:5000" or the public service, for messages."""
    ep = s3_endpoint() if scheme == "s3" else gcs_endpoint()
    if ep:
        return f"endpoint {ep}"
    return "AWS S3" if scheme == "s3" else "Google Cloud Storage"


S3_MAX_ATTEMPTS = 10  # the AWS SDK's standard backoff: about a minute of connection errors ridden out


class RetryingS3Handler(pafs.FileSystemHandler):
    """pyarrow's S3FileSystem with more retries, in a form that survives pickling.

    Ray ships the storage filesystem to its controller and workers by pickling it, and a
    pickled S3FileSystem forgets its retry strategy (pyarrow's default gives up on a
    connection error within a second). This handler pickles only the options and builds the
    S3FileSystem, retry strategy included, in each process. Small writes become one
    PutObject (allow_delayed_open), so an object is whole or absent.
    """

    def __init__(self, options: dict[str, Any]):
        self.options = dict(options)
        self._fs: pafs.S3FileSystem | None = None

    def __reduce__(self):
        return (RetryingS3Handler, (self.options,))

    @property
    def fs(self) -> pafs.S3FileSystem:
        if self._fs is None:
            self._fs = pafs.S3FileSystem(
                allow_delayed_open=True, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
                **self.options)
        return self._fs

    def __eq__(self, other):
        return isinstance(other, RetryingS3Handler) and other.options == self.options

    def equals(self, other):
        return self == other

    def get_type_name(self):
        return "s3+retry"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("ganray never deletes a whole bucket's contents")

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    # compression=None: PyFileSystem applies (or skips) compression itself, around the raw
    # stream; the inner filesystem must not also decompress a .gz by its name.
    def open_input_stream(self, path):
        return self.fs.open_input_stream(path, compression=None)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path, compression=None, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, compression=None, metadata=metadata)


def filesystem(uri: str, *, retry_time_limit_sec: float | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, with the environment's endpoints applied.

    `retry_time_limit_sec` bounds the GCS client's own retries of transient errors (pyarrow's
    default is 15 minutes); None keeps the library default. A fresh object is built on every
    call, so callers that hold one for hours should call again after a credential error.
    """
    scheme, path = split_uri(uri)
    if scheme == "s3":
        ep = s3_endpoint()
        kw: dict[str, Any] = {}
        if ep:
            u = urlparse(ep)
            kw.update(endpoint_override=u.netloc, scheme=u.scheme or "http")
        region = _s3_region()
        if region:
            kw["region"] = region
        return pafs.PyFileSystem(RetryingS3Handler(kw)), path
    if scheme == "gs":
        ep = gcs_endpoint()
        kw = {}
        if retry_time_limit_sec is not None:
            kw["retry_time_limit"] = datetime.timedelta(seconds=max(1.0, retry_time_limit_sec))
        if ep:
            u = urlparse(ep)
            # The emulator takes no credentials; a real bucket uses the default chain.
            return pafs.GcsFileSystem(anonymous=True, endpoint_override=u.netloc, scheme=u.scheme or "http", **kw), path
        return pafs.GcsFileSystem(**kw), path
    return pafs.LocalFileSystem(), path


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()

# Environment variables that change which server or identity a client uses: a client is
# cached per combination, so a changed environment gets a fresh client.
_S3_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "S3_ENDPOINT", "AWS_REGION", "AWS_DEFAULT_REGION",
           "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
           "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")
_GCS_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")


def _s3_client(*, connect_timeout: float = CONNECT_TIMEOUT_SEC, read_timeout: float = READ_TIMEOUT_SEC,
               cached: bool = True):
    """A boto3 S3 client for the environment's endpoint and region; botocore's own retries
    are off (ours log and are bounded in time)."""
    key = ("s3", connect_timeout, read_timeout, *(os.environ.get(k) for k in _S3_ENV))
    with _clients_lock:
        if cached and key in _clients:
            return _clients[key]
        import boto3
        from botocore.config import Config as BotoConfig

        client = boto3.session.Session().client(
            "s3", endpoint_url=s3_endpoint(), region_name=_s3_region(),
            config=BotoConfig(connect_timeout=connect_timeout, read_timeout=read_timeout,
                              retries={"max_attempts": 1, "mode": "standard"}))
        if cached:
            _clients[key] = client
        return client


def _gcs_client(*, cached: bool = True):
    """A google-cloud-storage client; it honours STORAGE_EMULATOR_HOST itself (anonymous there)."""
    key = ("gs", *(os.environ.get(k) for k in _GCS_ENV))
    with _clients_lock:
        if cached and key in _clients:
            return _clients[key]
        from google.cloud import storage as gcs

        if gcs_endpoint():
            from google.auth.credentials import AnonymousCredentials

            client = gcs.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "ganray-emulator",
                                credentials=AnonymousCredentials())
        else:
            client = gcs.Client()
        if cached:
            _clients[key] = client
        return client


def _forget_clients(scheme: str) -> None:
    """Drop cached clients of `scheme` so the next try re-reads the credential chain."""
    with _clients_lock:
        for key in [k for k in _clients if k[0] == scheme]:
            del _clients[key]


# ---- error classification ------------------------------------------------------------

PERMANENT, TRANSIENT, CREDENTIALS, NOT_FOUND = "permanent", "transient", "credentials", "not_found"

_S3_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_S3_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidToken", "TokenRefreshRequired"}
_S3_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
                 "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
                 "OperationAborted"}


def _classify_s3(e: BaseException) -> str:
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions as bx

    if isinstance(e, S3UploadFailedError) and e.__context__ is not None:
        return _classify_s3(e.__context__)  # boto3's transfer manager wraps the ClientError
    if isinstance(e, bx.NoCredentialsError):
        return PERMANENT
    if isinstance(e, (bx.ConnectionError, bx.HTTPClientError)):
        return TRANSIENT  # refused, reset, timed out, closed mid-response
    if isinstance(e, bx.CredentialRetrievalError):
        return CREDENTIALS
    if isinstance(e, bx.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _S3_NOT_FOUND:
            return NOT_FOUND
        if code in _S3_CREDENTIALS:
            return CREDENTIALS
        if code in _S3_TRANSIENT or status >= 500 or status == 429:
            return TRANSIENT
        return PERMANENT
    return PERMANENT


def _classify_gcs(e: BaseException) -> str:
    import requests
    from google.api_core import exceptions as gx
    from google.auth import exceptions as ax

    if isinstance(e, gx.NotFound):
        return NOT_FOUND
    if isinstance(e, (gx.TooManyRequests, gx.InternalServerError, gx.BadGateway, gx.ServiceUnavailable,
                      gx.GatewayTimeout, gx.RequestRangeNotSatisfiable)) or getattr(e, "code", 0) == 408:
        return TRANSIENT
    if isinstance(e, ax.DefaultCredentialsError):
        return PERMANENT
    if isinstance(e, (ax.RefreshError,)):
        return CREDENTIALS
    if isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                      ax.TransportError, ConnectionError, TimeoutError)):
        return TRANSIENT
    try:
        from google.resumable_media import common as rm

        if isinstance(e, rm.InvalidResponse):
            status = getattr(getattr(e, "response", None), "status_code", 0) or 0
            return TRANSIENT if status >= 500 or status in (408, 429) else PERMANENT
        if isinstance(e, rm.DataCorruption):
            return TRANSIENT
    except ImportError:  # pragma: no cover - google-resumable-media ships with google-cloud-storage
        pass
    return PERMANENT


def _classify(scheme: str, e: BaseException) -> str:
    if scheme == "s3":
        return _classify_s3(e)
    if scheme == "gs":
        return _classify_gcs(e)
    return NOT_FOUND if isinstance(e, FileNotFoundError) else PERMANENT


def _brief(scheme: str, e: BaseException) -> str:
    """A one-line reason for a message: the error code or class plus its first line."""
    if scheme == "s3":
        from boto3.exceptions import S3UploadFailedError
        from botocore import exceptions as bx

        if isinstance(e, S3UploadFailedError) and e.__context__ is not None:
            return _brief(scheme, e.__context__)
        if isinstance(e, bx.NoCredentialsError):
            return "no AWS credentials found in the standard chain"
        if isinstance(e, bx.ConnectionError):
            return f"cannot reach S3 {_endpoint_words('s3')} ({_connection_reason(e)})"
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            return f"{err.get('Code', '?')}: {err.get('Message', '').strip() or e}"
    if scheme == "gs":
        import requests

        if isinstance(e, (requests.ConnectionError, requests.Timeout)):
            return f"cannot reach GCS {_endpoint_words('gs')} ({_connection_reason(e)})"
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__


def _connection_reason(e: BaseException) -> str:
    text = repr(e) + " " + repr(getattr(e, "kwargs", {}).get("error", ""))
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if "timed out" in low or "timeout" in low:
        return "timed out"
    if "reset" in low or "closed" in low or "aborted" in low:
        return "connection reset"
    if "name or service not known" in low or "nodename nor servname" in low or "resolve" in low:
        return "unknown host"
    return type(e).__name__


# ---- retries -------------------------------------------------------------------------


def retry_budget_sec(retry_sec: float | None = None) -> float:
    """Seconds an operation keeps retrying transient errors: the argument, else
    $GANRAY_STORAGE_RETRY_SEC, else DEFAULT_RETRY_SEC."""
    if retry_sec is not None:
        return max(0.0, float(retry_sec))
    env = os.environ.get(RETRY_ENV)
    if env:
        try:
            return max(0.0, float(env))
        except ValueError:
            raise StorageError(f"{RETRY_ENV}={env!r} is not a number of seconds") from None
    return DEFAULT_RETRY_SEC


def _with_retry(what: str, uri: str, op: Callable[[], T], retry_sec: float | None) -> T:
    """Run `op`; retry transient errors with exponential backoff (0.5 s doubling to 8 s, with
    jitter) until `retry_sec` has passed, logging each retry; raise StorageError otherwise."""
    scheme, _ = split_uri(uri)
    budget = retry_budget_sec(retry_sec)
    deadline = time.monotonic() + budget
    delay, attempt = _BACKOFF_FIRST_SEC, 0
    while True:
        attempt += 1
        try:
            return op()
        except (StorageError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 — classified below; nothing is swallowed
            kind = _classify(scheme, e)
            reason = _brief(scheme, e)
            if kind == NOT_FOUND:
                raise StorageNotFoundError(f"{uri}: cannot {what}: no such object or file ({reason})") from None
            if kind == PERMANENT:
                raise StorageError(f"{uri}: cannot {what}: {reason}") from None
            if kind == CREDENTIALS:
                _forget_clients(scheme)  # re-read the credential chain on the next try
            left = deadline - time.monotonic()
            if left <= 0:
                raise StorageError(
                    f"{uri}: cannot {what} after {attempt} tries in {budget:g} s: {reason}") from None
            pause = min(left, delay * random.uniform(0.8, 1.2))
            log.warning("%s: %s failed (%s); try %d, retrying in %.1f s (%.0f s left)",
                        uri, what, reason, attempt, pause, left)
            time.sleep(pause)
            delay = min(delay * 2, _BACKOFF_MAX_SEC)


# ---- local files ---------------------------------------------------------------------


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread writes files
    os.umask(mask)
    return mask


# What open() gives a new file: 0666 less the umask (mkstemp's 0600 would keep reports and
# configs from the other users of a shared machine).
_FILE_MODE = 0o666 & ~_read_umask()


def atomic_local_write(path: str, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same folder and rename it into place, so a
    reader sees the old file or the whole new one, never a part."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _local_op(what: str, uri: str, op: Callable[[], T]) -> T:
    try:
        return op()
    except FileNotFoundError as e:
        raise StorageNotFoundError(f"{uri}: cannot {what}: no such file ({e.strerror})") from None
    except OSError as e:
        raise StorageError(f"{uri}: cannot {what}: {e.strerror or e}") from None


# ---- object operations ---------------------------------------------------------------


def put_bytes(uri: str, data: bytes, *, retry_sec: float | None = None) -> None:
    """Write `data` atomically: a local temp file renamed into place, or one PUT to a bucket.
    Transient errors are retried for `retry_sec` (default 60 s, $GANRAY_STORAGE_RETRY_SEC)."""
    data = bytes(data)
    scheme, path = split_uri(uri)
    if scheme == "file":
        return _local_op("write", uri, lambda: atomic_local_write(path, lambda f: f.write(data)))
    bucket, key = _bucket_key(uri)
    if scheme == "s3":
        op = lambda: _s3_client().put_object(Bucket=bucket, Key=key, Body=data)  # noqa: E731
    else:
        def op():
            blob = _gcs_client().bucket(bucket).blob(key)
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    timeout=(CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC), retry=None)
    _with_retry("write", uri, op, retry_sec)


def upload_file(local_path: str | os.PathLike, uri: str, *, retry_sec: float | None = None) -> None:
    """Copy a local file to `uri`; the object appears whole or not at all (S3 multipart
    uploads complete in one request and are aborted on failure; GCS resumable uploads are
    finalised by the last chunk)."""
    local_path = os.fspath(local_path)
    if not os.path.isfile(local_path):
        raise StorageNotFoundError(f"{local_path}: cannot upload: no such local file")
    scheme, path = split_uri(uri)
    if scheme == "file":
        if os.path.abspath(local_path) == path:
            return
        return _local_op("write", uri, lambda: atomic_local_write(path, lambda f: _copy_into(local_path, f)))
    bucket, key = _bucket_key(uri)
    if scheme == "s3":
        op = lambda: _s3_client().upload_file(local_path, bucket, key)  # noqa: E731
    else:
        def op():
            blob = _gcs_client().bucket(bucket).blob(key)
            blob.upload_from_filename(local_path, content_type="application/octet-stream",
                                      timeout=(CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC), retry=None)
    _with_retry("upload", uri, op, retry_sec)


def _copy_into(src: str, f) -> None:
    with open(src, "rb") as s:
        shutil.copyfileobj(s, f, 1 << 20)


def read_bytes(uri: str, *, retry_sec: float | None = None) -> bytes:
    """The whole object or file; StorageNotFoundError (a FileNotFoundError) when absent."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        def read_local() -> bytes:
            with open(path, "rb") as f:
                return f.read()

        return _local_op("read", uri, read_local)
    bucket, key = _bucket_key(uri)
    if scheme == "s3":
        op = lambda: _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()  # noqa: E731
    else:
        op = lambda: _gcs_client().bucket(bucket).blob(key).download_as_bytes(  # noqa: E731
            timeout=(CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC), retry=None)
    return _with_retry("read", uri, op, retry_sec)


def download_file(uri: str, local_path: str | os.PathLike, *, retry_sec: float | None = None) -> None:
    """Copy an object to a local file, atomically (temp file + rename)."""
    local_path = os.fspath(local_path)
    scheme, path = split_uri(uri)
    if scheme == "file":
        if not os.path.isfile(path):
            raise StorageNotFoundError(f"{uri}: cannot download: no such file")
        return _local_op("copy", uri, lambda: atomic_local_write(local_path, lambda f: _copy_into(path, f)))
    bucket, key = _bucket_key(uri)

    def op() -> None:
        if scheme == "s3":
            body = _s3_client().get_object(Bucket=bucket, Key=key)["Body"]
            atomic_local_write(local_path, lambda f: shutil.copyfileobj(body, f, 1 << 20))
        else:
            blob = _gcs_client().bucket(bucket).blob(key)
            atomic_local_write(local_path, lambda f: blob.download_to_file(
                f, timeout=(CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC), retry=None))

    _with_retry("download", uri, op, retry_sec)


def exists(uri: str, *, retry_sec: float | None = None) -> bool:
    """True for an existing file/object, or a folder/prefix holding at least one object."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        return os.path.exists(path)
    bucket, key = _bucket_key(uri)

    def op() -> bool:
        if scheme == "s3":
            client = _s3_client()
            if key:
                try:
                    client.head_object(Bucket=bucket, Key=key)
                    return True
                except Exception as e:  # noqa: BLE001
                    if _classify_s3(e) != NOT_FOUND:
                        raise
            prefix = key.rstrip("/") + "/" if key else ""
            return client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0
        client = _gcs_client()
        if key and client.bucket(bucket).blob(key).exists(timeout=(CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC), retry=None):
            return True
        prefix = key.rstrip("/") + "/" if key else ""
        blobs = client.list_blobs(bucket, prefix=prefix, max_results=1,
                                  timeout=(CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC), retry=None)
        return any(True for _ in blobs)

    return _with_retry("check", uri, op, retry_sec)


def list_files(uri: str, *, retry_sec: float | None = None) -> list[str]:
    """Every file under `uri` (recursively), as URIs in the same form (`join(uri, rel)`),
    sorted; [] when there is none."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        if not os.path.isdir(path):
            return []
        rels = []
        for root, _, files in os.walk(path):
            rels += [os.path.relpath(os.path.join(root, f), path) for f in files]
        return sorted(join(uri, r.replace(os.sep, "/")) for r in rels)
    bucket, key = _bucket_key(uri)
    prefix = key.rstrip("/") + "/" if key else ""

    def op() -> list[str]:
        if scheme == "s3":
            pages = _s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        else:
            keys = [b.name for b in _gcs_client().list_blobs(
                bucket, prefix=prefix, timeout=(CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC), retry=None)]
        return sorted(join(uri, k[len(prefix):]) for k in keys if not k.endswith("/"))

    return _with_retry("list", uri, op, retry_sec)


# ---- preflight -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """What check_storage found, for the log line."""
    uri: str
    where: str


def check_storage(uri: str, *, timeout_sec: float = 5.0, write_probe: bool = True) -> None:
    """Fail fast, before any Ray worker starts, when `uri` cannot be used; the StorageError
    says which: malformed URI, local folder not creatable/writable, no credentials, endpoint
    unreachable, bucket missing, access denied. With `write_probe` a probe object is written
    and deleted again (local: a temporary file)."""
    validate_uri(uri)
    scheme, path = split_uri(uri)
    if scheme == "file":
        probe = _check_local(uri, path, write_probe)
    elif scheme == "s3":
        probe = _check_s3(uri, timeout_sec, write_probe)
    else:
        probe = _check_gcs(uri, timeout_sec, write_probe)
    _check_pyarrow_agrees(uri, timeout_sec)
    log.debug("storage %s: usable (%s)", probe.uri, probe.where)


def _check_local(uri: str, path: str, write_probe: bool) -> _Probe:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{uri}: cannot create local storage folder {path} ({e.strerror or e})") from None
    if write_probe:
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".ganray-probe-"):
                pass
        except OSError as e:
            raise StorageError(f"{uri}: local storage folder {path} is not writable ({e.strerror or e})") from None
    return _Probe(uri, f"local folder {path}")


def _check_s3(uri: str, timeout_sec: float, write_probe: bool) -> _Probe:
    import botocore.session
    from botocore import exceptions as bx

    bucket, key = _bucket_key(uri)
    where = _endpoint_words("s3")
    try:
        creds = botocore.session.Session().get_credentials()
    except bx.BotoCoreError as e:
        raise StorageError(f"{uri}: AWS credentials could not be loaded ({e})") from None
    if creds is None:
        raise StorageError(
            f"{uri}: no AWS credentials found in the standard chain (environment variables, shared "
            "credentials/config files, web identity, container or instance role)")
    client = _s3_client(connect_timeout=timeout_sec, read_timeout=timeout_sec, cached=False)
    try:
        client.head_bucket(Bucket=bucket)
    except bx.ConnectionError as e:
        raise StorageError(f"{uri}: cannot reach S3 {where} ({_connection_reason(e)})") from None
    except bx.ClientError as e:
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status == 404:
            raise StorageError(f"{uri}: bucket '{bucket}' does not exist at {where}") from None
        if status in (401, 403):
            raise StorageError(f"{uri}: access to bucket '{bucket}' at {where} is denied "
                               "(the credentials are invalid or lack permission)") from None
        raise StorageError(f"{uri}: bucket '{bucket}' at {where}: {_brief('s3', e)}") from None
    if write_probe:
        probe_key = join(key, f".ganray-probe-{uuid.uuid4().hex}").lstrip("/")
        try:
            client.put_object(Bucket=bucket, Key=probe_key, Body=b"")
            client.delete_object(Bucket=bucket, Key=probe_key)
        except (bx.ClientError, bx.BotoCoreError) as e:
            raise StorageError(f"{uri}: cannot write to bucket '{bucket}' at {where} ({_brief('s3', e)})") from None
    return _Probe(uri, f"bucket '{bucket}' at {where}")


def _check_gcs(uri: str, timeout_sec: float, write_probe: bool) -> _Probe:
    import requests
    from google.api_core import exceptions as gx
    from google.auth import exceptions as ax

    bucket, key = _bucket_key(uri)
    where = _endpoint_words("gs")
    try:
        client = _gcs_client(cached=False)
    except ax.DefaultCredentialsError:
        raise StorageError(
            f"{uri}: no Google Cloud credentials found in the standard chain (Application Default "
            "Credentials: GOOGLE_APPLICATION_CREDENTIALS, gcloud auth application-default login, "
            "or the metadata server's workload identity)") from None
    timeout = (timeout_sec, timeout_sec)
    try:
        found = client.bucket(bucket).exists(timeout=timeout, retry=None)
    except (requests.ConnectionError, requests.Timeout) as e:
        raise StorageError(f"{uri}: cannot reach GCS {where} ({_connection_reason(e)})") from None
    except (gx.Forbidden, gx.Unauthorized):
        raise StorageError(f"{uri}: access to bucket '{bucket}' at {where} is denied "
                           "(the credentials are invalid or lack permission)") from None
    except (gx.GoogleAPIError, ax.GoogleAuthError) as e:
        raise StorageError(f"{uri}: bucket '{bucket}' at {where}: {_brief('gs', e)}") from None
    if not found:
        raise StorageError(f"{uri}: bucket '{bucket}' does not exist at {where}")
    if write_probe:
        blob = client.bucket(bucket).blob(join(key, f".ganray-probe-{uuid.uuid4().hex}").lstrip("/"))
        try:
            blob.upload_from_string(b"", timeout=timeout, retry=None)
            blob.delete(timeout=timeout, retry=None)
        except (gx.GoogleAPIError, requests.RequestException) as e:
            raise StorageError(f"{uri}: cannot write to bucket '{bucket}' at {where} ({_brief('gs', e)})") from None
    return _Probe(uri, f"bucket '{bucket}' at {where}")


def _check_pyarrow_agrees(uri: str, timeout_sec: float) -> None:
    """Ray reaches the storage through pyarrow: make sure it sees the same bucket."""
    scheme, path = split_uri(uri)
    if scheme == "file":
        return
    bucket = path.split("/", 1)[0]
    try:
        fs, _ = filesystem(uri, retry_time_limit_sec=timeout_sec)
        info = fs.get_file_info(bucket)
    except OSError as e:
        hint = " (is AWS_REGION the bucket's region?)" if scheme == "s3" and not s3_endpoint() else ""
        raise StorageError(f"{uri}: pyarrow (used by Ray) cannot reach the bucket at "
                           f"{_endpoint_words(scheme)}{hint}: {str(e).splitlines()[0][:300]}") from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{uri}: pyarrow (used by Ray) does not see bucket '{bucket}' at "
                           f"{_endpoint_words(scheme)}")
