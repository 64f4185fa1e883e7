"""In-process training without Ray: `ganray train --local CONFIG`.

Writes what a Ray run writes, in the same layout (DESIGN.md):
<storage>/<experiment>/config.yaml, trials/<trial>/{metrics.jsonl, checkpoint_<step>/checkpoint.pt,
samples/, fixed_z.gif, verdict.json}, tensorboard/<trial>/. Re-running the same experiment
resumes from the newest checkpoint.
"""
from __future__ import annotations

import logging
import re

from ganray import checkpoint, storage
from ganray.artifacts import TrialArtifacts
from ganray.config import Config
from ganray.loop import TrainResult, train

log = logging.getLogger(__name__)

_STEP = re.compile(r"checkpoint_(\d+)/checkpoint\.pt$")


def trial_uris(cfg: Config, trial: str) -> tuple[str, str]:
    exp = storage.experiment_uri(cfg)
    return storage.join(exp, "trials", trial), storage.join(exp, "tensorboard", trial)


def latest_checkpoint(trial_uri: str) -> str | None:
    """URI of the newest checkpoint_<step>/checkpoint.pt of a trial (the layout Ray Train uses), or None."""
    if not storage.exists(trial_uri):
        return None
    found = [(int(m.group(1)), f) for f in storage.list_files(trial_uri) if (m := _STEP.search(f))]
    return max(found)[1] if found else None


def run_local(cfg: Config, trial: str = "train", progress: bool = True) -> TrainResult:
    cfg = storage.resolve_config(cfg)
    trial_uri, tb_uri = trial_uris(cfg, trial)
    storage.put_bytes(storage.join(storage.experiment_uri(cfg), "config.yaml"), cfg.to_yaml().encode())
    resume = None
    last = latest_checkpoint(trial_uri)
    if last is not None:
        resume = checkpoint.load(last)
        checkpoint.check_compatible(resume, cfg, f"existing checkpoint {last}")
        log.info("resuming %s from %s (step %d)", trial, last, resume["step"])
    # resume_step = the first step this run writes: output logged after the checkpoint by the
    # interrupted run is dropped, not doubled (the checkpoint's own step was logged before it)
    art = TrialArtifacts(trial_uri, tb_uri, resume_step=resume["step"] + 1 if resume else None)
    art.write_text("config.yaml", cfg.to_yaml())

    pending: dict = {}

    def save_checkpoint(step, state, metrics):
        pending["state"] = state  # written in report(), after this step's metrics

    def report(step, metrics, *, samples=None, verdict=None):
        art.scalars(step, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        if samples is not None:
            art.samples(step, samples)
        if verdict is not None:
            art.verdict(verdict)
        state = pending.pop("state", None)
        if state is not None:
            # The artifacts go first, so a resume never finds a checkpoint newer than its metrics.
            art.flush()
            checkpoint.save(state, storage.join(trial_uri, f"checkpoint_{step:06d}", checkpoint.FILENAME))

    try:
        result = train(cfg, report=report, save_checkpoint=save_checkpoint,
                       should_stop=lambda step, metrics: False, resume_from=resume, progress=progress)
    finally:
        art.close()
    return result
