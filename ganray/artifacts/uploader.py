"""Background uploads of a trial's record to its bucket.

Every `upload_every_sec` one cycle sends, in order: each segmented log's pending segments (the
open one is rotated first once it is `rotate_every_sec` old, at the nearest tick), then the
trial files that changed since their last upload. With k = round(rotate_every_sec /
upload_every_sec) ticks per segment and a steady write rate, bytes uploaded ÷ bytes written ≈
(k + 1) / 2 for a log; the default (k = 1) gives ≈ 1. A closed segment's final upload always
precedes the first upload of the next one, and a closed, fully sent segment's local copy is
removed. An upload whose retries (storage.put_bytes) were exhausted ends the cycle (what is
left stays pending) and is raised by the next flush()/close(): a failure is never silent.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from ganray import storage
from ganray.artifacts.segments import SegmentedLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadStats:
    event_bytes_written: int = 0     # bytes of TensorBoard event data written locally
    event_bytes_uploaded: int = 0    # bytes of event files sent to the bucket (re-sends included)
    event_uploads: int = 0
    event_files: int = 0
    metrics_bytes_written: int = 0   # metrics rows
    metrics_bytes_uploaded: int = 0
    metrics_files: int = 0
    other_bytes_written: int = 0     # PNGs, GIF, verdict.json, config.yaml (each write counted)
    other_bytes_uploaded: int = 0
    other_uploads: int = 0

    @property
    def event_upload_ratio(self) -> float:
        """Bytes uploaded ÷ bytes of event data written (1.0 = each byte once)."""
        return self.event_bytes_uploaded / self.event_bytes_written if self.event_bytes_written else 0.0

    @property
    def upload_ratio(self) -> float:
        """Bytes uploaded ÷ bytes written, over every file of the record."""
        written = self.event_bytes_written + self.metrics_bytes_written + self.other_bytes_written
        sent = self.event_bytes_uploaded + self.metrics_bytes_uploaded + self.other_bytes_uploaded
        return sent / written if written else 0.0


@dataclass
class _Log:
    log: SegmentedLog
    uri: str | None          # where its segments go; None: written in place (local storage)
    bytes_uploaded: int = 0
    uploads: int = 0


@dataclass
class Uploader:
    """Sends what a recorder wrote locally; `lock` orders the recorder's writes and the uploads."""

    upload_every_sec: float
    rotate_every_sec: float
    trial_dir: str                  # local copy of the trial folder
    trial_uri: str | None           # its bucket URI; None: the trial folder is written in place
    logs: dict[str, _Log] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self._upload_lock = threading.Lock()   # one upload cycle at a time
        self._dirty: dict[str, None] = {}      # trial files changed since their last upload (ordered)
        self._other_written = self._other_uploaded = self._other_uploads = 0
        self._error: storage.StorageError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def remote(self) -> bool:
        return self.trial_uri is not None or any(lg.uri is not None for lg in self.logs.values())

    def add_log(self, key: str, seg_log: SegmentedLog, uri: str | None) -> None:
        self.logs[key] = _Log(seg_log, uri)

    def start(self) -> None:
        if self.remote:
            self._thread = threading.Thread(target=self._run, name="ganray-record-upload", daemon=True)
            self._thread.start()

    def wrote(self, rel: str, nbytes: int) -> None:
        """A trial file was (re)written locally (call with `lock` held)."""
        self._other_written += nbytes
        if self.trial_uri is not None:
            self._dirty[rel] = None

    @property
    def stats(self) -> UploadStats:
        with self.lock:
            ev, me = self.logs.get("events"), self.logs.get("metrics")
            return UploadStats(
                event_bytes_written=ev.log.bytes_written if ev else 0, event_bytes_uploaded=ev.bytes_uploaded if ev else 0,
                event_uploads=ev.uploads if ev else 0, event_files=len(ev.log.segments) if ev else 0,
                metrics_bytes_written=me.log.bytes_written if me else 0,
                metrics_bytes_uploaded=me.bytes_uploaded if me else 0, metrics_files=len(me.log.segments) if me else 0,
                other_bytes_written=self._other_written, other_bytes_uploaded=self._other_uploaded,
                other_uploads=self._other_uploads)

    def _run(self) -> None:
        while not self._stop.wait(self.upload_every_sec):
            self.upload(rotate=False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def upload(self, rotate: bool) -> None:
        """One upload cycle; an error ends it and is kept for raise_pending()."""
        if not self.remote:
            return
        with self._upload_lock:
            try:
                for lg in self.logs.values():
                    if lg.uri is not None:
                        self._upload_log(lg, rotate)
                if self.trial_uri is not None:
                    self._upload_files()
            except (storage.StorageError, OSError) as e:  # kept for flush()/close(); never lost with the thread
                if not isinstance(e, storage.StorageError):  # a local file of the staging folder (a full disk)
                    e = storage.StorageError(f"record upload: {type(e).__name__}: {e}")
                log.error("record upload failed; will retry at the next upload: %s", e)
                with self.lock:
                    self._error = e

    def _upload_log(self, lg: _Log, rotate: bool) -> None:
        with self.lock:
            seg = lg.log.current
            # Rotate at the tick nearest to rotate_every_sec of age (or always, on flush/close).
            age = time.monotonic() - seg.opened_at if seg is not None else 0.0
            if seg is not None and seg.has_data and (rotate or age >= self.rotate_every_sec - self.upload_every_sec / 2):
                lg.log.rotate()
            todo = [s for s in lg.log.segments if s.pending]
        for seg in todo:  # in order: a closed segment's final upload precedes the next one's first
            with self.lock:
                data, closed = lg.log.read(seg), seg.closed
            storage.put_bytes(storage.join(lg.uri, seg.name), data)
            with self.lock:
                seg.uploaded = len(data)
                lg.bytes_uploaded += len(data)
                lg.uploads += 1
            if closed and seg.uploaded == seg.size:
                os.remove(lg.log.path(seg))  # sent whole, never changes again

    def _upload_files(self) -> None:
        with self.lock:
            todo, self._dirty = list(self._dirty), {}
        for i, rel in enumerate(todo):
            try:
                with self.lock:
                    with open(os.path.join(self.trial_dir, rel), "rb") as f:
                        data = f.read()
                storage.put_bytes(storage.join(self.trial_uri, rel), data)
            except BaseException:
                with self.lock:  # still pending, ahead of anything written meanwhile
                    self._dirty = {**dict.fromkeys(todo[i:]), **self._dirty}
                raise
            with self.lock:
                self._other_uploaded += len(data)
                self._other_uploads += 1

    def keep_error(self, e: storage.StorageError) -> None:
        with self.lock:
            self._error = self._error or e

    def raise_pending(self) -> None:
        with self.lock:
            err, self._error = self._error, None
        if err is not None:
            raise storage.StorageError(f"artifact upload failed after retries: {err}") from err
