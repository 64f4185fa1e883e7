"""The official dataset files: read from data.source, from the cache, or downloaded into it.

Where a file comes from, in order:
  1. `data.source` set: a local folder or an s3:// / gs:// prefix holding the official file
     names; the file is read from there and nowhere else (a missing file is an error).
  2. The cache, `<cache>/<dataset>/<file>` with <cache> = data.cache_dir, else $GANRAY_CACHE,
     else ~/.cache/ganray.
  3. A download (when data.download) from data.mirror, else $GANRAY_MIRROR_<DATASET>
     (e.g. GANRAY_MIRROR_FASHION_MNIST), else the official locations in `MIRRORS`.

A download streams into a temporary file in the cache folder, checks the size and sha256
from `CHECKSUMS`, and only then is renamed into place (storage.atomic_local_write), so the cache never
holds a partial or corrupt file. Transient network errors are retried; a 404 moves on to
the next mirror. Every function that checks hashes takes a `checksums` table, so tests
(and users of a private copy) can inject their own.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Collection, Mapping, NamedTuple

import pyarrow.fs as pafs

from ganray.config import DataConfig
from ganray.data import DataError, DataUnavailable
from ganray.storage import atomic_local_write, filesystem, join
from ganray.storage.retry import Budget, with_retry

log = logging.getLogger(__name__)


class Expected(NamedTuple):
    size: int  # bytes
    sha256: str  # lower-case hex digest


# Official locations, tried in order.
MIRRORS: dict[str, tuple[str, ...]] = {
    # The mirror torchvision uses first; yann.lecun.com is the original (often throttled).
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
    # CUB_200_2011.tgz only: the StackGAN authors publish birds.zip on Google Drive, which has no
    # base-URL + file-name address (ganray.data.cub200 says how to supply it).
    "cub200": ("https://data.caltech.edu/records/65de6-vp158/files/",),
    # Not a dataset: the Inception weights of FID/KID/IS (ganray.metrics.inception), from the
    # torch-fidelity release that its FeatureExtractorInceptionV3 downloads them from.
    "inception": ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/",),
    # The CycleGAN datasets (<name>.zip, ganray.data.unpaired): the server the reference repository's
    # datasets/download_cyclegan_dataset.sh uses now, then the one it used before (the URLs TFDS checked).
    "cyclegan": ("https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/",
                 "https://people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/"),
}

CHECKSUMS: dict[str, dict[str, Expected]] = {
    # Source: tensorflow/datasets, tensorflow_datasets/url_checksums/mnist.txt (size, sha256 of
    # the cvdf-datasets mirror; the same bytes as yann.lecun.com and ossci-datasets: torchvision's
    # md5s f68b3c2d…, d53e105e…, 9fb629c4…, ec29112d… match all three mirrors).
    "mnist": {
        "train-images-idx3-ubyte.gz": Expected(9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": Expected(28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": Expected(1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": Expected(4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    # Source: tensorflow/datasets, tensorflow_datasets/url_checksums/fashion_mnist.txt
    # (for the same fashion-mnist.s3-website.eu-central-1.amazonaws.com URLs).
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": Expected(26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": Expected(29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": Expected(4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": Expected(5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
    # Source: keras, keras/datasets/cifar10.py (file_hash= sha256 for
    # https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz; torchvision's md5 is
    # c58f30108f718f92721af3b95e74349a). TFDS's cifar10.txt lists the *binary* tarball instead.
    # Size: 170,498,071 bytes, as published with that sha256 in several dataset manifests.
    "cifar10": {
        "cifar-10-python.tar.gz": Expected(170498071, "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),
    },
    # Source: tensorflow/datasets, tensorflow_datasets/url_checksums/caltech_birds2011.txt (size,
    # sha256 of CUB_200_2011.tgz; torchvision-style loaders check the same file's md5
    # 97eceeb196236b17998738112f37df78). birds.zip (the StackGAN authors' embeddings and captions)
    # has no published sha256: it is not listed, so ganray refuses to download it unchecked.
    "cub200": {
        "CUB_200_2011.tgz": Expected(1150585339, "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081"),
    },
    # TF Inception 2015-12-05 converted to PyTorch (torch-fidelity v0.2.0 release; the same bytes as
    # pytorch-fid's pt_inception-2015-12-05-6726825d.pth). The name's 6726825d is the sha256 prefix
    # torch.hub checks; the full sha256 and size are those listed with that file in several
    # evaluation manifests (95,628,359 bytes). Not downloadable from the CI machines: untested there.
    "inception": {
        "weights-inception-2015-12-05-6726825d.pth": Expected(
            95628359, "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"),
    },
    # Source: tensorflow/datasets, tensorflow_datasets/url_checksums/cycle_gan.txt (size, sha256 of
    # people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/<name>.zip). ae_photos has no published
    # digest: it is refused for download (expected_for) and read only from data.source. Not downloadable
    # from the CI machines: the real files are untested there (tests serve zips from 127.0.0.1).
    "cyclegan": {
        "apple2orange.zip": Expected(78456409, "845a191e9af8926408ea597001cd03a452e3300a1f44a79fe329b3d59f6e3eb8"),
        "cezanne2photo.zip": Expected(279885071, "3a6c10ca21f9485862f1cbd707744b9dc258954a04631271d23a3605eeb63cff"),
        "cityscapes.zip": Expected(279601602, "d2f6910fd056c1ee9873777ae838e7ac4a2c833598ae62a04188e5ab2f4ea036"),
        "facades.zip": Expected(35135868, "9a31ebf3a31b9b5cd195dd5bf62e9308e00cb94604d1019e3889ac84248695c0"),
        "horse2zebra.zip": Expected(116867962, "a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1"),
        "iphone2dslr_flower.zip": Expected(
            339964458, "8fcb5e374d631b107e1d961b8c4cd0a186aa2a4ff3e279923f4c426128de7113"),
        "maps.zip": Expected(1476754427, "639534f69dbf9f36bef8d6292a7698006361221f83f0285d7c9ca78afe6e8a9e"),
        "monet2photo.zip": Expected(305231073, "88f91b00fc228f97c9411fbf1880ec1d119c98f1722e4cfcfaa2fb35fac05b04"),
        "summer2winter_yosemite.zip": Expected(
            132640856, "167fe1726807a9d22bd106b4a6c0bd7953b688af924ac1bf967439c4961e49f9"),
        "ukiyoe2photo.zip": Expected(292946532, "02a2a2fb5ecf425ca1bf86aca7304377da64a2a1d3b86df54eb65e4068bf3b08"),
        "vangogh2photo.zip": Expected(306590349, "362c3473e70be0944bda08d49d660eafdc2854df55d697835b8186d1d79caaff"),
    },
}

RETRIES = 2  # extra attempts per URL after a transient error
BACKOFF_SEC = 2.0  # the first pause (then doubling, with jitter: ganray.storage.retry)
TIMEOUT_SEC = 60.0  # socket timeout per read
CHUNK_BYTES = 1 << 20
USER_AGENT = "ganray-data/0.1 (python-urllib)"


class ChecksumError(DataError):
    """Downloaded bytes whose sha256 (or size) is not the published one."""


class _Transient(Exception):
    """A network error worth retrying (connection reset, timeout, HTTP 5xx/429)."""


def cache_root(cache_dir: str = "") -> Path:
    """The cache folder: data.cache_dir, else $GANRAY_CACHE, else ~/.cache/ganray."""
    root = cache_dir or os.environ.get("GANRAY_CACHE") or "~/.cache/ganray"
    return Path(root).expanduser()


def mirror_env_var(dataset: str) -> str:
    """GANRAY_MIRROR_<DATASET>, e.g. GANRAY_MIRROR_FASHION_MNIST."""
    return "GANRAY_MIRROR_" + re.sub(r"[^A-Z0-9]", "_", dataset.upper())


def base_urls(dataset: str, mirror: str = "") -> tuple[str, ...]:
    """Base URLs to try: `mirror` (data.mirror), else $GANRAY_MIRROR_<DATASET>, else MIRRORS."""
    chosen = mirror or os.environ.get(mirror_env_var(dataset), "")
    if chosen:
        where = "data.mirror" if mirror else mirror_env_var(dataset)
        if not re.match(r"^https?://[^/\s]+", chosen):
            raise DataError(f"{where}: expected an http:// or https:// base URL, got {chosen!r}")
        return (chosen if chosen.endswith("/") else chosen + "/",)
    if dataset not in MIRRORS:
        raise DataError(f"no download locations for dataset {dataset!r}; known: {', '.join(MIRRORS)}")
    return MIRRORS[dataset]


def expected_for(dataset: str, name: str, checksums: Mapping[str, Mapping[str, Expected]] | None = None) -> Expected:
    table = CHECKSUMS if checksums is None else checksums
    try:
        return table[dataset][name]
    except KeyError as e:
        raise DataError(f"no published sha256 for {dataset}/{name}; refusing to download an unchecked file") from e


# ---- one URL -> one verified file ------------------------------------------------------


def _stream_to(url: str, tmp, expected: Expected, timeout: float) -> tuple[int, str]:
    """Stream `url` into the open file `tmp`; return (bytes written, sha256 hex)."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https checked in base_urls)
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        raise DataError(f"download failed: {url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, socket.timeout, ConnectionError) as e:
        raise _Transient(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from e
    h = hashlib.sha256()
    n = 0
    next_log = 0.0
    with resp:
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) != expected.size:
            raise DataError(f"download failed: {url}: server announces {int(length)} bytes, expected {expected.size}")
        try:
            while block := resp.read(CHUNK_BYTES):
                n += len(block)
                if n > expected.size:  # never stream more than the published size into the cache
                    raise DataError(f"download failed: {url}: more than the expected {expected.size} bytes")
                h.update(block)
                tmp.write(block)
                if n / expected.size >= next_log:
                    log.info("%s: %d / %d bytes (%.0f%%)", url, n, expected.size, 100.0 * n / expected.size)
                    next_log += 0.1
        except (http.client.IncompleteRead, socket.timeout, ConnectionError, urllib.error.URLError) as e:
            raise _Transient(f"{type(e).__name__} after {n} bytes") from e
    return n, h.hexdigest()


def fetch(
    url: str,
    dest: Path,
    expected: Expected,
    *,
    retries: int = RETRIES,
    backoff_sec: float = BACKOFF_SEC,
    timeout: float = TIMEOUT_SEC,
) -> Path:
    """Download `url` to `dest`, verified against `expected` (size, sha256), atomically.

    The bytes go to a temporary file next to `dest`; only a file whose size and sha256 match
    is renamed to `dest`. Any failure removes the temporary file and raises DataError.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {dest.parent} (data.cache_dir / $GANRAY_CACHE): {e}") from e

    def verified_copy(tmp) -> None:  # raising here leaves no file (atomic_local_write)
        n, sha = _stream_to(url, tmp, expected, timeout)
        if n != expected.size:
            raise DataError(f"download failed: {url}: got {n} bytes, expected {expected.size}")
        if sha != expected.sha256.lower():
            raise ChecksumError(
                f"checksum mismatch for {url}: expected sha256 {expected.sha256.lower()}, got {sha} "
                "(file discarded; a stale mirror or a tampered file)"
            )

    def attempt() -> Path:
        atomic_local_write(str(dest), verified_copy)
        log.info("%s: verified sha256 %s, saved to %s", url, expected.sha256.lower(), dest)
        return dest

    return with_retry(
        "download", url, attempt, Budget(tries=retries + 1, first_pause_sec=backoff_sec),
        classify=lambda e: str(e) if isinstance(e, _Transient) else None,  # DataError: at once
        give_up=lambda tries, last: DataUnavailable(f"download failed: {url}: {last} (gave up after {tries} attempts)"),
        logger=log)


# ---- data.source / cache / download ----------------------------------------------------


def _open_source(source: str, name: str) -> BinaryIO:
    uri = join(source, name)
    try:
        fs, path = filesystem(uri)
        if fs.get_file_info(path).type != pafs.FileType.File:
            raise DataError(f"data.source: {uri} not found (the folder must hold the official file {name!r})")
        return fs.open_input_stream(path, compression=None)  # the raw bytes: no guessing from '.gz'
    except DataError:
        raise
    except (OSError, ValueError) as e:  # pyarrow: bucket missing, no credentials, endpoint down
        raise DataError(f"data.source: cannot read {uri}: {e}") from e


def download(
    dataset: str,
    name: str,
    cfg: DataConfig,
    checksums: Mapping[str, Mapping[str, Expected]] | None = None,
    **fetch_kw,
) -> Path:
    """Download `name` of `dataset` into the cache from the first mirror that has it."""
    expected = expected_for(dataset, name, checksums)
    dest = cache_root(cfg.cache_dir) / dataset / name
    tried = []
    for base in base_urls(dataset, cfg.mirror):
        url = base + name
        log.info("downloading %s (%d bytes) into %s", url, expected.size, dest.parent)
        try:
            return fetch(url, dest, expected, **fetch_kw)
        except ChecksumError:
            raise  # wrong bytes are not a reason to try another server: someone must look
        except (DataError, DataUnavailable) as e:
            tried.append(e)
    # every server failing transiently is an outage (exit 1); a wrong mirror (404, wrong size) is bad input
    error = DataUnavailable if tried and all(isinstance(e, DataUnavailable) for e in tried) else DataError
    raise error(f"{dataset}: could not download {name}:\n  " + "\n  ".join(map(str, tried)))


def cached_file(
    dataset: str,
    name: str,
    cfg: DataConfig,
    checksums: Mapping[str, Mapping[str, Expected]] | None = None,
    **fetch_kw,
) -> Path:
    """The verified local copy of `name`: from the cache, downloaded if missing (and allowed)."""
    expected = expected_for(dataset, name, checksums)
    path = cache_root(cfg.cache_dir) / dataset / name
    if path.is_file():
        if path.stat().st_size == expected.size:  # the sha256 was checked when it was written
            return path
        log.warning("%s: %d bytes, expected %d; downloading again", path, path.stat().st_size, expected.size)
    if not cfg.download:
        raise DataError(
            f"{dataset}: {name} not in the cache {path.parent} and data.download is false; "
            "set data.source to a folder or bucket prefix holding the official files, or allow the download"
        )
    return download(dataset, name, cfg, checksums, **fetch_kw)


def open_file(
    dataset: str,
    name: str,
    cfg: DataConfig,
    checksums: Mapping[str, Mapping[str, Expected]] | None = None,
) -> BinaryIO:
    """The official file `name`, opened for sequential reading (use `with`): from
    data.source, else from the cache (downloaded first if missing and allowed)."""
    if cfg.source:
        return _open_source(cfg.source, name)
    return open(cached_file(dataset, name, cfg, checksums), "rb")


def tar_members(
    dataset: str,
    name: str,
    cfg: DataConfig,
    wanted: Collection[str],
    checksums: Mapping[str, Mapping[str, Expected]] | None = None,
) -> dict[str, bytes]:
    """{member name: bytes} of the regular files `wanted` in the official tar.gz `name` (`open_file`),
    read in one sequential pass, so a bucket stream works; members not in the archive are absent."""
    found: dict[str, bytes] = {}
    with open_file(dataset, name, cfg, checksums) as f:
        try:
            with tarfile.open(fileobj=f, mode="r|gz") as tar:
                for member in tar:
                    if member.isfile() and member.name in wanted:
                        found[member.name] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{dataset}: {name} is not a readable tar.gz: {e}") from None
    return found
