"""The interface every scheme implements (local, s3, gcs), and what the two object stores
share: a client cache, the translation of library errors into StorageError, and the
object operations written once over a few primitives each store provides."""
from __future__ import annotations

import abc
import os
import threading
import uuid
from typing import Any, Callable, TypeVar

from ganray.storage.endpoints import endpoint_words
from ganray.storage.errors import (
    CREDENTIALS,
    NOT_FOUND,
    PERMANENT,
    StorageError,
    StorageInputError,
    StorageNotFoundError,
    connection_reason,
)
from ganray.storage.retry import Budget, retry_budget_sec, with_retry
from ganray.storage.uri import bucket_key, join

T = TypeVar("T")

CONNECT_TIMEOUT_SEC = 5.0  # one try: TCP connect
READ_TIMEOUT_SEC = 60.0    # one try: waiting for a response


class Backend(abc.ABC):
    """The storage operations of one scheme. `retry_sec` bounds the retries of transient
    errors (None: $GANRAY_STORAGE_RETRY_SEC, else 60 s); permanent errors raise at once."""

    @abc.abstractmethod
    def put_bytes(self, uri: str, data: bytes, retry_sec: float | None) -> None:
        """Write `data` whole (a reader sees the old object or the new one)."""

    @abc.abstractmethod
    def upload_file(self, local_path: str, uri: str, retry_sec: float | None) -> None:
        """Copy an existing local file to `uri`, whole or not at all."""

    @abc.abstractmethod
    def read_bytes(self, uri: str, retry_sec: float | None) -> bytes:
        """The whole object; StorageNotFoundError when absent."""

    @abc.abstractmethod
    def download_file(self, uri: str, local_path: str, retry_sec: float | None) -> None:
        """Copy `uri` to a local file (temp file + rename); StorageNotFoundError when absent."""

    @abc.abstractmethod
    def exists(self, uri: str, retry_sec: float | None) -> bool:
        """An existing object, or a folder/prefix holding at least one."""

    @abc.abstractmethod
    def list_files(self, uri: str, retry_sec: float | None) -> list[str]:
        """Every object under `uri`, recursively, as sorted URIs `join(uri, rel)`."""

    @abc.abstractmethod
    def probe(self, uri: str, timeout_sec: float, write_probe: bool) -> str:
        """The preflight of this scheme: raise StorageInputError saying what is wrong, or
        return where the storage is, for the log line."""


class ClientCache:
    """A library client per combination of the environment variables that choose its server
    or identity (a changed environment gets a fresh client); shared by threads."""

    def __init__(self, env_vars: tuple[str, ...]):
        self.env_vars = env_vars
        self._clients: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def get(self, build: Callable[[], Any], *key: Any, cached: bool = True) -> Any:
        full_key = (*key, *(os.environ.get(k) for k in self.env_vars))
        with self._lock:
            if cached and full_key in self._clients:
                return self._clients[full_key]
            client = build()
            if cached:
                self._clients[full_key] = client
            return client

    def forget(self) -> None:
        """Drop every client, so the next one re-reads the credential chain."""
        with self._lock:
            self._clients.clear()


