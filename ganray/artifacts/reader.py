"""The one reader of the trial record (ganray.artifacts.layout): what the report, `ganray eval`
on a trial and the sweep summary know of a trial comes from here.

A record being written, cut short by a crash or left by an older ganray is still a record:
every problem with one becomes a note on it, never an exception. The one error is an
experiment with no trials at all (bad input: the user named the wrong folder).

It reads through ganray.storage only, so it works the same on a local folder, S3 and GCS,
and it imports no torch.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import yaml

from ganray import storage
from ganray.artifacts import layout
from ganray.config import Config, ConfigError, from_dict
from ganray.exits import BadInput

log = logging.getLogger(__name__)

# NaN and ±inf are not JSON: the recorder writes them as these strings.
NON_FINITE = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}
# What a file of a bad record raises when read: gone (deleted meanwhile) or not text. Any other
# StorageError is an outage or a denied access: it propagates, reported as such, never as a note.
READ_ERRORS = (storage.StorageNotFoundError, UnicodeDecodeError)


class ExperimentNotFound(BadInput, FileNotFoundError):
    """No trials at <storage>/<experiment>: no such folder, or nothing in it yet. Exit code 2."""


@dataclass
class TrialRecord:
    """One trial's record as read: whatever of it exists, and a note for whatever is wrong."""

    name: str
    uri: str  # <exp>/trials/<name>
    config: Config | None = None  # its config.yaml
    rows: list[dict[str, Any]] = field(default_factory=list)  # the metrics stream, by step
    verdict: dict[str, Any] | None = None  # verdict.json, when it holds one of layout.VERDICTS
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, URI), by step
    gif_uri: str | None = None
    checkpoints: list[tuple[int, str]] = field(default_factory=list)  # (step, URI), by step
    notes: list[str] = field(default_factory=list)  # missing or unreadable files

    @property
    def counts(self) -> dict[str, Any] | None:
        """verdict.json's per-class (or per-mode) counts of the last evaluation; None when absent."""
        return (self.verdict or {}).get("counts")


def brief(e: BaseException, limit: int = 200) -> str:
    """"CheckpointError: first line of the message", cut to `limit` characters for a note."""
    first = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_text(uri: str) -> str:
    return storage.read_bytes(uri).decode("utf-8")


def read_config(uri: str) -> Config:
    """The Config in a config.yaml; ConfigError, yaml.YAMLError or a READ_ERRORS error when it is not one."""
    return from_dict(yaml.safe_load(read_text(uri)))


def list_trials(exp_uri: str) -> dict[str, set[str]]:
    """{trial: {paths relative to the trial folder}} from one recursive listing of <exp>/trials."""
    trials_uri = storage.join(exp_uri, layout.TRIALS_DIR)
    prefix = trials_uri.rstrip("/") + "/"
    out: dict[str, set[str]] = {}
    for uri in storage.list_files(trials_uri):
        if not uri.startswith(prefix):
            continue
        trial, _, rel = uri[len(prefix):].partition("/")
        if rel and not trial.startswith((".", "_")):  # skip hidden bookkeeping folders
            out.setdefault(trial, set()).add(rel)
    return out


def _relative_files(trial_uri: str) -> set[str]:
    prefix = trial_uri.rstrip("/") + "/"
    return {u[len(prefix):] for u in storage.list_files(trial_uri) if u.startswith(prefix)}


def _value(v: Any) -> Any:
    return NON_FINITE.get(v, v) if isinstance(v, str) else v


def parse_rows(text: str, where: str, notes: list[str]) -> list[dict[str, Any]]:
    """The rows of one JSON-lines file; lines that do not parse are skipped and noted."""
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1  # typically the last line of a file being written
            continue
        if not isinstance(row, dict):
            bad += 1
            continue
        row = {k: _value(v) for k, v in row.items()}
        step = row.get("step")
        if isinstance(step, float) and step.is_integer():  # older records wrote the step as 20.0
            row["step"] = int(step)
        rows.append(row)
    if bad:
        notes.append(f"{where}: {bad} unreadable line(s) skipped")
    return rows


def metrics_files(files: set[str]) -> list[str]:
    """The metrics stream's files in reading order: the legacy metrics.jsonl, then the segments by name."""
    segments = sorted(f for f in files if layout.METRICS_SEGMENT_RE.match(f))
    return ([layout.LEGACY_METRICS] if layout.LEGACY_METRICS in files else []) + segments


def _read_rows(trial_uri: str, files: set[str], notes: list[str]) -> list[dict[str, Any]]:
    names = metrics_files(files)
    if not names:
        notes.append(f"metrics missing (no {layout.METRICS_DIR}/*.jsonl)")
        return []
    rows: list[dict[str, Any]] = []
    for rel in names:
        try:
            rows += parse_rows(read_text(storage.join(trial_uri, rel)), rel, notes)
        except READ_ERRORS as e:
            notes.append(f"{rel} unreadable ({brief(e)})")
    # one stream by step (a stable sort: rows of one step keep their order)
    rows.sort(key=lambda r: r["step"] if isinstance(r.get("step"), (int, float)) else 0)
    return rows


