"""cifar10: the official python tarball cifar-10-python.tar.gz, 50,000 train / 10,000 test, 32x32 RGB.

The tarball holds cifar-10-batches-py/data_batch_1..5 (train) and test_batch (test), each a
pickled dict {b"data": uint8 [10000, 3072], b"labels": [10000 ints], ...}; a row of data is
the 1024 red, then 1024 green, then 1024 blue pixels of a 32x32 image in row-major order,
i.e. already [C, H, W].

The batches are pickles, and unpickling can run code: they are read with ganray.data.safe_pickle,
which only resolves the few numpy names an array needs, so a tampered file fails instead of running.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from ganray.config import DataConfig
from ganray.data import DataError, Dataset, check_split, register_dataset, safe_pickle, to_unit_range
from ganray.data.download import Expected, tar_members

TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _load_batch(raw: bytes, member: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch pickle -> (uint8 [N, 3, 32, 32], int64 [N])."""
    d = safe_pickle.load(raw, f"cifar10: {member}", encoding="bytes")
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise DataError(f"cifar10: {member} lacks the b'data' / b'labels' entries")
    data = np.asarray(d[b"data"], dtype=np.uint8)
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
        raise DataError(f"cifar10: {member}: data {data.shape} / labels {labels.shape}, expected [N, 3072] / [N]")
    return data.reshape(-1, 3, 32, 32), labels


def _read_batches(cfg: DataConfig, split: str, checksums) -> dict[str, bytes]:
    """The raw pickles of `split`'s batches, read in one sequential pass over the tarball."""
    wanted = {f"{FOLDER}/{b}": b for b in BATCHES[split]}
    found = {wanted[m]: raw for m, raw in tar_members("cifar10", TARBALL, cfg, wanted, checksums).items()}
    missing = [b for b in BATCHES[split] if b not in found]
    if missing:
        raise DataError(f"cifar10: {TARBALL} lacks {', '.join(f'{FOLDER}/{m}' for m in missing)}")
    return found


def load_cifar10_split(
    cfg: DataConfig,
    split: str = "train",
    checksums: Mapping[str, Mapping[str, Expected]] | None = None,
) -> Dataset:
    """cifar10 `split` as x float32 [N, 3, 32, 32] in [-1, 1], y int64 [N]."""
    check_split(split)
    raw = _read_batches(cfg, split, checksums)
    parts = [_load_batch(raw[b], b) for b in BATCHES[split]]  # in batch order: 1..5
    images = np.concatenate([p[0] for p in parts])  # uint8 [N, 3, 32, 32]
    labels = np.concatenate([p[1] for p in parts])  # int64 [N]
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"cifar10 {split}: labels outside 0..9")
    x = to_unit_range(torch.from_numpy(images))
    return Dataset("cifar10", x, torch.from_numpy(labels), 10, CLASS_NAMES)


@register_dataset("cifar10")
def load_cifar10(cfg: DataConfig, split: str = "train") -> Dataset:
    return load_cifar10_split(cfg, split)
