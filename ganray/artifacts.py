"""Trial artifacts: TensorBoard event files, sample grids, the fixed-z GIF, metrics.jsonl,
verdict.json and other small files, written locally and uploaded to the trial's storage.

Layout (DESIGN.md): <storage>/<experiment>/trials/<trial>/{metrics.jsonl, samples/step_*.png,
fixed_z.gif, verdict.json, config.yaml} and <storage>/<experiment>/tensorboard/<trial>/events.*

For a bucket, everything is written to a local staging folder and a background thread
uploads what changed every `upload_every_sec`; flush() and close() upload at once and
raise StorageError for an upload whose retries (storage.put_bytes) were exhausted — in
the background or now — so a failure is never silent. For a local path the files are
written in place and nothing is copied.

Event files are uploaded about once per byte: an object store has no append, so
re-uploading one growing event file at every flush costs O(length²). Instead the open
event file is closed ("rotated") at an upload tick once it is `rotate_every_sec` old
(at the nearest tick), uploaded one last time, and a new one is started with the next
event; each closed file is uploaded exactly once, and the open one is re-sent at the ticks
before it rotates. With k = round(rotate_every_sec / upload_every_sec) ticks per file
and a steady write rate, bytes uploaded ÷ bytes written ≈ (k + 1) / 2; the default
(k = 1) gives ≈ 1. flush() rotates too, so the bucket has everything written so far.
TensorBoard reads a run's files in name order and treats a file as final once a later
one exists; files are named so that name order is write order, and a closed file's
final upload always precedes the first upload of the next one.

metrics.jsonl is one JSON object per line ({"step": …, "time": …, metric: value}; NaN
and ±inf are written as the strings "nan", "inf", "-inf", so every line is strict JSON).
Object stores have no append, so it is re-sent whole when it changed; it is small.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ganray import storage

log = logging.getLogger(__name__)

EVENTS_PREFIX = "events.out.tfevents"
FIXED_Z_TAG = "samples/fixed_z"
MAX_GIF_FRAMES = 300     # longer runs keep every n-th frame (and the last)
GIF_FRAME_MS = 250
_SAMPLE_RE = re.compile(r"(?:^|/)samples/step_(\d+)\.png$")


# ---- TensorBoard event records -------------------------------------------------------


def _crc32c(data: bytes) -> int:
    try:
        import google_crc32c  # C implementation, shipped with google-cloud-storage

        return google_crc32c.value(data)
    except ImportError:  # pragma: no cover - pure-Python fallback from TensorBoard
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

        return crc32c(data)


def _masked_crc(data: bytes) -> int:
    # TFRecord framing: masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32), crc = CRC-32C
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tf_record(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked crc of length, data, masked crc of data (little-endian)."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", _masked_crc(header)) + data + struct.pack("<I", _masked_crc(data))


def _event(step: int | None = None, wall_time: float | None = None, **fields) -> bytes:
    from tensorboard.compat.proto.event_pb2 import Event

    ev = Event(wall_time=time.time() if wall_time is None else wall_time, **fields)
    if step is not None:
        ev.step = int(step)
    return ev.SerializeToString()


def scalar_event(step: int, values: dict[str, float], wall_time: float) -> bytes:
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
    return _event(step, wall_time, summary=summary)


def image_event(step: int, tag: str, png: bytes, height: int, width: int, channels: int, wall_time: float) -> bytes:
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)
    return _event(step, wall_time, summary=Summary(value=[Summary.Value(tag=tag, image=image)]))


@dataclass
class _Segment:
    """One event file: `size` bytes written locally, `uploaded` bytes of it in the bucket."""
    name: str
    opened_at: float
    size: int = 0
    uploaded: int = -1     # -1: never uploaded
    closed: bool = False
    header_size: int = 0   # the file_version record every event file starts with

    @property
    def has_events(self) -> bool:
        return self.size > self.header_size

    @property
    def pending(self) -> bool:
        return self.has_events and self.uploaded != self.size


class _EventLog:
    """TensorBoard event files in `folder`, written synchronously and rotated on request.

    Names are events.out.tfevents.<start:010d>.<host>.<pid>.<seq:06d>: within one writer the
    zero-padded sequence number orders them, and a later writer (a resumed run) starts later."""

    def __init__(self, folder: str, rotate_max_bytes: int, existing: list[str] = ()):
        self.folder = folder
        self.rotate_max_bytes = rotate_max_bytes
        self.segments: list[_Segment] = []
        self.bytes_written = 0
        self._file: io.BufferedWriter | None = None
        # Start after every existing file of the run (an earlier, possibly crashed, writer,
        # maybe on a node whose clock is ahead): TensorBoard never reads back to an earlier name.
        start = max([int(time.time())] + [t + 1 for t in map(_event_file_time, existing) if t is not None])
        self._stem = f"{EVENTS_PREFIX}.{start:010d}.{socket.gethostname()}.{os.getpid()}"
        os.makedirs(folder, exist_ok=True)

    @property
    def current(self) -> _Segment | None:
        return self.segments[-1] if self.segments and not self.segments[-1].closed else None

    def path(self, seg: _Segment) -> str:
        return os.path.join(self.folder, seg.name)

    def write(self, record_data: bytes) -> None:
        seg = self.current or self._open()
        rec = tf_record(record_data)
        self._file.write(rec)
        self._file.flush()  # a reader (TensorBoard, the uploader) sees whole records only
        seg.size += len(rec)
        self.bytes_written += len(rec)
        if seg.size >= self.rotate_max_bytes:
            self.rotate()

    def _open(self) -> _Segment:
        seg = _Segment(name=f"{self._stem}.{len(self.segments):06d}", opened_at=time.monotonic())
        self.segments.append(seg)
        self._file = open(self.path(seg), "wb")
        header = tf_record(_event(file_version="brain.Event:2"))
        self._file.write(header)
        self._file.flush()
        seg.size = seg.header_size = len(header)
        self.bytes_written += len(header)
        return seg

    def rotate(self) -> None:
        """Close the open file; the next event starts a new one."""
        seg = self.current
        if seg is None:
            return
        self._file.close()
        self._file = None
        seg.closed = True

    def read(self, seg: _Segment) -> bytes:
        with open(self.path(seg), "rb") as f:
            return f.read(seg.size)


def _event_file_time(name: str) -> int | None:
    """The start time in an event file's name (events.out.tfevents.<time>.<…>), if any."""
    parts = name.rsplit("/", 1)[-1].split(".")
    if len(parts) > 3 and ".".join(parts[:3]) == EVENTS_PREFIX and parts[3].isdigit():
        return int(parts[3])
    return None


