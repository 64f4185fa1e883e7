"""Inception metrics (FID, KID, IS through torch-fidelity) and their weights file.

Everywhere: the weights file downloaded from a real HTTP server on 127.0.0.1 (sha256 checked,
cached, wrong bytes refused, a tampered cache file refused on every use), eval.inception_weights
as a path and as an s3:// object (moto on loopback; read from the bucket once), outages (a
mirror or bucket on a port nothing listens on: exit 1, also through `ganray train` and `ganray
sweep`) and an unusable cache folder (exit 2), the config errors (grey data, an http:// weights
"path"), and `ganray eval --inception` where torch-fidelity is missing (exit 2, saying what to
install). With a stand-in for torch-fidelity's network (FakeFidelity): the loader gets the
verified bytes, not a path that can be swapped, and concurrent trials compute the real
features once (the flock).

The tests marked `fidelity` need torch-fidelity: `make test-fid` runs them (`-m fidelity`) in
.venv-fid (torch 2.14.1 + torchvision 0.29.1; PyPI's torchvision does not import beside the CPU
torch of .venv), with GANRAY_REQUIRE_FIDELITY=1 so that they fail rather than skip — the real path end to end
on CIFAR-shaped data: torch-fidelity's FeatureExtractorInceptionV3 and its KID and IS functions,
`ganray eval --inception`, a trial's final evaluation (`ganray train --local`), the report's columns.

The real weights (95 MB, a GitHub release) cannot be downloaded on these machines: the tests make
a weights file — the state dict of a FeatureExtractorInceptionV3 with seeded random weights — and
set the published sha256 to that file's, as tests/test_data.py does for datasets. Untested here:
the real file's bytes and sha256, and FID/KID/IS values with the real weights.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import socket
import threading
import time
import types
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import yaml
from test_data import FileServer, files_under, make_cifar_tarball

from ganray import evaluate, storage, sweep
from ganray.args import load_config
from ganray.artifacts import reader
from ganray.cli import main as ganray_main
from ganray.config import Config, ConfigError, DataConfig
from ganray.data import IMAGE_SHAPES, DataUnavailable, load_dataset
from ganray.data import download as dl
from ganray.data.cifar10 import TARBALL
from ganray.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput
from ganray.metrics import RGB_DATASETS, inception
from ganray.metrics.fcd import frechet_distance
from ganray.metrics.inception import (
    WEIGHTS_KEY,
    WEIGHTS_NAME,
    InceptionError,
    InceptionScorer,
    InceptionUnavailable,
    weights_file,
)
from ganray.metrics.kid import kid_subsets
from ganray.storage import retry

try:
    import torch_fidelity  # noqa: F401

    NO_FIDELITY = ""
except Exception as e:  # noqa: BLE001 (ImportError, or torchvision's RuntimeError beside another torch)
    NO_FIDELITY = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

_skip_without_fidelity = pytest.mark.skipif(
    bool(NO_FIDELITY) and not os.environ.get("GANRAY_REQUIRE_FIDELITY"),
    reason=f"torch-fidelity cannot be imported here ({NO_FIDELITY}); `make test-fid` runs these tests in .venv-fid")


def needs_fidelity(test):
    """A test of torch-fidelity itself: marked `fidelity` (`make test-fid` runs only these, `-m fidelity`,
    in .venv-fid), skipped where it cannot be imported unless GANRAY_REQUIRE_FIDELITY is set."""
    return pytest.mark.fidelity(_skip_without_fidelity(test))


MIRROR_ENV = dl.mirror_env_var(WEIGHTS_KEY)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    """No mirror or cache variable leaks in; the Inception passes get both cores (other test
    modules set torch to one thread when they are imported)."""
    for var in (MIRROR_ENV, "GANRAY_CACHE"):
        monkeypatch.delenv(var, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, os.cpu_count() or 2))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.stop()


def expected_of(body: bytes) -> dl.Expected:
    return dl.Expected(len(body), hashlib.sha256(body).hexdigest())


def publish(monkeypatch, expected: dl.Expected) -> None:
    """Make `expected` the published size and sha256 of the weights file."""
    monkeypatch.setitem(dl.CHECKSUMS, WEIGHTS_KEY, {WEIGHTS_NAME: expected})


def config(**keys) -> Config:
    return Config().replace(**{"data.dataset": "cifar10", "eval.inception": True, **keys})


BODY = bytes(range(256)) * 40  # stands in for the weights where only the bytes matter


# ---- the weights file: download, cache, path, bucket ---------------------------------------------


def test_a_cached_file_of_the_published_size_is_checked_against_the_published_sha256(server, tmp_path, monkeypatch):
    """The published constants themselves (no publish()): a file of exactly 95,628,359 bytes in
    the cache (zeros) is not the weights file. It used to be returned on its size alone, and then
    unpickled by torch-fidelity; now it is refused, named, and left for someone to look at."""
    expected = dl.CHECKSUMS[WEIGHTS_KEY][WEIGHTS_NAME]
    cache = tmp_path / "cache" / WEIGHTS_KEY / WEIGHTS_NAME
    cache.parent.mkdir(parents=True)
    with open(cache, "wb") as f:
        f.truncate(expected.size)  # sparse: 95 MB of zeros
    monkeypatch.setenv(MIRROR_ENV, server.serve("weights", {}))
    with pytest.raises(InceptionError) as err:
        weights_file(config(**{"data.cache_dir": str(tmp_path / "cache")}))
    msg = str(err.value)
    assert f"the cached {cache} is not the Inception weights file" in msg, msg
    assert f"sha256 {hashlib.sha256(bytes(expected.size)).hexdigest()}" in msg
    assert f"expected 95,628,359 bytes with sha256 {expected.sha256}" in msg and "delete it" in msg
    assert server.requests == [] and cache.stat().st_size == expected.size  # refused, not replaced


@needs_fidelity
def test_the_published_weights_are_the_file_torch_fidelity_downloads_itself():
    """Our URL and sha256 against torch-fidelity's and torch.hub's: its URL_INCEPTION_V3 is our
    release mirror + name, and the name's hash prefix (what torch.hub checks) starts our sha256."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe  # noqa: PLC0415

    assert fe.URL_INCEPTION_V3 == dl.MIRRORS[WEIGHTS_KEY][0] + WEIGHTS_NAME
    prefix = torch.hub.HASH_REGEX.search(WEIGHTS_NAME).group(1)
    assert len(prefix) == 8 and dl.CHECKSUMS[WEIGHTS_KEY][WEIGHTS_NAME].sha256.startswith(prefix)


