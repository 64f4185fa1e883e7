"""cub200: a tiny CUB-200-2011 + StackGAN birds tree with the official layout, served from 127.0.0.1."""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_data import FileServer, cache, files_under, server, table  # noqa: F401  (fixtures)

from ganray import cli
from ganray.config import DataConfig
from ganray.data import DataError, load_dataset
from ganray.data import download as dl
from ganray.data.cub200 import IMAGES_ARCHIVE, TEXT_ARCHIVE, crop_box
from ganray.exits import EXIT_BAD_INPUT

torch.set_num_threads(1)

# (key, class id 1..200, split): the authors' split puts whole classes in train or test
IMAGES = [("001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111", 1, "train"),
          ("001.Black_footed_Albatross/Black_Footed_Albatross_0002_55", 1, "train"),
          ("003.Sooty_Albatross/Sooty_Albatross_0031_1066", 3, "train"),
          ("200.Common_Yellowthroat/Common_Yellowthroat_0003_190521", 200, "test"),
          ("200.Common_Yellowthroat/Common_Yellowthroat_0005_190737", 200, "test")]
# Every image 100 x 80 with the box (x 30, y 20, w 40, h 20): the authors' crop is the square
# R = int(0.75 * 40) = 30 around the centre (50, 30), clipped at the top: (20, 0, 80, 60).
W, H, BBOX, CROP = 100, 80, (30.0, 20.0, 40.0, 20.0), (20, 0, 80, 60)
GREEN, RED, BLUE = (0, 255, 0), (255, 0, 0), (0, 0, 255)


def _jpeg() -> bytes:
    """Blue outside the crop; inside it the left half green, the right half red."""
    a = np.zeros((H, W, 3), np.uint8)
    a[:] = BLUE
    a[0:60, 20:50] = GREEN
    a[0:60, 50:80] = RED
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def captions_of(key: str) -> list[str]:
    return [f"caption {j} of {key.split('/')[1].lower()}" for j in range(10)]


def make_cub(embeddings_pickle=None) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """({file name: bytes} for CUB_200_2011.tgz and birds.zip, {split: embeddings [N, 10, 1024]})."""
    jpg = _jpeg()
    classes = "".join(f"{i} {i:03d}.Class_{i}\n" for i in range(1, 201))
    images_txt = "".join(f"{i + 10} {k}.jpg\n" for i, (k, _, _) in enumerate(IMAGES))  # CUB ids need not be 1..N
    boxes = "".join(f"{i + 10} {BBOX[0]} {BBOX[1]} {BBOX[2]} {BBOX[3]}\n" for i in range(len(IMAGES)))
    members = {"CUB_200_2011/README": b"fake", "CUB_200_2011/classes.txt": classes.encode()}
    members.update({f"CUB_200_2011/images/{k}.jpg": jpg for k, _, _ in IMAGES})
    members["CUB_200_2011/images.txt"] = images_txt.encode()  # after the images: one pass must still work
    members["CUB_200_2011/bounding_boxes.txt"] = boxes.encode()
    rng = np.random.default_rng(0)
    emb = {}
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        for split in ("train", "test"):
            rows = [(k, c) for k, c, s in IMAGES if s == split]
            emb[split] = rng.standard_normal((len(rows), 10, 1024)).astype(np.float32)
            raw = pickle.dumps(emb[split], protocol=2)
            if embeddings_pickle is not None and split == "train":
                raw = embeddings_pickle
            z.writestr(f"birds/{split}/char-CNN-RNN-embeddings.pickle", raw)
            z.writestr(f"birds/{split}/filenames.pickle", pickle.dumps([k for k, _ in rows], protocol=2))
            z.writestr(f"birds/{split}/class_info.pickle", pickle.dumps([c for _, c in rows], protocol=2))
        for k, _, _ in IMAGES:
            z.writestr(f"birds/text_c10/{k}.txt", "\n".join(captions_of(k)) + "\n")
    return {IMAGES_ARCHIVE: _tar(members), TEXT_ARCHIVE: zbuf.getvalue()}, emb


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def no_env_mirror(monkeypatch):
    monkeypatch.delenv(dl.mirror_env_var("cub200"), raising=False)


