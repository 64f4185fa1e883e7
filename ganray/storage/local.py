"""Local paths: the backend for plain paths, and the one temp-file-and-rename write of ganray
(`atomic_local_write`), which every local write of the package goes through."""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, TypeVar

from ganray.storage.backend import Backend
from ganray.storage.errors import StorageError, StorageInputError, StorageNotFoundError
from ganray.storage.uri import join, split_uri

T = TypeVar("T")


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


def copy_into(src: str, f) -> None:
    """Stream the local file `src` into the open file `f`."""
    with open(src, "rb") as s:
        shutil.copyfileobj(s, f, 1 << 20)


def _local_op(what: str, uri: str, op: Callable[[], T]) -> T:
    try:
        return op()
    except FileNotFoundError as e:
        raise StorageNotFoundError(f"{uri}: cannot {what}: no such file ({e.strerror})") from e
    except OSError as e:
        raise StorageError(f"{uri}: cannot {what}: {e.strerror or e}") from e


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class LocalBackend(Backend):
    """Plain files; no retries (a local error does not heal by waiting)."""

    def put_bytes(self, uri, data, retry_sec):
        _, path = split_uri(uri)
        _local_op("write", uri, lambda: atomic_local_write(path, lambda f: f.write(data)))

    def upload_file(self, local_path, uri, retry_sec):
        _, path = split_uri(uri)
        if os.path.abspath(local_path) == path:
            return
        _local_op("write", uri, lambda: atomic_local_write(path, lambda f: copy_into(local_path, f)))

    def read_bytes(self, uri, retry_sec):
        _, path = split_uri(uri)
        return _local_op("read", uri, lambda: _read(path))

    def download_file(self, uri, local_path, retry_sec):
        _, path = split_uri(uri)
        if not os.path.isfile(path):
            raise StorageNotFoundError(f"{uri}: cannot download: no such file")
        _local_op("copy", uri, lambda: atomic_local_write(local_path, lambda f: copy_into(path, f)))

    def exists(self, uri, retry_sec):
        return os.path.exists(split_uri(uri)[1])

    def list_files(self, uri, retry_sec):
        _, path = split_uri(uri)
        if not os.path.isdir(path):
            return []
        rels = []
        for root, _, files in os.walk(path):
            rels += [os.path.relpath(os.path.join(root, f), path) for f in files]
        return sorted(join(uri, r.replace(os.sep, "/")) for r in rels)

    def probe(self, uri, timeout_sec, write_probe):
        _, path = split_uri(uri)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise StorageInputError(f"{uri}: cannot create local storage folder {path} ({e.strerror or e})") from e
        if write_probe:
            try:
                with tempfile.NamedTemporaryFile(dir=path, prefix=".ganray-probe-"):
                    pass
            except OSError as e:
                raise StorageInputError(f"{uri}: local storage folder {path} is not writable ({e.strerror or e})") from e
        return f"local folder {path}"


BACKEND = LocalBackend()
