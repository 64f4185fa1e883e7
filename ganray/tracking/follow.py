"""What a tracker is sent of one trial, read from the trial record (ganray.artifacts.reader): its
parameters, its metrics rows (each once, in step order, at the step it was logged), its verdict
codes and its sample grids. No Ray and no tracker library here: the callbacks hand these to
MLflow and W&B.

The record is read incrementally (RecordReader): a metrics segment is final once a later one
exists (ganray.artifacts.segments, the uploader's order), so each final segment is read once and
only the newest one again at each result; verdict.json and the sample grids are read only when
they are sent (a result that carries an evaluation's verdict, the trial's end). The trackers
following one trial share its reader (Records): one read of the record per Tune event, not one
per tracker.
"""
from __future__ import annotations

import bisect
import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from ganray import storage
from ganray.args import redact_uri
from ganray.artifacts import layout, reader
from ganray.config import SWEEP_AXES, Config, config_of

log = logging.getLogger(__name__)

VERDICT_METRIC = "verdict_code"  # layout.VERDICT_CODES: the verdict's index in layout.VERDICTS
ROW_KEYS = ("step", "time")  # a row's own fields, not metrics
SWEEP_PARAMS = {key: ("seed" if field_ == "seeds" else field_) for field_, key in SWEEP_AXES}  # model.z_dim -> z_dim


def trial_point(trial: Any) -> tuple[Config, str]:
    """(config, name) of a Tune trial of ganray.sweep, whose param space gives each trial its
    point as {"point": {"config": Config or its YAML text, "trial": name}}."""
    point = trial.config["point"]
    return config_of(point["config"]), point["trial"]


class FinishedRun:
    """A `ganray train` run posing as the Tune trial the callbacks expect (trial_point's shape), with
    an id of its own: each `ganray train` is one tracker run, holding the whole record."""

    def __init__(self, cfg: Config, trial: str):
        import uuid

        self.config = {"point": {"config": cfg, "trial": trial}}
        self.trial_id = f"train-{uuid.uuid4().hex[:12]}"
        self.name = trial

    def __str__(self) -> str:
        return self.name


def sweep_params(cfg: Config) -> dict[str, Any]:
    """The swept keys under short names (z_dim, lr_g, lr_d, family, seed), whether or not this
    sweep varies them, so runs of different sweeps compare."""
    d = cfg.to_dict()
    out = {}
    for key, short in SWEEP_PARAMS.items():
        sec, name = key.split(".")
        out[short] = d[sec][name]
    if cfg.experiment.variant:  # a sweep.variants trial: the name of its set of overrides
        out["variant"] = cfg.experiment.variant
    return out


def _config(cfg: Config) -> dict[str, dict[str, Any]]:
    return {sec: {k: redact_uri(v) for k, v in values.items()} for sec, values in cfg.to_dict().items()}


def flat_params(cfg: Config, trial: str) -> dict[str, str]:
    """Every parameter as text: the trial's name, the sweep parameters under their short names,
    then every config key as section.key (lists as JSON; credentials in URIs redacted)."""
    out: dict[str, Any] = {"trial": trial, **sweep_params(cfg)}
    for sec, values in _config(cfg).items():
        for key, value in values.items():
            out[f"{sec}.{key}"] = value
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in out.items()}


def nested_params(cfg: Config, trial: str) -> dict[str, Any]:
    """The same parameters for a tracker that shows nested keys as section.key (W&B)."""
    return {"trial": trial, **sweep_params(cfg), **_config(cfg)}


@dataclass
class Row:
    step: int
    time: float | None
    metrics: dict[str, float]


