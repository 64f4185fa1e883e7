"""The trial recorder: the one writer of a trial's record (ganray.artifacts.layout) — config.yaml,
metrics rows, verdict.json, sample grids, the fixed-z GIF, TensorBoard events — and of the order
in which a checkpoint and its metrics become visible (metrics first: a checkpoint is never newer
than its metrics). Both runners write through it (rank 0 only); the Ray adapter adds only
`ray.train.report` and the upload hook.

For a bucket, everything is written to a local staging folder and a background thread uploads
(ganray.artifacts.uploader); flush() and close() upload at once and raise StorageError for an
upload whose retries were exhausted. For a local path the files are written in place.

What grows is written in segments, each uploaded about once: TensorBoard event files
(events.out.tfevents.<start:010d>.<host>.<pid>.<seq:06d>; TensorBoard reads a run's files in
name order and treats a file as final once a later one exists) and metrics rows
(metrics/<seq:06d>.jsonl, one JSON object per line, {"step": …, "time": …, name: value}; NaN and
±inf as the strings "nan", "inf", "-inf", so every line is strict JSON). The segments in name
order are one stream with increasing steps: a resumed run rewrites the segments that hold rows
at or after the step it resumes from, and an unresumed re-run drops the earlier rows.

Given a ganray config (config_yaml), the events also hold the trial's row of TensorBoard's HParams
table (ganray.artifacts.hparams): the columns and this trial's sweep values when the run starts,
a `verdict_code` scalar at every verdict, and the session's end once training has ended.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from typing import Any

import numpy as np
import yaml

from ganray import config, storage
from ganray.artifacts import hparams, layout
from ganray.artifacts.events import (
    EVENTS_PREFIX,
    FIXED_Z_TAG,
    event,
    event_file_time,
    image_event,
    scalar_event,
    session_start_event,
    tf_record,
)
from ganray.artifacts.images import gif_bytes, image_grid, png_bytes, scatter_png, to_numpy
from ganray.artifacts.segments import SegmentedLog
from ganray.artifacts.uploader import Uploader, UploadStats

log = logging.getLogger(__name__)

MAX_GIF_FRAMES = 300     # longer runs keep every n-th frame (and the last)


def jsonable(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become "nan"/"inf"/"-inf", numpy/torch scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a loop report (its strings, e.g. a verdict, are not scalars)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def row_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class TrialRecorder:
    """Everything a trial writes (rank 0 only). `stopper` (the sweep's collapse stopper, or None)
    has its state saved in verdict.json and in every checkpoint."""

    def __init__(self, paths: layout.TrialPaths, *, config_yaml: str | None = None, upload_every_sec: float = 30.0,
                 rotate_every_sec: float = 30.0, rotate_max_bytes: int = 8 << 20, resume_step: int | None = None,
                 max_gif_frames: int = MAX_GIF_FRAMES, stopper: Any = None):
        # resume_step: the first step this run writes; earlier rows at or after it are dropped
        if upload_every_sec <= 0 or rotate_every_sec <= 0 or rotate_max_bytes <= 0:
            raise ValueError("upload_every_sec, rotate_every_sec and rotate_max_bytes must be > 0")
        self.paths, self.stopper, self.max_gif_frames = paths, stopper, max_gif_frames
        self.config = _parse_config(config_yaml)  # None: no ganray config, so no HParams row
        self._trial_remote = storage.split_uri(paths.trial)[0] != "file"
        self._tb_remote = storage.split_uri(paths.tensorboard)[0] != "file"
        self.staging_dir = (tempfile.mkdtemp(prefix="ganray-record-") if self._trial_remote or self._tb_remote
                            else None)
        try:
            self._open(config_yaml, resume_step, upload_every_sec, rotate_every_sec, rotate_max_bytes)
        except BaseException:  # nothing left behind by a recorder that could not start
            if self.staging_dir:
                shutil.rmtree(self.staging_dir, ignore_errors=True)
            raise

    def _open(self, config_yaml: str | None, resume_step: int | None, upload_every_sec: float,
              rotate_every_sec: float, rotate_max_bytes: int) -> None:
        paths, trial_remote, tb_remote = self.paths, self._trial_remote, self._tb_remote
        self.trial_dir = os.path.join(self.staging_dir, "trial") if trial_remote else storage.split_uri(paths.trial)[1]
        self.tb_dir = os.path.join(self.staging_dir, "tensorboard") if tb_remote else storage.split_uri(paths.tensorboard)[1]
        os.makedirs(self.trial_dir, exist_ok=True)
        self._up = Uploader(upload_every_sec, rotate_every_sec, self.trial_dir, paths.trial if trial_remote else None)
        existing_events = self._existing(paths.tensorboard, self.tb_dir, lambda n: event_file_time(n) is not None)
        self._events = self._event_log(existing_events, rotate_max_bytes)
        self._up.add_log("events", self._events, paths.tensorboard if tb_remote else None)
        self._metrics = self._metrics_log(resume_step, rotate_max_bytes)
        self._up.add_log("metrics", self._metrics, storage.join(paths.trial, layout.METRICS_DIR) if trial_remote else None)
        # TensorBoard takes a run's first START as its beginning and a later one as a restart.
        if not existing_events or resume_step is not None:
            self._events.write(tf_record(session_start_event(resume_step or 0)))
        # HParams: TensorBoard keeps a run's first session start, so only the run's first writer writes one.
        if self.config is not None and not existing_events:
            table, now = hparams.hparams_table(self.config), time.time()
            self._events.write(tf_record(hparams.experiment_event(table, now)))
            self._events.write(tf_record(hparams.session_start_event(table, paths.name, now)))
        self._staged: dict[int, dict] = {}
        self._scatter_lim = 0.0
        self._closed = False
        if config_yaml is not None:
            self.write_text(layout.CONFIG, config_yaml)
        self._up.start()

    @property
    def stats(self) -> UploadStats:
        return self._up.stats

    # -- the loop's callbacks -----------------------------------------------------------

    def report(self, step: int, metrics: dict[str, Any], *, samples: Any = None, verdict: dict | None = None) -> dict | None:
        """One loop report: a metrics row, the sample grid, the verdict. Returns the checkpoint state
        staged for this step (now safe to store: its metrics are visible), or None."""
        self.row(step, scalar_metrics(metrics))
        if samples is not None:
            self.samples(step, samples)
        if verdict is not None:
            self.verdict(verdict)
        if self.config is not None and _training_ended(self.config, step, verdict):
            # the loop's last report: the HParams session ends (a writer that fails never gets here)
            with self._up.lock:
                self._events.write(tf_record(hparams.session_end_event(step, time.time())))
        staged = self._staged.pop(step, None)
        if staged is not None:
            self.flush()  # metrics first: a checkpoint is never newer than its metrics
        return staged

    def stage_checkpoint(self, step: int, state: dict, metrics: dict | None = None) -> None:
        """The loop's save_checkpoint (step, state, metrics; the metrics come with report()): kept
        until this step's report() has made its metrics visible."""
        if self.stopper is not None:
            state["stopper"] = self.stopper.state_dict()  # asked for this step already (loop order)
        self._staged[step] = state

    def put_checkpoint(self, step: int, data: bytes) -> str:
        """Store a checkpoint file at checkpoint_<step>/checkpoint.pt (one PUT, or temp file + rename)."""
        uri = storage.join(self.paths.trial, layout.checkpoint_file(step))
        storage.put_bytes(uri, data)
        return uri

    def drop_old_checkpoints(self, keep: int) -> None:
        """Delete all but the newest `keep` checkpoint folders of the trial, as Ray Train does with
        CheckpointConfig(num_to_keep) (called after a new one is stored: the newest stays whole)."""
        prefix = self.paths.trial.rstrip("/") + "/"
        steps = sorted(int(m.group(1)) for uri in storage.list_files(self.paths.trial)
                       if (m := layout.CHECKPOINT_RE.match(uri[len(prefix):])))
        for step in steps[:-keep] if keep > 0 else []:
            fs, path = storage.filesystem(storage.join(self.paths.trial, layout.checkpoint_dir(step)))
            fs.delete_dir(path)

    def upload_checkpoint(self, local_file: str, step: int) -> str:
        """Copy a local checkpoint file into place; returns its folder's URI."""
        folder = storage.join(self.paths.trial, layout.checkpoint_dir(step))
        storage.upload_file(local_file, storage.join(folder, layout.CHECKPOINT_FILE))
        return folder

    # -- writing ------------------------------------------------------------------------

    def row(self, step: int, values: dict[str, float]) -> None:
        """TensorBoard scalars at `step`, and one metrics row."""
        self._check_open()
        now = time.time()
        clean = {str(k): float(v) for k, v in values.items()}
        row = {"step": int(step), "time": round(now, 3), **{k: v for k, v in clean.items() if k != "step"}}
        line = json.dumps(jsonable(row), allow_nan=False) + "\n"
        with self._up.lock:
            self._events.write(tf_record(scalar_event(step, clean, now)))
            self._metrics.write(line.encode("utf-8"))

    def samples(self, step: int, images: Any) -> None:
        """[N, C, H, W] in [-1, 1] (a grid) or [N, 2] points (a scatter plot): samples/step_{step:06d}.png,
        the TensorBoard image `samples/fixed_z`, and a frame of fixed_z.gif."""
        self._check_open()
        x = to_numpy(images)
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
        with self._up.lock:
            self._write_trial_file(layout.sample_file(step), png)
            self._events.write(tf_record(image_event(step, FIXED_Z_TAG, png, height, width, channels, now)))

    def verdict(self, payload: dict) -> None:
        """verdict.json, replaced atomically, with the stopper's state; the TensorBoard scalar
        `verdict_code` at the verdict's step (layout.VERDICT_CODES)."""
        stopper = self.stopper.state_dict() if self.stopper is not None else None
        self.write_json(layout.VERDICT, {**payload, "stopper": stopper})
        step = payload.get("step")
        code = (hparams.verdict_code_event(int(step), str(payload.get("verdict")), time.time())
                if isinstance(step, int) and not isinstance(step, bool) else None)
        if code is not None:
            with self._up.lock:
                self._events.write(tf_record(code))

    def write_json(self, name: str, payload: Any) -> None:
        self.write_text(name, json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n")

    def write_text(self, name: str, text: str) -> None:
        self._check_open()
        with self._up.lock:
            self._write_trial_file(name, text.encode("utf-8"))

    def _write_trial_file(self, name: str, data: bytes) -> None:
        rel = _safe_relpath(name)
        storage.put_bytes(os.path.join(self.trial_dir, rel), data)  # local: temp file + rename
        self._up.wrote(rel, len(data))

    # -- uploading, start and end -------------------------------------------------------

    def flush(self) -> None:
        """Upload everything written so far (open segments are rotated first); raise StorageError
        if this upload or an earlier background one failed."""
        self._check_open()
        self._up.upload(rotate=True)
        self._up.raise_pending()

    def close(self) -> None:
        """fixed_z.gif from the frames, close the segments, final uploads; raises StorageError when
        something could not be uploaded (the staging folder is then kept)."""
        if self._closed:
            return
        self._closed = True
        self._up.stop()
        try:
            self._write_gif()
        except storage.StorageError as e:  # reported below, after the other files are sent
            self._up.keep_error(e)
        finally:
            with self._up.lock:
                self._events.rotate()
                self._metrics.rotate()
            self._up.upload(rotate=True)
        try:
            self._up.raise_pending()
        except storage.StorageError as e:
            if self.staging_dir:
                raise storage.StorageError(f"{e} (unsent files kept in {self.staging_dir})") from e
            raise
        if self.staging_dir:
            shutil.rmtree(self.staging_dir, ignore_errors=True)

    def __enter__(self) -> "TrialRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _event_log(self, existing: list[str], rotate_max_bytes: int) -> SegmentedLog:
        # Start after every existing file of the run (an earlier, possibly crashed, writer, maybe
        # on a node whose clock is ahead): TensorBoard never reads back to an earlier name.
        start = max([int(time.time())] + [t + 1 for t in map(event_file_time, existing) if t is not None])
        stem = f"{EVENTS_PREFIX}.{start:010d}.{socket.gethostname()}.{os.getpid()}"
        return SegmentedLog(self.tb_dir, lambda i: f"{stem}.{i:06d}", rotate_max_bytes=rotate_max_bytes,
                            header=lambda: tf_record(event(file_version="brain.Event:2")))

    def _metrics_log(self, resume_step: int | None, rotate_max_bytes: int) -> SegmentedLog:
        """The metrics segments of this writer, numbered after the existing ones, whose rows at or
        after the first step this run writes are dropped first (all of them when it starts afresh)."""
        metrics_uri = storage.join(self.paths.trial, layout.METRICS_DIR)
        local_metrics = os.path.join(self.trial_dir, layout.METRICS_DIR)
        seqs = {}
        for name in self._existing(metrics_uri, local_metrics, lambda n: True):
            m = layout.METRICS_SEGMENT_RE.match(f"{layout.METRICS_DIR}/{name.rsplit('/', 1)[-1]}")
            if m:
                seqs[int(m.group(1))] = storage.join(metrics_uri, name.rsplit("/", 1)[-1])
        legacy = storage.join(self.paths.trial, layout.LEGACY_METRICS)
        older = [seqs[k] for k in sorted(seqs)]
        if storage.exists(legacy):
            older.insert(0, legacy)
        _drop_rows_from(older, resume_step if resume_step is not None else 0)
        first = max(seqs, default=-1) + 1
        return SegmentedLog(local_metrics, lambda i: f"{first + i:06d}.jsonl", rotate_max_bytes=rotate_max_bytes)

    def _existing(self, uri: str, local_dir: str, keep) -> list[str]:
        """Names of the files already under `uri` (a resumed or re-run trial's)."""
        if storage.split_uri(uri)[0] != "file":
            return [u.rsplit("/", 1)[-1] for u in storage.list_files(uri) if keep(u)]
        if not os.path.isdir(local_dir):
            return []
        return [n for n in os.listdir(local_dir) if keep(n) and not n.startswith(".")]

    def _write_gif(self) -> None:
        frames = self._frame_sources()
        if not frames:
            return
        if len(frames) > self.max_gif_frames:
            stride = math.ceil(len(frames) / self.max_gif_frames)
            frames = frames[::stride] if (len(frames) - 1) % stride == 0 else frames[::stride] + frames[-1:]
        pngs = [storage.read_bytes(source) for _, source in frames]
        with self._up.lock:
            self._write_trial_file(layout.GIF, gif_bytes(pngs))

    def _frame_sources(self) -> list[tuple[int, str]]:
        """(step, where) of every sample grid of this trial: this run's local files, plus those
        an earlier (resumed) run left in the bucket."""
        found: dict[int, str] = {}
        samples_uri = storage.join(self.paths.trial, layout.SAMPLES_DIR)
        if storage.split_uri(samples_uri)[0] != "file":
            try:
                for uri in storage.list_files(samples_uri):
                    if m := layout.SAMPLE_RE.match(f"{layout.SAMPLES_DIR}/{uri.rsplit('/', 1)[-1]}"):
                        found[int(m.group(1))] = uri
            except storage.StorageError as e:
                log.warning("fixed_z.gif: earlier frames in the bucket not listed (%s)", e)
        sample_dir = os.path.join(self.trial_dir, layout.SAMPLES_DIR)
        if os.path.isdir(sample_dir):
            for name in os.listdir(sample_dir):
                if m := layout.SAMPLE_RE.match(f"{layout.SAMPLES_DIR}/{name}"):
                    found[int(m.group(1))] = os.path.join(sample_dir, name)
        return sorted(found.items())

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("TrialRecorder is closed")


def _parse_config(config_yaml: str | None) -> config.Config | None:
    """The ganray config in `config_yaml` (the resolved config the runners pass), or None."""
    if config_yaml is None:
        return None
    try:
        return config.from_dict(yaml.safe_load(config_yaml))
    except (config.ConfigError, yaml.YAMLError) as e:
        log.warning("config.yaml is not a ganray config, so TensorBoard gets no HParams row: %s", e)
        return None


def _training_ended(cfg: config.Config, step: int, verdict: dict | None) -> bool:
    """Whether the loop reports no more after this: the last step, an early stop, a divergence."""
    return step >= cfg.train.steps or bool(verdict and (verdict.get("stopped_early")
                                                        or verdict.get("verdict") == "diverged"))


def _drop_rows_from(segments: list[str], first_step: int) -> None:
    """Rewrite, newest first, the segments holding rows at or after `first_step` (and lines a crash
    cut), until one needs no change: the stream then continues with what this run writes."""
    for uri in reversed(segments):
        text = storage.read_bytes(uri).decode("utf-8")
        lines = text.splitlines(keepends=True)
        if not lines:  # emptied by an earlier run that started afresh: older segments may still hold rows
            continue
        kept = [ln for ln in lines if (s := row_step(ln)) is not None and s < first_step]
        kept = [ln if ln.endswith("\n") else ln + "\n" for ln in kept]
        if kept == lines:
            return
        storage.put_bytes(uri, "".join(kept).encode("utf-8"))


def _safe_relpath(name: str) -> str:
    rel = os.path.normpath(name).replace(os.sep, "/")
    if rel.startswith(("../", "/")) or rel in ("..", ".", ""):
        raise ValueError(f"artifact name {name!r} must be a relative path inside the trial folder")
    return rel
