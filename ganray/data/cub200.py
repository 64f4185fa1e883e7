"""cub200: CUB-200-2011 birds with the StackGAN authors' char-CNN-RNN text embeddings and captions.

Two official files, read like every dataset's (ganray.data.download: data.source, else the cache,
else a sha256-checked download):
  CUB_200_2011.tgz  the Caltech images (Wah et al. 2011; https://data.caltech.edu/records/65de6-vp158,
                    1,150,585,339 bytes): CUB_200_2011/images/<class>/<image>.jpg, images.txt
                    ("<id> <class>/<image>.jpg"), bounding_boxes.txt ("<id> <x> <y> <width> <height>",
                    pixels, x/y the top-left corner), classes.txt ("<id> <class>").
  birds.zip         the StackGAN authors' "birds" data (README of hanzhanggit/StackGAN: Google Drive,
                    https://drive.google.com/open?id=0B3y_msrWZaXLT1BZdVdycDY5TEE), holding (under a
                    top folder, usually birds/) train/ and test/, each with filenames.pickle (the
                    split's image keys "<class>/<image>", no .jpg), char-CNN-RNN-embeddings.pickle
                    (float [N, 10, 1024]: Reed et al.'s encoder on the 10 captions of each image, in the
                    order of filenames.pickle) and class_info.pickle (the class id 1..200 of each),
                    and text_c10/<class>/<image>.txt with the 10 captions, one a line.

The split is the authors' (train 8,855 images of 150 classes, test 2,933 of the other 50: their
filenames.pickle), not CUB's train_test_split.txt. A downloaded birds.zip must pass a sha256 check
like every file, and no sha256 of it is published: ganray refuses to download it. Put it (with
CUB_200_2011.tgz) in a folder or bucket prefix and set data.source to it, or, from Python, pass a
`checksums` table with your own copy's size and sha256 to `load_cub200_split`.

Images as the authors' loaders (StackGAN-Pytorch code/miscc/datasets.py, StackGAN misc/utils.py):
a square of side 2R, R = int(0.75 * max(box width, box height)), centred on the bounding box's
centre (int((2x + w) / 2), int((2y + h) / 2)) and clipped to the image, so 1.5x the box's longer
side; then resized (bilinear) to S x S, S = data.load_size, or 64 (Stage I) when 0. The authors
resize to S * 76 / 64 and take a random S crop and flip per draw; here the whole crop is resized to S
once (the sampler draws fixed tensors). Memory: float32 3 S^2 per image (8,855 train images:
0.44 GB at S = 64, 7 GB at 256), and while loading the split's JPEG bytes (~0.8 GB for train) and
birds.zip, read whole (a zip needs to seek).

The pickles are Python 2 pickles; they are read with ganray.data.safe_pickle (numpy arrays and
plain containers only): a pickle that names anything else is refused with a DataError naming the
file (exit 2), before any of it runs.
"""
from __future__ import annotations

import io
import zipfile
from typing import Mapping

import numpy as np
import torch

from ganray.config import DataConfig
from ganray.data import DataError, Dataset, check_split, register_dataset, safe_pickle, to_unit_range
from ganray.data.download import Expected, open_file, tar_members

IMAGES_ARCHIVE = "CUB_200_2011.tgz"
TEXT_ARCHIVE = "birds.zip"
CUB_FOLDER = "CUB_200_2011"
EMBEDDINGS = "char-CNN-RNN-embeddings.pickle"
FILENAMES = "filenames.pickle"
CLASS_INFO = "class_info.pickle"
TEXT_FOLDER = "text_c10"
NUM_CLASSES = 200
DEFAULT_SIZE = 64  # Stage I; data.load_size sets another (Stage II: 256)
BBOX_SCALE = 0.75  # R = 0.75 * max(w, h): a square of 1.5x the box's longer side (the authors')


def _hint() -> str:
    return (f"put {IMAGES_ARCHIVE} and {TEXT_ARCHIVE} (the StackGAN authors' birds data: "
            "https://drive.google.com/open?id=0B3y_msrWZaXLT1BZdVdycDY5TEE) in a folder or s3:// / gs:// "
            "prefix and set data.source to it")


def _open(name: str, cfg: DataConfig, checksums):
    try:
        return open_file("cub200", name, cfg, checksums)
    except DataError as e:
        if "no published sha256" in str(e):
            raise DataError(f"{e}: {_hint()}") from None
        raise


