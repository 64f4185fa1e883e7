"""Datasets held in memory as tensors: images in [-1, 1] as [N, C, H, W], 2D points as [N, 2].

`load_dataset(cfg.data)` is the one entry point; every dataset returns a `Dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ganray.config import DataConfig, is_2d
from ganray.exits import BadInput


class DataError(BadInput, ValueError):
    """A dataset cannot be read: missing files, bad checksum, unknown class. Exit code 2."""


class DataUnavailable(RuntimeError):
    """The official files could not be fetched because the server kept failing (5xx, resets,
    timeouts) after the retries: a failure of the run (exit 1), not a verdict on the input."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x: torch.Tensor  # float32 [N, C, H, W] in [-1, 1], or [N, 2] for 2D mixtures
    y: torch.Tensor  # int64 [N]: class label (2D mixtures: index of the mode drawn from)
    num_classes: int
    class_names: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # e.g. {"means": [K, 2], "sigma": float} for 2D mixtures

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) or (2,)."""
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    def __len__(self) -> int:
        return self.x.shape[0]

    def shard(self, rank: int, world_size: int) -> "Dataset":
        """Every world_size-th example starting at rank: disjoint shards of near-equal size."""
        if world_size <= 1:
            return self
        return replace(self, x=self.x[rank::world_size], y=self.y[rank::world_size])

    def subset(self, classes: tuple[int, ...]) -> "Dataset":
        if not classes:
            return self
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad:
            raise DataError(f"data.classes: {bad} not in 0..{self.num_classes - 1} for {self.name}")
        keep = torch.isin(self.y, torch.tensor(classes, dtype=self.y.dtype))
        return replace(self, x=self.x[keep], y=self.y[keep])


_LOADERS: dict[str, Callable[[DataConfig, str], Dataset]] = {}


def register_dataset(name: str):
    def deco(fn: Callable[[DataConfig, str], Dataset]):
        _LOADERS[name] = fn
        return fn

    return deco


def dataset_names() -> tuple[str, ...]:
    _import_all()
    return tuple(_LOADERS)


def _import_all() -> None:
    from ganray.data import cifar10, idx, mixtures, mnist5k, stacked  # noqa: F401  (register loaders)


def load_dataset(cfg: DataConfig, split: str = "train") -> Dataset:
    """Load `cfg.dataset` (`split` = "train" or "test"), apply the class subset and the size cap."""
    _import_all()
    if cfg.dataset not in _LOADERS:
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}; allowed: {', '.join(_LOADERS)}")
    ds = _LOADERS[cfg.dataset](cfg, split).subset(cfg.classes)
    if cfg.n_train and len(ds) > cfg.n_train and ds.is_image:
        # A seeded random subset, kept in file order: the first n of a class-sorted file
        # (mnist5k is sorted by digit) would hold only a few classes.
        keep = torch.randperm(len(ds), generator=split_generator(cfg.seed, split))[: cfg.n_train].sort().values
        ds = replace(ds, x=ds.x[keep], y=ds.y[keep])
    return ds


# Shape of one image of each image dataset; every 2-D mixture's example is a point (2,).
IMAGE_SHAPES = {"mnist": (1, 28, 28), "mnist5k": (1, 28, 28), "fashion-mnist": (1, 28, 28),
                "stacked-mnist": (3, 28, 28), "cifar10": (3, 32, 32)}


def example_shape(dataset: str) -> tuple[int, ...]:
    """The shape of one example of `dataset`, known without loading it: what G is rebuilt with
    from a checkpoint (the loaders' Dataset.shape agrees; a test checks)."""
    if is_2d(dataset):
        return (2,)
    if dataset not in IMAGE_SHAPES:
        raise DataError(f"data.dataset: no known example shape for {dataset!r}")
    return IMAGE_SHAPES[dataset]


SPLITS = ("train", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")


def split_generator(seed: int, split: str) -> torch.Generator:
    """A CPU generator for generated data: seed*2 (train) or seed*2+1 (test), so no two
    (seed, split) pairs share a stream and the test set never repeats the train draws."""
    check_split(split)
    return torch.Generator().manual_seed(2 * seed + (split == "test"))


def to_unit_range(u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 -> float32 in [-1, 1]."""
    return u8.float().div_(127.5).sub_(1.0)
