"""check_storage: fail fast, before any Ray worker starts, when the storage cannot be used.
Each backend probes its own scheme (credentials, endpoint, bucket, a write); for buckets,
pyarrow (what Ray uses) must then see the same bucket."""
from __future__ import annotations

import logging

from ganray.storage.endpoints import endpoint_words, s3_endpoint
from ganray.storage.errors import StorageInputError
from ganray.storage.schemes import backend, load
from ganray.storage.uri import bucket_key, split_uri, validate_uri

log = logging.getLogger(__name__)


def check_storage(uri: str, *, timeout_sec: float = 5.0, write_probe: bool = True) -> None:
    """Fail fast, before any Ray worker starts, when `uri` cannot be used; the StorageError
    says which: malformed URI, local folder not creatable/writable, no credentials, endpoint
    unreachable, bucket missing, access denied. With `write_probe` a probe object is written
    and deleted again (local: a temporary file)."""
    validate_uri(uri)
    where = backend(uri).probe(uri, timeout_sec, write_probe)
    scheme, _ = split_uri(uri)
    if scheme != "file":
        _check_pyarrow_agrees(uri, scheme, timeout_sec)
    log.debug("storage %s: usable (%s)", uri, where)


def _check_pyarrow_agrees(uri: str, scheme: str, timeout_sec: float) -> None:
    """Ray reaches the storage through pyarrow: make sure it sees the same bucket."""
    bucket, _ = bucket_key(uri)
    try:
        seen = load("arrow").sees_bucket(uri, timeout_sec)
    except OSError as e:
        hint = " (is AWS_REGION the bucket's region?)" if scheme == "s3" and not s3_endpoint() else ""
        raise StorageInputError(f"{uri}: pyarrow (used by Ray) cannot reach the bucket at "
                                f"{endpoint_words(scheme)}{hint}: {str(e).splitlines()[0][:300]}") from e
    if not seen:
        raise StorageInputError(f"{uri}: pyarrow (used by Ray) does not see bucket '{bucket}' at "
                                f"{endpoint_words(scheme)}")
