"""What can go wrong with storage: the errors ganray raises, and the kinds a backend sorts a
library's exception into (the retry loop acts on the kind)."""
from __future__ import annotations

from ganray.exits import BadInput


class StorageError(RuntimeError):
    """Storage unusable: malformed URI, missing bucket, no credentials, unreachable endpoint."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object (or local file) does not exist. Also a FileNotFoundError."""


class StorageInputError(StorageError, BadInput):
    """The storage the user named cannot be used, found before anything runs: a malformed or
    relative URI, a bad $GANRAY_STORAGE_RETRY_SEC, or a failed preflight (check_storage)."""


# The kinds of a library error (a backend's `classify`): retried with backoff (TRANSIENT),
# retried with a fresh client that re-reads the credential chain (CREDENTIALS), raised at
# once as StorageNotFoundError (NOT_FOUND) or StorageError (PERMANENT).
PERMANENT, TRANSIENT, CREDENTIALS, NOT_FOUND = "permanent", "transient", "credentials", "not_found"


def connection_reason(e: BaseException) -> str:
    """"connection refused", "timed out", ... from a connection error of any client library."""
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


def first_line(e: BaseException) -> str:
    """The class and first line of an error, for a one-line message."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__
