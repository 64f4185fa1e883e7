"""In-process training without Ray: `ganray train --local CONFIG`.

Writes the trial record a Ray run writes, through the same recorder (ganray.artifacts.layout):
<storage>/<experiment>/config.yaml and trials/<trial>/…, tensorboard/<trial>/. Re-running the
same experiment resumes from the newest checkpoint.
"""
from __future__ import annotations

import logging

from ganray import storage
from ganray.artifacts import layout, reader
from ganray.artifacts.recorder import TrialRecorder
from ganray.config import Config
from ganray.metrics.classifier.ready import prepare as prepare_classifier
from ganray.train import TrainResult, checkpoint, train

log = logging.getLogger(__name__)


def run_local(cfg: Config, trial: str = "train", progress: bool = True) -> TrainResult:
    cfg = storage.resolve_config(cfg)
    paths = layout.trial_paths(storage.experiment_uri(cfg), trial)
    layout.write_experiment_config(paths.experiment, cfg.to_yaml())
    # the reference classifier trained (when none is stored) with a line on the console, not silently
    # inside the loop's first evaluation: ganray.metrics.classifier.ready
    prepare_classifier(cfg, say=print if progress else log.info)
    resume = None
    last = reader.latest_checkpoint(paths.trial)
    if last is not None:
        resume = checkpoint.load(last)
        checkpoint.check_compatible(resume, cfg, f"existing checkpoint {last}")
        log.info("resuming %s from %s (step %d)", trial, last, resume["step"])
    # resume_step = the first step this run writes: output logged after the checkpoint by the
    # interrupted run is dropped, not doubled (the checkpoint's own step was logged before it)
    with TrialRecorder(paths, config_yaml=cfg.to_yaml(), resume_step=resume["step"] + 1 if resume else None) as rec:

        def report(step, metrics, *, samples=None, verdict=None):
            state = rec.report(step, metrics, samples=samples, verdict=verdict)
            if state is not None:  # its metrics are visible now
                rec.put_checkpoint(step, checkpoint.to_bytes(state))

        return train(cfg, report=report, save_checkpoint=rec.stage_checkpoint,
                     should_stop=lambda step, metrics: False, resume_from=resume, progress=progress)
