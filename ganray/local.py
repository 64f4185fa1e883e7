"""In-process training without Ray: `ganray train --local CONFIG`.

Writes the trial record a Ray run writes, through the same recorder (ganray.artifacts.layout):
<storage>/<experiment>/config.yaml and trials/<trial>/…, tensorboard/<trial>/. Re-running the
same experiment resumes from the newest checkpoint.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable

from ganray import storage
from ganray.artifacts import layout, reader
from ganray.artifacts.recorder import TrialRecorder
from ganray.config import Config
from ganray.metrics.classifier.ready import prepare as prepare_classifier
from ganray.train import TrainResult, checkpoint, train
from ganray.train.threads import pin_threads

log = logging.getLogger(__name__)


def run_local(cfg: Config, trial: str = "train", progress: bool = True) -> TrainResult:
    cfg = storage.resolve_config(cfg)
    paths = layout.trial_paths(storage.experiment_uri(cfg), trial)
    layout.write_experiment_config(paths.experiment, cfg.to_yaml())
    pin_threads(cfg)  # before a classifier is trained here: its weights depend on the count too
    # the reference classifier trained (when none is stored) with a line on the console, not silently
    # inside the loop's first evaluation: ganray.metrics.classifier.ready
    prepare_classifier(cfg, say=print if progress else log.info)
    return run_trial(cfg, trial, progress=progress)


def run_trial(cfg: Config, trial: str, *, stopper: Any = None,
              on_report: Callable[[int, dict, dict | None, str | None], None] | None = None,
              keep_checkpoints: int | None = None, progress: bool = False) -> TrainResult:
    """One trial in this process: the loop, its record through the recorder, and its checkpoints
    (trials/<trial>/checkpoint_<step>/checkpoint.pt); it resumes from the newest checkpoint in the
    trial folder. `ganray train --local` runs it, and so does each single-worker sweep trial, in its
    Tune actor (ganray.sweep).

    stopper: the loop's should_stop with state_dict/load_state_dict (the sweep's CollapseStopper):
        its state is restored from the checkpoint and saved in every new one.
    on_report(step, metrics, verdict, checkpoint_uri): called after each of the loop's reports,
        once its row (and its checkpoint file, whose URI it gets; else None) is stored.
    keep_checkpoints: the newest this many checkpoints are kept (None: all)."""
    cfg = storage.resolve_config(cfg)
    paths = layout.trial_paths(storage.experiment_uri(cfg), trial)
    pin_threads(cfg)  # per trial: a reused Tune actor may have run a trial of another config
    resume = None
    last = reader.latest_checkpoint(paths.trial)
    if last is not None:
        resume = checkpoint.load(last)
        checkpoint.check_compatible(resume, cfg, f"existing checkpoint {last}")
        log.info("resuming %s from %s (step %d)", trial, last, resume["step"])
    if stopper is not None and resume is not None:
        stopper.load_state_dict(resume.get("stopper") or {})  # its count of bad evaluations in a row
    # resume_step = the first step this run writes: output logged after the checkpoint by the
    # interrupted run is dropped, not doubled (the checkpoint's own step was logged before it)
    with TrialRecorder(paths, config_yaml=cfg.to_yaml(), resume_step=resume["step"] + 1 if resume else None,
                       stopper=stopper) as rec:

        def report(step, metrics, *, samples=None, verdict=None):
            state = rec.report(step, metrics, samples=samples, verdict=verdict)
            uri = None
            if state is not None:  # its metrics are visible now
                uri = rec.put_checkpoint(step, checkpoint.to_bytes(state))
                if keep_checkpoints is not None:
                    rec.drop_old_checkpoints(keep_checkpoints)
            if on_report is not None:
                on_report(step, metrics, verdict, uri)

        should_stop = stopper if stopper is not None else (lambda step, metrics: False)
        return train(cfg, report=report, save_checkpoint=rec.stage_checkpoint, should_stop=should_stop,
                     resume_from=resume, progress=progress)


def trial_log_lines() -> None:
    """ganray's INFO lines of an in-process trial (the evaluator's set-up, every logged step) on
    this actor's stderr, as a Ray Train worker writes them: Ray forwards them to the driver,
    whose console puts them in the sweep's log file (`(sweep_trial pid=…) step 20: …`).
    Once per actor process (Tune reuses actors)."""
    ganray_log = logging.getLogger("ganray")
    if any(getattr(h, "ganray_trial", False) for h in ganray_log.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.ganray_trial = True  # type: ignore[attr-defined]
    ganray_log.addHandler(handler)
    ganray_log.setLevel(logging.INFO)
    ganray_log.propagate = False  # once: not again through a handler Ray's worker may have on the root
