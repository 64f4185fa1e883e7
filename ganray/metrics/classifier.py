"""Reference classifiers: a small CNN per image dataset, whose penultimate layer is also the
feature space for the Fréchet distance and precision/recall/density/coverage.

A classifier is two files, `<key>.pt` (fp16 state_dict + architecture) and `<key>.json`
(held-out accuracy, seed, command), where key = `classifier_key(dataset)`: the MNIST-digit
datasets (mnist5k, mnist, stacked-mnist) share the key "mnist", the others use their name.
Where a run finds the classifier, in order:
  1. `<storage>/classifiers/<key>.pt`, written by `ganray classifier train --dataset D
     --storage URI` or by an earlier first use;
  2. the local cache, `<cache>/classifiers/<key>.pt` (<cache> = data.cache_dir,
     $GANRAY_CACHE or ~/.cache/ganray);
  3. the shipped MNIST classifier, `ganray/metrics/weights/mnist.pt` (trained on mnist5k's
     train split; held-out accuracy in mnist.json), for key "mnist";
  4. otherwise it is trained on first use and stored in both places above.
Stacked MNIST has no classifier of its own: each of its 3 channels is an MNIST digit,
labelled by the MNIST classifier.

The shipped one was made with
    python -m ganray.metrics.classifier train --dataset mnist5k --out ganray/metrics/weights
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganray.config import DATASETS, ConfigError, DataConfig, check_storage_uri
from ganray.storage import StorageError, filesystem, join

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = ("mnist",)  # keys with a classifier inside the package, under WEIGHTS_DIR
MNIST_LIKE = ("mnist5k", "mnist", "stacked-mnist")
IMAGE_DATASETS = tuple(d for d in DATASETS if d not in ("ring8", "grid25"))


def classifier_key(dataset: str) -> str:
    """The classifier a dataset uses: MNIST digits (mnist5k, mnist, stacked-mnist) share "mnist"."""
    return "mnist" if dataset in MNIST_LIKE else dataset


@dataclass(frozen=True)
class Arch:
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10
    feature_dim: int = 64
    width: int = 16  # channels of the first conv; doubled twice


class Classifier(nn.Module):
    """[N, C, H, W] in [-1, 1] -> logits [N, K]; `features_and_logits` also gives the
    penultimate activations [N, feature_dim], the feature space of FCD and PRDC.

    Three 3x3 conv + ReLU + 2x2 max-pool stages (H -> H/8), then Linear -> ReLU (features),
    Dropout, Linear (logits): about 2 M multiply-adds per 28x28 digit, so 10,000 digits
    take about a second on two CPU cores.
    """

    def __init__(self, arch: Arch):
        super().__init__()
        self.arch = arch
        w = arch.width
        # in-place ReLUs: one pass less over every activation map (≈ 25% faster on a CPU)
        self.conv = nn.Sequential(
            nn.Conv2d(arch.in_channels, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # [N, w, H/2, W/2]
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # [N, 2w, H/4, W/4]
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # [N, 4w, H/8, W/8]
        )
        side = arch.image_size // 8  # three floor-halvings: 28 -> 3, 32 -> 4
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * side * side, arch.feature_dim), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(arch.feature_dim, arch.num_classes)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.fc(self.conv(x))  # [N, feature_dim]
        return f, self.head(self.drop(f))  # [N, K]

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]


@torch.no_grad()
def embed(model: Classifier, x: Tensor, batch_size: int = 2500) -> tuple[Tensor, Tensor]:
    """(features [N, d], logits [N, K]) of `x` in batches, on the model's device, returned on CPU."""
    model.eval()
    device = next(model.parameters()).device
    model = model.to(memory_format=torch.channels_last)  # NHWC convolutions: about 2x faster on CPU
    feats, logits = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device, torch.float32).contiguous(memory_format=torch.channels_last)
        f, lg = model.features_and_logits(xb)
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    if not feats:
        d, k = model.arch.feature_dim, model.arch.num_classes
        return torch.empty(0, d), torch.empty(0, k)
    return torch.cat(feats), torch.cat(logits)


# ---- training ------------------------------------------------------------------------------


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


