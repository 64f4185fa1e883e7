"""Inception metrics: FID, KID and Inception Score with the standard Inception network, through
torch-fidelity (`pip install -e '.[fid]'` in the ganray checkout): its FeatureExtractorInceptionV3
is the TF Inception of 2015-12-05 ported to PyTorch with TF's resize, so the numbers match the published ones.

  FID = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^½)            Gaussian fits of the 2048-d pool features
                                                              (Heusel et al. 2017)
  KID = mean over subsets of MMD²_u with k(x, y) = (xᵀy/d + 1)³  in the same features (Bińkowski et al.
                                                              2018; ganray/metrics/kid.py writes it out)
  IS  = exp(E_x KL(p(y|x) ‖ p(y)))                            over the 1008 'logits_unbiased', mean ± std
                                                              over 10 splits (Salimans et al. 2016)

on eval.n generated and up to eval.n_real real images. KID and IS are torch-fidelity's own
functions (kid_features_to_metric, isc_features_to_metric); FID is ganray's `frechet_distance`
(the one FCD uses): the same formula as torch-fidelity's fid_statistics_to_metric, with
Tr (Σ_r Σ_g)^½ = Σ √eig(Σ_r^½ Σ_g Σ_r^½) from two symmetric eigendecompositions instead of the
eigenvalues of a general 2048 x 2048 product (25 s on a 2-core CPU; tests/test_inception.py checks
that the two agree). Images in [-1, 1] become the uint8 0..255 pixels torch-fidelity expects:
round((x + 1) · 127.5). The real images' features are computed once and kept in the cache
(<cache>/inception/real-<sha256 of the images>-<weights>.pt; about 0.13 s an image on a CPU, 20
minutes for 10,000): trials finishing together on one node take a file lock beside it, so one
computes and the others wait and read it.

RGB only: a 1-channel dataset with eval.inception is a config error (config_metric_errors),
not a silent replication of the grey channel — ImageNet features of grey digits are not
comparable with anyone's FID; the dataset's own classifier (fcd, kid) is the measure there.

The weights (95,628,359 bytes, sha256 in ganray.data.download.CHECKSUMS["inception"]):
  eval.inception_weights a path  that local file
  else the cache                 <cache>/inception/<name>, <cache> as for datasets (data.cache_dir,
                                 $GANRAY_CACHE, ~/.cache/ganray)
  else a copy into the cache     of the s3:// gs:// object eval.inception_weights names, else
                                 (data.download) downloaded from $GANRAY_MIRROR_INCEPTION or
                                 torch-fidelity's release; verified before it is renamed there.
Every use (the driver's preflight, each trial) reads the file once and checks its sha256 (0.3 s),
cache hits included, and torch-fidelity, which unpickles it (torch.load(weights_only=False)), gets
those verified bytes in memory, never a path it could reopen after someone swapped the file. A
cached file with other bytes is refused, not replaced (ganray writes only verified bytes there).
A missing or wrong file, or a cache that cannot be written, is an InceptionError (exit 2) naming
the key; a download or bucket outage an InceptionUnavailable (exit 1); never a silent skip.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ganray import storage
from ganray.config import Config
from ganray.data import DataError, DataUnavailable
from ganray.data import download as dl
from ganray.exits import BadInput
from ganray.metrics.fcd import frechet_distance, sqrtm_psd

log = logging.getLogger(__name__)

WEIGHTS_KEY = "inception"  # the download tables' key (ganray.data.download.MIRRORS / CHECKSUMS)
WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
FEATURES = ("2048", "logits_unbiased")  # torch-fidelity's layers for FID/KID and for IS
SIGNALS = ("fid", "kid_inception", "kid_inception_std", "inception_score", "inception_score_std")
RGB_CHANNELS = 3
BATCH = 50  # images per Inception forward pass (299 x 299 inside)
KID_SUBSETS, KID_SUBSET_SIZE, IS_SPLITS = 100, 1000, 10  # torch-fidelity's defaults


class InceptionError(BadInput, ValueError):
    """eval.inception cannot be served: torch-fidelity missing, weights missing or wrong, not RGB. Exit 2."""


class InceptionUnavailable(DataUnavailable):
    """The weights could not be fetched: their download server or bucket kept failing (or refused).
    A failure of the run (exit 1: "run failed"), as a dataset's download outage is; not bad input."""