def test_a_tampered_cache_file_of_the_right_size_is_refused_every_time(server, tmp_path, monkeypatch):
    """The cache is verified on every use, not only when it is written."""
    publish(monkeypatch, expected_of(BODY))
    monkeypatch.setenv(MIRROR_ENV, server.serve("weights", {WEIGHTS_NAME: BODY}))
    cfg = config(**{"data.cache_dir": str(tmp_path / "cache")})
    path = weights_file(cfg)  # downloaded, verified
    path.write_bytes(BODY[:-1] + b"x")  # the same size, other bytes
    for _ in range(2):
        with pytest.raises(InceptionError, match=rf"the cached {path} is not the Inception weights file") as err:
            weights_file(cfg)
        assert isinstance(err.value, BadInput)  # exit 2
    assert server.requests == [f"/weights/{WEIGHTS_NAME}"] and path.read_bytes() == BODY[:-1] + b"x"
    path.unlink()  # after looking: deleted, so downloaded again
    assert weights_file(cfg).read_bytes() == BODY


def test_download_from_loopback_is_verified_cached_and_not_repeated(server, tmp_path, monkeypatch):
    publish(monkeypatch, expected_of(BODY))
    monkeypatch.setenv(MIRROR_ENV, server.serve("weights", {WEIGHTS_NAME: BODY}))
    # data.mirror is the dataset's: the weights must not be fetched from there
    cfg = config(**{"data.cache_dir": str(tmp_path / "cache"), "data.mirror": server.url + "/dataset-mirror/"})
    path = weights_file(cfg)
    assert path == tmp_path / "cache" / WEIGHTS_KEY / WEIGHTS_NAME and path.read_bytes() == BODY
    assert weights_file(cfg) == path  # from the cache
    assert server.requests == [f"/weights/{WEIGHTS_NAME}"]


