"""What the report knows of an experiment: its trials as read by the record reader, with the
verdict names, colours and parameters every table and figure shares."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from ganray import storage
from ganray.artifacts import reader
from ganray.artifacts.layout import VERDICTS
from ganray.artifacts.reader import TrialRecord, brief
from ganray.config import Config, ConfigError, parse_variant
from ganray.exits import BadInput

log = logging.getLogger(__name__)

NO_VERDICT = "no verdict"
NO_VERDICT_TEXT = "no verdict (still running or failed)"
# Worst first: the order of the summary, and which verdict colours a heatmap cell holding several trials.
SEVERITY = ("diverged", "garbage", "collapsed", "collapsed_per_condition", "many_to_one", "ignores_condition",
            "content_lost", "partial_collapse", "healthy", NO_VERDICT)
VERDICT_LABEL = {
    "healthy": "healthy",
    "partial_collapse": "partially collapsed",
    "collapsed": "collapsed",
    "garbage": "garbage",
    "diverged": "diverged",
    "ignores_condition": "ignores the condition",
    "collapsed_per_condition": "collapsed per condition",
    "content_lost": "lost the content",
    "many_to_one": "many-to-one",
    NO_VERDICT: NO_VERDICT,
}
SUMMARY_LABEL = {**VERDICT_LABEL, "garbage": "produced garbage",
                 NO_VERDICT: "without a verdict yet (still running or failed)"}
# Categorical colours, colour-blind safe (Okabe-Ito), the same in every figure and in the HTML.
VERDICT_COLOUR = {
    "healthy": "#009E73",
    "partial_collapse": "#E69F00",
    "collapsed": "#D55E00",
    "garbage": "#CC79A7",
    "diverged": "#000000",
    "ignores_condition": "#0072B2",
    "collapsed_per_condition": "#56B4E9",
    "content_lost": "#F0E442",
    "many_to_one": "#882255",  # Okabe-Ito has no ninth: Tol's wine, also colour-blind safe
    NO_VERDICT: "#BBBBBB",
}
COVERAGE_KEYS = ("classes_covered", "modes_covered")  # image datasets / 2D mixtures
PARAM_AXES = (  # (swept parameter, config section, config key, its sweep grid)
    ("z_dim", "model", "z_dim", "z_dim"),
    ("lr_g", "train", "lr_g", "lr_g"),
    ("lr_d", "train", "lr_d", "lr_d"),
    ("family", "train", "family", "family"),
    ("variant", "experiment", "variant", "variants"),  # the sweep.variants name ('' without variants)
    ("seed", "experiment", "seed", "seeds"),
)
SEED_AXIS = "seed"  # the one setting in which a grid point's trials differ
NO_COUNTS_TEXT = "no class histogram (the record holds no counts; `ganray report --samples N` regenerates them)"
# What a bad record makes regenerating from a checkpoint raise (config, data, checkpoint, storage)
REGENERATE_ERRORS = (BadInput, storage.StorageError)


@dataclass
class Reconstruction:
    """Held-out real images and a VAE's deterministic reconstructions G(μ(x))."""

    trial: str
    step: int
    originals: Any  # [n, C, H, W] array or tensor in [-1, 1]
    reconstructions: Any  # [n, C, H, W]
    mse: float  # mean over the held-out images of Σ_pixels (x − G(μ(x)))²
    n_mse: int  # images behind `mse`


class Regenerate(Protocol):
    """What the report is handed to make new samples from checkpoints (ganray.regenerate is
    one): the report itself imports no torch."""

    def class_counts(self, checkpoint_uri: str, n: int) -> dict[str, Any]:
        """verdict.json's `counts` format for n samples of the checkpoint's G, plus "generator"."""

    def reconstruct(self, checkpoint_uri: str, trial: str) -> Reconstruction:
        """A VAE checkpoint's reconstructions of held-out images."""


