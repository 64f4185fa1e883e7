"""Training a reference classifier on a dataset's "train" split, with its held-out accuracy."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ganray.config import ConfigError, DataConfig
from ganray.data import load_dataset
from ganray.metrics.classifier import IMAGE_DATASETS
from ganray.metrics.classifier.model import Arch, Classifier, accuracy

log = logging.getLogger(__name__)


def augment(x: Tensor, generator: torch.Generator, max_shift_px: float = 2.0, max_rot_deg: float = 10.0) -> Tensor:
    """Random small rotations (±max_rot_deg) and shifts (±max_shift_px) of a batch [N, C, H, W]."""
    n, _, h, w = x.shape
    theta_rad = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_rot_deg)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift_px
    cos, sin = torch.cos(theta_rad), torch.sin(theta_rad)
    # affine_grid works in normalised coordinates [-1, 1]: one pixel is 2/W (x) or 2/H (y)
    A = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1), torch.stack([sin, cos, shift[:, 1] * 2 / h], 1)], 1
    )  # [N, 2, 3]
    grid = F.affine_grid(A, list(x.shape), align_corners=False)
    # background is -1 (black) in [-1, 1] images: shift to 0-padding and back
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


def train_classifier(
    dataset: str,
    *,
    data_cfg: DataConfig | None = None,
    epochs: int = 30,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    augmentation: bool = True,
    width: int = Arch.width,
    device: torch.device | str = "cpu",
) -> tuple[Classifier, dict[str, Any]]:
    """Train the reference classifier of `dataset` on its "train" split; report accuracy on "test".

    Returns the model (eval mode, on CPU) and its record: held-out accuracy, seed, sizes, timing.
    """
    if dataset not in IMAGE_DATASETS:
        raise ConfigError(f"--dataset: {dataset!r} has no classifier; image datasets: {', '.join(IMAGE_DATASETS)}")
    if dataset == "stacked-mnist":
        raise ConfigError("--dataset: stacked-mnist uses the MNIST classifier on each channel; train mnist or mnist5k")
    cfg = data_cfg or DataConfig(dataset=dataset)
    if cfg.dataset != dataset:
        cfg = DataConfig(**{**asdict(cfg), "dataset": dataset})
    train, test = load_dataset(cfg, "train"), load_dataset(cfg, "test")
    c, h, w = train.shape
    if h != w or h < 8:
        raise ConfigError(f"--dataset: {dataset} images are {h}x{w}; the classifier needs square images of 8x8 or more")
    torch.manual_seed(seed)
    model = Classifier(Arch(in_channels=c, image_size=h, num_classes=train.num_classes, width=width)).to(device)
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        total = 0.0
        for i in range(0, len(train), batch_size):
            idx = perm[i : i + batch_size]
            x, y = train.x[idx], train.y[idx]
            if augmentation:
                x = augment(x, g)
            # cross-entropy: -log softmax(logits)[y]
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log.info("classifier %s epoch %d/%d: loss %.4f", dataset, epoch + 1, epochs, total / len(train))
    model = model.cpu().eval()
    info = {
        "dataset": dataset,
        "held_out_accuracy": round(accuracy(model, test.x, test.y), 4),
        "train_accuracy": round(accuracy(model, train.x, train.y), 4),
        "n_train": len(train),
        "n_test": len(test),
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "augmentation": "random rotation ±10°, shift ±2 px" if augmentation else "none",
        "arch": asdict(model.arch),
        "train_seconds": round(time.time() - t0, 1),
        "torch": torch.__version__,
        # the weights depend on these too (the order of float32 sums; docs/distributed.md)
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    log.info("classifier %s: held-out accuracy %.4f on %d images", dataset, info["held_out_accuracy"], len(test))
    return model, info