def import_fidelity() -> dict[str, Any]:
    """torch-fidelity's extractor and metric functions, or an InceptionError saying how to get them."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3  # noqa: PLC0415
        from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric  # noqa
        from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric  # noqa
    except ImportError as e:
        raise InceptionError(f"eval.inception: torch-fidelity is not installed ({e}); pip install -e '.[fid]' in the ganray checkout") from e
    except Exception as e:  # noqa: BLE001 (torchvision built for another torch raises RuntimeError on import)
        raise InceptionError(
            f"eval.inception: torch-fidelity cannot be imported: {type(e).__name__}: {e} (its torchvision must be "
            f"the build made for this torch, {torch.__version__})") from e
    return dict(Extractor=FeatureExtractorInceptionV3, kid=kid_features_to_metric, isc=isc_features_to_metric,
                KID=(KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD), ISC=(KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD))


# ---- the weights file --------------------------------------------------------------------------


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _cache_error(folder: Path, e: OSError) -> InceptionError:
    return InceptionError(f"eval.inception_weights: cannot use the cache folder {folder} (data.cache_dir, "
                          f"$GANRAY_CACHE, ~/.cache/ganray): {e.strerror or e}")


def read_verified(path: Path, where: str, expected: dl.Expected, hint: str = "") -> bytes:
    """The bytes of `path`, read through one open file, once their size and sha256 are the
    published ones: the bytes checked are the bytes used (torch-fidelity gets them, never the path).
    `hint` ends the message of other bytes."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(expected.size + 1) if size == expected.size else b""
    except OSError as e:
        raise InceptionError(f"eval.inception_weights: cannot read {where}: {e.strerror or e}") from e
    sha = hashlib.sha256(data).hexdigest() if len(data) == expected.size else None
    if sha != expected.sha256:
        got = f"sha256 {sha}" if sha else f"{len(data) if data else size:,} bytes"
        raise InceptionError(f"eval.inception_weights: {where} is not the Inception weights file {WEIGHTS_NAME}: "
                             f"{got}, expected {expected.size:,} bytes with sha256 {expected.sha256}{hint}")
    return data


def _cached(cache: Path, expected: dl.Expected) -> bytes:
    """The cache's copy, verified again (0.3 s): ganray writes only verified bytes there, so other
    bytes are refused, not replaced — something else wrote them, and someone should look."""
    return read_verified(cache, f"the cached {cache}", expected,
                         hint=" (ganray writes only verified bytes there: look at it, then delete it to fetch the "
                              "file again, or set eval.inception_weights to a path)")


