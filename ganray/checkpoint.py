"""One-file checkpoints: G, D, G_ema, both optimizer states, step, family state, RNG states
and the resolved config. Written to a temporary name and renamed (or put as one object),
so a reader never sees half a checkpoint.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ganray.config import Config, ConfigError, from_dict

FILENAME = "checkpoint.pt"
# What must match between a checkpoint and the config that resumes or evaluates it.
COMPATIBLE_KEYS = (
    ("train", "family"),
    ("model", "arch"),
    ("model", "z_dim"),
    ("model", "width"),
    ("model", "g_ema"),
    ("data", "dataset"),
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the config. Exit code 2."""


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save(state: dict[str, Any], path: str | os.PathLike) -> str:
    """Atomically write `state` to a local path or a bucket URI; returns where it went."""
    from ganray import storage

    path, data = str(path), to_bytes(state)
    if path.startswith(("s3://", "gs://")):
        storage.put_bytes(path, data)  # one PUT: an object is whole or absent
    else:  # a temp file renamed into place (an OSError, e.g. a full disk, is a failure of the run: exit 1)
        storage.atomic_local_write(os.path.expanduser(path), lambda f: f.write(data))
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file (local path, bucket URI, or a directory holding checkpoint.pt)."""
    path = str(path)
    try:
        if path.startswith(("s3://", "gs://")):
            from ganray.storage import read_bytes

            if not path.endswith(".pt"):
                path = path.rstrip("/") + "/" + FILENAME
            data = read_bytes(path)
        else:
            p = Path(path)
            if p.is_dir():
                p = p / FILENAME
            if not p.is_file():
                raise CheckpointError(f"{path}: checkpoint not found")
            data = p.read_bytes()
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 — any unreadable file is bad input
        raise CheckpointError(f"{path}: not a readable ganray checkpoint ({type(e).__name__}: {e})") from None
    missing = {"config", "step", "G", "D"} - set(state) if isinstance(state, dict) else {"config"}
    if missing:
        raise CheckpointError(f"{path}: not a ganray checkpoint (missing {', '.join(sorted(missing))})")
    return state


def config_of(state: dict[str, Any]) -> Config:
    try:
        return from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config is invalid: {e}") from None


def check_compatible(state: dict[str, Any], cfg: Config, where: str = "checkpoint") -> None:
    """Fail with a clear message when the checkpoint was made by an incompatible config."""
    saved = state["config"]
    now = cfg.to_dict()
    diffs = [
        f"{sec}.{key}: checkpoint has {saved.get(sec, {}).get(key)!r}, config has {now[sec][key]!r}"
        for sec, key in COMPATIBLE_KEYS
        if saved.get(sec, {}).get(key) != now[sec][key]
    ]
    if diffs:
        raise CheckpointError(f"{where} does not fit this config:\n  " + "\n  ".join(diffs))
