"""Which module serves a URI: one backend per scheme, and the pyarrow view, each loaded when
first needed.

This is the one lazy import point of ganray.storage. The s3, gcs and arrow modules import
boto3, google-cloud-storage and pyarrow at their top; those take hundreds of milliseconds
to load, and a process that never touches a bucket or Ray (`ganray validate`, the report
of a local sweep) must not pay for them. So the facade imports them by name here, the
first time a URI of their scheme is used."""
from __future__ import annotations

import importlib
from types import ModuleType

from ganray.storage.backend import Backend
from ganray.storage.uri import split_uri

_BACKEND_MODULES = {"file": "local", "s3": "s3", "gs": "gcs"}  # scheme of split_uri -> module


def load(module: str) -> ModuleType:
    """ganray.storage.<module>, imported on first use (see the module docstring)."""
    return importlib.import_module(f"ganray.storage.{module}")


def backend(uri: str) -> Backend:
    """The backend of `uri`'s scheme."""
    scheme, _ = split_uri(uri)
    return load(_BACKEND_MODULES[scheme]).BACKEND