def test_wrong_bytes_from_the_mirror_are_refused_and_leave_no_file(server, tmp_path, monkeypatch):
    publish(monkeypatch, expected_of(BODY))
    wrong = bytes(reversed(BODY))  # the same size, other bytes
    monkeypatch.setenv(MIRROR_ENV, server.serve("weights", {WEIGHTS_NAME: wrong}))
    cfg = config(**{"data.cache_dir": str(tmp_path / "cache")})
    with pytest.raises(InceptionError, match=r"eval.inception_weights: unset, and .*checksum mismatch") as err:
        weights_file(cfg)
    assert isinstance(err.value, BadInput)  # exit 2
    assert files_under(tmp_path / "cache") == []
    monkeypatch.setenv(MIRROR_ENV, server.url + "/nothing-here/")  # a 404 names the file and the way out
    with pytest.raises(InceptionError, match=rf"HTTP 404.*set eval.inception_weights to a local copy.*{MIRROR_ENV}"):
        weights_file(cfg)


def test_no_download_and_not_cached_is_a_clear_error(tmp_path):
    cfg = config(**{"data.cache_dir": str(tmp_path / "cache"), "data.download": False})
    with pytest.raises(InceptionError, match=r"not in the cache .* data.download is false; set eval.inception_weights"):
        weights_file(cfg)


def test_a_weights_path_is_checked_against_the_published_sha256(tmp_path, monkeypatch):
    publish(monkeypatch, expected_of(BODY))
    good, bad = tmp_path / "good.pth", tmp_path / "bad.pth"
    good.write_bytes(BODY)
    bad.write_bytes(BODY[:-1] + b"x")
    cache = str(tmp_path / "cache")
    assert weights_file(config(**{"eval.inception_weights": str(good), "data.cache_dir": cache})) == good
    with pytest.raises(InceptionError, match=r"eval.inception_weights: .*missing.pth: file not found"):
        weights_file(config(**{"eval.inception_weights": str(tmp_path / "missing.pth")}))
    with pytest.raises(InceptionError, match=rf"bad.pth is not the Inception weights file {WEIGHTS_NAME}: sha256 "):
        weights_file(config(**{"eval.inception_weights": str(bad), "data.cache_dir": cache}))
    assert files_under(tmp_path / "cache") == []  # a path is read where it is


def test_a_weights_object_in_a_bucket_is_copied_into_the_cache_once_verified(s3_bucket, tmp_path, monkeypatch):
    """A real S3 server (moto) on loopback."""
    publish(monkeypatch, expected_of(BODY))
    storage.put_bytes(f"{s3_bucket}/models/{WEIGHTS_NAME}", BODY)
    storage.put_bytes(f"{s3_bucket}/models/other.pth", BODY[::-1])
    cache = tmp_path / "cache"
    cfg = config(**{"eval.inception_weights": f"{s3_bucket}/models/{WEIGHTS_NAME}", "data.cache_dir": str(cache)})
    path = weights_file(cfg)
    assert path == cache / WEIGHTS_KEY / WEIGHTS_NAME and path.read_bytes() == BODY
    # the next use (each trial after the driver's preflight) reads the cache: the object is not fetched again
    storage.backend(s3_bucket).client().delete_object(Bucket=s3_bucket[len("s3://"):],
                                                      Key=f"models/{WEIGHTS_NAME}")
    assert weights_file(cfg) == path and path.read_bytes() == BODY
    path.unlink()
    with pytest.raises(InceptionError, match=r"models/other.pth is not the Inception weights file"):
        weights_file(config(**{"eval.inception_weights": f"{s3_bucket}/models/other.pth", "data.cache_dir": str(cache)}))
    with pytest.raises(InceptionError, match=r"eval.inception_weights: s3://.*/models/gone.pth: not found"):
        weights_file(config(**{"eval.inception_weights": f"{s3_bucket}/models/gone.pth", "data.cache_dir": str(cache)}))
    assert files_under(cache) == []


