"""mnist and fashion-mnist: the official IDX files (gzip), 60,000 train / 10,000 test, 28x28.

IDX layout (big-endian): two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions d, then d uint32 sizes, then the values in C order. Images are idx3 [N, 28, 28],
labels idx1 [N].
"""
from __future__ import annotations

import gzip
from typing import Mapping

import numpy as np
import torch

from ganray.config import DataConfig
from ganray.data import DataError, Dataset, check_split, register_dataset, to_unit_range
from ganray.data.download import Expected, open_file

FILES = {  # split -> (images, labels), the official file names
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}

_UBYTE = 0x08


def parse_idx(raw: bytes, what: str) -> np.ndarray:
    """An uncompressed IDX file of unsigned bytes -> uint8 array of its stated shape."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{what}: not an IDX file (bad magic {raw[:4].hex()})")
    if raw[2] != _UBYTE:
        raise DataError(f"{what}: IDX type 0x{raw[2]:02x}, expected 0x08 (unsigned byte)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{what}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(dims)) if dims else 0
    if len(raw) - header != count:
        raise DataError(f"{what}: IDX header says {dims} = {count} bytes of data, file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_gz_idx(dataset: str, name: str, cfg: DataConfig, checksums) -> np.ndarray:
    with open_file(dataset, name, cfg, checksums) as f:
        try:
            raw = gzip.GzipFile(fileobj=f).read()
        except (OSError, EOFError) as e:
            raise DataError(f"{dataset}: {name} is not a readable gzip file: {e}") from None
    return parse_idx(raw, f"{dataset}/{name}")


def load_idx(
    dataset: str,
    cfg: DataConfig,
    split: str = "train",
    checksums: Mapping[str, Mapping[str, Expected]] | None = None,
) -> Dataset:
    """mnist or fashion-mnist `split` as x float32 [N, 1, 28, 28] in [-1, 1], y int64 [N]."""
    check_split(split)
    images_name, labels_name = FILES[split]
    images = _read_gz_idx(dataset, images_name, cfg, checksums)  # uint8 [N, 28, 28]
    labels = _read_gz_idx(dataset, labels_name, cfg, checksums)  # uint8 [N]
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{dataset} {split}: images {images.shape} and labels {labels.shape} do not match")
    if labels.size and labels.max() > 9:
        raise DataError(f"{dataset} {split}: label {int(labels.max())} outside 0..9")
    x = to_unit_range(torch.from_numpy(images.copy())).unsqueeze(1)  # [N, 1, 28, 28]
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(dataset, x, y, 10, CLASS_NAMES[dataset])


@register_dataset("mnist")
def load_mnist(cfg: DataConfig, split: str = "train") -> Dataset:
    return load_idx("mnist", cfg, split)


@register_dataset("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig, split: str = "train") -> Dataset:
    return load_idx("fashion-mnist", cfg, split)