@dataclass
class ClassHistogram:
    """Shares of generated samples per class (or per mode), as labelled by the reference classifier."""

    shares: list[float]  # p_k, sum 1 (2D mixtures: the last entry is "off", samples near no mode)
    class_names: list[str]
    step: int | None  # training step of the generator behind it
    n: int | None  # samples behind it
    labeller: str  # what assigned the classes, e.g. "the mnist classifier (held-out accuracy 98.0%)"
    origin: str  # "checkpoint" (regenerated for the report) or "evaluation" (verdict.json's counts)
    generator: str = "G"  # "G" or "G_ema": the network that made the samples

    @classmethod
    def from_counts(cls, c: dict[str, Any], origin: str, step: int | None = None) -> ClassHistogram:
        """From verdict.json's `counts` (or a regenerator's, in the same format)."""
        # p_k = c_k / Σ_j c_j
        total = float(sum(c["counts"]))
        shares = [v / total if total > 0 else 0.0 for v in c["counts"]]
        s = c.get("step")
        return cls(shares, [str(x) for x in c["names"]], s if isinstance(s, int) else step,
                   c.get("n") if isinstance(c.get("n"), int) else int(total), str(c.get("labeller", "?")), origin,
                   str(c.get("generator", "G")))

    @property
    def source(self) -> str:
        """"2,000 samples of G at the step-300 checkpoint, labelled by the mnist classifier (...)"."""
        n = f"{self.n:,} samples" if self.n else "samples"
        where = (f"{self.generator} at the step-{self.step} checkpoint" if self.origin == "checkpoint"
                 else f"the step-{self.step} evaluation")
        return f"{n} of {where}, labelled by {self.labeller}"


@dataclass
class Trial:
    name: str
    uri: str
    params: dict[str, Any] = field(default_factory=dict)  # z_dim, lr_g, lr_d, family, variant, seed
    total_steps: int | None = None  # cfg.train.steps
    rows: list[dict[str, Any]] = field(default_factory=list)  # the metrics stream, by step
    verdict: dict[str, Any] | None = None
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, URI), by step
    gif_uri: str | None = None
    checkpoints: list[tuple[int, str]] = field(default_factory=list)  # (step, URI), by step
    histogram: ClassHistogram | None = None
    last_samples_png: bytes | None = None  # the newest samples/step_*.png, for the HTML
    fixed_z_gif: bytes | None = None
    notes: list[str] = field(default_factory=list)  # missing or unreadable files
    configured: bool = True  # its config.yaml was read (else its grid point is unknown: a point of its own)
    config: Config | None = None  # its config.yaml, else the sweep's (conditional and translation sections)

    @classmethod
    def from_record(cls, rec: TrialRecord, sweep_cfg: Config | None) -> Trial:
        cfg = rec.config or sweep_cfg
        params = params_of(rec.config) if rec.config is not None else base_params(sweep_cfg)
        return cls(rec.name, rec.uri, params, cfg.train.steps if cfg is not None else None, rec.rows, rec.verdict,
                   rec.samples, rec.gif_uri, rec.checkpoints, notes=list(rec.notes), configured=rec.config is not None,
                   config=cfg)

    @property
    def counts(self) -> dict[str, Any] | None:
        return (self.verdict or {}).get("counts")

    @property
    def verdict_name(self) -> str:
        v = (self.verdict or {}).get("verdict")
        return v if v in VERDICTS else NO_VERDICT

    @property
    def steps_run(self) -> int | None:
        steps = [int(r["step"]) for r in self.rows if isinstance(r.get("step"), (int, float))]
        if self.verdict and isinstance(self.verdict.get("step"), int):
            steps.append(self.verdict["step"])
        steps += [s for s, _ in self.checkpoints]
        return max(steps) if steps else None

    @property
    def stopped_early(self) -> bool:
        return bool((self.verdict or {}).get("stopped_early"))

    @property
    def verdict_step(self) -> int | None:
        """The step the current verdict was first seen (else the step it was given)."""
        v = self.verdict or {}
        step = v.get("first_seen_step")
        return step if isinstance(step, int) else (v.get("step") if isinstance(v.get("step"), int) else None)

    @property
    def status(self) -> str:
        """"healthy", "collapsed at step 200", ..., or "no verdict (still running or failed)"."""
        v = self.verdict_name
        if v == NO_VERDICT:
            return NO_VERDICT_TEXT
        if v == "healthy" or self.verdict_step is None:
            return VERDICT_LABEL[v]
        return f"{VERDICT_LABEL[v]} at step {self.verdict_step}"

    @property
    def reasons(self) -> list[str]:
        r = (self.verdict or {}).get("reasons") or []
        return [str(x) for x in r] if isinstance(r, list) else [str(r)]

    @property
    def margin(self) -> dict[str, Any] | None:
        """verdict.json's "margin" (the deciding statistic, its threshold and interval); None for
        a diverged verdict and for records written before verdicts had margins."""
        m = (self.verdict or {}).get("margin")
        return m if isinstance(m, dict) else None

    @property
    def borderline(self) -> bool:
        """Enough bootstrap resamples of its evaluated samples give another verdict (margin.borderline)."""
        return (self.margin or {}).get("borderline") is True  # untrusted JSON: "false" is not True

    def final(self, key: str) -> float | None:
        """The last value of `key` in the metrics (eval metrics: the last evaluation)."""
        for row in reversed(self.rows):
            v = row.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        return None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["step"]), float(r[key])) for r in self.rows
               if isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), (int, float))]
        return [s for s, _ in pts], [v for _, v in pts]

    @property
    def coverage_key(self) -> str:
        return next((k for k in COVERAGE_KEYS if self.final(k) is not None), "classes_covered")


