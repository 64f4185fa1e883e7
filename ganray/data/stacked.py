"""stacked-mnist: three random MNIST digits stacked as the R, G, B channels (1000 modes).

A sample takes digits a, b, c (drawn independently and uniformly from the base split) as its
channels; its label is 100a + 10b + c, so 1000 classes. x is [N, 3, 28, 28] in [-1, 1].
The base digits come from data.stacked_base: mnist5k (offline, default) or mnist. Sizes:
train N = data.n_train or 50,000; test N = 10,000 (drawn from the base's test split). The
draw is fixed by data.seed: `sample_triplets(len(base), N, split_generator(seed, split))`
gives the base digit of each channel.
"""
from __future__ import annotations

import torch

from ganray.config import DataConfig
from ganray.data import Dataset, register_dataset, split_generator
from ganray.data.idx import load_mnist
from ganray.data.mnist5k import load_mnist5k

DEFAULT_N = {"train": 50_000, "test": 10_000}
CLASS_NAMES = tuple(f"{k:03d}" for k in range(1000))


def sample_triplets(n_base: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """int64 [n, 3]: indices into the base set of the digits in channels R, G, B (uniform)."""
    return torch.randint(n_base, (n, 3), generator=generator)


def stacked_labels(base_y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 [n]: 100a + 10b + c with (a, b, c) the base labels of the three channels."""
    abc = base_y[index]  # [n, 3]
    return 100 * abc[:, 0] + 10 * abc[:, 1] + abc[:, 2]


def _base(cfg: DataConfig, split: str) -> Dataset:
    # The loaders themselves, not load_dataset: data.classes / n_train refer to the stacked set.
    return load_mnist(cfg, split) if cfg.stacked_base == "mnist" else load_mnist5k(cfg, split)


@register_dataset("stacked-mnist")
def load_stacked_mnist(cfg: DataConfig, split: str = "train") -> Dataset:
    g = split_generator(cfg.seed, split)  # also checks split
    base = _base(cfg, split)
    n = (cfg.n_train if split == "train" else 0) or DEFAULT_N[split]
    index = sample_triplets(len(base), n, g)  # [n, 3]
    x = base.x[:, 0][index]  # [n, 28, 28] per base digit -> [n, 3, 28, 28]
    y = stacked_labels(base.y, index)
    return Dataset("stacked-mnist", x, y, 1000, CLASS_NAMES, extra={"base": base.name})
