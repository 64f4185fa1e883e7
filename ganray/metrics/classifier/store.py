"""Storing and finding reference classifiers: `<key>.pt` and `<key>.json` in a folder (local, s3://,
gs://), the shipped weights, and `reference_classifier`, the lookup of the package docstring."""
from __future__ import annotations

import io
import json
import logging
import pickle
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from ganray.config import ConfigError, DataConfig
from ganray.data.download import cache_root
from ganray.metrics.classifier import IMAGE_DATASETS, classifier_key
from ganray.metrics.classifier.model import Arch, Classifier
from ganray.metrics.classifier.training import train_classifier
from ganray.storage import StorageError, filesystem, join, put_bytes

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = ("mnist",)  # keys with a classifier inside the package, under WEIGHTS_DIR


def _to_bytes(model: Classifier) -> bytes:
    buf = io.BytesIO()
    # fp16 halves the shipped file; the weights are cast back to fp32 on load
    torch.save({"arch": asdict(model.arch), "state_dict": {k: v.half() for k, v in model.state_dict().items()}}, buf)
    return buf.getvalue()


def _from_bytes(data: bytes, where: str) -> Classifier:
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = Classifier(Arch(**blob["arch"]))
        model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    # what torch.load and the blob's shape raise for a corrupt or foreign file: name it
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{where}: not a ganray classifier ({type(e).__name__}: {e})") from e
    return model.eval()


def save_classifier(model: Classifier, info: dict[str, Any], folder_uri: str, key: str) -> str:
    """Write `<key>.pt` then `<key>.json` under `folder_uri` (local path, s3:// or gs://).

    The JSON is written last, so a folder holding it holds a complete classifier.
    """
    for name, data in ((f"{key}.pt", _to_bytes(model)), (f"{key}.json", json.dumps(info, indent=2).encode())):
        put_bytes(join(folder_uri, name), data)  # temp file + rename, or one PUT: readers never see half a file
    log.info("%s classifier stored in %s", key, folder_uri)
    return join(folder_uri, f"{key}.pt")


def _read(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()
    except OSError as e:
        raise StorageError(f"{path}: cannot read ({e})") from e


def load_classifier(folder_uri: str, key: str) -> tuple[Classifier, dict[str, Any]] | None:
    """The `key` classifier stored under `folder_uri`, or None when there is none."""
    fs, path = filesystem(folder_uri)
    meta = _read(fs, f"{path}/{key}.json")
    weights = _read(fs, f"{path}/{key}.pt") if meta is not None else None
    if meta is None or weights is None:
        return None
    return _from_bytes(weights, join(folder_uri, f"{key}.pt")), json.loads(meta)


def load_shipped(key: str = "mnist") -> tuple[Classifier, dict[str, Any]]:
    found = load_classifier(str(WEIGHTS_DIR), key)
    if found is None:
        raise StorageError(f"{WEIGHTS_DIR / key}.pt: the shipped {key} classifier is missing (reinstall ganray)")
    return found


def storage_folder(storage_uri: str) -> str:
    return join(storage_uri, "classifiers")


def cache_folder(data_cfg: DataConfig) -> str:
    return str(cache_root(data_cfg.cache_dir) / "classifiers")


def reference_classifier(
    data_cfg: DataConfig, storage_uri: str | None = None, *, train_if_missing: bool = True, epochs: int = 30
) -> tuple[Classifier, dict[str, Any]]:
    """The classifier for `data_cfg.dataset`, found in the order of this module's docstring."""
    key = classifier_key(data_cfg.dataset)
    if data_cfg.dataset not in IMAGE_DATASETS:
        raise ConfigError(f"data.dataset: {data_cfg.dataset!r} is 2D data; it needs no classifier")
    folders = ([storage_folder(storage_uri)] if storage_uri else []) + [cache_folder(data_cfg)]
    for folder in folders:
        found = load_classifier(folder, key)
        if found is not None:
            log.info("using the %s classifier from %s (held-out accuracy %s)", key, folder, found[1].get("held_out_accuracy"))
            return found
    if key in SHIPPED:
        return load_shipped(key)
    if not train_if_missing:
        raise StorageError(f"no {key} classifier in {' or '.join(folders)}; run `ganray classifier train --dataset {key}`")
    # `ganray train` and sweeps make it ready before their workers start (ganray.metrics.classifier.ready),
    # so a trial that gets here could not read what its driver stored; `ganray eval` and direct callers land
    # here by design. Training still works, only slowly: under DDP the other ranks wait in their collectives.
    log.warning("no %s classifier in %s: training one (first use) in this process, %d epochs, minutes on a CPU. "
                "In a trial this means this node cannot read what the driver stored in <storage>/classifiers "
                "(is the storage shared by every node?); `ganray classifier train --dataset %s --storage URI` "
                "stores one beforehand", key, " or ".join(folders), epochs, key)
    return train_and_store(data_cfg, folders, epochs=epochs)


def train_and_store(data_cfg: DataConfig, folders: list[str], *, epochs: int = 30,
                    device: torch.device | str = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Train the classifier of `data_cfg.dataset`'s key on the whole "train" split and store it in
    each of `folders`. The split is whole whatever the run trains on (data.classes, data.n_train):
    what is stored becomes every later run's classifier, as `ganray classifier train` makes it."""
    key = classifier_key(data_cfg.dataset)
    whole = replace(data_cfg, classes=(), n_train=0)
    model, info = train_classifier(key, data_cfg=whole, epochs=epochs, device=device)
    info["command"] = f"trained on first use (epochs={epochs}, seed=0)"
    for folder in folders:
        save_classifier(model, info, folder, key)
    return model, info