# ---- birds.zip: keys, embeddings, classes, captions ------------------------------------------


def _zip_members(cfg: DataConfig, checksums) -> zipfile.ZipFile:
    with _open(TEXT_ARCHIVE, cfg, checksums) as f:
        raw = f.read()  # zipfile needs to seek: bucket streams cannot
    try:
        return zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile as e:
        raise DataError(f"cub200: {TEXT_ARCHIVE} is not a readable zip: {e}") from None


def _find_prefix(z: zipfile.ZipFile, split: str) -> str:
    """The folder above train/ and test/ ("birds/" in the authors' zip, "" if at the top)."""
    tail = f"{split}/{FILENAMES}"
    hits = sorted(n for n in z.namelist() if n == tail or n.endswith("/" + tail))
    if not hits:
        raise DataError(f"cub200: {TEXT_ARCHIVE} lacks {tail} (expected the StackGAN birds layout: "
                        f"<folder>/{split}/{FILENAMES}, {EMBEDDINGS}, {CLASS_INFO}, <folder>/{TEXT_FOLDER}/)")
    return hits[0][: -len(tail)]


def _read_member(z: zipfile.ZipFile, name: str) -> bytes:
    try:
        return z.read(name)
    except KeyError:
        raise DataError(f"cub200: {TEXT_ARCHIVE} lacks {name}") from None


def _unpickle(z: zipfile.ZipFile, name: str):
    return safe_pickle.load(_read_member(z, name), f"cub200: {TEXT_ARCHIVE}: {name}", encoding="latin1")


def _captions(z: zipfile.ZipFile, prefix: str, key: str, t: int) -> tuple[str, ...]:
    name = f"{prefix}{TEXT_FOLDER}/{key}.txt"
    text = _read_member(z, name).decode("utf-8", errors="replace")
    lines = [ln.replace("\ufffd\ufffd", " ").strip() for ln in text.split("\n")]  # as the authors' loader
    lines = [ln for ln in lines if ln]
    if len(lines) < t:
        raise DataError(f"cub200: {TEXT_ARCHIVE}: {name} has {len(lines)} captions, expected {t} (one per embedding)")
    return tuple(lines[:t])


def _read_text(cfg: DataConfig, split: str, checksums):
    """-> (keys [N], embeddings float32 [N, T, E], class ids int64 [N] in 0..199, captions [N][T])."""
    z = _zip_members(cfg, checksums)
    prefix = _find_prefix(z, split)
    where = f"{prefix}{split}/"
    keys = _unpickle(z, where + FILENAMES)
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise DataError(f"cub200: {TEXT_ARCHIVE}: {where}{FILENAMES}: expected a list of image keys (str)")
    try:
        emb = np.asarray(_unpickle(z, where + EMBEDDINGS), dtype=np.float32)
        classes = np.asarray(_unpickle(z, where + CLASS_INFO), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"cub200: {TEXT_ARCHIVE}: {where}: embeddings or class ids are not numeric arrays: {e}") from None
    n = len(keys)
    if emb.ndim != 3 or emb.shape[0] != n:
        raise DataError(f"cub200: {TEXT_ARCHIVE}: {where}{EMBEDDINGS}: shape {emb.shape}, expected [{n}, T, E] "
                        f"(one row per key of {FILENAMES})")
    if classes.shape != (n,) or (n and (classes.min() < 1 or classes.max() > NUM_CLASSES)):
        raise DataError(f"cub200: {TEXT_ARCHIVE}: {where}{CLASS_INFO}: expected {n} class ids in 1..{NUM_CLASSES}")
    captions = tuple(_captions(z, prefix, k, emb.shape[1]) for k in keys)
    return list(keys), emb, classes - 1, captions


# ---- CUB_200_2011.tgz: bounding boxes and images ----------------------------------------------