def test_crop_box_is_the_authors():
    assert crop_box(BBOX, W, H) == CROP
    assert crop_box((0.0, 0.0, 10.0, 30.0), 500, 400) == (0, 0, 27, 37)  # R = 22, centre (5, 15)


def test_download_layout_captions_and_crop(server, cache, no_env_mirror, monkeypatch):
    files, emb = make_cub()
    monkeypatch.setitem(dl.CHECKSUMS, "cub200", table("cub200", files)["cub200"])
    cfg = DataConfig(dataset="cub200", cache_dir=str(cache), mirror=server.serve("cub", files))
    train = load_dataset(replace(cfg, load_size=16), "train")
    assert train.x.shape == (3, 3, 16, 16) and train.x.dtype == torch.float32
    assert train.c.shape == (3, 10, 1024) and torch.equal(train.c, torch.from_numpy(emb["train"]))
    assert train.y.tolist() == [0, 0, 2] and train.num_classes == 200
    assert train.class_names[2] == "003.Class_3" and len(train.class_names) == 200
    assert train.captions[2] == tuple(captions_of(IMAGES[2][0]))
    assert train.captions[2][9] == "caption 9 of sooty_albatross_0031_1066"
    # the crop holds no blue; its left third is green, its right third red
    x = train.x[0]
    assert x[2].max().item() < -0.7
    assert (x[1, :, :5] > 0.8).all() and (x[0, :, :5] < -0.7).all()
    assert (x[0, :, 11:] > 0.8).all() and (x[1, :, 11:] < -0.7).all()
    assert files_under(cache) == [f"cub200/{IMAGES_ARCHIVE}", f"cub200/{TEXT_ARCHIVE}"]

    server.stop()  # the cache alone answers now; Stage I's default size
    test = load_dataset(cfg, "test")
    assert test.x.shape == (2, 3, 64, 64) and test.y.tolist() == [199, 199]
    assert test.captions[0][0] == "caption 0 of common_yellowthroat_0003_190521"
    assert torch.equal(test.c, torch.from_numpy(emb["test"]))
    shard = train.shard(1, 2)  # conditions stay with their images
    assert torch.equal(shard.c[0], train.c[1]) and shard.captions == (train.captions[1],)


def test_bad_checksum_caches_nothing(server, cache, no_env_mirror, monkeypatch):
    files, _ = make_cub()
    good = table("cub200", files)["cub200"]
    monkeypatch.setitem(dl.CHECKSUMS, "cub200", {**good, TEXT_ARCHIVE: dl.Expected(good[TEXT_ARCHIVE].size, "1" * 64)})
    base = server.serve("cub", files)
    with pytest.raises(DataError, match=rf"checksum mismatch for {base}{TEXT_ARCHIVE}: expected sha256 1{{64}}"):
        load_dataset(DataConfig(dataset="cub200", cache_dir=str(cache), mirror=base), "train")
    assert files_under(cache) == []


def test_birds_zip_has_no_published_sha256(cache, no_env_mirror):
    cfg = DataConfig(dataset="cub200", cache_dir=str(cache), mirror="http://127.0.0.1:9/")
    with pytest.raises(DataError, match=r"no published sha256 for cub200/birds.zip.*set data.source"):
        load_dataset(cfg, "train")
    assert set(dl.CHECKSUMS["cub200"]) == {IMAGES_ARCHIVE}  # the Caltech tarball's is published
    assert dl.MIRRORS["cub200"] == ("https://data.caltech.edu/records/65de6-vp158/files/",)


