"""Storage URIs -> filesystems: a local path, s3://bucket/prefix or gs://bucket/prefix.

Custom endpoints come from the standard environment and are passed on explicitly so
that pyarrow, boto3, google-cloud-storage and TensorBoard all talk to the same server:
  S3:  AWS_ENDPOINT_URL (or S3_ENDPOINT, TensorBoard's name), AWS_REGION/AWS_DEFAULT_REGION
  GCS: STORAGE_EMULATOR_HOST (e.g. http://127.0.0.1:9023)
Credentials come only from the standard chains (environment, instance or workload
identity); they are never read from configs and never logged.
"""
from __future__ import annotations

import os
from urllib.parse import urlparse

import pyarrow.fs as pafs


class StorageError(RuntimeError):
    """Storage unusable: malformed URI, missing bucket, no credentials, unreachable endpoint."""


def split_uri(uri: str) -> tuple[str, str]:
    """("s3" | "gs" | "file", path) where path is "bucket/prefix" for buckets."""
    if uri.startswith(("s3://", "gs://")):
        p = urlparse(uri)
        return p.scheme, (p.netloc + p.path).rstrip("/")
    return "file", os.path.abspath(os.path.expanduser(uri))


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for part in parts:
        if part:
            out += "/" + part.strip("/")
    return out


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


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, with the environment's endpoints applied."""
    scheme, path = split_uri(uri)
    if scheme == "s3":
        ep = s3_endpoint()
        kw = {}
        if ep:
            u = urlparse(ep)
            kw.update(endpoint_override=u.netloc, scheme=u.scheme or "http")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kw["region"] = region
        return pafs.S3FileSystem(**kw), path
    if scheme == "gs":
        ep = gcs_endpoint()
        if ep:
            u = urlparse(ep)
            # The emulator takes no credentials; a real bucket uses the default chain.
            return pafs.GcsFileSystem(anonymous=True, endpoint_override=u.netloc, scheme=u.scheme or "http"), path
        return pafs.GcsFileSystem(), path
    return pafs.LocalFileSystem(), path
