"""Unpaired two-domain datasets: digits2inverse built from mnist5k (disjoint halves, the known
inverse, the reference classifier after undo_b), the per-draw crop and flip, and cyclegan:<name>
from tiny zips served from 127.0.0.1 (good, bad checksum, truncated: DataError, exit 2, nothing cached)."""
from __future__ import annotations

import hashlib
import io
import math
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import files_under, server  # noqa: F401  (the fixture: a file server on 127.0.0.1)

from ganray.cli import guarded
from ganray.config import DataConfig
from ganray.data import DataError, load_dataset
from ganray.data import download as dl
from ganray.data.unpaired import (
    CYCLEGAN_SETS,
    DIGIT_TRANSFORMS,
    drawn_shape,
    halves,
    load_cyclegan,
    load_digits2inverse,
    load_unpaired,
    random_crop,
    random_flip,
    unpaired_names,
)
from ganray.exits import EXIT_BAD_INPUT
from ganray.metrics.classifier.model import accuracy
from ganray.metrics.classifier.store import load_shipped

ROOT = Path(__file__).resolve().parents[1]
from ganray.storage import put_bytes

torch.set_num_threads(1)


def rows(x: torch.Tensor) -> list[bytes]:
    """Each image of x (float32 [-1, 1]) as its exact bytes."""
    return [bytes(r) for r in x.reshape(len(x), -1).numpy()]


# ---- digits2inverse ----------------------------------------------------------------------------


@pytest.mark.parametrize("split,per_class", [("train", 225), ("test", 25)])
def test_digits2inverse_halves_are_disjoint_and_exactly_undone(split, per_class):
    u = load_unpaired(DataConfig(dataset="digits2inverse", digits_transform="invert-transpose"), split)
    digits = load_dataset(DataConfig(dataset="mnist5k"), split)
    assert u.name == "digits2inverse" and u.exact and u.a.name == "digits2inverse/A"
    assert u.a.x.shape == u.b.x.shape == (10 * per_class, 1, 28, 28) and u.a.x.dtype == u.b.x.dtype == torch.float32
    assert u.shape_a == u.shape_b == (1, 28, 28) == drawn_shape(DataConfig(dataset="digits2inverse"))
    assert torch.bincount(u.a.y).tolist() == torch.bincount(u.b.y).tolist() == [per_class] * 10
    # b = -a^T: inverted (background +1) and transposed
    assert u.b.x[:, :, 0, 0].eq(1.0).float().mean() > 0.99 and u.a.x[:, :, 0, 0].eq(-1.0).float().mean() > 0.99
    assert torch.equal(u.undo_b(u.to_b(u.a.x)), u.a.x)  # the exact inverse, bit for bit
    undone = u.undo_b(u.b.x)
    a_rows, b_rows = set(rows(u.a.x)), set(rows(undone))
    assert len(a_rows) == len(b_rows) == 10 * per_class
    assert not a_rows & b_rows  # unpaired: no A digit is the source of any B image
    assert a_rows | b_rows == set(rows(digits.x))  # the two halves are the split, each digit once
    # B's labels are those of the digits they were made from
    by_row = dict(zip(rows(digits.x), digits.y.tolist()))
    assert [by_row[r] for r in rows(undone)] == u.b.y.tolist()


def test_halves_alternate_within_each_class():
    y = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 1])
    ia, ib = halves(y)
    assert ia.tolist() == [0, 2, 3, 5, 7] and ib.tolist() == [1, 4, 6, 8]


