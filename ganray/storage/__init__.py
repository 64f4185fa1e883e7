"""Storage URIs -> bytes: a local path, s3://bucket/prefix or gs://bucket/prefix.

The facade every other module uses (`from ganray import storage; storage.put_bytes(...)`).
Behind it, one module per concern:
  uri        the URI grammar, join/split, where a run writes by default (resolve_uri)
  endpoints  the servers, from the standard environment (AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST, ...)
  errors     StorageError and its kinds; how a library error is classified
  retry      the one retry/backoff loop of ganray (storage and dataset downloads)
  backend    the Backend interface, and what the two object stores share
  local, s3, gcs   one backend per scheme; s3 and gcs through boto3 / google-cloud-storage
  arrow      the pyarrow filesystem Ray sees (`filesystem(uri)`, RetryingS3Handler)
  preflight  check_storage, before any worker starts
  schemes    which backend serves a URI; the one place the heavy libraries are imported lazily

ganray's own object operations go through boto3 / google-cloud-storage: a put is one
request (whole object or none), and their typed errors tell a transient failure
(connection refused or reset, 5xx, throttling: retried with backoff for a bounded time)
from a permanent one (missing bucket, access denied: raised at once). Credentials come only
from the standard chains (environment, instance or workload identity); they are never read
from configs and never logged. docs/storage.md explains the choices.
"""
from __future__ import annotations

import os

from ganray.storage.backend import CONNECT_TIMEOUT_SEC, READ_TIMEOUT_SEC
from ganray.storage.endpoints import gcs_endpoint, s3_endpoint
from ganray.storage.errors import StorageError, StorageInputError, StorageNotFoundError
from ganray.storage.local import atomic_local_write
from ganray.storage.preflight import check_storage
from ganray.storage.retry import DEFAULT_RETRY_SEC, RETRY_ENV, retry_budget_sec
from ganray.storage.schemes import backend, load
from ganray.storage.uri import (
    LOCAL_DEFAULT,
    STORAGE_ENV,
    check_storage_uri,
    config_uri_errors,
    experiment_uri,
    in_ray_job_driver,
    join,
    resolve_config,
    resolve_uri,
    split_uri,
    validate_uri,
)

__all__ = [
    "CONNECT_TIMEOUT_SEC", "DEFAULT_RETRY_SEC", "LOCAL_DEFAULT", "READ_TIMEOUT_SEC", "RETRY_ENV", "STORAGE_ENV",
    "RetryingS3Handler", "StorageError", "StorageInputError", "StorageNotFoundError",
    "atomic_local_write", "check_storage", "check_storage_uri", "config_uri_errors", "download_file",
    "exists", "experiment_uri", "filesystem", "gcs_endpoint", "in_ray_job_driver", "join", "list_files",
    "put_bytes", "read_bytes", "resolve_config", "resolve_uri", "retry_budget_sec", "s3_endpoint",
    "split_uri", "upload_file", "validate_uri",
]


def put_bytes(uri: str, data: bytes, *, retry_sec: float | None = None) -> None:
    """Write `data` atomically: a local temp file renamed into place, or one PUT to a bucket.
    Transient errors are retried for `retry_sec` (default 60 s, $GANRAY_STORAGE_RETRY_SEC)."""
    backend(uri).put_bytes(uri, bytes(data), retry_sec)


def upload_file(local_path: str | os.PathLike, uri: str, *, retry_sec: float | None = None) -> None:
    """Copy a local file to `uri`; the object appears whole or not at all (S3 multipart
    uploads complete in one request and are aborted on failure; GCS resumable uploads are
    finalised by the last chunk)."""
    local_path = os.fspath(local_path)
    if not os.path.isfile(local_path):
        raise StorageNotFoundError(f"{local_path}: cannot upload: no such local file")
    backend(uri).upload_file(local_path, uri, retry_sec)


def read_bytes(uri: str, *, retry_sec: float | None = None) -> bytes:
    """The whole object or file; StorageNotFoundError (a FileNotFoundError) when absent."""
    return backend(uri).read_bytes(uri, retry_sec)


def download_file(uri: str, local_path: str | os.PathLike, *, retry_sec: float | None = None) -> None:
    """Copy an object to a local file, atomically (temp file + rename)."""
    backend(uri).download_file(uri, os.fspath(local_path), retry_sec)


def exists(uri: str, *, retry_sec: float | None = None) -> bool:
    """True for an existing file/object, or a folder/prefix holding at least one object."""
    return backend(uri).exists(uri, retry_sec)


def list_files(uri: str, *, retry_sec: float | None = None) -> list[str]:
    """Every file under `uri` (recursively), as URIs in the same form (`join(uri, rel)`),
    sorted; [] when there is none."""
    return backend(uri).list_files(uri, retry_sec)


def filesystem(uri: str, *, retry_time_limit_sec: float | None = None):
    """(pyarrow filesystem, path inside it) for `uri`: what Ray's `storage_filesystem` takes
    (ganray.storage.arrow.filesystem; pyarrow is loaded on the first call)."""
    return load("arrow").filesystem(uri, retry_time_limit_sec=retry_time_limit_sec)


def __getattr__(name: str):
    # storage.RetryingS3Handler / S3_MAX_ATTEMPTS live with pyarrow, loaded on first use.
    if name in ("RetryingS3Handler", "S3_MAX_ATTEMPTS"):
        return getattr(load("arrow"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