def _read_verdict(uri: str, notes: list[str]) -> dict[str, Any] | None:
    try:
        v = json.loads(read_text(uri))
    except (*READ_ERRORS, json.JSONDecodeError) as e:
        notes.append(f"{layout.VERDICT} unreadable ({brief(e)})")
        return None
    if not isinstance(v, dict) or v.get("verdict") not in layout.VERDICTS:
        notes.append(f"{layout.VERDICT} holds no known verdict ({str(v)[:80]})")
        return None
    counts = v.get("counts")
    if counts is not None and not _counts_ok(counts):
        notes.append(f"{layout.VERDICT}: counts malformed, ignored")
        v = {**v, "counts": None}
    return v


def _counts_ok(c: Any) -> bool:
    """{"names": [str], "counts": [int] of the same length, ...}."""
    return (isinstance(c, dict) and isinstance(c.get("names"), list) and isinstance(c.get("counts"), list)
            and len(c["names"]) == len(c["counts"]) > 0
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in c["counts"]))


def _stepped(trial_uri: str, files: set[str], pattern) -> list[tuple[int, str]]:
    return sorted((int(m.group(1)), storage.join(trial_uri, rel)) for rel in files if (m := pattern.match(rel)))


def read_trial(exp: str | layout.TrialPaths, name: str, files: set[str] | None = None) -> TrialRecord:
    """Trial `name` of the experiment at `exp` (its URI or its TrialPaths). `files`, the paths
    relative to the trial folder, saves a listing when the caller listed the experiment already."""
    uri = exp.trial if isinstance(exp, layout.TrialPaths) else layout.trial_paths(exp, name).trial
    t = TrialRecord(name=name, uri=uri)
    if files is None:
        files = _relative_files(uri)
    if layout.CONFIG in files:
        try:
            t.config = read_config(storage.join(uri, layout.CONFIG))
        except (*READ_ERRORS, ConfigError, yaml.YAMLError) as e:
            t.notes.append(f"{layout.CONFIG} unreadable ({brief(e)})")
    else:
        t.notes.append(f"{layout.CONFIG} missing")
    t.rows = _read_rows(uri, files, t.notes)
    if layout.VERDICT in files:
        t.verdict = _read_verdict(storage.join(uri, layout.VERDICT), t.notes)
    t.samples = _stepped(uri, files, layout.SAMPLE_RE)
    t.checkpoints = _stepped(uri, files, layout.CHECKPOINT_RE)
    if layout.GIF in files:
        t.gif_uri = storage.join(uri, layout.GIF)
    return t


def read_experiment(exp_uri: str) -> tuple[Config | None, list[TrialRecord], list[str]]:
    """(the experiment's config, its trials by name, notes); ExperimentNotFound when it has no trials."""
    notes: list[str] = []
    cfg = None
    cfg_uri = storage.join(exp_uri, layout.CONFIG)
    try:
        if storage.exists(cfg_uri):
            cfg = read_config(cfg_uri)
        else:
            notes.append(f"{layout.CONFIG} (the sweep config) missing")
    except (*READ_ERRORS, ConfigError, yaml.YAMLError) as e:
        notes.append(f"{layout.CONFIG} (the sweep config) unreadable ({brief(e)})")
    files = list_trials(exp_uri)
    if not files:
        trials_uri = storage.join(exp_uri, layout.TRIALS_DIR)
        what = "has no trials" if storage.exists(exp_uri) else "does not exist"
        raise ExperimentNotFound(f"{exp_uri}: experiment {what} (expected trial folders in {trials_uri}/<trial>/); "
                                 "pass <storage>/<experiment>, e.g. ./ganray_results/zdim-mnist-local")
    return cfg, [read_trial(exp_uri, name, files[name]) for name in sorted(files)], notes


def read_rows(trial_uri: str) -> list[dict[str, Any]]:
    """The trial's metrics stream, by step; what could not be read is logged."""
    notes: list[str] = []
    rows = _read_rows(trial_uri, _relative_files(trial_uri), notes)
    for n in notes:
        log.warning("%s: %s", trial_uri, n)
    return rows


def read_verdict(trial_uri: str) -> dict[str, Any] | None:
    """The trial's verdict.json, or None when it has none (or none that can be read: logged)."""
    notes: list[str] = []
    v = _read_verdict(storage.join(trial_uri, layout.VERDICT), notes)
    for n in notes:
        log.debug("%s: %s", trial_uri, n)
    return v


def last_row(trial_uri: str) -> dict[str, Any] | None:
    rows = read_rows(trial_uri)
    return rows[-1] if rows else None


def latest_checkpoint(trial_uri: str) -> str | None:
    """The URI of the trial's newest checkpoint file, or None."""
    ckpts = _stepped(trial_uri, _relative_files(trial_uri), layout.CHECKPOINT_RE)
    return ckpts[-1][1] if ckpts else None