class ObjectStore(Backend):
    """A bucket store: the operations of Backend over the primitives below, each try of one
    run through the retry loop with this store's classification of errors."""

    clients: ClientCache
    scheme: str     # "s3" | "gs"
    service: str    # its name in messages: "S3" | "GCS"
    # the library's errors, as the preflight tells them apart
    connection_errors: tuple[type[BaseException], ...]  # the endpoint did not answer
    bucket_errors: tuple[type[BaseException], ...]      # any other answer to "is the bucket there?"
    write_errors: tuple[type[BaseException], ...]       # the probe object could not be written

    @abc.abstractmethod
    def classify(self, e: BaseException) -> str:
        """TRANSIENT, CREDENTIALS, NOT_FOUND or PERMANENT (ganray.storage.errors)."""

    @abc.abstractmethod
    def brief(self, e: BaseException) -> str:
        """A one-line reason for a message: the error code or class plus its first line."""

    # primitives: one request (or one transfer) each, errors as the library raises them
    @abc.abstractmethod
    def _put(self, bucket: str, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _upload(self, local_path: str, bucket: str, key: str) -> None: ...

    @abc.abstractmethod
    def _get(self, bucket: str, key: str) -> bytes: ...

    @abc.abstractmethod
    def _download(self, bucket: str, key: str, local_path: str) -> None: ...

    @abc.abstractmethod
    def _has_object(self, bucket: str, key: str) -> bool: ...

    @abc.abstractmethod
    def _has_any(self, bucket: str, prefix: str) -> bool: ...

    @abc.abstractmethod
    def _keys(self, bucket: str, prefix: str) -> list[str]: ...

    # the preflight's primitives, on a client with `timeout_sec` timeouts and no retries
    @abc.abstractmethod
    def _probe_client(self, uri: str, timeout_sec: float) -> Any:
        """A fresh client; StorageInputError when the credential chain has nothing."""

    @abc.abstractmethod
    def _bucket_exists(self, client: Any, bucket: str, timeout_sec: float) -> bool: ...

    @abc.abstractmethod
    def _refusal(self, e: BaseException) -> str | None:
        """For an error of `_bucket_exists`: "missing", "denied", or None for another."""

    @abc.abstractmethod
    def _put_and_delete(self, client: Any, bucket: str, key: str, timeout_sec: float) -> None: ...

    def probe(self, uri, timeout_sec, write_probe):
        bucket, key = bucket_key(uri)
        where = endpoint_words(self.scheme)
        client = self._probe_client(uri, timeout_sec)
        missing = f"{uri}: bucket '{bucket}' does not exist at {where}"
        try:
            found = self._bucket_exists(client, bucket, timeout_sec)
        except self.connection_errors as e:
            raise StorageInputError(f"{uri}: cannot reach {self.service} {where} ({connection_reason(e)})") from e
        except self.bucket_errors as e:
            refusal = self._refusal(e)
            if refusal == "missing":
                raise StorageInputError(missing) from e
            if refusal == "denied":
                raise StorageInputError(f"{uri}: access to bucket '{bucket}' at {where} is denied "
                                        "(the credentials are invalid or lack permission)") from e
            raise StorageInputError(f"{uri}: bucket '{bucket}' at {where}: {self.brief(e)}") from e
        if not found:
            raise StorageInputError(missing)
        if write_probe:
            probe_key = join(key, f".ganray-probe-{uuid.uuid4().hex}").lstrip("/")
            try:
                self._put_and_delete(client, bucket, probe_key, timeout_sec)
            except self.write_errors as e:
                raise StorageInputError(
                    f"{uri}: cannot write to bucket '{bucket}' at {where} ({self.brief(e)})") from e
        return f"bucket '{bucket}' at {where}"

    def run(self, what: str, uri: str, op: Callable[[], T], retry_sec: float | None) -> T:
        """`op` with transient errors retried (see ganray.storage.retry) until `retry_sec`;
        StorageNotFoundError / StorageError otherwise, from the library's error."""
        budget_sec = retry_budget_sec(retry_sec)

        def classify(e: Exception) -> str | None:
            if isinstance(e, StorageError):
                return None
            kind, reason = self.classify(e), self.brief(e)
            if kind == NOT_FOUND:
                raise StorageNotFoundError(f"{uri}: cannot {what}: no such object or file ({reason})") from e
            if kind == PERMANENT:
                raise StorageError(f"{uri}: cannot {what}: {reason}") from e
            if kind == CREDENTIALS:
                self.clients.forget()  # re-read the credential chain on the next try
            return reason

        def give_up(tries: int, reason: str) -> Exception:
            return StorageError(f"{uri}: cannot {what} after {tries} tries in {budget_sec:g} s: {reason}")

        return with_retry(what, uri, op, Budget(seconds=budget_sec), classify, give_up)

    def put_bytes(self, uri, data, retry_sec):
        bucket, key = bucket_key(uri)
        self.run("write", uri, lambda: self._put(bucket, key, data), retry_sec)

    def upload_file(self, local_path, uri, retry_sec):
        bucket, key = bucket_key(uri)
        self.run("upload", uri, lambda: self._upload(local_path, bucket, key), retry_sec)

    def read_bytes(self, uri, retry_sec):
        bucket, key = bucket_key(uri)
        return self.run("read", uri, lambda: self._get(bucket, key), retry_sec)

    def download_file(self, uri, local_path, retry_sec):
        bucket, key = bucket_key(uri)
        self.run("download", uri, lambda: self._download(bucket, key, local_path), retry_sec)

    def exists(self, uri, retry_sec):
        bucket, key = bucket_key(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        return self.run("check", uri, lambda: (bool(key) and self._has_object(bucket, key))
                        or self._has_any(bucket, prefix), retry_sec)

    def list_files(self, uri, retry_sec):
        bucket, key = bucket_key(uri)
        prefix = key.rstrip("/") + "/" if key else ""

        def op() -> list[str]:
            keys = self._keys(bucket, prefix)
            return sorted(join(uri, k[len(prefix):]) for k in keys if not k.endswith("/"))

        return self.run("list", uri, op, retry_sec)