@dataclass
class Final:
    """A trial's last word: verdict.json's verdict (None when it wrote none) and its sample grids."""

    verdict: dict[str, Any] | None
    samples: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The verdict and its evidence as flat values (tags, a run summary)."""
        v = self.verdict
        out: dict[str, Any] = {"verdict_legend": layout.VERDICT_LEGEND}
        if v is not None:
            out.update(verdict=v["verdict"], verdict_code=layout.VERDICT_CODES[v["verdict"]],
                       verdict_step=v.get("step"), first_seen_step=v.get("first_seen_step"),
                       stopped_early=bool(v.get("stopped_early")), reasons="; ".join(v.get("reasons") or []))
        if self.samples:
            out["last_sample_grid"] = self.samples[-1][1]
        return out


def _step_key(row: dict[str, Any]) -> Any:
    """The order of the metrics stream (reader._read_rows: by step, a row without one first)."""
    step = row.get("step")
    return step if isinstance(step, (int, float)) else 0


@dataclass
class _File:
    """One file of the metrics stream as read: its text (None: unreadable, noted) and its rows."""

    rel: str
    text: str | None
    rows: list[dict[str, Any]]


class RecordReader:
    """One trial's record as the trackers follow it, read incrementally: `rows` equal
    reader.read_trial's rows at every `refresh`, `samples` and `verdict` its sample grids and
    verdict as of the last refresh that asked for them.

    A refresh lists the metrics folder and reads the files of the stream not read yet since they
    became final (a later one exists) plus the newest one; those read final are kept. A resumed
    run rewrites the newest segments (ganray.artifacts.recorder: it drops the rows it will write
    again); a file read earlier that is no longer what it was (its text does not go on from the
    text read before), a file gone, or rows going back in steps are seen as such, and the whole
    stream is read again. `token` names the Tune event being logged: a refresh with the token of
    the last one (the other tracker, same result) reads nothing."""

    def __init__(self, paths: layout.TrialPaths):
        self.paths = paths
        self.rows: list[dict[str, Any]] = []
        self.samples: list[tuple[int, str]] = []
        self.verdict: dict[str, Any] | None = None
        self._token: Any = None
        self._have: set[str] = set()  # what the refresh of `_token` has read: "rows", "samples", "verdict"
        self._finals: list[str] = []  # the stream's files read final (their rows kept, not their text), in order
        self._final_rows: list[dict[str, Any]] = []  # their rows, by step
        self._tail: _File | None = None  # the newest file, as read last
        self._legacy: bool | None = None  # metrics.jsonl (an older ganray's) exists; None: not looked yet

    @property
    def uri(self) -> str:
        return self.paths.trial

    def refresh(self, token: Any = None, *, samples: bool = False, verdict: bool = False) -> None:
        """Read what changed: the rows, and the sample grids and verdict when asked. With the
        `token` of the last refresh (not None) only what that one did not read yet is read."""
        if token is None or token != self._token:
            self._token, self._have = token, set()
        if "rows" not in self._have:
            self._read_rows()
            self._have.add("rows")
        if samples and "samples" not in self._have:
            self.samples = self._read_samples()
            self._have.add("samples")
        if verdict and "verdict" not in self._have:
            self.verdict = reader.read_verdict(self.uri)  # None when absent or unreadable (logged)
            self._have.add("verdict")

    # -- the metrics stream ---------------------------------------------------------------------

    def _stream(self) -> list[str]:
        """The stream's files (paths relative to the trial folder), in reading order (reader.metrics_files)."""
        prefix = self.uri.rstrip("/") + "/"
        files = {u[len(prefix):] for u in storage.list_files(storage.join(self.uri, layout.METRICS_DIR))
                 if u.startswith(prefix)}
        if self._legacy is None:  # never written by this ganray: looked for once (and after a rewrite)
            self._legacy = storage.exists(storage.join(self.uri, layout.LEGACY_METRICS))
        if self._legacy:
            files.add(layout.LEGACY_METRICS)
        return reader.metrics_files(files)

    def _read(self, rel: str, notes: list[str]) -> _File:
        try:
            text = reader.read_text(storage.join(self.uri, rel))
        except reader.READ_ERRORS as e:
            notes.append(f"{rel} unreadable ({reader.brief(e)})")
            return _File(rel, None, [])
        return _File(rel, text, reader.parse_rows(text, rel, notes))

    def _read_rows(self) -> None:
        notes: list[str] = []
        if not self._read_new(notes):  # rewritten since it was read: everything again
            self._finals, self._final_rows, self._tail, self._legacy = [], [], None, None
            notes.clear()
            self._read_new(notes)
        for n in notes:
            log.debug("%s: %s", self.uri, n)

    def _read_new(self, notes: list[str]) -> bool:
        """Read the files not read final yet and the newest; False (nothing kept) when a file read
        before has changed. What is kept is kept only once everything was read (an outage raises
        with the reader as it was)."""
        names = self._stream()
        if not names:
            if self._finals or self._tail is not None:
                return False
            notes.append(f"metrics missing (no {layout.METRICS_DIR}/*.jsonl)")
            self.rows = []
            return True
        known = self._finals + ([self._tail.rel] if self._tail is not None else [])
        if names[:len(known)] != known:
            return False  # a file read before is gone
        new = [self._read(rel, notes) for rel in names[len(self._finals):]]  # the last newest again, and later ones
        if self._tail is not None and not _goes_on(self._tail, new[0]):
            return False  # the newest file read last time was rewritten, not appended to
        fresh = [r for f in new for r in f.rows]
        if self._final_rows and fresh and min(map(_step_key, fresh)) < _step_key(self._final_rows[-1]):
            return False  # steps going back: rows were dropped and written again
        *finals, tail = new
        if finals:
            self._finals += [f.rel for f in finals]
            # a stable sort of sorted rows and later ones: the order of sorting them all at once
            self._final_rows = sorted(self._final_rows + [r for f in finals for r in f.rows], key=_step_key)
        self._tail = tail
        self.rows = sorted(self._final_rows + tail.rows, key=_step_key)
        return True

    # -- the sample grids ---------------------------------------------------------------------------

    def _read_samples(self) -> list[tuple[int, str]]:
        """(step, URI) of the trial's sample grids, by step (reader.read_trial's `samples`)."""
        prefix = self.uri.rstrip("/") + "/"
        found = []
        for u in storage.list_files(storage.join(self.uri, layout.SAMPLES_DIR)):
            if u.startswith(prefix) and (m := layout.SAMPLE_RE.match(u[len(prefix):])):
                found.append((int(m.group(1)), storage.join(self.uri, u[len(prefix):])))
        return sorted(found)