def _table(raw: bytes, name: str, width: int) -> dict[int, list[str]]:
    """A CUB text table "<id> <field> ..." -> {id: fields}."""
    out = {}
    for i, line in enumerate(raw.decode("utf-8").splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != width + 1 or not parts[0].isdigit():
            raise DataError(f"cub200: {IMAGES_ARCHIVE}: {name} line {i + 1}: expected an id and {width} fields")
        out[int(parts[0])] = parts[1:]
    return out


def _read_images(cfg: DataConfig, keys: list[str], checksums) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """One sequential pass over the tarball -> ({table name: bytes}, {key: jpeg bytes} of `keys`)."""
    tables = {f"{CUB_FOLDER}/{n}": n for n in ("images.txt", "bounding_boxes.txt", "classes.txt")}
    wanted = {f"{CUB_FOLDER}/images/{k}.jpg": k for k in keys}
    raw = tar_members("cub200", IMAGES_ARCHIVE, cfg, tables.keys() | wanted.keys(), checksums)
    found_tables = {tables[m]: raw.pop(m) for m in list(raw) if m in tables}
    found = {wanted[m]: b for m, b in raw.items()}
    missing = [f"{CUB_FOLDER}/{n}" for n in tables.values() if n not in found_tables]
    missing += [f"{CUB_FOLDER}/images/{k}.jpg" for k in keys if k not in found][:5]
    if missing:
        raise DataError(f"cub200: {IMAGES_ARCHIVE} lacks {', '.join(missing)}")
    return found_tables, found


def bounding_boxes(images_txt: bytes, boxes_txt: bytes) -> dict[str, tuple[float, float, float, float]]:
    """{key "<class>/<image>": (x, y, width, height)} from images.txt and bounding_boxes.txt."""
    paths = _table(images_txt, "images.txt", 1)
    boxes = _table(boxes_txt, "bounding_boxes.txt", 4)
    out = {}
    for i, (path,) in paths.items():
        if i not in boxes:
            raise DataError(f"cub200: {IMAGES_ARCHIVE}: bounding_boxes.txt has no box for image {i} ({path})")
        try:
            out[path[:-4] if path.endswith(".jpg") else path] = tuple(float(v) for v in boxes[i])
        except ValueError:
            raise DataError(f"cub200: {IMAGES_ARCHIVE}: bounding_boxes.txt: image {i}: not numbers") from None
    return out


def crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """The authors' crop (left, top, right, bottom): a square of side 2R, R = int(0.75 * max(w, h)),
    centred on the box, clipped to the image."""
    x, y, w, h = bbox
    r = int(max(w, h) * BBOX_SCALE)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def load_image(raw: bytes, bbox, size: int, name: str) -> np.ndarray:
    """JPEG bytes -> uint8 [3, size, size]: RGB, cropped around `bbox`, resized (bilinear)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
            im = im.crop(crop_box(bbox, *im.size)).resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"cub200: {IMAGES_ARCHIVE}: {name} is not a readable image: {e}") from None


def _class_names(classes_txt: bytes) -> tuple[str, ...]:
    table = _table(classes_txt, "classes.txt", 1)
    if sorted(table) != list(range(1, NUM_CLASSES + 1)):
        raise DataError(f"cub200: {IMAGES_ARCHIVE}: classes.txt: expected the ids 1..{NUM_CLASSES}")
    return tuple(table[i][0] for i in range(1, NUM_CLASSES + 1))


def load_cub200_split(
    cfg: DataConfig,
    split: str = "train",
    checksums: Mapping[str, Mapping[str, Expected]] | None = None,
) -> Dataset:
    """cub200 `split`: x float32 [N, 3, S, S] in [-1, 1], y int64 [N] (class 0..199), c float32
    [N, 10, 1024] the char-CNN-RNN embeddings, captions [N][10]; S = data.load_size or 64."""
    check_split(split)
    size = cfg.load_size or DEFAULT_SIZE
    keys, emb, y, captions = _read_text(cfg, split, checksums)
    tables, jpegs = _read_images(cfg, keys, checksums)
    boxes = bounding_boxes(tables["images.txt"], tables["bounding_boxes.txt"])
    missing = [k for k in keys if k not in boxes]
    if missing:
        raise DataError(f"cub200: {IMAGES_ARCHIVE}: images.txt lacks {', '.join(missing[:5])} "
                        f"(named by {TEXT_ARCHIVE}'s {split}/{FILENAMES})")
    images = np.zeros((len(keys), 3, size, size), dtype=np.uint8)  # [N, 3, S, S]
    for i, k in enumerate(keys):
        images[i] = load_image(jpegs.pop(k), boxes[k], size, f"{CUB_FOLDER}/images/{k}.jpg")
    x = to_unit_range(torch.from_numpy(images))
    return Dataset("cub200", x, torch.from_numpy(y), NUM_CLASSES, _class_names(tables["classes.txt"]),
                   c=torch.from_numpy(emb), captions=captions)


@register_dataset("cub200")
def load_cub200(cfg: DataConfig, split: str = "train") -> Dataset:
    return load_cub200_split(cfg, split)