def test_thick_variant_is_approximate_and_recognised_after_undo():
    """The shipped classifier on mnist5k's whole test split (A's digits through to_b and back, B's
    images undone): 97.8% (clean digits 98.2%); B's images as they are: about chance."""
    clf, _ = load_shipped()
    cfg = DataConfig(dataset="digits2inverse")
    u = load_digits2inverse(cfg, "test", transform="thick-invert")
    assert not u.exact and u.b.extra == {"transform": "thick-invert", "exact": False}
    back = u.undo_b(u.to_b(u.a.x))  # a morphological closing of x: never darker, not x exactly
    assert (back >= u.a.x).all() and not torch.equal(back, u.a.x)
    x, y = torch.cat([back, u.undo_b(u.b.x)]), torch.cat([u.a.y, u.b.y])  # [500, 1, 28, 28]
    acc_back, acc_b = accuracy(clf, x, y), accuracy(clf, u.b.x, u.b.y)
    assert acc_back >= 0.95 and acc_b < 0.3, (acc_back, acc_b)
    with pytest.raises(DataError, match=r"data.digits_transform: unknown transformation 'blur'; allowed: "
                                        + ", ".join(DIGIT_TRANSFORMS)):
        load_digits2inverse(cfg, "test", transform="blur")


def test_digits2inverse_shard_classes_and_cap():
    u = load_unpaired(DataConfig(dataset="digits2inverse", classes=(3, 8), n_train=301), "train")
    assert len(u.a) == len(u.b) == 301 and set(u.a.y.tolist()) == set(u.b.y.tolist()) == {3, 8}
    shards = [u.shard(r, 4) for r in range(4)]
    assert [len(s.a) for s in shards] == [76, 75, 75, 75] and [len(s.b) for s in shards] == [76, 75, 75, 75]
    assert sorted(sum((rows(s.b.x) for s in shards), [])) == sorted(rows(u.b.x))  # disjoint, complete
    idx = torch.tensor([4, 0, 4])
    assert torch.equal(u.batch("b", idx), u.b.x[idx])  # digits: no crop, no flip, already float
    assert u.epoch_size == 301 and u.shard(0, 1) is u


def test_unknown_names_are_clear():
    assert "digits2inverse" in unpaired_names() and "cyclegan:horse2zebra" in unpaired_names()
    assert len(CYCLEGAN_SETS) == 12
    with pytest.raises(DataError, match=r"data.dataset: 'mnist' is not an unpaired dataset; allowed: digits2inverse"):
        load_unpaired(DataConfig(dataset="mnist"))
    with pytest.raises(DataError, match=r"unknown CycleGAN dataset cyclegan:horse2cat; allowed: apple2orange"):
        load_unpaired(DataConfig(dataset="cyclegan:horse2cat"))
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        load_unpaired(DataConfig(dataset="digits2inverse"), "valid")
    with pytest.raises(DataError, match=r"set data.load_size"):
        drawn_shape(DataConfig(dataset="cyclegan:horse2zebra"))
    assert drawn_shape(DataConfig(dataset="cyclegan:horse2zebra", load_size=286, crop_size=256)) == (3, 256, 256)


# ---- per-draw crop and flip ------------------------------------------------------------------------