def session_start_event(step: int) -> bytes:
    """SessionLog.START at `step`: TensorBoard drops the run's events at or after `step` that an
    earlier session wrote (the steps a resumed run does again)."""
    from tensorboard.compat.proto.event_pb2 import SessionLog

    return _event(step, session_log=SessionLog(status=SessionLog.START))


# ---- images --------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def image_grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one uint8 grid [rows·(H+pad)+pad, cols·(W+pad)+pad, C],
    cols = ceil(sqrt(N)); gray (128) padding between cells."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    # x ∈ [-1, 1] -> pixel = round(255 · (x + 1) / 2), clipped
    pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w, :] = pixels[i].transpose(1, 2, 0)
    return grid


def png_bytes(grid: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def scatter_png(points: np.ndarray, lim: float, title: str) -> tuple[bytes, int, int]:
    """A 320x320 scatter plot of [N, 2] points within [-lim, lim]²: (PNG, height, width)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5, c="tab:blue", linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    width, height = (int(v) for v in fig.canvas.get_width_height())
    return buf.getvalue(), height, width


def gif_bytes(frames: list[bytes], frame_ms: int = GIF_FRAME_MS) -> bytes:
    """An endlessly looping GIF of PNG frames (in order)."""
    from PIL import Image

    images = [Image.open(io.BytesIO(f)).convert("RGB") for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buf.getvalue()


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become "nan"/"inf"/"-inf", numpy/torch scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


# ---- the trial's artifacts -----------------------------------------------------------


@dataclass(frozen=True)
class UploadStats:
    event_bytes_written: int = 0    # bytes of TensorBoard event data written locally
    event_bytes_uploaded: int = 0   # bytes of event files sent to the bucket (re-sends included)
    event_uploads: int = 0
    event_files: int = 0
    other_bytes_uploaded: int = 0   # metrics.jsonl, PNGs, GIF, JSON, text
    other_uploads: int = 0

    @property
    def event_upload_ratio(self) -> float:
        """Bytes uploaded ÷ bytes of event data written (1.0 = each byte once)."""
        return self.event_bytes_uploaded / self.event_bytes_written if self.event_bytes_written else 0.0


class TrialArtifacts:
    """Everything a trial writes besides checkpoints (rank 0 only)."""

    def __init__(self, trial_uri: str, tb_uri: str, *, upload_every_sec: float = 30.0,
                 rotate_every_sec: float = 30.0, rotate_max_bytes: int = 8 << 20,
                 resume_step: int | None = None, max_gif_frames: int = MAX_GIF_FRAMES):
        # trial_uri = <storage>/<experiment>/trials/<trial>; tb_uri = <storage>/<experiment>/tensorboard/<trial>
        if upload_every_sec <= 0 or rotate_every_sec <= 0 or rotate_max_bytes <= 0:
            raise ValueError("upload_every_sec, rotate_every_sec and rotate_max_bytes must be > 0")
        self.trial_uri, self.tb_uri = trial_uri, tb_uri
        self.upload_every_sec, self.rotate_every_sec = float(upload_every_sec), float(rotate_every_sec)
        self.max_gif_frames = max_gif_frames
        self._trial_remote = storage.split_uri(trial_uri)[0] != "file"
        self._tb_remote = storage.split_uri(tb_uri)[0] != "file"
        self.staging_dir = tempfile.mkdtemp(prefix="ganray-artifacts-") if self._remote else None
        self.trial_dir = os.path.join(self.staging_dir, "trial") if self._trial_remote else storage.split_uri(trial_uri)[1]
        self.tb_dir = os.path.join(self.staging_dir, "tensorboard") if self._tb_remote else storage.split_uri(tb_uri)[1]
        os.makedirs(self.trial_dir, exist_ok=True)
        existing = self._existing_event_files()
        self._events = _EventLog(self.tb_dir, rotate_max_bytes, existing)
        # TensorBoard takes a run's first START as its beginning and a later one as a restart.
        if not existing or resume_step is not None:
            self._events.write(session_start_event(resume_step or 0))

        self._lock = threading.RLock()         # local files, _dirty, _events, counters
        self._upload_lock = threading.Lock()   # one upload cycle at a time
        self._dirty: dict[str, None] = {}      # trial files changed since their last upload (ordered)
        self._stats = UploadStats()
        self._error: storage.StorageError | None = None
        self._scatter_lim = 0.0
        self._closed = False

        self._init_metrics(resume_step)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._remote:
            self._thread = threading.Thread(target=self._run, name="ganray-artifacts-upload", daemon=True)
            self._thread.start()

    @property
    def _remote(self) -> bool:
        return self._trial_remote or self._tb_remote

    @property
    def stats(self) -> UploadStats:
        with self._lock:
            return replace(self._stats, event_bytes_written=self._events.bytes_written,
                           event_files=len(self._events.segments))

    # -- writing ------------------------------------------------------------------------

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars at `step`, and one line of metrics.jsonl."""
        self._check_open()
        now = time.time()
        clean = {str(k): float(v) for k, v in values.items()}
        line = json.dumps(_jsonable({"step": int(step), "time": round(now, 3), **clean}), allow_nan=False) + "\n"
        with self._lock:
            self._events.write(scalar_event(step, clean, now))
            with open(os.path.join(self.trial_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
                f.write(line)
            self._mark("metrics.jsonl")

    def samples(self, step: int, images: Any) -> None:
        """[N, C, H, W] in [-1, 1] (a grid) or [N, 2] points (a scatter plot): samples/step_{step:06d}.png,
        the TensorBoard image `samples/fixed_z`, and a frame of fixed_z.gif."""
        self._check_open()
        x = _to_numpy(images)
        if x.ndim == 2 and x.shape[1] == 2:
            # Axis limits only grow, so the GIF's frames share one scale.
            self._scatter_lim = max(self._scatter_lim, 1.1 * float(np.nanmax(np.abs(x))) if x.size else 1.0, 1e-3)
            png, height, width = scatter_png(x, self._scatter_lim, f"step {step}")
            channels = 4 if png[25] == 6 else 3  # PNG colour type 6 = RGBA
        elif x.ndim == 4 and x.shape[1] in (1, 3):
            grid = image_grid(x)
            png, (height, width, channels) = png_bytes(grid), grid.shape
        else:
            raise ValueError(f"samples: expected [N, C, H, W] images with C in (1, 3) or [N, 2] points, "
                             f"got shape {tuple(x.shape)}")
        now = time.time()
        with self._lock:
            self._write_trial_file(f"samples/step_{int(step):06d}.png", png)
            self._events.write(image_event(step, FIXED_Z_TAG, png, height, width, channels, now))

    def verdict(self, payload: dict) -> None:
        """verdict.json, replaced atomically."""
        self.write_json("verdict.json", payload)

    def write_json(self, name: str, payload: Any) -> None:
        self.write_text(name, json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n")

    def write_text(self, name: str, text: str) -> None:
        self._check_open()
        with self._lock:
            self._write_trial_file(name, text.encode("utf-8"))

    def _write_trial_file(self, name: str, data: bytes) -> None:
        rel = _safe_relpath(name)
        storage.put_bytes(os.path.join(self.trial_dir, rel), data)  # local: temp file + rename
        self._mark(rel)

    def _mark(self, rel: str) -> None:
        if self._trial_remote:
            self._dirty[rel] = None

    # -- uploading ----------------------------------------------------------------------

    def flush(self) -> None:
        """Upload everything written so far (the open event file is rotated first); raise
        StorageError if this upload or an earlier background one failed."""
        self._check_open()
        self._upload(rotate=True)
        self._raise_pending_error()

    def close(self) -> None:
        """fixed_z.gif from the frames, close the event file, final uploads; raises StorageError
        when something could not be uploaded (the staging folder is then kept)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._write_gif()
        except storage.StorageError as e:  # reported below, after the other files are sent
            with self._lock:
                self._error = self._error or e
        finally:
            with self._lock:
                self._events.rotate()
            self._upload(rotate=True)
        try:
            self._raise_pending_error()
        except storage.StorageError as e:
            if self.staging_dir:
                raise storage.StorageError(f"{e} (unsent files kept in {self.staging_dir})") from None
            raise
        if self.staging_dir:
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    def __enter__(self) -> "TrialArtifacts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        """Background uploads, one cycle every upload_every_sec."""
        while not self._stop.wait(self.upload_every_sec):
            self._upload(rotate=False)

    def _upload(self, rotate: bool) -> None:
        """One upload cycle: event files in name order, then changed trial files. An error ends
        the cycle (what is left stays pending) and is kept for the next flush()/close()."""
        if not self._remote:
            return
        with self._upload_lock:
            try:
                if self._tb_remote:
                    self._upload_events(rotate)
                if self._trial_remote:
                    self._upload_trial_files()
            except Exception as e:  # noqa: BLE001 — kept for flush()/close(); never lost with the thread
                if not isinstance(e, storage.StorageError):
                    e = storage.StorageError(f"artifact upload: {type(e).__name__}: {e}")
                log.error("artifact upload failed; will retry at the next upload: %s", e)
                with self._lock:
                    self._error = e

    def _upload_events(self, rotate: bool) -> None:
        with self._lock:
            seg = self._events.current
            # Rotate at the tick nearest to rotate_every_sec of age (or always, on flush/close).
            age = time.monotonic() - seg.opened_at if seg is not None else 0.0
            if seg is not None and seg.has_events and (rotate or age >= self.rotate_every_sec - self.upload_every_sec / 2):
                self._events.rotate()
            todo = [s for s in self._events.segments if s.pending]
        for seg in todo:  # in order: a closed file's final upload precedes the next file's first
            with self._lock:
                data, closed = self._events.read(seg), seg.closed
            storage.put_bytes(storage.join(self.tb_uri, seg.name), data)
            with self._lock:
                seg.uploaded = len(data)
                self._stats = replace(self._stats, event_bytes_uploaded=self._stats.event_bytes_uploaded + len(data),
                                      event_uploads=self._stats.event_uploads + 1)
            if closed and seg.uploaded == seg.size:
                os.remove(self._events.path(seg))  # sent whole, never changes again

    def _upload_trial_files(self) -> None:
        with self._lock:
            todo, self._dirty = list(self._dirty), {}
        for i, rel in enumerate(todo):
            try:
                with self._lock:
                    with open(os.path.join(self.trial_dir, rel), "rb") as f:
                        data = f.read()
                storage.put_bytes(storage.join(self.trial_uri, rel), data)
            except BaseException:
                with self._lock:  # still pending, ahead of anything written meanwhile
                    self._dirty = {**dict.fromkeys(todo[i:]), **self._dirty}
                raise
            with self._lock:
                self._stats = replace(self._stats, other_bytes_uploaded=self._stats.other_bytes_uploaded + len(data),
                                      other_uploads=self._stats.other_uploads + 1)

    def _raise_pending_error(self) -> None:
        with self._lock:
            err, self._error = self._error, None
        if err is not None:
            raise storage.StorageError(f"artifact upload failed after retries: {err}")

    # -- start and end ------------------------------------------------------------------

    def _init_metrics(self, resume_step: int | None) -> None:
        """Continue an earlier metrics.jsonl of this trial (a resumed run); with `resume_step`,
        drop its lines at or after that step, which the resumed run writes again."""
        local = os.path.join(self.trial_dir, "metrics.jsonl")
        old = b""
        if self._trial_remote:
            try:
                old = storage.read_bytes(storage.join(self.trial_uri, "metrics.jsonl"))
            except storage.StorageNotFoundError:
                old = b""
        elif os.path.exists(local):
            with open(local, "rb") as f:
                old = f.read()
        if not old:
            return
        lines = old.decode("utf-8").splitlines(keepends=True)
        if resume_step is not None:
            lines = [ln for ln in lines if _line_step(ln) is not None and _line_step(ln) < resume_step]
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"  # a line cut by a crash ends here
        storage.put_bytes(local, "".join(lines).encode("utf-8"))
        self._mark("metrics.jsonl")

    def _existing_event_files(self) -> list[str]:
        if self._tb_remote:
            return [u for u in storage.list_files(self.tb_uri) if _event_file_time(u) is not None]
        if not os.path.isdir(self.tb_dir):
            return []
        return [n for n in os.listdir(self.tb_dir) if _event_file_time(n) is not None]

    def _write_gif(self) -> None:
        frames = self._frame_sources()
        if not frames:
            return
        if len(frames) > self.max_gif_frames:
            stride = math.ceil(len(frames) / self.max_gif_frames)
            frames = frames[::stride] if (len(frames) - 1) % stride == 0 else frames[::stride] + frames[-1:]
        pngs = []
        for step, source in frames:
            if source.startswith(("s3://", "gs://")):
                pngs.append(storage.read_bytes(source))
            else:
                with open(source, "rb") as f:
                    pngs.append(f.read())
        with self._lock:
            self._write_trial_file("fixed_z.gif", gif_bytes(pngs))

    def _frame_sources(self) -> list[tuple[int, str]]:
        """(step, where) of every sample grid of this trial: this run's local files, plus those
        an earlier (resumed) run left in the bucket."""
        found: dict[int, str] = {}
        if self._trial_remote:
            try:
                for uri in storage.list_files(storage.join(self.trial_uri, "samples")):
                    if m := _SAMPLE_RE.search(uri):
                        found[int(m.group(1))] = uri
            except storage.StorageError as e:
                log.warning("fixed_z.gif: earlier frames in the bucket not listed (%s)", e)
        sample_dir = os.path.join(self.trial_dir, "samples")
        if os.path.isdir(sample_dir):
            for name in os.listdir(sample_dir):
                if m := _SAMPLE_RE.search("samples/" + name):
                    found[int(m.group(1))] = os.path.join(sample_dir, name)
        return sorted(found.items())

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("TrialArtifacts is closed")


def _line_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _safe_relpath(name: str) -> str:
    rel = os.path.normpath(name).replace(os.sep, "/")
    if rel.startswith(("../", "/")) or rel in ("..", ".", ""):
        raise ValueError(f"artifact name {name!r} must be a relative path inside the trial folder")
    return rel
