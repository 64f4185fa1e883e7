"""The trial record's layout: where every file of an experiment and of its trials lives, and
the verdict names the record holds. Defined here once; the recorder writes these paths, the
reader reads them, and nothing else spells them.

    <storage>/<experiment>/
      config.yaml                          the resolved sweep (or run) config
      tensorboard/<trial>/events.out.tfevents.*
      trials/<trial>/
        config.yaml                        the resolved config that ran
        metrics/<seq:06d>.jsonl            metrics rows; the segments in name order are one stream
        verdict.json                       the last evaluation's verdict and its evidence
        samples/step_<step:06d>.png        fixed-z sample grids
        fixed_z.gif                        those grids as frames
        checkpoint_<step:06d>/checkpoint.pt
        checkpoint_manager_snapshot.json   Ray Train's list of the registered checkpoints
      report.md, report.html, trials.csv, figures/*.png
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ganray import storage

CONFIG = "config.yaml"
METRICS_DIR = "metrics"
LEGACY_METRICS = "metrics.jsonl"   # one file, written by ganray before metrics were segmented
VERDICT = "verdict.json"
SAMPLES_DIR = "samples"
GIF = "fixed_z.gif"
CHECKPOINT_FILE = "checkpoint.pt"
TRIALS_DIR = "trials"
TENSORBOARD_DIR = "tensorboard"
# Ray Train's own file in a trial folder: the checkpoints it has registered, which a re-run resumes from
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"

# conditional and translation runs' verdicts last, so that the codes below of the others stay what they were
VERDICTS = ("healthy", "partial_collapse", "collapsed", "garbage", "diverged", "ignores_condition",
            "collapsed_per_condition", "content_lost", "many_to_one")
# what the collapse stopper stops
BAD_VERDICTS = ("collapsed", "diverged", "garbage", "ignores_condition", "collapsed_per_condition", "content_lost",
                "many_to_one")
# The verdict as a number, for trackers that hold numbers only (TensorBoard's HParams, MLflow):
# its index in VERDICTS. VERDICT_LEGEND says so in words wherever such a number is shown.
VERDICT_CODES = {v: i for i, v in enumerate(VERDICTS)}
VERDICT_LEGEND = ", ".join(f"{i} {v}" for v, i in VERDICT_CODES.items())

METRICS_SEGMENT_RE = re.compile(r"^metrics/(\d{6})\.jsonl$")
SAMPLE_RE = re.compile(r"^samples/step_(\d+)\.png$")
CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)/checkpoint\.pt$")


def metrics_segment(seq: int) -> str:
    return f"{METRICS_DIR}/{seq:06d}.jsonl"


def sample_file(step: int) -> str:
    return f"{SAMPLES_DIR}/step_{int(step):06d}.png"


def checkpoint_dir(step: int) -> str:
    return f"checkpoint_{int(step):06d}"


def checkpoint_file(step: int) -> str:
    return f"{checkpoint_dir(step)}/{CHECKPOINT_FILE}"


@dataclass(frozen=True)
class TrialPaths:
    experiment: str   # <storage>/<experiment>
    trial: str        # <storage>/<experiment>/trials/<trial>  (Ray's checkpoints land here too)
    tensorboard: str  # <storage>/<experiment>/tensorboard/<trial>

    @property
    def name(self) -> str:
        return self.trial.rstrip("/").rsplit("/", 1)[-1]


def trial_paths(experiment_uri: str, trial: str) -> TrialPaths:
    """The paths of trial `trial` of the experiment at `experiment_uri` (<storage>/<experiment>)."""
    return TrialPaths(experiment_uri, storage.join(experiment_uri, TRIALS_DIR, trial),
                      storage.join(experiment_uri, TENSORBOARD_DIR, trial))


def write_experiment_config(experiment_uri: str, config_yaml: str) -> None:
    """<experiment>/config.yaml, the resolved config of the run or sweep, written by its driver before
    the first trial starts (here, not in the recorder: the sweep driver and `ganray validate`'s
    imports stay free of the recorder's image and TensorBoard libraries)."""
    storage.put_bytes(storage.join(experiment_uri, CONFIG), config_yaml.encode("utf-8"))
