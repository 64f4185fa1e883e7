"""Unpaired two-domain datasets for translation GANs (cyclegan): domain A and domain B, no pairs.

`load_unpaired(cfg, split)` is the one entry point; every pair returns an `Unpaired`.

- `digits2inverse` (offline, from mnist5k): domain A the digits, domain B digits under a fixed
  transformation `to_b` that `undo_b` undoes, so the reference classifier can judge whether a
  translation kept the digit: classify undo_b(G_AB(a)) and compare with a's label. A and B come
  from disjoint halves of each class of mnist5k's split (even positions A, odd positions B), so no
  A image has its own B image. Transformations (`DIGIT_TRANSFORMS`, data.digits_transform):
    * "invert-transpose": b = -a^T (ink and background swapped, rows and columns swapped); exact:
      undo_b(to_b(a)) == a bit for bit.
    * "thick-invert": b = -dilate(a), strokes one pixel thicker each side (3x3 max filter) then
      inverted; undo_b(b) = erode(-b) = -dilate(b), so undo_b(to_b(a)) = closing(a): approximate
      (small holes between strokes fill in). The shipped classifier recognises closing(a) on
      mnist5k's test split at 97.8% (clean digits 98.2%), tests/test_unpaired.py checks >= 95%.
  Which is harder for CycleGAN's convolutional translator: the transposition, a global pixel
  permutation. A small run (ngf = ndf = 16, batch 8, identity 0.5, CPU) kept the content of
  thick-invert's test digits at 45% / 79% / 94% (A -> B) after 100 / 200 / 400 steps, of
  invert-transpose's at 10% / 14% / 9% / 17% after 100 / 200 / 400 / 1600 steps (chance: 10%).
- `cyclegan:<name>` for the official CycleGAN datasets (`CYCLEGAN_SETS`): the zip <name>.zip of the
  authors' server, holding <name>/trainA, trainB, testA, testB; read from data.source (a folder or
  s3:// gs:// prefix holding <name>.zip, or a local folder holding the extracted <name>/trainA...),
  else the cache, downloaded and sha256-checked by ganray.data.download. A zip that cannot be read
  is removed from the cache (DataError naming it). Images as the reference's get_transform:
  converted to RGB, resized to data.load_size² with bicubic interpolation (0 = as stored: all must
  then be one size), kept as uint8 [N, 3, L, L] (a quarter of float32: horse2zebra's 2,401 train
  images at 286² are 589 MB); the train split draws a random data.crop_size² crop and a random
  horizontal flip per example per draw (`Unpaired.batch`), the test split is resized straight to
  data.crop_size (the reference's test options: load_size = crop_size, no flip). Labels: zeros,
  one class (photos have none).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ganray.config import CYCLEGAN_SETS, DataConfig
from ganray.data import DataError, Dataset, check_split, split_generator, to_unit_range
from ganray.data import download as dl
from ganray.data.mnist5k import load_mnist5k
from ganray.storage import join

PREFIX = "cyclegan:"
DOWNLOAD_KEY = "cyclegan"  # ganray.data.download's MIRRORS / CHECKSUMS key; cached as <cache>/cyclegan/<name>.zip
# The reference's IMG_EXTENSIONS (data/image_folder.py), compared lower-case.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff")
DIGIT_NAMES = tuple(map(str, range(10)))


@dataclass(frozen=True)
class Unpaired:
    """Two unpaired domains. a.x, b.x: float32 in [-1, 1] (digits) or uint8 0..255 (photos),
    [N, C, H, W]; `batch` gives what the networks see. to_b / undo_b: the known transformation
    A -> B and its (possibly approximate) inverse B -> A, both float32 [N, C, H, W] -> same; None
    for photo pairs. crop_size / flip: the per-draw augmentation of the train split."""

    name: str
    a: Dataset  # domain A
    b: Dataset  # domain B
    to_b: Callable[[torch.Tensor], torch.Tensor] | None = None
    undo_b: Callable[[torch.Tensor], torch.Tensor] | None = None
    exact: bool = False  # undo_b(to_b(x)) == x bit for bit
    crop_size: int = 0  # random crop of this size per draw; 0 = none
    flip: bool = False  # random horizontal flip per draw

    @property
    def shape_a(self) -> tuple[int, ...]:
        """One drawn example of A: (C, H, W), after the crop."""
        return _drawn_shape(self.a, self.crop_size)

    @property
    def shape_b(self) -> tuple[int, ...]:
        return _drawn_shape(self.b, self.crop_size)

    @property
    def shape(self) -> tuple[int, ...]:
        """Domain A's drawn shape: what the loop builds the networks for (B's: shape_b)."""
        return self.shape_a

    @property
    def is_image(self) -> bool:
        return True

    @property
    def epoch_size(self) -> int:
        """The reference's dataset length: max(|A|, |B|) draws make one epoch."""
        return max(len(self.a), len(self.b))

    def shard(self, rank: int, world_size: int) -> "Unpaired":
        """Each domain sharded as Dataset.shard: disjoint shards of near-equal size."""
        if world_size <= 1:
            return self
        return replace(self, a=self.a.shard(rank, world_size), b=self.b.shard(rank, world_size))

    def to(self, device: torch.device | str) -> "Unpaired":
        """Both domains' images and labels moved to `device` (the sampler's)."""
        return replace(self, a=_moved(self.a, device), b=_moved(self.b, device))

    def batch(self, domain: str, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The examples `idx` of domain "a" or "b" as the networks see them: cropped and flipped
        per example (train split; drawn from `generator`, on the images' device), float32 [-1, 1]."""
        if domain not in ("a", "b"):
            raise ValueError(f"domain must be 'a' or 'b', got {domain!r}")
        x = (self.a if domain == "a" else self.b).x[idx]  # [n, C, H, W]
        if self.crop_size:
            x = random_crop(x, self.crop_size, generator)
        if self.flip:
            x = random_flip(x, generator)
        return to_unit_range(x) if x.dtype == torch.uint8 else x


def _moved(ds: Dataset, device: torch.device | str) -> Dataset:
    return replace(ds, x=ds.x.to(device), y=ds.y.to(device))


def _drawn_shape(ds: Dataset, crop: int) -> tuple[int, ...]:
    c = ds.shape[0]
    return (c, crop, crop) if crop else ds.shape


def random_crop(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A size x size window of each image at its own uniform offset (the reference's RandomCrop:
    top-left corner in 0..H-size, 0..W-size inclusive). [N, C, H, W] -> [N, C, size, size], any
    dtype; the offsets are drawn on x's device (no host sync)."""
    n, c, h, w = x.shape
    if size > h or size > w:
        raise DataError(f"data.crop_size: {size} is larger than the images ({h}x{w}); set it <= data.load_size")
    dev = x.device
    top = torch.randint(0, h - size + 1, (n,), generator=generator, device=dev)  # [N]
    left = torch.randint(0, w - size + 1, (n,), generator=generator, device=dev)  # [N]
    span = torch.arange(size, device=dev)
    rows = (top[:, None] + span)[:, None, :, None]  # [N, 1, size, 1]
    cols = (left[:, None] + span)[:, None, None, :]  # [N, 1, 1, size]
    return x[torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
             rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2 (RandomHorizontalFlip). [N, C, H, W]."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5  # [N]
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# ---- registry ------------------------------------------------------------------------------------

_LOADERS: dict[str, Callable[[DataConfig, str], Unpaired]] = {}


def register_unpaired(name: str):
    def deco(fn: Callable[[DataConfig, str], Unpaired]):
        _LOADERS[name] = fn
        return fn

    return deco


def unpaired_names() -> tuple[str, ...]:
    """Every name load_unpaired accepts: the registered pairs, then cyclegan:<name> for each set."""
    return tuple(_LOADERS) + tuple(PREFIX + n for n in CYCLEGAN_SETS)


def is_unpaired(dataset: str) -> bool:
    return dataset in _LOADERS or dataset.startswith(PREFIX)


def load_unpaired(cfg: DataConfig, split: str = "train") -> Unpaired:
    """Load the pair `cfg.dataset` (`split` = "train" or "test")."""
    check_split(split)
    if cfg.dataset.startswith(PREFIX):
        return load_cyclegan(cfg, split, cfg.dataset[len(PREFIX):])
    if cfg.dataset not in _LOADERS:
        raise DataError(f"data.dataset: {cfg.dataset!r} is not an unpaired dataset; allowed: "
                        f"{', '.join(_LOADERS)}, or {PREFIX}<name> with <name> one of {', '.join(CYCLEGAN_SETS)}")
    return _LOADERS[cfg.dataset](cfg, split)


def _cap(ds: Dataset, cfg: DataConfig, split: str) -> Dataset:
    """data.classes, then data.n_train as load_dataset applies them: a seeded random subset in file order."""
    ds = ds.subset(cfg.classes)
    if cfg.n_train and len(ds) > cfg.n_train:
        keep = torch.randperm(len(ds), generator=split_generator(cfg.seed, split))[: cfg.n_train].sort().values
        ds = ds.take(keep)
    return ds


# ---- digits2inverse ----------------------------------------------------------------------------------
# Digits in [-1, 1]: background -1, ink +1. Named functions, not lambdas: an Unpaired pickles (Ray).


def invert_transpose(x: torch.Tensor) -> torch.Tensor:
    """b = -a^T: ink <-> background, rows <-> columns. Its own inverse, exactly. [..., H, W]."""
    return -x.transpose(-1, -2)


def dilate(x: torch.Tensor) -> torch.Tensor:
    """3x3 max filter: every stroke one pixel thicker on each side. [N, C, H, W] or [C, H, W]."""
    return F.max_pool2d(x, 3, stride=1, padding=1)  # the padding is -inf: the border is not ink


def thick_invert(x: torch.Tensor) -> torch.Tensor:
    """b = -dilate(a): thick strokes, inverted."""
    return -dilate(x)


def thin_invert(b: torch.Tensor) -> torch.Tensor:
    """a ~= erode(-b) = -dilate(b): undoes thick_invert up to a morphological closing (erode(dilate(a)))."""
    return -dilate(b)


# name -> (to_b, undo_b, exact)
DIGIT_TRANSFORMS: dict[str, tuple[Callable, Callable, bool]] = {
    "invert-transpose": (invert_transpose, invert_transpose, True),
    "thick-invert": (thick_invert, thin_invert, False),
}


def halves(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the A half and the B half: within each class, in order, even positions go to A and
    odd ones to B. Disjoint, and balanced per class (a class of n gives ceil(n/2) / floor(n/2))."""
    pos = torch.empty_like(y)
    for c in y.unique().tolist():
        where = (y == c).nonzero().squeeze(1)
        pos[where] = torch.arange(len(where))
    return (pos % 2 == 0).nonzero().squeeze(1), (pos % 2 == 1).nonzero().squeeze(1)


@register_unpaired("digits2inverse")
def load_digits2inverse(cfg: DataConfig, split: str = "train", transform: str | None = None) -> Unpaired:
    """mnist5k's `split` in two disjoint halves: A the digits, B to_b of the other half's digits.
    x float32 [N, 1, 28, 28] in [-1, 1] each; y the digits (B: of the digit before to_b)."""
    name = transform or cfg.digits_transform
    if name not in DIGIT_TRANSFORMS:
        raise DataError(f"data.digits_transform: unknown transformation {name!r}; allowed: {', '.join(DIGIT_TRANSFORMS)}")
    to_b, undo_b, exact = DIGIT_TRANSFORMS[name]
    digits = load_mnist5k(cfg, split)  # [N, 1, 28, 28], class-sorted
    ia, ib = halves(digits.y)
    a = replace(digits.take(ia), name="digits2inverse/A")
    b = digits.take(ib)
    b = replace(b, name="digits2inverse/B", x=to_b(b.x), extra={"transform": name, "exact": exact})
    return Unpaired("digits2inverse", _cap(a, cfg, split), _cap(b, cfg, split), to_b, undo_b, exact)


# ---- cyclegan:<name> ---------------------------------------------------------------------------------


class _Archive:
    """The image files of a zip or of an extracted folder: sorted POSIX names, and their bytes."""

    def __init__(self, where: str, names: list[str], read: Callable[[str], bytes], cached: Path | None = None,
                 sep: str = ": ", close: Callable[[], None] = lambda: None):
        self.where, self.names, self.read, self.cached, self.sep, self.close = where, names, read, cached, sep, close

    def label(self, member: str) -> str:
        """How a message names `member`: <zip>: <member>, or <folder>/<member>."""
        return f"{self.where}{self.sep}{member}"

    def domain(self, split: str, side: str) -> list[str]:
        """The images under <split><side>/ (e.g. horse2zebra/trainA/), sorted as the reference sorts
        paths; hidden files and macOS resource forks (__MACOSX/, ._x.jpg) left out."""
        folder = f"{split}{side}"
        found = []
        for n in self.names:
            parts = PurePosixPath(n).parts
            if folder not in parts[:-1] or any(p.startswith((".", "__MACOSX")) for p in parts):
                continue
            if PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES:
                found.append(n)
        return sorted(found)


def _zip_archive(data: io.BufferedIOBase | Path, where: str, cached: Path | None) -> _Archive:
    try:
        zf = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{where}: not a readable zip file ({e}); truncated or damaged") from None
    return _Archive(where, [i.filename for i in zf.infolist() if not i.is_dir()], zf.read, cached, close=zf.close)


def _folder_archive(root: Path) -> _Archive:
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    return _Archive(str(root), names, lambda n: (root / n).read_bytes(), sep="/")


def _open_archive(cfg: DataConfig, name: str, checksums) -> _Archive:
    """<name>.zip from data.source, an extracted local folder in data.source, or the verified cache."""
    zip_name = f"{name}.zip"
    if cfg.source and "://" in cfg.source:  # a bucket prefix: its stream cannot seek, a zip needs to
        with dl.open_file(DOWNLOAD_KEY, zip_name, cfg, checksums) as f:
            return _zip_archive(io.BytesIO(f.read()), join(cfg.source, zip_name), None)
    if cfg.source:
        local = Path(cfg.source).expanduser()
        if (local / zip_name).is_file():
            return _zip_archive(local / zip_name, str(local / zip_name), None)
        for root in (local / name, local):  # the reference's script unzips to datasets/<name>/ (and deletes the zip)
            if (root / "trainA").is_dir() or (root / "testA").is_dir():
                return _folder_archive(root)
        raise DataError(f"data.source: {local / zip_name} not found, nor an extracted {local / name}/trainA/")
    path = dl.cached_file(DOWNLOAD_KEY, zip_name, cfg, checksums)  # sha256-checked when it was written
    try:
        return _zip_archive(path, str(path), path)
    except DataError:
        _discard(path)
        raise


def _discard(path: Path) -> None:
    """A cached zip that cannot be read is removed: the next run downloads it again."""
    path.unlink(missing_ok=True)


def _decode(archive: _Archive, members: list[str], size: int) -> torch.Tensor:
    """The images `members` as uint8 [N, 3, S, S] (RGB), each resized to size² with bicubic
    interpolation as the reference's transforms.Resize((load_size, load_size)); size 0 = as stored."""
    out: np.ndarray | None = None
    for i, m in enumerate(members):
        try:
            with Image.open(io.BytesIO(archive.read(m))) as img:
                rgb = img.convert("RGB")
                if size:
                    rgb = rgb.resize((size, size), Image.BICUBIC)
                arr = np.asarray(rgb)  # [H, W, 3] uint8
        except UnidentifiedImageError:
            raise DataError(f"{archive.label(m)} is not a readable image (not a format Pillow knows)") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise DataError(f"{archive.label(m)} is not a readable image ({e})") from None
        if out is None:
            out = np.empty((len(members), 3, *arr.shape[:2]), dtype=np.uint8)  # filled in place: no second copy
        elif arr.shape[:2] != out.shape[2:]:
            raise DataError(f"{archive.label(m)} is {arr.shape[1]}x{arr.shape[0]}, {members[0]} "
                            f"{out.shape[3]}x{out.shape[2]}; set data.load_size to resize them to one size")
        out[i] = arr.transpose(2, 0, 1)
    return torch.from_numpy(out)


def _sizes(cfg: DataConfig, split: str) -> tuple[int, int]:
    """(resize to, crop per draw): train (data.load_size, data.crop_size); test resized straight to
    data.crop_size (else data.load_size), not cropped: the reference tests at load_size = crop_size."""
    load, crop = cfg.load_size, cfg.crop_size
    if crop and load and crop > load:
        raise DataError(f"data.crop_size: {crop} is larger than data.load_size {load}")
    return (load, crop) if split == "train" else (crop or load, 0)


def load_cyclegan(
    cfg: DataConfig,
    split: str,
    name: str,
    checksums: Mapping[str, Mapping[str, dl.Expected]] | None = None,
) -> Unpaired:
    """cyclegan:<name>'s `split`: A from <split>A/, B from <split>B/, uint8 [N, 3, L, L]."""
    check_split(split)
    if name not in CYCLEGAN_SETS:
        raise DataError(f"data.dataset: unknown CycleGAN dataset {PREFIX}{name}; allowed: {', '.join(CYCLEGAN_SETS)}")
    load, crop = _sizes(cfg, split)
    archive = _open_archive(cfg, name, checksums)
    try:
        domains = []
        for side in "AB":
            members = archive.domain(split, side)
            if not members:
                raise DataError(f"{archive.where}: no images under {split}{side}/ (expected {name}/{split}{side}/*.jpg)")
            x = _decode(archive, members, load)  # [N, 3, L, L] uint8
            if crop and min(x.shape[2:]) < crop:
                raise DataError(f"data.crop_size: {crop} is larger than the {split}{side} images "
                                f"({x.shape[3]}x{x.shape[2]}); set data.load_size >= data.crop_size")
            y = torch.zeros(len(x), dtype=torch.int64)  # photos: no classes
            domains.append(_cap(Dataset(f"{PREFIX}{name}/{side}", x, y, 1, (f"{split}{side}",)), cfg, split))
    except DataError:
        if archive.cached is not None:  # nothing unreadable stays in the cache
            _discard(archive.cached)
        raise
    finally:
        archive.close()
    flip = split == "train" and cfg.flip
    return Unpaired(f"{PREFIX}{name}", domains[0], domains[1], crop_size=crop, flip=flip)


def drawn_shape(cfg: DataConfig) -> tuple[int, ...]:
    """The shape of one drawn example of both domains of `cfg.dataset`, known without loading it
    (what G and D are rebuilt with from a checkpoint): digits (1, 28, 28); photos (3, S, S) with S =
    data.crop_size, else data.load_size."""
    if cfg.dataset in _LOADERS:
        return (1, 28, 28)
    size = cfg.crop_size or cfg.load_size
    if not cfg.dataset.startswith(PREFIX) or not size:
        raise DataError(f"data.dataset: no known example shape for {cfg.dataset!r}"
                        + ("; set data.load_size (and data.crop_size)" if cfg.dataset.startswith(PREFIX) else ""))
    return (3, size, size)