def _goes_on(before: _File, now: _File) -> bool:
    """Whether `now`, file `before` read again, is `before` grown (more of it uploaded), not rewritten."""
    if before.text is None or now.text is None:
        return before.text is None and now.text is None
    return now.text.startswith(before.text)


class Records:
    """The RecordReaders of the trials being followed, one per trial, shared by the followers of
    the trackers (ganray.tracking.callbacks gives both trackers one Records): `acquire` when a
    tracker starts following a trial, `release` when it stops."""

    def __init__(self) -> None:
        self._readers: dict[str, list] = {}  # trial URI -> [reader, followers holding it]

    def acquire(self, paths: layout.TrialPaths) -> RecordReader:
        entry = self._readers.setdefault(paths.trial, [RecordReader(paths), 0])
        entry[1] += 1
        return entry[0]

    def release(self, reader_: RecordReader) -> None:
        entry = self._readers.get(reader_.uri)
        if entry is None or entry[0] is not reader_:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._readers[reader_.uri]

    @contextlib.contextmanager
    def holding(self, paths: layout.TrialPaths):
        """The trial's reader kept for the block, between one tracker's follower and the next's."""
        held = self.acquire(paths)
        try:
            yield held
        finally:
            self.release(held)

    def __len__(self) -> int:
        return len(self._readers)


def result_token(iteration: Any, result: dict) -> tuple:
    """The token of a Tune result (the same for every callback it is given to)."""
    return ("result", iteration, result.get("training_iteration"), result.get("step"))