def test_hostile_pickle_is_refused_before_it_runs(server, cache, no_env_mirror, monkeypatch, tmp_path):
    marker = tmp_path / "pwned"
    files, _ = make_cub(embeddings_pickle=pickle.dumps([Evil(marker)], protocol=2))
    monkeypatch.setitem(dl.CHECKSUMS, "cub200", table("cub200", files)["cub200"])  # right bytes, hostile content
    cfg = DataConfig(dataset="cub200", cache_dir=str(cache), mirror=server.serve("cub", files))
    with pytest.raises(DataError, match=r"cub200: birds.zip: birds/train/char-CNN-RNN-embeddings.pickle: "
                                        r"refusing to unpickle (posix|os|nt)\.system"):
        load_dataset(cfg, "train")
    assert not marker.exists()
    assert len(load_dataset(replace(cfg, load_size=8), "test")) == 2  # the other split's pickles are fine


def test_hostile_pickle_through_the_cli_exits_2(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    files, _ = make_cub(embeddings_pickle=pickle.dumps({"emb": Evil(marker)}, protocol=4))
    src = tmp_path / "birds-src"
    src.mkdir()
    for name, body in files.items():
        (src / name).write_bytes(body)
    monkeypatch.chdir(tmp_path)
    Path("cub.yaml").write_text(yaml.safe_dump({
        "experiment": {"name": "cub-hostile"},
        "data": {"dataset": "cub200", "source": str(src), "download": False, "load_size": 16},
        "train": {"steps": 2, "batch_size": 2},
    }))
    assert cli.main(["train", "--local", "cub.yaml", "--storage", "results", "--quiet"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "birds/train/char-CNN-RNN-embeddings.pickle: refusing to unpickle" in err, err[-2000:]
    assert not marker.exists()


def _rezip(raw: bytes, drop: str = "", replace_with: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if name != drop:
                dst.writestr(name, (replace_with or {}).get(name, src.read(name)))
    return out.getvalue()


def test_local_source_and_malformed_files_name_the_file(tmp_path, cache):
    files, _ = make_cub()
    src = tmp_path / "src"
    src.mkdir()
    cfg = DataConfig(dataset="cub200", source=str(src), cache_dir=str(cache), download=False, load_size=8)

    def write(**changed: bytes) -> None:
        for name, body in {**files, **changed}.items():
            (src / name).write_bytes(body)

    write()
    assert load_dataset(cfg, "test").x.shape == (2, 3, 8, 8) and files_under(cache) == []  # read in place
    key = IMAGES[3][0]
    write(**{TEXT_ARCHIVE: _rezip(files[TEXT_ARCHIVE], replace_with={f"birds/text_c10/{key}.txt": b"one\n\ntwo\n"})})
    with pytest.raises(DataError, match=rf"birds/text_c10/{key}.txt has 2 captions, expected 10"):
        load_dataset(cfg, "test")
    write(**{TEXT_ARCHIVE: _rezip(files[TEXT_ARCHIVE], drop="birds/test/class_info.pickle")})
    with pytest.raises(DataError, match=r"birds.zip lacks birds/test/class_info.pickle"):
        load_dataset(cfg, "test")
    write(**{TEXT_ARCHIVE: _rezip(files[TEXT_ARCHIVE], replace_with={
        "birds/test/char-CNN-RNN-embeddings.pickle": pickle.dumps(np.zeros((3, 10, 1024), np.float32))})})
    with pytest.raises(DataError, match=r"shape \(3, 10, 1024\), expected \[2, T, E\]"):
        load_dataset(cfg, "test")
    write(**{TEXT_ARCHIVE: b"not a zip"})
    with pytest.raises(DataError, match="birds.zip is not a readable zip"):
        load_dataset(cfg, "test")
    (src / IMAGES_ARCHIVE).unlink()
    write(**{IMAGES_ARCHIVE: _tar({"CUB_200_2011/images.txt": b"1 a/b.jpg\n"})})
    with pytest.raises(DataError, match=r"CUB_200_2011.tgz lacks CUB_200_2011/bounding_boxes.txt, "
                                        r"CUB_200_2011/classes.txt, CUB_200_2011/images/200"):
        load_dataset(cfg, "test")