def test_random_crop_windows_and_offsets():
    n, h, w, size = 600, 9, 7, 4
    pos = torch.arange(h * w).reshape(1, 1, h, w).repeat(n, 2, 1, 1)  # [N, 2, H, W]: value = i * W + j
    pos[:, 1] += 1000
    crop = random_crop(pos, size, torch.Generator().manual_seed(3))
    assert crop.shape == (n, 2, size, size)
    corner = crop[:, :1, :1, :1]
    grid = torch.arange(size)[:, None] * w + torch.arange(size)[None, :]
    assert torch.equal(crop - corner, torch.stack([grid, grid + 1000])[None].expand(n, 2, size, size))
    top, left = corner.flatten() // w, corner.flatten() % w
    # every offset 0..H-size and 0..W-size is drawn (600 draws over 6 and 4 values)
    assert sorted(top.unique().tolist()) == list(range(h - size + 1))
    assert sorted(left.unique().tolist()) == list(range(w - size + 1))
    again = random_crop(pos, size, torch.Generator().manual_seed(3))
    assert torch.equal(again, crop)
    full_width = random_crop(pos, w, torch.Generator().manual_seed(4))  # as wide as the image: only rows move
    assert (full_width[:, 0, 0, 0] % w == 0).all() and len((full_width[:, 0, 0, 0] // w).unique()) == h - w + 1
    with pytest.raises(DataError, match=r"data.crop_size: 10 is larger than the images \(9x7\)"):
        random_crop(pos, 10)


def test_random_flip_mirrors_about_half():
    n = 2000
    x = torch.arange(3 * 5).reshape(1, 1, 3, 5).repeat(n, 1, 1, 1)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 4)
    assert torch.equal(out[flipped], x[flipped].flip(-1)) and torch.equal(out[~flipped], x[~flipped])
    # Binomial(2000, 1/2): within 5 standard deviations of 1000
    assert abs(int(flipped.sum()) - n / 2) < 5 * math.sqrt(n / 4)


# ---- cyclegan:<name> from zips ------------------------------------------------------------------------


def png(seed: int, w: int = 20, h: int = 16) -> tuple[bytes, np.ndarray]:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue(), arr


def make_zip(name: str = "horse2zebra") -> tuple[bytes, dict[str, np.ndarray]]:
    """<name>.zip as the official ones: <name>/trainA, trainB, testA, testB, written out of order,
    with a macOS resource fork and a text file that are not images."""
    members = {f"{name}/trainA/n{i}.png": 10 + i for i in (2, 0, 1)}
    members |= {f"{name}/trainB/z{i}.png": 20 + i for i in (1, 0)}
    members |= {f"{name}/testA/t0.png": 30, f"{name}/testA/t1.png": 31, f"{name}/testB/u0.png": 40}
    images, buf = {}, io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{name}/", b"")
        for m, seed in members.items():
            raw, images[m] = png(seed)
            zf.writestr(m, raw)
        zf.writestr(f"__MACOSX/{name}/trainA/._n0.png", b"\x00\x05\x16\x07 not an image")
        zf.writestr(f"{name}/trainA/README.txt", b"not an image")
    return buf.getvalue(), images


def resized(arr: np.ndarray, size: int) -> torch.Tensor:
    """The reference's resize: PIL bicubic to size², as uint8 [3, S, S]."""
    return torch.from_numpy(np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC)).transpose(2, 0, 1).copy())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.delenv(dl.mirror_env_var("cyclegan"), raising=False)
    return tmp_path / "cache"


def checked(zip_bytes: bytes, name: str = "horse2zebra.zip", sha: str | None = None):
    return {"cyclegan": {name: dl.Expected(len(zip_bytes), sha or hashlib.sha256(zip_bytes).hexdigest())}}


def test_cyclegan_zip_downloaded_checked_cached_and_transformed(server, cache):
    raw, images = make_zip()
    cfg = DataConfig(dataset="cyclegan:horse2zebra", cache_dir=str(cache), mirror=server.serve("cg", {"horse2zebra.zip": raw}),
                     load_size=12, crop_size=8)
    u = load_cyclegan(cfg, "train", "horse2zebra", checksums=checked(raw))
    assert u.name == "cyclegan:horse2zebra" and u.undo_b is None and (u.crop_size, u.flip) == (8, True)
    assert u.a.x.shape == (3, 3, 12, 12) and u.b.x.shape == (2, 3, 12, 12) and u.a.x.dtype == torch.uint8
    # sorted by path as the reference sorts; resized with PIL bicubic, exactly
    expected = torch.stack([resized(images[f"horse2zebra/trainA/n{i}.png"], 12) for i in range(3)])
    assert torch.equal(u.a.x, expected)
    assert u.a.y.tolist() == [0, 0, 0] and u.a.num_classes == 1
    assert u.shape_a == u.shape_b == (3, 8, 8)
    batch = u.batch("a", torch.tensor([0, 2, 2, 1]), torch.Generator().manual_seed(1))
    assert batch.shape == (4, 3, 8, 8) and batch.dtype == torch.float32 and -1 <= batch.min() and batch.max() <= 1
    assert files_under(cache) == ["cyclegan/horse2zebra.zip"]  # no temporary file left

    server.stop()  # the test split from the cache: resized straight to crop_size, no crop, no flip
    t = load_cyclegan(cfg, "test", "horse2zebra", checksums=checked(raw))
    assert t.a.x.shape == (2, 3, 8, 8) and t.b.x.shape == (1, 3, 8, 8) and (t.crop_size, t.flip) == (0, False)
    assert torch.equal(t.b.x[0], resized(images["horse2zebra/testB/u0.png"], 8))
    assert torch.equal(t.batch("b", torch.tensor([0])), t.b.x[:1].float() / 127.5 - 1)


