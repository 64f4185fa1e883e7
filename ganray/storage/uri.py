"""Storage URIs: a local path, s3://bucket/prefix or gs://bucket/prefix. The grammar (the one
check of a URI, used by the config checks, the CLI flags and every storage call), joining,
and where a run writes when the user named no storage."""
from __future__ import annotations

import os
import re
from urllib.parse import urlparse

from ganray.storage.errors import StorageInputError

STORAGE_ENV = "GANRAY_STORAGE"    # the default storage when set (the k8s manifests set it)
LOCAL_DEFAULT = "ganray_results"  # else: ./ganray_results, or ~/ganray_results in a Ray job's driver

# A bucket name: 3-63 of a-z 0-9 . _ -, starting and ending with a letter or digit.
_URI_RE = re.compile(r"^(s3|gs)://([a-z0-9][a-z0-9._-]{1,61}[a-z0-9])(/.*)?$")


def check_storage_uri(uri: str, path: str = "storage.uri") -> list[str]:
    """Errors for a storage URI: a local path, s3://bucket/prefix or gs://bucket/prefix.
    `path` names where the URI came from (a config key or a flag)."""
    if not isinstance(uri, str) or not uri.strip():
        return [f"{path}: must be a local path, s3://bucket/prefix or gs://bucket/prefix (got {uri!r})"]
    if "://" in uri or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", uri):
        if not _URI_RE.match(uri):
            return [
                f"{path}: malformed storage URI {uri!r}; allowed: a local path, "
                "s3://bucket/prefix or gs://bucket/prefix (bucket: 3-63 of a-z 0-9 . _ -)"
            ]
    return []


def config_uri_errors(cfg) -> list[str]:
    """Errors for a config's URIs: storage.uri and data.source ('' is allowed for both: the
    default location, no source)."""
    errs = check_storage_uri(cfg.storage.uri) if cfg.storage.uri else []
    if cfg.data.source:
        errs += check_storage_uri(cfg.data.source, "data.source")
    return errs


def validate_uri(uri: str) -> None:
    """Raise StorageError for a malformed URI (same rules as the config's storage.uri)."""
    errors = check_storage_uri(uri, "storage URI")
    if errors:
        raise StorageInputError(errors[0])


def split_uri(uri: str) -> tuple[str, str]:
    """("s3" | "gs" | "file", path) where path is "bucket/prefix" for buckets."""
    if uri.startswith(("s3://", "gs://")):
        p = urlparse(uri)
        return p.scheme, (p.netloc + p.path).rstrip("/")
    return "file", os.path.abspath(os.path.expanduser(uri))


def bucket_key(uri: str) -> tuple[str, str]:
    """("bucket", "key/inside") of an s3:// or gs:// URI."""
    _, path = split_uri(uri)
    bucket, _, key = path.partition("/")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for part in parts:
        if part:
            out += "/" + part.strip("/")
    return out


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
        raise StorageInputError(
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
