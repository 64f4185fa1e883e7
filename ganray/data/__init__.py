"""Datasets held in memory as tensors: images in [-1, 1] as [N, C, H, W], 2D points as [N, 2].

`load_dataset(cfg.data)` is the one entry point; every dataset returns a `Dataset`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ganray.config import UNPAIRED_DATASETS, DataConfig, is_2d
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
    # Text conditions (captioned-mnist, cub200): float32 [N, T, E], T caption embeddings of size E
    # per example (the sampler draws one of the T per draw), with their captions [N][T]. None for
    # datasets without text: class-conditional families condition on y.
    c: torch.Tensor | None = None
    captions: tuple[tuple[str, ...], ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example: (C, H, W) or (2,)."""
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def has_text(self) -> bool:
        return self.c is not None

    def take(self, idx: torch.Tensor | slice) -> "Dataset":
        """The examples at `idx` (an index tensor, boolean mask or slice), their conditions with them."""
        if isinstance(idx, slice):
            rows = range(len(self))[idx]
        else:
            rows = torch.arange(len(self))[idx].tolist()
        captions = tuple(self.captions[i] for i in rows) if self.captions else ()
        return replace(self, x=self.x[idx], y=self.y[idx], c=None if self.c is None else self.c[idx], captions=captions)

    def shard(self, rank: int, world_size: int) -> "Dataset":
        """Every world_size-th example starting at rank: disjoint shards of near-equal size."""
        if world_size <= 1:
            return self
        return self.take(slice(rank, None, world_size))

    def subset(self, classes: tuple[int, ...]) -> "Dataset":
        if not classes:
            return self
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad:
            raise DataError(f"data.classes: {bad} not in 0..{self.num_classes - 1} for {self.name}")
        keep = torch.isin(self.y, torch.tensor(classes, dtype=self.y.dtype))
        return self.take(keep)


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
    from ganray.data import captioned, cifar10, cub200, idx, mixtures, mnist5k, stacked  # noqa: F401  (register loaders)


def load_dataset(cfg: DataConfig, split: str = "train") -> Dataset:
    """Load `cfg.dataset` (`split` = "train" or "test"), apply the class subset and the size cap."""
    _import_all()
    if cfg.dataset in UNPAIRED_DATASETS:  # two domains (cyclegan): ganray.data.unpaired's Unpaired
        from ganray.data.unpaired import load_unpaired  # noqa: PLC0415

        return load_unpaired(cfg, split)
    if cfg.dataset not in _LOADERS:
        raise DataError(f"data.dataset: unknown dataset {cfg.dataset!r}; allowed: {', '.join(_LOADERS)}")
    ds = _LOADERS[cfg.dataset](cfg, split).subset(cfg.classes)
    if cfg.n_train and len(ds) > cfg.n_train and ds.is_image:
        # A seeded random subset, kept in file order: the first n of a class-sorted file
        # (mnist5k is sorted by digit) would hold only a few classes.
        keep = torch.randperm(len(ds), generator=split_generator(cfg.seed, split))[: cfg.n_train].sort().values
        ds = ds.take(keep)
    return ds


# Shape of one image of each image dataset; every 2-D mixture's example is a point (2,).
IMAGE_SHAPES = {"mnist": (1, 28, 28), "mnist5k": (1, 28, 28), "fashion-mnist": (1, 28, 28),
                "stacked-mnist": (3, 28, 28), "cifar10": (3, 32, 32), "captioned-mnist": (1, 28, 28)}
CUB_DEFAULT_SIZE = 64  # cub200 with data.load_size 0: Stage I's 64x64
# Size of each text dataset's caption embeddings (Dataset.c's last axis)
TEXT_EMBED_DIMS = {"captioned-mnist": 1024, "cub200": 1024}
# StackGAN's Stage-II image size of each text dataset (the paper's 256 for CUB): Stage I draws at a
# quarter of it from 128 up, else a half (CUB 64, captioned-mnist 14), in both stages' networks
STAGE2_SIZES = {"captioned-mnist": 28, "cub200": 256}


# Classes of each labelled dataset: what a class-conditional G's embedding is sized for (labels keep
# their values under data.classes, so the whole dataset's count)
NUM_CLASSES = {"mnist": 10, "mnist5k": 10, "fashion-mnist": 10, "cifar10": 10, "captioned-mnist": 10, "cub200": 200}


def num_classes(dataset: str) -> int:
    """The number of classes of `dataset`, known without loading it; 0 when it has no class labels."""
    return NUM_CLASSES.get(dataset, 0)


def example_shape(dataset: str, load_size: int = 0) -> tuple[int, ...]:
    """The shape of one example of `dataset` (cub200: at data.load_size), known without loading
    it: what G is rebuilt with from a checkpoint (the loaders' Dataset.shape agrees; a test checks)."""
    if is_2d(dataset):
        return (2,)
    if dataset == "cub200":
        size = load_size or CUB_DEFAULT_SIZE
        return (3, size, size)
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