def test_cyclegan_bad_checksum_is_exit_2_and_caches_nothing(server, cache, capsys):
    raw, _ = make_zip()
    base = server.serve("cg", {"horse2zebra.zip": raw})
    cfg = DataConfig(dataset="cyclegan:horse2zebra", cache_dir=str(cache), mirror=base)
    bad = checked(raw, sha="0" * 64)
    with pytest.raises(dl.ChecksumError, match=rf"checksum mismatch for {base}horse2zebra.zip: expected sha256 0{{64}}"):
        load_cyclegan(cfg, "train", "horse2zebra", checksums=bad)
    assert files_under(cache) == []
    # what `ganray train` prints and returns for it (ganray.cli.guarded): exit 2
    assert guarded(lambda: load_cyclegan(cfg, "train", "horse2zebra", checksums=bad)) == EXIT_BAD_INPUT
    assert "error: checksum mismatch for " + base + "horse2zebra.zip" in capsys.readouterr().err
    assert files_under(cache) == []


def test_cyclegan_truncated_zip_is_exit_2_and_caches_nothing(server, cache, capsys):
    raw, _ = make_zip()
    cut = raw[: len(raw) // 2]
    base = server.serve("cg", {"horse2zebra.zip": cut})
    cfg = DataConfig(dataset="cyclegan:horse2zebra", cache_dir=str(cache), mirror=base)
    # a mirror holding a truncated copy, against the published size and sha256: refused by size
    with pytest.raises(DataError, match=rf"{base}horse2zebra.zip: server announces {len(cut)} bytes, expected {len(raw)}"):
        load_cyclegan(cfg, "train", "horse2zebra", checksums=checked(raw))
    assert files_under(cache) == []
    # a table that describes the truncated bytes (a private copy's): downloaded, then not a zip: removed
    load = lambda: load_cyclegan(cfg, "train", "horse2zebra", checksums=checked(cut))  # noqa: E731
    assert guarded(load) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"error: {cache / 'cyclegan' / 'horse2zebra.zip'}: not a readable zip file" in err and "truncated" in err
    assert files_under(cache) == []


def test_cyclegan_from_a_source_folder_zip_or_extracted(tmp_path, cache):
    raw, images = make_zip()
    src = tmp_path / "src"
    src.mkdir()
    (src / "horse2zebra.zip").write_bytes(raw)
    cfg = DataConfig(dataset="cyclegan:horse2zebra", source=str(src), cache_dir=str(cache), download=False)
    u = load_unpaired(cfg, "test")  # no size set: as stored (20x16), no crop
    assert u.a.x.shape == (2, 3, 16, 20) and torch.equal(u.a.x[1], torch.from_numpy(images["horse2zebra/testA/t1.png"]
                                                                                   .transpose(2, 0, 1).copy()))
    assert files_under(cache) == []  # a source is read in place
    # the reference's script leaves an extracted folder (and deletes the zip)
    (src / "horse2zebra.zip").unlink()
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        zf.extractall(src)
    v = load_unpaired(replace(cfg, load_size=10), "train")
    assert torch.equal(v.b.x, torch.stack([resized(images[f"horse2zebra/trainB/z{i}.png"], 10) for i in range(2)]))
    # an image that cannot be read names itself; a domain without images names its folder
    (src / "horse2zebra" / "trainA" / "n1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"horse2zebra/trainA/n1.png is not a readable image"):
        load_unpaired(cfg, "train")
    (src / "horse2zebra" / "trainA" / "n1.png").write_bytes(png(1, w=21)[0])  # one size less: no stacking
    with pytest.raises(DataError, match=r"horse2zebra/trainA/n1.png is 21x16, trainA/n0.png 20x16; set data.load_size"):
        load_unpaired(cfg, "train")
    for p in (src / "horse2zebra" / "testB").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"no images under testB/"):
        load_unpaired(cfg, "test")
    with pytest.raises(DataError, match=r"data.crop_size: 300 is larger than data.load_size 286"):
        load_unpaired(replace(cfg, load_size=286, crop_size=300), "test")
    with pytest.raises(DataError, match=r"data.source: .*apple2orange.zip not found, nor an extracted"):
        load_unpaired(replace(cfg, dataset="cyclegan:apple2orange"), "train")


def test_cyclegan_unknown_digest_is_refused_not_skipped(cache):
    """ae_photos has no published sha256: its download is refused (data.source still reads it)."""
    assert set(dl.CHECKSUMS["cyclegan"]) == {f"{n}.zip" for n in CYCLEGAN_SETS if n != "ae_photos"}
    with pytest.raises(DataError, match=r"no published sha256 for cyclegan/ae_photos.zip; refusing to download"):
        load_unpaired(DataConfig(dataset="cyclegan:ae_photos", cache_dir=str(cache)), "train")
    assert files_under(cache) == []


def test_cyclegan_zip_in_a_bucket(s3_bucket, cache):
    """data.source an s3:// prefix (moto_server on 127.0.0.1): read into memory, never cached."""
    raw, images = make_zip("facades")
    put_bytes(f"{s3_bucket}/cg/facades.zip", raw)
    put_bytes(f"{s3_bucket}/cg/maps.zip", raw[:-100])  # truncated: the zip's directory is at its end
    cfg = DataConfig(dataset="cyclegan:facades", source=f"{s3_bucket}/cg", cache_dir=str(cache), crop_size=8)
    u = load_unpaired(cfg, "test")
    assert torch.equal(u.a.x, torch.stack([resized(images[f"facades/testA/t{i}.png"], 8) for i in range(2)]))
    with pytest.raises(DataError, match=rf"{s3_bucket}/cg/maps.zip: not a readable zip file"):
        load_unpaired(replace(cfg, dataset="cyclegan:maps"), "test")
    assert files_under(cache) == []


def test_ganray_train_on_a_bad_official_zip_exits_2_and_caches_nothing(server, cache, tmp_path, capsys):
    """The user's path: `ganray train --local` with cyclegan:facades from a mirror serving a wrong file,
    checked against the published size and sha256 (ganray.data.download.CHECKSUMS): exit 2, the reason
    named, nothing left in the cache, nothing trained."""
    from ganray import cli

    size = dl.CHECKSUMS["cyclegan"]["facades.zip"].size
    base = server.serve("bad", {"facades.zip": b"\0" * 1000})
    argv = ["train", "--local", str(ROOT / "configs" / "cyclegan_digits_local.yaml"), "--storage", str(tmp_path / "s"),
            "--set", "data.dataset=cyclegan:facades", "--set", f"data.mirror={base}", "--set",
            f"data.cache_dir={cache}", "--set", "train.steps=2", "--quiet"]
    assert cli.main(argv) == EXIT_BAD_INPUT
    assert f"server announces 1000 bytes, expected {size}" in capsys.readouterr().err
    base = server.serve("zeros", {"facades.zip": b"\0" * size})  # the published size, other bytes
    assert cli.main([*argv[:8], f"data.mirror={base}", *argv[9:]]) == EXIT_BAD_INPUT
    assert "checksum mismatch" in capsys.readouterr().err
    assert files_under(cache) == []