@dataclass
class Experiment:
    uri: str
    config: Config | None
    trials: list[Trial]
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.experiment.name if self.config else self.uri.rstrip("/").rsplit("/", 1)[-1]


def params_of(cfg: Config) -> dict[str, Any]:
    """The sweep parameters a trial ran with, from its config."""
    return {p: getattr(getattr(cfg, sec), key) for p, sec, key, _ in PARAM_AXES}


def base_params(sweep_cfg: Config | None) -> dict[str, Any]:
    """For a trial without a config: the parameters the sweep config fixes (an axis with no grid
    takes the base value, a grid of one value that value); the swept ones stay unknown."""
    if sweep_cfg is None:
        return {}
    out = {}
    for p, value in params_of(sweep_cfg).items():
        grid = getattr(sweep_cfg.sweep, next(g for q, _, _, g in PARAM_AXES if q == p))
        if len(grid) <= 1:
            out[p] = (variant_name(grid[0]) if p == "variant" else grid[0]) if grid else value
    return out


def variant_name(text: str) -> str | None:
    """'pack2: model.pack=2' -> 'pack2' (None when it does not parse)."""
    try:
        return parse_variant(text)[0]
    except ConfigError:
        return None


def load_experiment(exp_uri: str) -> Experiment:
    """The experiment at `exp_uri` and all its trials; reader.ExperimentNotFound when there are none."""
    cfg, records, notes = reader.read_experiment(exp_uri)
    variants = [variant_name(v) for v in cfg.sweep.variants] if cfg is not None else []
    trials = sorted((Trial.from_record(r, cfg) for r in records), key=lambda t: _trial_order(t, variants))
    return Experiment(exp_uri, cfg, trials, notes)


def _trial_order(t: Trial, variants: list[str | None]) -> tuple:
    """By z_dim, then variant (in sweep.variants order), learning rates, family, seed."""
    p = t.params
    z, v = p.get("z_dim"), p.get("variant")
    return (math.inf if z is None else z, variants.index(v) if v in variants else len(variants), str(v or ""),
            p.get("lr_g", 0.0), p.get("lr_d", 0.0), str(p.get("family", "")), p.get("seed", 0), t.name)


def class_count(exp: Experiment) -> int | None:
    """K of "classes covered ... of K": the size of data.classes, else the length of the trials'
    class counts (2D mixtures: without "off"); None when no trial holds any."""
    if exp.config is not None and exp.config.data.classes:
        return len(exp.config.data.classes)
    for t in exp.trials:
        if t.histogram is not None:
            names = t.histogram.class_names
            return len(names) - (names[-1:] == ["off"])
    return None


def attach_histograms(exp: Experiment, samples: int | None = None, regenerate: Regenerate | None = None) -> None:
    """Each trial's class histogram: the evaluation's counts in verdict.json or, with `samples`,
    the histogram of that many samples regenerated from its newest checkpoint."""
    if samples is not None and regenerate is None:
        raise ValueError("attach_histograms: samples given without a regenerator")
    for t in exp.trials:
        if samples is not None and t.checkpoints:
            step, uri = t.checkpoints[-1]
            try:
                t.histogram = ClassHistogram.from_counts(regenerate.class_counts(uri, samples), "checkpoint", step)
                continue
            except REGENERATE_ERRORS as e:
                log.warning("trial %s: no class histogram (%s)", t.name, brief(e, 1000))
                t.notes.append(f"class histogram unavailable ({brief(e)})")
        if t.counts is not None:
            t.histogram = ClassHistogram.from_counts(t.counts, "evaluation")


def _fetch(uri: str | None, notes: list[str]) -> bytes | None:
    if uri is None:
        return None
    try:
        return storage.read_bytes(uri)
    except reader.READ_ERRORS as e:
        notes.append(f"{uri.rsplit('/', 1)[-1]} unreadable ({brief(e)})")
        return None


def attach_media(exp: Experiment) -> None:
    """Read each trial's newest sample grid and its fixed-z GIF, to embed them in the HTML."""
    for t in exp.trials:
        t.last_samples_png = _fetch(t.samples[-1][1], t.notes) if t.samples else None
        t.fixed_z_gif = _fetch(t.gif_uri, t.notes)