def _refusing_url() -> str:
    """http://127.0.0.1:<a port nothing listens on>/"""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def no_retry_pauses(monkeypatch):
    """The download's retries without their seconds of backoff."""
    monkeypatch.setattr(retry, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=lambda s: None))


def test_an_unreachable_mirror_is_an_outage_and_an_unusable_cache_bad_input(tmp_path, monkeypatch, no_retry_pauses):
    publish(monkeypatch, expected_of(BODY))
    monkeypatch.setenv(MIRROR_ENV, _refusing_url())
    with pytest.raises(InceptionUnavailable, match=r"^eval.inception_weights: unset, and inception: could not "
                       r"download .*Connection refused.*gave up after 3 attempts.*GANRAY_MIRROR_INCEPTION") as err:
        weights_file(config(**{"data.cache_dir": str(tmp_path / "cache")}))
    assert isinstance(err.value, DataUnavailable) and not isinstance(err.value, BadInput)  # exit 1
    assert "\n" not in str(err.value)
    (tmp_path / "a-file").write_text("not a folder")
    for weights in ("", "s3://bucket/models/w.pth"):  # the cache folder cannot be made: exit 2, naming it
        with pytest.raises(InceptionError, match=r"eval.inception_weights: .*cannot (use|create) the cache "
                           r"folder .*a-file/cache/inception \(data.cache_dir"):
            weights_file(config(**{"data.cache_dir": str(tmp_path / "a-file" / "cache"),
                                   "eval.inception_weights": weights}))


