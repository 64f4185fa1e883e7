"""The pyarrow filesystem Ray sees (`RunConfig(storage_filesystem=...)`) and the readers of
data.source and the classifier weights use, with the environment's endpoints applied.

docs/storage.md explains the credential-refresh pitfall of pyarrow's S3 client in long
runs: a fresh filesystem is built on every `filesystem()` call, never cached."""
from __future__ import annotations

import datetime
from typing import Any, Callable
from urllib.parse import urlparse

import pyarrow.fs as pafs

from ganray.storage.endpoints import gcs_endpoint, s3_endpoint, s3_region
from ganray.storage.uri import split_uri

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


def _s3(retry_time_limit_sec: float | None) -> pafs.FileSystem:
    kw: dict[str, Any] = {}
    ep = s3_endpoint()
    if ep:
        u = urlparse(ep)
        kw.update(endpoint_override=u.netloc, scheme=u.scheme or "http")
    region = s3_region()
    if region:
        kw["region"] = region
    return pafs.PyFileSystem(RetryingS3Handler(kw))


def _gcs(retry_time_limit_sec: float | None) -> pafs.FileSystem:
    kw: dict[str, Any] = {}
    if retry_time_limit_sec is not None:
        kw["retry_time_limit"] = datetime.timedelta(seconds=max(1.0, retry_time_limit_sec))
    ep = gcs_endpoint()
    if ep:
        u = urlparse(ep)
        # The emulator takes no credentials; a real bucket uses the default chain.
        return pafs.GcsFileSystem(anonymous=True, endpoint_override=u.netloc, scheme=u.scheme or "http", **kw)
    return pafs.GcsFileSystem(**kw)


_FILESYSTEMS: dict[str, Callable[[float | None], pafs.FileSystem]] = {
    "s3": _s3, "gs": _gcs, "file": lambda _: pafs.LocalFileSystem()}


def filesystem(uri: str, *, retry_time_limit_sec: float | None = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, with the environment's endpoints applied.

    `retry_time_limit_sec` bounds the GCS client's own retries of transient errors (pyarrow's
    default is 15 minutes); None keeps the library default. A fresh object is built on every
    call, so callers that hold one for hours should call again after a credential error.
    """
    scheme, path = split_uri(uri)
    return _FILESYSTEMS[scheme](retry_time_limit_sec), path


def sees_bucket(uri: str, timeout_sec: float) -> bool:
    """Whether pyarrow finds the bucket of a bucket URI; OSError when it cannot ask."""
    _, path = split_uri(uri)
    fs, _ = filesystem(uri, retry_time_limit_sec=timeout_sec)
    return fs.get_file_info(path.split("/", 1)[0]).type != pafs.FileType.NotFound