def _from_uri(uri: str, cache: Path, expected: dl.Expected) -> bytes:
    """An s3:// gs:// object, copied into the cache once its sha256 is the published one."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", suffix=".tmp", dir=cache.parent)  # mode 0600
        os.close(fd)
    except OSError as e:
        raise _cache_error(cache.parent, e) from e
    try:
        try:
            storage.download_file(uri, tmp)
        except storage.StorageNotFoundError as e:
            raise InceptionError(f"eval.inception_weights: {uri}: not found") from e
        except storage.StorageInputError as e:
            raise InceptionError(f"eval.inception_weights: {uri}: {_one_line(e)}") from e
        except storage.StorageError as e:  # the bucket's server kept failing, access refused: not the config's fault
            raise InceptionUnavailable(f"eval.inception_weights: cannot download {uri}: {_one_line(e)}") from e
        except OSError as e:
            raise _cache_error(cache.parent, e) from e
        data = read_verified(Path(tmp), uri, expected)
        try:  # exactly the verified bytes, whole or not at all
            storage.atomic_local_write(str(cache), lambda f: f.write(data))
        except OSError as e:
            raise _cache_error(cache.parent, e) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return data


def verified_weights(cfg: Config) -> tuple[Path, bytes]:
    """(where, bytes) of the Inception weights, their sha256 checked now, on every use:
    eval.inception_weights as a local path; else the cache; else the s3:// gs:// object of
    eval.inception_weights or a download, either copied into the cache. The cache holds the one
    file with the published sha256 whatever its source, so a bucket is read once per machine."""
    expected = dl.expected_for(WEIGHTS_KEY, WEIGHTS_NAME)
    cache = dl.cache_root(cfg.data.cache_dir) / WEIGHTS_KEY / WEIGHTS_NAME
    given = cfg.eval.inception_weights
    uri = given.startswith(("s3://", "gs://"))
    if given and not uri:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InceptionError(f"eval.inception_weights: {given}: file not found (a copy of {WEIGHTS_NAME})")
        return path, read_verified(path, given, expected)
    if cache.is_file():
        return cache, _cached(cache, expected)
    if uri:
        return cache, _from_uri(given, cache, expected)
    if not cfg.data.download:
        raise InceptionError(f"eval.inception_weights: unset, {WEIGHTS_NAME} is not in the cache {cache.parent} and "
                             "data.download is false; set eval.inception_weights to a local copy or s3:// gs:// URI")
    way_out = (f"set eval.inception_weights to a local copy of {WEIGHTS_NAME}, or {dl.mirror_env_var(WEIGHTS_KEY)} "
               "to a mirror")
    try:  # data.mirror is the dataset's: only $GANRAY_MIRROR_INCEPTION or the release serve the weights
        path = dl.download(WEIGHTS_KEY, WEIGHTS_NAME, replace(cfg.data, mirror=""))
    except DataUnavailable as e:  # every server kept failing: exit 1, as for a dataset's download
        raise InceptionUnavailable(f"eval.inception_weights: unset, and {_one_line(e)}; {way_out}") from e
    except DataError as e:
        raise InceptionError(f"eval.inception_weights: unset, and {_one_line(e)}; {way_out}") from e
    except OSError as e:
        raise _cache_error(cache.parent, e) from e
    return path, read_verified(path, f"the downloaded {path}", expected)


def weights_file(cfg: Config) -> Path:
    """Where the verified Inception weights are (see verified_weights)."""
    return verified_weights(cfg)[0]


# ---- features and metrics ----------------------------------------------------------------------


def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] floats -> the 0..255 pixels torch-fidelity takes: round((x + 1) · 127.5)."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def gaussian_fit(features: Tensor) -> tuple[Tensor, Tensor]:
    """(μ, Σ) of features [N, d] in float64: the mean and the unbiased covariance (np.cov's)."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


class InceptionScorer:
    """FID, KID and IS of generated images against `real` ([N, 3, H, W] in [-1, 1]). Built where
    an evaluator starts, so that a missing package or weights file fails before a run; the real
    images' features are computed on the first call (the trial's final evaluation), once per
    set of images and weights (kept in the cache)."""

    def __init__(self, cfg: Config, real: Tensor, device: torch.device | str = "cpu"):
        if real.dim() != 4 or real.shape[1] != RGB_CHANNELS:
            raise InceptionError(f"eval.inception: Inception metrics need RGB images; {cfg.data.dataset} samples have "
                                 f"shape {tuple(real.shape[1:])}")
        self.tf = import_fidelity()
        self.device = torch.device(device)
        self.seed = cfg.experiment.seed
        path, data = verified_weights(cfg)
        try:  # the verified bytes themselves (torch.load takes a file object): no path to reopen or swap
            self.model = self.tf["Extractor"]("inception-v3-compat", list(FEATURES),
                                              feature_extractor_weights_path=io.BytesIO(data)).to(self.device)
        except Exception as e:  # noqa: BLE001 (a file of the right bytes cannot fail; a test's own file can)
            raise InceptionError(f"eval.inception_weights: {path}: torch-fidelity cannot load it: {e}") from e
        del data
        g = torch.Generator().manual_seed(self.seed)  # the same fixed random subset as the reference's
        self.real = to_uint8(real[torch.randperm(real.shape[0], generator=g)[: cfg.eval.n_real]])
        key = hashlib.sha256(self.real.numpy().tobytes()).hexdigest()[:16]
        weights = dl.expected_for(WEIGHTS_KEY, WEIGHTS_NAME).sha256[:8]
        self.real_cache = dl.cache_root(cfg.data.cache_dir) / WEIGHTS_KEY / f"real-{key}-{weights}.pt"
        self._real: tuple[Tensor, ...] | None = None  # pool features, μ_r, Σ_r, Σ_r^½
        log.info("inception: weights %s, %d real images", path, self.real.shape[0])

    @torch.inference_mode()
    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(2048-d pool features, 1008 unbiased logits) of uint8 images x [N, 3, H, W], on CPU."""
        pools, logits = [], []
        for i in range(0, x.shape[0], BATCH):
            pool, logit = self.model(x[i : i + BATCH].to(self.device))
            pools.append(pool.cpu())
            logits.append(logit.cpu())
        return torch.cat(pools), torch.cat(logits)

    def real_features(self) -> Tensor:
        """The real images' pool features: from the cache, else computed and kept there (once per
        machine: trials that finish together wait for the first one's file)."""
        return cached_tensor(self.real_cache, (self.real.shape[0], 2048), lambda: self.features(self.real)[0])

    def __call__(self, samples: Tensor) -> dict[str, float]:
        tf = self.tf
        if samples.dim() != 4 or samples.shape[1] != RGB_CHANNELS:
            raise InceptionError(f"eval.inception: samples of shape {tuple(samples.shape[1:])} are not RGB images")
        if self._real is None:
            pool_r = self.real_features()
            mu_r, sigma_r = gaussian_fit(pool_r)
            self._real = (pool_r, mu_r, sigma_r, sqrtm_psd(sigma_r))
        pool_r, mu_r, sigma_r, sqrt_sigma_r = self._real
        pool_g, logits_g = self.features(to_uint8(samples))
        mu_g, sigma_g = gaussian_fit(pool_g)
        fid = frechet_distance(mu_r, sigma_r, mu_g, sigma_g, sqrt_sigma_r)
        m = min(KID_SUBSET_SIZE, pool_g.shape[0], pool_r.shape[0])
        kid = tf["kid"](pool_g, pool_r, kid_subsets=KID_SUBSETS, kid_subset_size=m, rng_seed=self.seed, verbose=False)
        isc = tf["isc"](logits_g, splits=min(IS_SPLITS, logits_g.shape[0]), shuffle=True, rng_seed=self.seed)
        return {"fid": fid, "kid_inception": kid[tf["KID"][0]], "kid_inception_std": kid[tf["KID"][1]],
                "inception_score": isc[tf["ISC"][0]], "inception_score_std": isc[tf["ISC"][1]]}


def _load_kept(path: Path, shape: tuple[int, ...]) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        kept = torch.load(path, weights_only=True)
        if isinstance(kept, Tensor) and tuple(kept.shape) == shape:
            return kept
        log.warning("cache: %s holds no tensor of shape %s; computing it again", path, shape)
    except Exception as e:  # noqa: BLE001 (a damaged cache file is recomputed)
        log.warning("cache: %s unreadable (%s); computing it again", path, e)
    return None


def cached_tensor(path: Path, shape: tuple[int, ...], compute: Callable[[], Tensor]) -> Tensor:
    """The tensor kept at `path`, else `compute()`, written there atomically. Processes sharing the
    cache (trials on one node reaching their final evaluation together) take an exclusive flock on
    `<path>.lock` around the check, the computation and the write: the first computes (20 minutes
    for 10,000 images on a CPU), the others wait and read its file. A cache that cannot be written
    costs the computation again next time, not the trial."""
    kept = _load_kept(path, shape)
    if kept is not None:
        return kept
    lock_path = path.with_name(path.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(lock_path, "ab")  # never removed: a lock file deleted under a waiter locks nothing
    except OSError as e:
        log.warning("cache: cannot use %s (%s); computing without keeping the result", path.parent, e)
        return compute()
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("cache: another process is computing %s; waiting for it", path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as e:  # a file system without locks: compute, as without the lock
            log.warning("cache: cannot lock %s (%s)", lock_path, e)
        kept = _load_kept(path, shape)  # written while this one waited
        if kept is not None:
            return kept
        value = compute()
        try:
            storage.atomic_local_write(str(path), lambda f: torch.save(value, f))
        except OSError as e:
            log.warning("cache: cannot keep %s (%s)", path, e)
        return value  # the lock goes with the file's closing


def preflight(cfg: Config) -> None:
    """Before a run starts (the driver of `ganray train` or a sweep): with eval.inception, that
    torch-fidelity imports and the weights file is there and right (downloaded into this machine's
    cache once) — an InceptionError (exit 2) now, not a failed trial at the end; a download or
    bucket outage is an InceptionUnavailable (exit 1: the run failed)."""
    if cfg.eval.inception:
        import_fidelity()
        verified_weights(cfg)
