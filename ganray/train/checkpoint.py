"""One-file checkpoints: G, D, G_ema, both optimizer states, step, family state, RNG states
and the resolved config. Written to a temporary name and renamed (or put as one object),
so a reader never sees half a checkpoint.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ganray import storage
from ganray.artifacts import layout
from ganray.config import Config, ConfigError, from_dict
from ganray.exits import BadInput

FILENAME = layout.CHECKPOINT_FILE
# What must match between a checkpoint and the config that resumes or evaluates it. leaky_slope and
# bn_eps change no shape but the function the saved weights compute: a resume with another value
# would go on training another model. bn_momentum (how running statistics follow from now on) and
# train.d_updates are training settings, like the learning rates: a resume may change them.
COMPATIBLE_KEYS = (
    ("train", "family"),
    ("model", "arch"),
    ("model", "z_dim"),
    ("model", "width"),
    ("model", "g_ema"),
    ("model", "leaky_slope"),
    ("model", "bn_eps"),
    ("model", "pack"),  # the remedies build another D (its input, its layers, its state_dict keys)
    ("model", "minibatch_std"),
    ("model", "spectral_norm"),
    ("model", "embed_dim"),  # the conditional and translation families' networks
    ("model", "c_dim"),
    ("model", "cond_augment"),
    ("model", "ngf"),
    ("model", "ndf"),
    ("model", "res_blocks"),
    ("train", "stage"),  # stackgan: a Stage-II G holds Stage I
    ("data", "dataset"),
    ("data", "load_size"),  # cub200 / cyclegan image sizes
    ("data", "crop_size"),
)


class CheckpointError(BadInput, ValueError):
    """A checkpoint that cannot be read or does not fit the config. Exit code 2."""


def to_bytes(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def save(state: dict[str, Any], path: str | os.PathLike) -> str:
    """Atomically write `state` to a local path or a bucket URI (one PUT, or a temp file renamed
    into place); returns where it went. An OSError (a full disk) is a failure of the run: exit 1."""
    path = str(path)
    storage.put_bytes(path, to_bytes(state))
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint file (local path, bucket URI, or a folder holding checkpoint.pt). A file
    that is not a ganray checkpoint is bad input (CheckpointError); a storage outage stays a
    StorageError (a failure, not a verdict on the file)."""
    path = str(path)
    if not path.endswith(".pt") and (path.startswith(("s3://", "gs://")) or Path(path).is_dir()):
        path = storage.join(path, FILENAME)
    try:
        data = storage.read_bytes(path)
    except storage.StorageNotFoundError as e:
        raise CheckpointError(f"{path}: checkpoint not found") from e
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as e:
        # what torch.load raises for a file that is not a (weights-only) torch checkpoint
        raise CheckpointError(f"{path}: not a readable ganray checkpoint ({type(e).__name__}: {e})") from e
    # every network the checkpoint lists ("nets"; checkpoints before issue 14: G and D)
    missing = ({"config", "step", *state.get("nets", ("G", "D"))} - set(state) if isinstance(state, dict)
               else {"config"})
    if missing:
        raise CheckpointError(f"{path}: not a ganray checkpoint (missing {', '.join(sorted(missing))})")
    return state


def config_of(state: dict[str, Any]) -> Config:
    try:
        return from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config is invalid: {e}") from e


def check_compatible(state: dict[str, Any], cfg: Config, where: str = "checkpoint") -> None:
    """Fail with a clear message when the checkpoint was made by an incompatible config."""
    now, default = cfg.to_dict(), Config().to_dict()
    # a key that a checkpoint of an older ganray lacks had its default value then
    saved = {(sec, key): state["config"].get(sec, {}).get(key, default[sec][key]) for sec, key in COMPATIBLE_KEYS}
    diffs = [
        f"{sec}.{key}: checkpoint has {saved[sec, key]!r}, config has {now[sec][key]!r}"
        for sec, key in COMPATIBLE_KEYS
        if saved[sec, key] != now[sec][key]
    ]
    if diffs:
        raise CheckpointError(f"{where} does not fit this config:\n  " + "\n  ".join(diffs))