class TuneEnds:
    """For the trackers' Tune callbacks: Tune's on_trial_complete/on_trial_error give the
    iteration that log_trial_end does not; `_end_token` holds it while log_trial_end runs, so both
    trackers' ends share one read of the record."""

    _end_token: Any = None

    def on_trial_complete(self, iteration: int, trials, trial, **info):
        self._end_token = ("end", iteration)
        try:
            return super().on_trial_complete(iteration, trials, trial, **info)
        finally:
            self._end_token = None

    def on_trial_error(self, iteration: int, trials, trial, **info):
        self._end_token = ("end", iteration)
        try:
            return super().on_trial_error(iteration, trials, trial, **info)
        finally:
            self._end_token = None


class TrialFollower:
    """One trial's record as a tracker follows it: `take` returns the rows not yet sent (those at
    or before `upto`), `sent` marks them delivered (a failed delivery is taken again next time).
    The record is read by the trial's RecordReader in `records` (shared with the other tracker);
    `close` when the tracker stops following the trial."""

    def __init__(self, cfg: Config, trial: str, records: Records | None = None):
        self.trial = trial
        self.paths = layout.trial_paths(storage.experiment_uri(cfg), trial)
        self.records = records if records is not None else Records()
        self.reader = self.records.acquire(self.paths)
        self.sent_step = -1  # the last step delivered
        self.codes: dict[int, int] = {}  # step -> verdict code, from the results that carried a verdict
        self.samples: list[tuple[int, str]] = []
        self.sent_samples = 0
        self._closed = False

    @property
    def uri(self) -> str:
        return self.paths.trial

    @property
    def samples_uri(self) -> str:
        return storage.join(self.paths.trial, layout.SAMPLES_DIR)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.records.release(self.reader)

    def note_verdict(self, step: Any, verdict: Any) -> None:
        if isinstance(step, (int, float)) and verdict in layout.VERDICT_CODES:
            self.codes[int(step)] = layout.VERDICT_CODES[verdict]

    def take(self, upto: Any = None, *, final: bool = False, evaluated: bool = False,
             token: Any = None) -> list[Row]:
        """The rows after the last delivered step, up to `upto`, from the record as read now. The
        sample grids are read too when `evaluated` (the result carries an evaluation's verdict) or
        `final` (the trial ended), verdict.json when `final`: its row carries its code. `token`:
        the Tune event (result_token, TuneEnds), for the other tracker to share this read."""
        rd = self.reader
        rd.refresh(token, samples=final or evaluated, verdict=final)
        if final and rd.verdict is not None:
            self.note_verdict(rd.verdict.get("step"), rd.verdict["verdict"])
        limit = upto if isinstance(upto, (int, float)) and math.isfinite(upto) else math.inf
        rows = []
        # the stream is by step: start after the last step delivered, stop after `upto`
        for i in range(bisect.bisect_right(rd.rows, self.sent_step, key=_step_key), len(rd.rows)):
            r = rd.rows[i]
            step = r.get("step")
            if _step_key(r) > limit:
                break
            if not isinstance(step, int) or step <= self.sent_step:
                continue
            metrics = {k: float(v) for k, v in r.items()
                       if k not in ROW_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if step in self.codes:
                metrics[VERDICT_METRIC] = float(self.codes[step])
            t = r.get("time")
            rows.append(Row(step, float(t) if isinstance(t, (int, float)) else None, metrics))
        if final or evaluated:
            self.samples = rd.samples
        return rows

    def final(self) -> Final:
        """The trial's last word, as read by the last `take(final=True)`."""
        return Final(self.reader.verdict, list(self.reader.samples))

    def sent(self, rows: list[Row], samples: list[tuple[int, str]] = ()) -> None:
        """Mark `rows` (and the sample grids `samples` of new_samples) as delivered."""
        if rows:
            self.sent_step = max(self.sent_step, rows[-1].step)
        self.sent_samples += len(samples)

    def new_samples(self) -> list[tuple[int, str]]:
        """Sample grids (step, URI) read by `take` and not yet delivered."""
        return self.samples[self.sent_samples:]