def test_a_bucket_that_cannot_be_reached_is_an_outage(tmp_path, monkeypatch):
    publish(monkeypatch, expected_of(BODY))
    for var, value in {"AWS_ENDPOINT_URL": _refusing_url().rstrip("/"), "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                       storage.RETRY_ENV: "0"}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(InceptionUnavailable, match=r"eval.inception_weights: cannot download s3://bucket/w.pth: "):
        weights_file(config(**{"data.cache_dir": str(tmp_path / "cache"), "eval.inception_weights": "s3://bucket/w.pth"}))
    assert files_under(tmp_path / "cache") == []


class FakeFidelity:
    """torch-fidelity where only ganray's plumbing is under test: an extractor that records the
    weights it is handed and counts its passes (slow ones, so that two callers overlap)."""

    def __init__(self):
        self.loaded: list[bytes] = []
        self.passes = 0
        self.before_load = lambda: None
        fake = self

        class Extractor(torch.nn.Module):
            def __init__(self, name, features, feature_extractor_weights_path=None):
                super().__init__()
                fake.before_load()
                src = feature_extractor_weights_path  # what torch-fidelity would torch.load
                fake.loaded.append(src.read() if hasattr(src, "read") else Path(src).read_bytes())

            def forward(self, x):
                fake.passes += 1
                time.sleep(0.5)
                pool = x.float().mean((2, 3)).repeat(1, 683)[:, :2048]
                return pool, torch.zeros(x.shape[0], 1008)

        self.tf = dict(Extractor=Extractor, kid=None, isc=None, KID=None, ISC=None)


@pytest.fixture
def fake_fidelity(monkeypatch) -> FakeFidelity:
    fake = FakeFidelity()
    monkeypatch.setattr(inception, "import_fidelity", lambda: fake.tf)
    return fake


def test_torch_fidelity_loads_the_bytes_that_were_verified_not_the_path_again(fake_fidelity, tmp_path, monkeypatch):
    """Between the check and torch-fidelity's torch.load (a pickle) the file is swapped: the
    swapped bytes never reach the loader, which gets the verified bytes in memory."""
    publish(monkeypatch, expected_of(BODY))
    path = tmp_path / "w.pth"
    path.write_bytes(BODY)
    fake_fidelity.before_load = lambda: path.write_bytes(bytes(reversed(BODY)))  # same size, other bytes
    InceptionScorer(config(**{"eval.inception_weights": str(path), "data.cache_dir": str(tmp_path / "c")}),
                    torch.zeros(4, 3, 8, 8))
    assert fake_fidelity.loaded == [BODY]


def test_trials_finishing_together_compute_the_real_features_once(fake_fidelity, tmp_path, monkeypatch):
    """Two trials on one node (threads here; the lock is a flock on a file, as between processes)
    reach their final evaluation together: one computes the real features, the other waits for it
    and reads its file."""
    publish(monkeypatch, expected_of(BODY))
    (tmp_path / "w.pth").write_bytes(BODY)
    cfg = config(**{"eval.inception_weights": str(tmp_path / "w.pth"), "data.cache_dir": str(tmp_path / "cache")})
    real = _smooth_images(10, seed=0)
    scorers = [InceptionScorer(cfg, real) for _ in range(2)]
    start, got = threading.Barrier(2), [None, None]

    def trial(i):
        start.wait()
        got[i] = scorers[i].real_features()

    threads = [threading.Thread(target=trial, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert fake_fidelity.passes == 1  # 10 images: one pass, by one of the two
    assert got[0] is not None and torch.equal(got[0], got[1]) and got[0].shape == (10, 2048)
    (kept,) = (tmp_path / "cache" / WEIGHTS_KEY).glob("real-*.pt")
    assert torch.equal(torch.load(kept, weights_only=True), got[0])
    assert InceptionScorer(cfg, real).real_features().shape == (10, 2048) and fake_fidelity.passes == 1


def test_train_and_sweep_with_an_unreachable_weights_mirror_exit_1_in_one_line(fake_fidelity, tmp_path, monkeypatch,
                                                                                capsys, no_retry_pauses):
    """The driver's preflight, as a user types the commands: stacked-mnist (RGB, made offline),
    $GANRAY_MIRROR_INCEPTION on a port nothing listens on. Exit 1 and one error line, before any
    training, and before Ray starts for the sweep."""
    monkeypatch.setenv(MIRROR_ENV, _refusing_url())
    monkeypatch.chdir(tmp_path)
    common = ["--set", "data.dataset=stacked-mnist", "--set", "eval.inception=true", "--set", "data.cache_dir=cache",
              "--storage", str(tmp_path / "results")]

    def run_sweep(cfg, write_report=True):
        raise AssertionError("the sweep started")

    monkeypatch.setattr(sweep, "run_sweep", run_sweep)
    for argv in (["train", "--local", "--quiet", str(ROOT / "configs" / "zdim_mnist_local.yaml"), *common],
                 ["sweep", "--smoke", *common]):
        assert ganray_main(argv) == EXIT_FAILED, argv
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert line.startswith("error: run failed: eval.inception_weights: unset, and inception: could not download ")
        assert "Connection refused" in line and MIRROR_ENV in line and "Traceback" not in err, err
        assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("trials"))


# ---- config errors -----------------------------------------------------------------------------------


def test_inception_is_for_rgb_datasets_and_says_so_when_the_config_loads():
    assert set(RGB_DATASETS) == {d for d, shape in IMAGE_SHAPES.items() if shape[0] == 3}
    for dataset in ("mnist5k", "fashion-mnist", "ring8"):
        with pytest.raises(ConfigError, match=rf"eval.inception: FID, KID and IS need RGB images .*'{dataset}'"):
            load_config(None, {"eval.inception": True, "data.dataset": dataset})
    with pytest.raises(ConfigError, match=r"eval.inception: needs the evaluation .* eval.metrics is empty"):
        load_config(None, {"eval.inception": True, "data.dataset": "cifar10", "eval.metrics": []})
    with pytest.raises(ConfigError, match=r"eval.inception_weights: expected a local path or an s3:// or gs:// URI"):
        load_config(None, {"eval.inception_weights": "https://example.org/w.pth"})
    assert load_config(None, {"eval.inception": True, "data.dataset": "cifar10"}).eval.inception


def test_eval_inception_on_grey_digits_exits_2(tmp_path, capsys):
    np.save(tmp_path / "grey.npy", np.zeros((10, 1, 28, 28), np.float32))
    assert evaluate.main([str(tmp_path / "grey.npy"), "--dataset", "mnist5k", "--inception"]) == EXIT_BAD_INPUT
    assert "eval.inception: FID, KID and IS need RGB images" in capsys.readouterr().err


def _cifar_folder(root: Path, seed: int = 1) -> Path:
    """A data.source folder with a CIFAR-10 tarball of the official layout: 10 train images."""
    root.mkdir(parents=True, exist_ok=True)
    (root / TARBALL).write_bytes(make_cifar_tarball(per_batch=2, seed=seed)[0])
    return root


@pytest.mark.skipif(not NO_FIDELITY, reason="torch-fidelity imports here: the error it answers cannot happen")
def test_eval_inception_without_torch_fidelity_exits_2_and_says_what_to_install(tmp_path, capsys):
    src = _cifar_folder(tmp_path / "cifar")
    real = load_dataset(DataConfig(dataset="cifar10", source=str(src), download=False), "train").x
    np.save(tmp_path / "samples.npy", real.numpy())
    rc = evaluate.main([str(tmp_path / "samples.npy"), "--dataset", "cifar10", "--inception",
                        "--set", f"data.source={src}", "--set", "eval.metrics=[sample_diversity]"])
    err = capsys.readouterr().err
    assert rc == EXIT_BAD_INPUT and "eval.inception: torch-fidelity" in err, err
    assert "pip install -e '.[fid]' in the ganray checkout" in err or "cannot be imported" in err


# ---- the real path: torch-fidelity's network on CIFAR-shaped images ---------------------------------


@pytest.fixture(scope="module")
def made_weights(tmp_path_factory) -> tuple[Path, dl.Expected]:
    """A weights file torch-fidelity loads like the real one: the state dict of its own
    FeatureExtractorInceptionV3, seeded random weights (variance-preserving, so that the pool
    features stay O(1) through its 94 layers; PyTorch's default init leaves them at 1e-8)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe  # noqa: PLC0415

    torch.manual_seed(0)
    with mock.patch.object(fe, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])  # no download: nothing loaded
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=m.in_features ** -0.5)
    path = tmp_path_factory.mktemp("inception") / WEIGHTS_NAME
    torch.save(net.state_dict(), path)
    return path, expected_of(path.read_bytes())


def _smooth_images(n: int, seed: int) -> torch.Tensor:
    """CIFAR-shaped images [n, 3, 32, 32] in [-1, 1] with structure: random 4 x 4 colour fields, upsampled."""
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8
    return torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)


@needs_fidelity
def test_fid_of_a_set_against_itself_is_zero_and_against_a_shifted_set_larger(made_weights, tmp_path, monkeypatch):
    path, expected = made_weights
    publish(monkeypatch, expected)
    cfg = config(**{"eval.inception_weights": str(path), "data.cache_dir": str(tmp_path / "cache")})
    a = _smooth_images(10, seed=0)
    scorer = InceptionScorer(cfg, a)
    same = scorer(a)
    shifted = scorer((a + 0.5).clamp(-1, 1))  # brighter
    other = scorer(_smooth_images(10, seed=1))  # the same distribution, other images
    assert set(same) == {"fid", "kid_inception", "kid_inception_std", "inception_score", "inception_score_std"}
    assert all(math.isfinite(v) for m in (same, shifted, other) for v in m.values())
    assert shifted["fid"] > 0 and same["fid"] <= 1e-6 * shifted["fid"], (same, shifted)
    assert other["fid"] > 100 * same["fid"] and shifted["fid"] > 2 * other["fid"]
    # KID of a set against itself: the unbiased estimator's own value, slightly below 0, far below the shift's
    # (every subset is the whole set: the std is torch-fidelity's float32 rounding)
    assert same["kid_inception"] < 0.05 * shifted["kid_inception"]
    assert same["kid_inception_std"] < 1e-4 * shifted["kid_inception"]
    assert same["inception_score"] >= 1.0  # exp(E KL) ≥ 1
    # the real images' features were kept in the cache, keyed by the images and the weights
    (kept,) = (tmp_path / "cache" / WEIGHTS_KEY).glob("real-*.pt")
    assert torch.load(kept, weights_only=True).shape == (10, 2048)
    with pytest.raises(InceptionError, match="are not RGB images"):
        scorer(torch.zeros(4, 1, 32, 32))


@needs_fidelity
def test_ganrays_fid_and_kid_agree_with_torch_fidelitys_own_functions():
    """FID: ganray's frechet_distance (two symmetric eigendecompositions) against torch-fidelity's
    fid_statistics_to_metric (eigenvalues of Σ_1 Σ_2); KID in classifier features (ganray's
    indicator-matrix sums) against torch-fidelity's kid_features_to_metric, on the same subsets."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric  # noqa: PLC0415
    from torch_fidelity.metric_kid import kid_features_to_metric  # noqa: PLC0415

    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(300, 64, generator=g, dtype=torch.float64)
    f2 = torch.randn(300, 64, generator=g, dtype=torch.float64) * 1.2 + 0.3
    s1, s2 = fid_features_to_statistics(f1), fid_features_to_statistics(f2)
    theirs = fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"]
    ours = frechet_distance(f1.mean(0), torch.cov(f1.T), f2.mean(0), torch.cov(f2.T))
    assert ours == pytest.approx(theirs, rel=1e-9)
    # subsets as large as the sets: every subset is the whole set, whatever either side draws
    theirs = kid_features_to_metric(f1, f2, kid_subsets=3, kid_subset_size=300, verbose=False)
    ours, std = kid_subsets(f1, f2, subsets=3, subset_size=300)
    assert ours == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9) and std == pytest.approx(0)


@needs_fidelity
def test_eval_inception_end_to_end_on_cifar_shaped_data(made_weights, server, tmp_path, monkeypatch, capsys):
    """`ganray eval SAMPLES.npy --inception` as a user types it, in a folder of its own (relative
    paths): the weights downloaded once from a mirror on 127.0.0.1, the real features kept."""
    path, expected = made_weights
    publish(monkeypatch, expected)
    monkeypatch.setenv(MIRROR_ENV, server.serve("weights", {WEIGHTS_NAME: path.read_bytes()}))
    monkeypatch.chdir(tmp_path)
    _cifar_folder(tmp_path / "cifar")
    real = load_dataset(DataConfig(dataset="cifar10", source="cifar", download=False), "train").x
    np.save("samples.npy", real.numpy())  # the 10 training images themselves
    np.save("brighter.npy", (real + 0.5).clamp(-1, 1).numpy())
    common = ["--dataset", "cifar10", "--inception", "--json", "--set", "data.source=cifar",
              "--set", "data.cache_dir=cache", "--set", "eval.metrics=[sample_diversity]"]

    assert evaluate.main(["samples.npy", *common]) == EXIT_OK
    same = json.loads(capsys.readouterr().out)["metrics"]
    (kept,) = Path("cache", WEIGHTS_KEY).glob("real-*.pt")
    computed_at = kept.stat().st_mtime_ns
    assert evaluate.main(["brighter.npy", *common]) == EXIT_OK
    brighter = json.loads(capsys.readouterr().out)["metrics"]
    for m in (same, brighter):
        assert all(isinstance(m[k], float) for k in ("fid", "kid_inception", "inception_score", "spread_ratio"))
    assert same["fid"] <= 1e-6 * brighter["fid"] and brighter["kid_inception"] > same["kid_inception"]
    assert server.requests == [f"/weights/{WEIGHTS_NAME}"]  # downloaded once, then from the cache
    assert kept.stat().st_mtime_ns == computed_at  # the real features were read back, not recomputed

    assert evaluate.main(["samples.npy", *common, "--set", "eval.inception_weights=missing.pth"]) == EXIT_BAD_INPUT
    assert "eval.inception_weights: missing.pth: file not found" in capsys.readouterr().err


@needs_fidelity
def test_a_trials_final_evaluation_scores_inception_and_the_report_shows_it(made_weights, tmp_path, monkeypatch,
                                                                            capsys):
    """`ganray train --local` with eval.inception: FID, KID, IS in the last evaluation's row only;
    then `ganray report` shows them as columns."""
    path, expected = made_weights
    publish(monkeypatch, expected)
    monkeypatch.chdir(tmp_path)
    _cifar_folder(tmp_path / "cifar", seed=2)
    Path("cifar.yaml").write_text(yaml.safe_dump({
        "experiment": {"name": "cifar-inception"},
        "data": {"dataset": "cifar10", "source": "cifar", "cache_dir": "cache"},
        "model": {"width": 0.125},
        # evaluations at 3 and 4 (the last step): Inception at 4 only
        "train": {"steps": 4, "batch_size": 4, "log_every": 2, "eval_every": 3, "sample_every": 3,
                  "checkpoint_every": 5},
        "eval": {"n": 10, "n_fixed_z": 8, "metrics": ["sample_diversity"], "inception": True,
                 "inception_weights": str(path)},
    }))
    assert ganray_main(["train", "--local", "cifar.yaml", "--storage", "results", "--quiet"]) == EXIT_OK
    rows = reader.read_rows("results/cifar-inception/trials/train")
    evaluated = {r["step"]: r for r in rows if "spread_ratio" in r}
    assert sorted(evaluated) == [3, 4]
    assert "fid" not in evaluated[3]
    final = evaluated[4]
    assert all(math.isfinite(final[k]) for k in ("fid", "kid_inception", "kid_inception_std", "inception_score"))

    assert ganray_main(["report", "results/cifar-inception"]) == EXIT_OK
    capsys.readouterr()
    (row,) = csv.DictReader(open("results/cifar-inception/trials.csv"))
    assert float(row["fid"]) == pytest.approx(final["fid"]) and row["kid"] == ""  # kid: not in eval.metrics
    assert float(row["inception_score"]) == pytest.approx(final["inception_score"])
    header = next(ln for ln in Path("results/cifar-inception/report.md").read_text().splitlines()
                  if ln.startswith("| trial"))
    assert "| fid | kid inception | inception score |" in header, header

    # the same run without the file it names: exit 2 before training starts
    Path("cifar.yaml").write_text(Path("cifar.yaml").read_text().replace(str(path), "gone.pth"))
    assert ganray_main(["train", "--local", "cifar.yaml", "--storage", "results2", "--quiet"]) == EXIT_BAD_INPUT
    assert "eval.inception_weights: gone.pth: file not found" in capsys.readouterr().err
    assert not Path("results2/cifar-inception/trials").exists()