def accuracy(model: Classifier, x: Tensor, y: Tensor) -> float:
    _, logits = embed(model, x)
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


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
    from ganray.data import load_dataset  # noqa: PLC0415 (datasets import heavy readers)

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
    }
    log.info("classifier %s: held-out accuracy %.4f on %d images", dataset, info["held_out_accuracy"], len(test))
    return model, info


# ---- storing and finding ---------------------------------------------------------------------


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
    except Exception as e:  # a corrupt or foreign file: name it
        raise StorageError(f"{where}: not a ganray classifier ({type(e).__name__}: {e})") from None
    return model.eval()


def save_classifier(model: Classifier, info: dict[str, Any], folder_uri: str, key: str) -> str:
    """Write `<key>.pt` then `<key>.json` under `folder_uri` (local path, s3:// or gs://).

    The JSON is written last, so a folder holding it holds a complete classifier.
    """
    fs, path = filesystem(folder_uri)
    fs.create_dir(path, recursive=True)
    for name, data in ((f"{key}.pt", _to_bytes(model)), (f"{key}.json", json.dumps(info, indent=2).encode())):
        target = f"{path}/{name}"
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = f"{target}.tmp{os.getpid()}"
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            os.replace(tmp, target)  # readers never see half a file
        else:
            with fs.open_output_stream(target) as f:  # an object appears whole or not at all
                f.write(data)
    log.info("%s classifier stored in %s", key, folder_uri)
    return join(folder_uri, f"{key}.pt")


def _read(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return f.read()
    except OSError as e:
        raise StorageError(f"{path}: cannot read ({e})") from None


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
    from ganray.data.download import cache_root  # noqa: PLC0415

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
    log.warning("no %s classifier stored yet: training one (first use)", key)
    model, info = train_classifier(key, data_cfg=data_cfg, epochs=epochs)
    info["command"] = f"trained on first use (epochs={epochs}, seed=0)"
    for folder in folders:
        save_classifier(model, info, folder, key)
    return model, info


# ---- command line --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganray classifier", description="Train and store a reference classifier.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the classifier of a dataset and store it with its held-out accuracy")
    t.add_argument("--dataset", required=True, help=f"one of {', '.join(IMAGE_DATASETS)}")
    where = t.add_mutually_exclusive_group()
    where.add_argument("--storage", default=None, help="storage URI; the classifier goes to <URI>/classifiers/<key>.pt")
    where.add_argument("--out", default=None, help="exact folder (or URI) for <key>.pt/.json (default: the cache)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--width", type=int, default=Arch.width, help="channels of the first conv layer")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    t.add_argument("--source", default="", help="data.source: folder or URI holding the official files")
    t.add_argument("--cache-dir", default="", help="data.cache_dir")
    return p


def main(argv: list[str] | None = None) -> int:
    """`ganray classifier train --dataset D [--storage URI | --out DIR]`: 0 done, 2 bad input."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    from ganray.data import DataError  # noqa: PLC0415

    try:
        if args.dataset not in IMAGE_DATASETS:
            raise ConfigError(f"--dataset: unknown image dataset {args.dataset!r}; allowed: {', '.join(IMAGE_DATASETS)}")
        if args.epochs < 1 or args.width < 1:
            raise ConfigError(f"--epochs and --width: must be >= 1 (got {args.epochs}, {args.width})")
        for flag, uri in (("--storage", args.storage), ("--out", args.out), ("--source", args.source)):
            if uri:
                errs = check_storage_uri(uri, flag)
                if errs:
                    raise ConfigError(errs)
        torch.set_num_threads(max(1, args.threads))
        data_cfg = DataConfig(dataset=args.dataset, source=args.source, cache_dir=args.cache_dir)
        key = classifier_key(args.dataset)
        out = args.out or (storage_folder(args.storage) if args.storage else cache_folder(data_cfg))
        model, info = train_classifier(args.dataset, data_cfg=data_cfg, epochs=args.epochs, seed=args.seed, width=args.width)
        info["command"] = "ganray classifier " + " ".join(sys.argv[1:] if argv is None else argv)
        where = save_classifier(model, info, out, key)
    except (ConfigError, DataError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.dataset} classifier: held-out accuracy {info['held_out_accuracy']:.2%} "
          f"on {info['n_test']:,} images -> {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
