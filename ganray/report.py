"""The sweep report: one page that says, for every trial of an experiment, whether and when
training collapsed, with the numbers and the pictures behind each verdict.

    ganray report <storage>/<experiment> [--samples 2000]
    write_report("s3://bucket/ganray/zdim-mnist")   # called by ganray/sweep.py when a sweep ends

Reads what the training side wrote (DESIGN.md, "Experiment layout"):

    <exp>/config.yaml                        the resolved sweep config
    <exp>/trials/<trial>/config.yaml         the trial's resolved config
    <exp>/trials/<trial>/metrics.jsonl       one JSON object per report (losses; metrics at eval steps)
    <exp>/trials/<trial>/verdict.json        {"verdict", "step", "first_seen_step", "reasons", "stopped_early"?}
    <exp>/trials/<trial>/samples/step_*.png, fixed_z.gif
    <exp>/trials/<trial>/checkpoint_*/checkpoint.pt (Ray's layout; `ganray train --local` writes the same)

and writes next to the trials:

    <exp>/report.md, report.html (self-contained: images as base64 data URIs), trials.csv,
    figures/class_histograms.png, coverage_fcd.png, verdict_heatmap.png, loss_curves.png
    and, when the trials span the vae family and a GAN family (jobs/compare_vae_gan.py), a
    "VAE vs GAN" section with figures/vae_vs_gan_metrics.png, vae_vs_gan_samples.png and
    vae_reconstructions.png (docs/compare.md)

A trial with missing or unreadable files shows "no verdict (still running or failed)" and a
note; it never stops the report. An experiment without trials is bad input (exit 2).
docs/report.md explains how to read the report.
"""
from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import logging
import math
import re
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import yaml

from ganray import storage
from ganray.config import Config, ConfigError, check_storage_uri, from_dict

if TYPE_CHECKING:  # the report imports numpy and torch only when it draws or generates
    import numpy as np
    import torch

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_N_SAMPLES = 2000  # generated samples per trial when the histogram is computed from a checkpoint

NO_VERDICT = "no verdict"
NO_VERDICT_TEXT = "no verdict (still running or failed)"
# Worst first: the order of the summary, and which verdict colours a heatmap cell holding several trials.
SEVERITY = ("diverged", "garbage", "collapsed", "partial_collapse", "healthy", NO_VERDICT)
VERDICT_LABEL = {
    "healthy": "healthy",
    "partial_collapse": "partially collapsed",
    "collapsed": "collapsed",
    "garbage": "garbage",
    "diverged": "diverged",
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
    NO_VERDICT: "#BBBBBB",
}

# Final-value columns of the table and of trials.csv (names from ganray/metrics).
TABLE_METRICS = ("classes_covered", "kl_uniform", "fcd", "precision", "recall")
TABLE_METRICS_2D = ("modes_covered", "hq_share", "reverse_kl")
CSV_METRICS = ("classes_covered", "kl_uniform", "fcd", "precision", "recall", "density", "coverage",
               "fixed_z_flip_rate", "max_class_share", "mean_confidence", "modes_covered", "hq_share", "reverse_kl")
COVERAGE_KEYS = ("classes_covered", "modes_covered")  # image datasets / 2D mixtures
PARAM_AXES = (  # (swept parameter, config section, config key)
    ("z_dim", "model", "z_dim"),
    ("lr_g", "train", "lr_g"),
    ("lr_d", "train", "lr_d"),
    ("family", "train", "family"),
    ("seed", "experiment", "seed"),
)
# Trial names from ganray/sweep.py's trial_name: "z10-s0", "z10-lrg0.0002-lrd0.0002-s0", "z1-wgan-gp-s0".
_FLOAT = r"[0-9.]+(?:e[+-]?[0-9]+)?"
_NAME_PART = re.compile(rf"(?:^|-)(?:z(?P<z_dim>\d+)|lrg(?P<lr_g>{_FLOAT})|lrd(?P<lr_d>{_FLOAT})|s(?P<seed>\d+)"
                        rf"|(?P<family>wgan-gp|began|vae|gan))(?=-|$)")
_NAME_TYPES = {"z_dim": int, "lr_g": float, "lr_d": float, "seed": int, "family": str}
_CKPT = re.compile(r"^checkpoint_(\d+)/checkpoint\.pt$")
_SAMPLE = re.compile(r"^samples/step_(\d+)\.png$")
# Per-class shares in metrics.jsonl, as indexed scalars ("class_share_3") or one list ("class_histogram").
_CLASS_KEY = re.compile(r"^(?:class|mode)_share_(\d+)$")
_CLASS_LIST_KEYS = ("class_histogram", "mode_histogram")
# Shape of one example, for rebuilding G from a checkpoint without loading the dataset.
EXAMPLE_SHAPE = {"mnist": (1, 28, 28), "mnist5k": (1, 28, 28), "fashion-mnist": (1, 28, 28),
                 "stacked-mnist": (3, 28, 28), "cifar10": (3, 32, 32), "ring8": (2,), "grid25": (2,)}


class ReportError(FileNotFoundError):
    """The experiment cannot be reported: no such folder, or no trials in it. Exit code 2."""


# ---- reading an experiment -----------------------------------------------------------------


@dataclass
class ClassHistogram:
    """Shares of generated samples per class (or per mode), as labelled by the reference classifier."""

    shares: list[float]  # p_k, sum 1 (2D mixtures: the last entry is "off", samples near no mode)
    class_names: list[str]
    step: int | None  # training step of the generator behind it
    n: int | None  # samples behind it (None: not logged)
    labeller: str  # what assigned the classes, e.g. "the mnist classifier (held-out accuracy 98.0%)"
    origin: str  # "checkpoint" (computed by the report) or "metrics.jsonl" (logged by the evaluation)
    generator: str = "G"  # "G" or "G_ema": the network that made the samples

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
    params: dict[str, Any] = field(default_factory=dict)  # z_dim, lr_g, lr_d, family, seed
    total_steps: int | None = None  # cfg.train.steps
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl rows, by step
    verdict: dict[str, Any] | None = None
    samples: list[tuple[int, str]] = field(default_factory=list)  # (step, URI), by step
    gif_uri: str | None = None
    checkpoints: list[tuple[int, str]] = field(default_factory=list)  # (step, URI), by step
    histogram: ClassHistogram | None = None
    last_samples_png: bytes | None = None  # the newest samples/step_*.png, for the HTML
    fixed_z_gif: bytes | None = None
    notes: list[str] = field(default_factory=list)  # missing or unreadable files

    @property
    def verdict_name(self) -> str:
        v = (self.verdict or {}).get("verdict")
        return v if v in VERDICT_COLOUR and v != NO_VERDICT else NO_VERDICT

    @property
    def steps_run(self) -> int | None:
        steps = [int(r["step"]) for r in self.history if isinstance(r.get("step"), (int, float))]
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

    def final(self, key: str) -> float | None:
        """The last value of `key` in metrics.jsonl (eval metrics: the last evaluation)."""
        for row in reversed(self.history):
            v = row.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
        return None

    def series(self, key: str) -> tuple[list[int], list[float]]:
        pts = [(int(r["step"]), float(r[key])) for r in self.history
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


def _brief(e: BaseException, limit: int = 200) -> str:
    """"CheckpointError: first line of the message", cut to `limit` characters for a note."""
    first = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _read_text(uri: str) -> str:
    return storage.read_bytes(uri).decode("utf-8")


def _trial_files(trials_uri: str) -> dict[str, set[str]]:
    """{trial: {paths relative to the trial folder}} from one recursive listing of `trials_uri`."""
    prefix = trials_uri.rstrip("/") + "/"
    out: dict[str, set[str]] = {}
    for uri in storage.list_files(trials_uri):
        if not uri.startswith(prefix):
            continue
        trial, _, rel = uri[len(prefix):].partition("/")
        if rel and not trial.startswith((".", "_")):  # skip hidden bookkeeping folders
            out.setdefault(trial, set()).add(rel)
    return out


def params_from_name(name: str) -> dict[str, Any]:
    """Sweep parameters from a trial name made by ganray.sweep.trial_name ("z10-lrg0.0002-s0")."""
    out: dict[str, Any] = {}
    for m in _NAME_PART.finditer(name):
        for key, text in m.groupdict().items():
            if text is not None:
                out[key] = _NAME_TYPES[key](text)
    return out


def _params_from_config(cfg: Config) -> dict[str, Any]:
    return {p: getattr(getattr(cfg, sec), key) for p, sec, key in PARAM_AXES}


def _parse_jsonl(text: str, where: str, notes: list[str]) -> list[dict[str, Any]]:
    rows, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1  # typically the last line of a file being written
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        notes.append(f"{where}: {bad} unreadable line(s) skipped")
    rows.sort(key=lambda r: r.get("step", 0) if isinstance(r.get("step"), (int, float)) else 0)
    return rows


def load_trial(exp_uri: str, name: str, files: set[str], sweep_cfg: Config | None) -> Trial:
    """Everything the report needs from one trial folder; problems become notes, never exceptions."""
    uri = storage.join(exp_uri, "trials", name)
    t = Trial(name=name, uri=uri)
    t.params = params_from_name(name)
    cfg = sweep_cfg
    if "config.yaml" in files:
        try:
            cfg = from_dict(yaml.safe_load(_read_text(storage.join(uri, "config.yaml"))))
            t.params = _params_from_config(cfg)
        except (ConfigError, yaml.YAMLError, OSError, storage.StorageError, UnicodeDecodeError) as e:
            t.notes.append(f"config.yaml unreadable ({_brief(e)})")
    else:
        t.notes.append("config.yaml missing")
    if sweep_cfg is not None:  # axes the name does not carry take the sweep's base values
        for p, v in _params_from_config(sweep_cfg).items():
            t.params.setdefault(p, v)
    if cfg is not None:
        t.total_steps = cfg.train.steps

    if "metrics.jsonl" in files:
        try:
            t.history = _parse_jsonl(_read_text(storage.join(uri, "metrics.jsonl")), "metrics.jsonl", t.notes)
        except (OSError, storage.StorageError, UnicodeDecodeError) as e:
            t.notes.append(f"metrics.jsonl unreadable ({_brief(e)})")
    else:
        t.notes.append("metrics.jsonl missing")
    if "verdict.json" in files:
        try:
            v = json.loads(_read_text(storage.join(uri, "verdict.json")))
            if isinstance(v, dict) and v.get("verdict") in VERDICT_COLOUR:
                t.verdict = v
            else:
                t.notes.append(f"verdict.json holds no known verdict ({str(v)[:80]})")
        except (OSError, storage.StorageError, UnicodeDecodeError, json.JSONDecodeError) as e:
            t.notes.append(f"verdict.json unreadable ({_brief(e)})")

    for rel in files:
        if m := _SAMPLE.match(rel):
            t.samples.append((int(m.group(1)), storage.join(uri, rel)))
        elif m := _CKPT.match(rel):
            t.checkpoints.append((int(m.group(1)), storage.join(uri, rel)))
    t.samples.sort()
    t.checkpoints.sort()
    if "fixed_z.gif" in files:
        t.gif_uri = storage.join(uri, "fixed_z.gif")
    return t


def load_experiment(exp_uri: str) -> Experiment:
    """The experiment at `exp_uri` and all its trials; ReportError when there are none."""
    notes: list[str] = []
    cfg = None
    cfg_uri = storage.join(exp_uri, "config.yaml")
    try:
        if storage.exists(cfg_uri):
            cfg = from_dict(yaml.safe_load(_read_text(cfg_uri)))
        else:
            notes.append("config.yaml (the sweep config) missing")
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as e:
        notes.append(f"config.yaml (the sweep config) unreadable ({_brief(e)})")
    trials_uri = storage.join(exp_uri, "trials")
    files = _trial_files(trials_uri)
    if not files:
        what = "has no trials" if storage.exists(exp_uri) else "does not exist"
        raise ReportError(f"{exp_uri}: experiment {what} (expected trial folders in {trials_uri}/<trial>/); "
                          "pass <storage>/<experiment>, e.g. ./ganray_results/zdim-mnist-local")
    trials = [load_trial(exp_uri, name, files[name], cfg) for name in sorted(files)]
    trials.sort(key=_trial_order)
    return Experiment(exp_uri, cfg, trials, notes)


def _trial_order(t: Trial) -> tuple:
    p = t.params
    return (p.get("z_dim", math.inf), p.get("lr_g", 0.0), p.get("lr_d", 0.0), str(p.get("family", "")),
            p.get("seed", 0), t.name)


# ---- class histograms ----------------------------------------------------------------------


def histogram_from_metrics(t: Trial) -> ClassHistogram | None:
    """Per-class shares logged at the last evaluation, if the metrics wrote them."""
    for row in reversed(t.history):
        for key in _CLASS_LIST_KEYS:
            v = row.get(key)
            if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
                return _normalised(v, None, row.get("step"), None, "the evaluation's classifier", "metrics.jsonl")
        indexed = {int(m.group(1)): float(v) for k, v in row.items()
                   if (m := _CLASS_KEY.match(k)) and isinstance(v, (int, float))}
        if indexed:
            shares = [indexed.get(k, 0.0) for k in range(max(indexed) + 1)]
            return _normalised(shares, None, row.get("step"), None, "the evaluation's classifier", "metrics.jsonl")
    return None


def _normalised(values: list[float], names: list[str] | None, step: Any, n: int | None, labeller: str,
                origin: str) -> ClassHistogram:
    # p_k = c_k / Σ_j c_j  (counts or shares alike)
    total = float(sum(values))
    shares = [float(v) / total if total > 0 else 0.0 for v in values]
    return ClassHistogram(shares, names or [str(k) for k in range(len(values))],
                          int(step) if isinstance(step, (int, float)) else None, n, labeller, origin)


def histogram_from_checkpoint(t: Trial, n_samples: int) -> ClassHistogram:
    """Generate `n_samples` with the trial's newest checkpoint (G_ema when present) and label
    them with the reference classifier (images) or the nearest mixture mean (2D data)."""
    import torch  # noqa: PLC0415 (the report imports torch only when it must generate)

    from ganray import checkpoint  # noqa: PLC0415
    from ganray.loop import generate  # noqa: PLC0415
    from ganray.models import build_generator  # noqa: PLC0415

    step, uri = t.checkpoints[-1]
    state = checkpoint.load(uri)
    cfg = checkpoint.config_of(state)
    shape = EXAMPLE_SHAPE.get(cfg.data.dataset)
    if shape is None:
        raise ConfigError(f"data.dataset: no known example shape for {cfg.data.dataset!r}")
    which = "G_ema" if state.get("G_ema") is not None else "G"
    G = build_generator(cfg.model, shape)
    G.load_state_dict(state[which])
    # x = G(z), z ~ N(0, I): [n, *shape], from a seed of its own so the report is reproducible
    x = generate(G, n_samples, cfg.model.z_dim, torch.device("cpu"), seed=cfg.experiment.seed * 7919 + 1)
    counts, names, labeller = _label_counts(x, cfg)
    h = _normalised(counts, names, state.get("step", step), n_samples, labeller, "checkpoint")
    h.generator = which
    return h


def _label_counts(x, cfg: Config) -> tuple[list[int], list[str], str]:
    """(counts per class, class names, what labelled them), with the metrics' own labelling."""
    import torch  # noqa: PLC0415

    from ganray.metrics import POINTS, STACKED, data_kind  # noqa: PLC0415
    from ganray.metrics.inputs import classify, nearest_mode  # noqa: PLC0415

    kind = data_kind(cfg.data.dataset)
    if kind == POINTS:
        from ganray.data.mixtures import mixture_spec  # noqa: PLC0415
        from ganray.metrics.mixture_coverage import HQ_SIGMAS  # noqa: PLC0415

        means, sigma = mixture_spec(cfg.data.dataset)
        K = means.shape[0]
        # nearest mode k* = argmin_k ||x - μ_k||; "off" (index K) when ||x - μ_k*|| > 3σ (not high quality)
        mode, dist = nearest_mode(x, means)
        mode = torch.where(dist <= HQ_SIGMAS * sigma, mode, torch.full_like(mode, K))
        counts = torch.bincount(mode, minlength=K + 1).tolist()
        return counts, [str(i) for i in range(K)] + ["off"], f"the nearest mode within {HQ_SIGMAS:g}σ"
    from ganray.metrics.classifier import classifier_key, reference_classifier  # noqa: PLC0415

    model, info = reference_classifier(cfg.data, cfg.storage.uri, train_if_missing=False)
    acc = info.get("held_out_accuracy")
    what = f"the {classifier_key(cfg.data.dataset)} classifier" + (
        f" (held-out accuracy {acc:.1%})" if isinstance(acc, (int, float)) else "")
    # label = argmax_k classifier logits (stacked MNIST: mode 100·d0 + 10·d1 + d2 over the 3 channels)
    labels = classify(model, x, kind).labels
    K = model.arch.num_classes ** 3 if kind == STACKED else model.arch.num_classes
    names = [f"{m:03d}" for m in range(K)] if kind == STACKED else [str(k) for k in range(K)]
    return torch.bincount(labels, minlength=K)[:K].tolist(), names, what


def _fetch(uri: str | None, notes: list[str]) -> bytes | None:
    if uri is None:
        return None
    try:
        return storage.read_bytes(uri)
    except (OSError, storage.StorageError) as e:
        notes.append(f"{uri.rsplit('/', 1)[-1]} unreadable ({_brief(e)})")
        return None


def attach_media(exp: Experiment) -> None:
    """Read each trial's newest sample grid and its fixed-z GIF, to embed them in the HTML."""
    for t in exp.trials:
        t.last_samples_png = _fetch(t.samples[-1][1], t.notes) if t.samples else None
        t.fixed_z_gif = _fetch(t.gif_uri, t.notes)


def attach_histograms(exp: Experiment, n_samples: int) -> None:
    for t in exp.trials:
        try:
            t.histogram = histogram_from_metrics(t)
            if t.histogram is None and t.checkpoints:
                t.histogram = histogram_from_checkpoint(t, n_samples)
        except Exception as e:  # noqa: BLE001 — one bad checkpoint must not sink the report
            log.warning("trial %s: no class histogram (%s)", t.name, _brief(e, 1000))
            t.notes.append(f"class histogram unavailable ({_brief(e)})")


# ---- describing trials ---------------------------------------------------------------------


def varying_axes(trials: list[Trial]) -> list[str]:
    """The sweep parameters that take more than one value among the trials."""
    return [p for p, *_ in PARAM_AXES if len({repr(t.params.get(p)) for t in trials}) > 1]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "" if v is None else str(v)


def describe(t: Trial, axes: list[str]) -> str:
    """"z_dim 1" when only z_dim varies, "z_dim 1 lr_g 0.0002" when lr_g varies too."""
    parts = [f"{p} {_fmt_value(t.params[p])}" for p in axes if p in t.params]
    return " ".join(parts) or t.name


def summary(exp: Experiment) -> str:
    """One paragraph: "2 of 5 trials collapsed: z_dim 1 at step 200, z_dim 2 at step 300; ..."."""
    trials, axes = exp.trials, varying_axes(exp.trials)
    n = len(trials)
    by: dict[str, list[Trial]] = {}
    for t in trials:
        by.setdefault(t.verdict_name, []).append(t)
    sentences = []
    for v in SEVERITY:
        group = by.get(v, [])
        if not group:
            continue
        if v in ("healthy", NO_VERDICT):
            who = ", ".join(describe(t, axes) for t in group)
        else:
            who = ", ".join(describe(t, axes) + (f" at step {t.verdict_step}" if t.verdict_step is not None else "")
                            for t in group)
        head = f"{len(group)} of {n} trials" if not sentences else f"{len(group)}"
        sentences.append(f"{head} {SUMMARY_LABEL[v]}: {who}")
    text = "; ".join(sentences) + "."
    stopped = [t for t in trials if t.stopped_early]
    if stopped:
        text += (f" {len(stopped)} stopped early by the collapse stopper "
                 f"({', '.join(f'{describe(t, axes)} at step {t.steps_run}' for t in stopped)}).")
    return text


def _fmt_metric(v: float | None) -> str:
    if v is None:
        return ""
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def table_rows(exp: Experiment) -> list[dict[str, Any]]:
    """One dict per trial: the columns of trials.csv (raw values) and of the report tables."""
    rows = []
    for t in exp.trials:
        p = t.params
        row: dict[str, Any] = {
            "trial": t.name,
            "z_dim": p.get("z_dim"), "lr_g": p.get("lr_g"), "lr_d": p.get("lr_d"),
            "family": p.get("family"), "seed": p.get("seed"),
            "steps": t.steps_run, "total_steps": t.total_steps,
            "stopped_early": t.stopped_early,
            "verdict": t.verdict_name, "status": t.status, "verdict_step": t.verdict_step,
            "reasons": "\n".join(t.reasons),  # one reason per line (reasons contain "; " themselves)
        }
        for m in CSV_METRICS:
            row[m] = t.final(m)
        row["notes"] = "\n".join(t.notes)
        rows.append(row)
    return rows


def trials_csv(exp: Experiment) -> str:
    rows = table_rows(exp)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


# ---- figures -------------------------------------------------------------------------------


def _figure(w_in: float, h_in: float):
    # The object-oriented API with the Agg canvas: no pyplot global state, safe in any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(w_in, h_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def _short_label(t: Trial, axes: list[str]) -> str:
    return describe(t, axes) if axes else t.name


def _grid_positions(trials: list[Trial]) -> tuple[list[Any], list[tuple], dict[str, tuple[int, int]]]:
    """Columns = z_dim values, rows = the other parameter combinations: {trial: (row, col)}."""
    cols = sorted({t.params.get("z_dim") for t in trials}, key=lambda v: (v is None, v if v is not None else 0))
    others = [p for p, *_ in PARAM_AXES if p != "z_dim"]

    def rest(t: Trial) -> tuple:
        return tuple(repr(t.params.get(p)) for p in others)

    rows = sorted({rest(t) for t in trials})
    pos = {t.name: (rows.index(rest(t)), cols.index(t.params.get("z_dim"))) for t in trials}
    return cols, rows, pos


def figure_class_histograms(exp: Experiment) -> bytes | None:
    """Class histogram of generated samples, one panel per trial: z_dim across, other settings down."""
    trials = [t for t in exp.trials if t.histogram is not None]
    if not trials:
        return None
    other_axes = [a for a in varying_axes(exp.trials) if a != "z_dim"]
    cols, rows, pos = _grid_positions(trials)
    k_max = max(len(t.histogram.shares) for t in trials)
    panel_w = 2.7 if k_max <= 12 else (3.6 if k_max <= 30 else 4.0)
    width_in = max(5.5, panel_w * len(cols))
    fig = _figure(width_in, 1.2 + 2.4 * len(rows))
    grid = fig.subplots(len(rows), len(cols), squeeze=False, sharey=True)
    for ax in grid.flat:
        ax.set_visible(False)
    y_top = max(max(t.histogram.shares) for t in trials)
    for t in trials:
        r, c = pos[t.name]
        ax = grid[r][c]
        ax.set_visible(True)
        h = t.histogram
        k = len(h.shares)
        pct = [100 * s for s in h.shares]
        if k <= 30:
            ax.bar(range(k), pct, color=VERDICT_COLOUR[t.verdict_name], edgecolor="black", linewidth=0.4)
            ax.set_xticks(range(k), h.class_names, fontsize=7 if k > 12 else 8)
        else:  # 1000 stacked-MNIST modes: shares sorted from the largest down
            ax.plot(range(k), sorted(pct, reverse=True), color=VERDICT_COLOUR[t.verdict_name])
            ax.set_xlabel("modes, by share", fontsize=8)
        n_real = k - 1 if h.class_names[-1] == "off" else k
        # the share every class would hold if G covered them uniformly: 100% / K
        ax.axhline(100 / n_real, color="0.3", linestyle="--", linewidth=0.8)
        # a class counts as covered when it holds ≥ 10% of its uniform share (as class_coverage)
        covered = sum(1 for s in h.shares[:n_real] if s >= 0.1 / n_real)
        head = f"z_dim {_fmt_value(t.params.get('z_dim'))}" + (f" · {describe(t, other_axes)}" if other_axes else "")
        ax.set_title(f"{head}\n{t.status}\n{covered}/{n_real} classes covered (step {h.step})", fontsize=8,
                     color=_text_colour(t.verdict_name))
        ax.set_ylim(0, min(100.0, 1.15 * 100 * y_top + 2))
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for row in grid:
        row[0].set_ylabel("% of samples", fontsize=8)
    how = {(t.histogram.n, t.histogram.labeller, t.histogram.origin) for t in trials}
    if len(how) == 1:
        n, labeller, origin = how.pop()
        where = "its newest checkpoint" if origin == "checkpoint" else "its last evaluation"
        note = f"{f'{n:,} samples' if n else 'samples'} per trial from {where}, labelled by {labeller}"
    else:
        note = "samples per trial as captioned in the report"
    note = textwrap.fill(note, width=int(width_in * 12))  # ~12 characters of 9-pt text per inch
    fig.suptitle(f"Class histogram of generated samples (dashed: the uniform share)\n{note}", fontsize=9)
    return _png(fig)


def _text_colour(verdict: str) -> str:
    return "#666666" if verdict == NO_VERDICT else VERDICT_COLOUR[verdict]


LINE_STYLES = ("-", "--", ":", "-.")
PER_TRIAL_LEGEND_MAX = 12  # above this many trials the legend names z_dim colours and line styles instead


def _line_styles(trials: list[Trial]) -> tuple[dict[str, tuple[Any, str]], list[tuple[str, Any, str]]]:
    """{trial: (colour, line style)} and the legend entries (label, colour, style).

    Colour = z_dim on a sequential scale (kept apart from the categorical verdict colours, so a
    line's colour never reads as a verdict); style = the other swept settings."""
    from matplotlib import colormaps  # noqa: PLC0415

    z_values = sorted({t.params.get("z_dim") for t in trials}, key=lambda v: (v is None, v or 0))
    others = [a for a in varying_axes(trials) if a != "z_dim"]
    combos = sorted({describe(t, others) for t in trials}) if others else [""]
    cmap = colormaps["viridis"]

    def colour(z: Any) -> Any:
        return cmap(0.9 * z_values.index(z) / max(len(z_values) - 1, 1))

    styles = {t.name: (colour(t.params.get("z_dim")),
                       LINE_STYLES[combos.index(describe(t, others) if others else "") % len(LINE_STYLES)])
              for t in trials}
    if len(trials) <= PER_TRIAL_LEGEND_MAX:
        axes = varying_axes(trials)
        legend = [(f"{_short_label(t, axes)} ({t.status})", *styles[t.name]) for t in trials]
    else:
        legend = [(f"z_dim {_fmt_value(z)}", colour(z), "-") for z in z_values]
        legend += [(c, "black", LINE_STYLES[i % len(LINE_STYLES)]) for i, c in enumerate(combos) if c]
    return styles, legend


def figure_coverage_fcd(exp: Experiment) -> bytes | None:
    """Classes (or modes) covered and FCD over steps, one line per trial; X where a trial stopped early."""
    from matplotlib.lines import Line2D  # noqa: PLC0415

    trials = [t for t in exp.trials if any(t.series(k)[0] for k in (*COVERAGE_KEYS, "fcd"))]
    if not trials:
        return None
    styles, legend = _line_styles(trials)
    cov_key = Counter(t.coverage_key for t in trials).most_common(1)[0][0]
    fig = _figure(11.0, 4.4)
    ax_cov, ax_fcd = fig.subplots(1, 2)
    for t in trials:
        colour, style = styles[t.name]
        for ax, key in ((ax_cov, t.coverage_key), (ax_fcd, "fcd")):
            steps, values = t.series(key)
            if not steps:
                continue
            ax.plot(steps, values, linestyle=style, marker="o", markersize=3, color=colour, linewidth=1.4)
            if t.stopped_early:
                ax.plot(steps[-1], values[-1], marker="X", markersize=10, color=colour, markeredgecolor="black")
    stopped = " (X: stopped early)" if any(t.stopped_early for t in trials) else ""
    ax_cov.set_title(f"{cov_key.replace('_', ' ')}{stopped}", fontsize=10)
    ax_cov.set_ylabel(cov_key.replace("_", " "))
    ax_cov.set_ylim(0, max([v for t in trials for v in t.series(t.coverage_key)[1]] + [1]) + 0.5)
    ax_cov.yaxis.get_major_locator().set_params(integer=True)
    ax_fcd.set_title("Fréchet distance in classifier features (lower is better)", fontsize=10)
    ax_fcd.set_ylabel("FCD")
    fcd_values = [v for t in trials for v in t.series("fcd")[1]]
    if fcd_values and all(v > 0 for v in fcd_values) and max(fcd_values) / min(fcd_values) > 20:
        ax_fcd.set_yscale("log")
    for ax in (ax_cov, ax_fcd):
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, linestyle=s, marker="o", markersize=3, label=label) for label, c, s in legend]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    return _png(fig)


def _is_loss(key: str) -> bool:
    return key.startswith("loss_") or key in ("loss", "kl", "mse")


def figure_loss_curves(exp: Experiment) -> bytes | None:
    """loss_D and loss_G (and any other loss_*; the VAE's loss, kl and mse) over steps, one panel
    per trial; a dotted line at the step the trial's bad verdict was first seen."""
    trials = [t for t in exp.trials if any(_is_loss(k) for r in t.history for k in r)]
    if not trials:
        return None
    axes_names = varying_axes(exp.trials)
    n_cols = min(len(trials), 5)
    n_rows = math.ceil(len(trials) / n_cols)
    fig = _figure(3.0 * n_cols + 0.6, 0.9 + 2.4 * n_rows)
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in grid.flat[len(trials):]:
        ax.set_visible(False)
    keys_all: list[str] = []
    for ax, t in zip(grid.flat, trials):
        keys = sorted({k for r in t.history for k in r if _is_loss(k)})
        for key in keys:
            steps, values = t.series(key)
            ax.plot(steps, values, label=key, linewidth=1.2, color=f"C{_loss_index(key, keys_all)}")
        if t.verdict_name not in ("healthy", NO_VERDICT) and t.verdict_step is not None:
            ax.axvline(t.verdict_step, color=VERDICT_COLOUR[t.verdict_name], linestyle=":", linewidth=1.5)
        ax.set_title(f"{_short_label(t, axes_names)}\n{t.status}", fontsize=8, color=_text_colour(t.verdict_name))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("loss", fontsize=8)
    for ax in grid[-1]:
        ax.set_xlabel("generator step", fontsize=8)
    from matplotlib.lines import Line2D  # noqa: PLC0415

    handles = [Line2D([], [], color=f"C{i}", label=k) for i, k in enumerate(keys_all)]
    handles.append(Line2D([], [], color="0.4", linestyle=":", label="bad verdict first seen"))
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Training losses", fontsize=10)
    return _png(fig)


def _loss_index(key: str, seen: list[str]) -> int:
    """The same colour for the same loss in every panel."""
    if key not in seen:
        seen.append(key)
    return seen.index(key)


def _lr_key(t: Trial, lr_axes: list[str]) -> tuple:
    return tuple(t.params.get(p) for p in lr_axes)


def figure_verdict_heatmap(exp: Experiment) -> bytes:
    """z_dim (rows) × learning rates (columns); a cell with several trials (seeds) takes the
    colour of its worst verdict and lists the count of each."""
    from matplotlib.colors import ListedColormap  # noqa: PLC0415
    from matplotlib.patches import Patch  # noqa: PLC0415

    trials = exp.trials
    lr_axes = [p for p in ("lr_g", "lr_d", "family") if p in varying_axes(trials)] or ["lr_g", "lr_d"]
    z_values = sorted({t.params.get("z_dim") for t in trials}, key=lambda v: (v is None, v or 0))
    lr_values = sorted({_lr_key(t, lr_axes) for t in trials}, key=repr)
    cells: dict[tuple[int, int], list[Trial]] = {}
    for t in trials:
        cells.setdefault((z_values.index(t.params.get("z_dim")), lr_values.index(_lr_key(t, lr_axes))), []).append(t)
    codes = [[math.nan] * len(lr_values) for _ in z_values]
    fig = _figure(max(5.5, 2.3 * len(lr_values) + 2.8), max(2.6, 0.75 * len(z_values) + 1.6))
    ax = fig.subplots()
    for (r, c), group in cells.items():
        worst = min((t.verdict_name for t in group), key=SEVERITY.index)
        codes[r][c] = SEVERITY.index(worst)
        if len(group) == 1:
            t = group[0]
            text = t.status.replace(" (still running or failed)", "").replace(" at step ", "\nat step ")
            if t.stopped_early:
                text += f"\nstopped at step {t.steps_run}"
            numbers = [f"{label} {_fmt_metric(t.final(key))}" for key, label in
                       ((t.coverage_key, "classes" if t.coverage_key == "classes_covered" else "modes"),
                        ("fcd", "FCD")) if t.final(key) is not None]
            if numbers:
                text += "\n" + " · ".join(numbers)
        else:
            counts = Counter(t.verdict_name for t in group)
            text = "\n".join(f"{counts[v]}/{len(group)} {VERDICT_LABEL[v]}" for v in SEVERITY if counts[v])
        ax.text(c, r, text, ha="center", va="center", fontsize=8,
                color="white" if worst in ("diverged", "collapsed") else "black")
    cmap = ListedColormap([VERDICT_COLOUR[v] for v in SEVERITY]).with_extremes(bad="white")
    ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(SEVERITY) - 0.5, aspect="auto")
    ax.set_yticks(range(len(z_values)), [_fmt_value(z) for z in z_values])
    ax.set_ylabel("z_dim")
    col_labels = ["\n".join(f"{p} {_fmt_value(v)}" for p, v in zip(lr_axes, key, strict=True)) for key in lr_values]
    ax.set_xticks(range(len(lr_values)), col_labels, fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(lr_values))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(z_values))], minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    present = [v for v in SEVERITY if any(t.verdict_name == v for t in trials)]
    ax.legend(handles=[Patch(color=VERDICT_COLOUR[v], label=VERDICT_LABEL[v]) for v in present],
              loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
              frameon=False)
    ax.set_title(f"Verdict per z_dim × {' / '.join(lr_axes)}" + (" (worst of the seeds)" if
                 any(len(g) > 1 for g in cells.values()) else ""), fontsize=10)
    return _png(fig)


FIGURES: tuple[tuple[str, str, str, Callable[[Experiment], bytes | None]], ...] = (
    ("class_histograms.png", "Class histogram of generated samples per z_dim",
     ("Each panel: the share of generated samples the reference classifier puts in each class. A healthy G "
      "fills every bar near the dashed uniform share; a collapsed one piles its samples into a few classes."),
     figure_class_histograms),
    ("verdict_heatmap.png", "Verdicts over z_dim × learning rates",
     "One cell per setting, coloured by its verdict (the worst one when several seeds share the cell).",
     figure_verdict_heatmap),
    ("coverage_fcd.png", "Classes covered and FCD over training",
     ("Classes covered should rise to all of them and stay; FCD should fall. A coverage drop with a rising FCD "
      "is collapse as it happens. X marks a trial the collapse stopper ended."),
     figure_coverage_fcd),
    ("loss_curves.png", "Loss curves",
     ("loss_D falling towards 0 while loss_G climbs: D wins, G's gradients fade. The dotted line is where the "
      "bad verdict was first seen."),
     figure_loss_curves),
)


def make_figures(exp: Experiment) -> dict[str, tuple[str, bytes]]:
    """{file name: (caption, PNG bytes)}; a figure that cannot be drawn is logged and left out."""
    out = {}
    for name, caption, _explain, fn in FIGURES:
        try:
            png = fn(exp)
        except Exception as e:  # noqa: BLE001 — a figure's bug must not cost the whole report
            log.exception("figure %s failed", name)
            exp.notes.append(f"figure {name} could not be drawn ({_brief(e)})")
            continue
        if png is not None:
            out[name] = (caption, png)
    return out


# ---- report.md and report.html -------------------------------------------------------------

_COLUMNS = (("trial", "trial"), ("z_dim", "z_dim"), ("lr_g", "lr_g"), ("lr_d", "lr_d"), ("family", "family"),
            ("seed", "seed"), ("steps", "steps"), ("stopped_early", "stopped early"), ("status", "verdict"))


def _cell(row: dict[str, Any], key: str) -> str:
    v = row[key]
    if key == "steps":
        return "" if v is None else (f"{v} / {row['total_steps']}" if row["total_steps"] else str(v))
    if key == "stopped_early":
        return "yes" if v else "no"
    if isinstance(v, float):
        return _fmt_metric(v) if key in CSV_METRICS else _fmt_value(v)
    return "" if v is None else str(v)


def _metric_columns(exp: Experiment) -> list[str]:
    """The table's metric columns: the image ones, or the 2D-mixture ones when only those were logged."""
    two_d = any(t.final("modes_covered") is not None for t in exp.trials) and not any(
        t.final("classes_covered") is not None for t in exp.trials)
    return list(TABLE_METRICS_2D if two_d else TABLE_METRICS)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def report_markdown(exp: Experiment, figures: dict[str, tuple[str, bytes]],
                    comparison: Comparison | None = None) -> str:
    rows, metrics = table_rows(exp), _metric_columns(exp)
    head = [label for _, label in _COLUMNS] + [m.replace("_", " ") for m in metrics] + ["reasons"]
    lines = [f"# Sweep report: {exp.name}", "", f"Experiment: `{exp.uri}`", "", "## Summary", "", summary(exp), ""]
    lines += ["## Trials", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, r in zip(exp.trials, rows, strict=True):
        cells = [_cell(r, k) for k, _ in _COLUMNS] + [_fmt_metric(r[m]) for m in metrics]
        reasons = "<br>".join(_md_escape(x) for x in [*t.reasons, *(f"note: {n}" for n in t.notes)])
        lines.append("| " + " | ".join([*(_md_escape(c) for c in cells), reasons]) + " |")
    lines += ["", "All values per trial are in `trials.csv`. How to read this report: docs/report.md.", ""]
    if comparison is not None:
        lines += vae_vs_gan_markdown(comparison)
    lines += ["## Figures", ""]
    explain = {name: text for name, _, text, _ in FIGURES}
    for name, (caption, _) in figures.items():
        lines += [f"### {caption}", "", explain.get(name, ""), "", f"![{caption}](figures/{name})", ""]
    lines += ["## Samples per trial", ""]
    for t in exp.trials:
        links = []
        if t.samples:
            links.append(f"[final sample grid, step {t.samples[-1][0]}](trials/{t.name}/samples/"
                         f"step_{t.samples[-1][0]:06d}.png)")
        if t.gif_uri:
            links.append(f"[fixed-z GIF](trials/{t.name}/fixed_z.gif)")
        if t.histogram is not None:
            links.append(f"class histogram: {t.histogram.source}")
        lines.append(f"- **{t.name}**, {t.status}: " + (", ".join(links) or "no samples yet"))
    if exp.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in exp.notes]
    return "\n".join(lines) + "\n"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1300px;
     padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} .uri{color:#666;font-family:monospace}
.summary{font-size:1.1em;background:#f5f5f5;border-left:4px solid #444;padding:.8em 1em;margin:1em 0}
table{border-collapse:collapse;font-size:.88em;width:100%} th,td{border:1px solid #ddd;padding:4px 6px;
     vertical-align:top} th{background:#fafafa;position:sticky;top:0} td.num{text-align:right;
     font-variant-numeric:tabular-nums}
.pill{display:inline-block;border-radius:10px;padding:1px 8px;color:#fff;white-space:nowrap;font-weight:600}
.pill.light{color:#222} ul.reasons{margin:0;padding-left:1.1em} .note{color:#999;font-size:.9em}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
.trials{display:grid;grid-template-columns:repeat(auto-fill,minmax(470px,1fr));gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em} .card img{width:220px;margin:6px 4px 0 0;
     border:1px solid #eee} .card h3{margin:.1em 0 .4em;font-size:1em} .explain{color:#555;margin:.2em 0}
"""


def _pill(t: Trial) -> str:
    v = t.verdict_name
    light = " light" if v in ("partial_collapse", NO_VERDICT, "garbage") else ""
    return f'<span class="pill{light}" style="background:{VERDICT_COLOUR[v]}">{html.escape(t.status)}</span>'


def report_html(exp: Experiment, figures: dict[str, tuple[str, bytes]], comparison: Comparison | None = None) -> str:
    e = html.escape
    rows, metrics = table_rows(exp), _metric_columns(exp)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>ganray report: {e(exp.name)}</title><style>{_CSS}</style></head><body>",
           f"<h1>Sweep report: {e(exp.name)}</h1>", f'<div class="uri">{e(exp.uri)}</div>',
           f'<p class="summary">{e(summary(exp))}</p>', "<h2>Trials</h2><table><thead><tr>"]
    out += [f"<th>{e(label)}</th>" for _, label in _COLUMNS]
    out += [f"<th>{e(m.replace('_', ' '))}</th>" for m in metrics] + ["<th>reasons</th></tr></thead><tbody>"]
    for t, r in zip(exp.trials, rows, strict=True):
        cells = []
        for key, _ in _COLUMNS:
            if key == "status":
                cells.append(f"<td>{_pill(t)}</td>")
            else:
                cls = ' class="num"' if key in ("z_dim", "lr_g", "lr_d", "seed", "steps") else ""
                cells.append(f"<td{cls}>{e(_cell(r, key))}</td>")
        cells += [f'<td class="num">{e(_fmt_metric(r[m]))}</td>' for m in metrics]
        reasons = "".join(f"<li>{e(x)}</li>" for x in t.reasons)
        notes = "".join(f'<li class="note">{e(n)}</li>' for n in t.notes)
        cells.append(f'<td><ul class="reasons">{reasons}{notes}</ul></td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table><p class=\"note\">Every value per trial is in trials.csv next to this page.</p>")
    if comparison is not None:
        out += vae_vs_gan_html(comparison)
    out.append("<h2>Figures</h2>")
    explain = {name: text for name, _, text, _ in FIGURES}
    for name, (caption, png) in figures.items():
        out.append(f'<figure id="{e(name)}"><figcaption><b>{e(caption)}</b><p class="explain">'
                   f'{e(explain.get(name, ""))}</p></figcaption>'
                   f'<img alt="{e(caption)}" src="{_data_uri(png, "image/png")}"></figure>')
    out.append("<h2>Samples per trial</h2><p>Left: the last sample grid. Right: the fixed-z GIF — the same z "
               "at every sample step; cells that keep changing class are the flicker of an unstable G.</p>"
               '<div class="trials">')
    for t in exp.trials:
        out.append(f'<div class="card"><h3>{e(t.name)}</h3>{_pill(t)}<div>')
        png, gif = t.last_samples_png, t.fixed_z_gif
        if png:
            out.append(f'<img alt="samples at step {t.samples[-1][0]}" title="step {t.samples[-1][0]}" '
                       f'src="{_data_uri(png, "image/png")}">')
        if gif:
            out.append(f'<img alt="fixed-z GIF" title="fixed z over training" src="{_data_uri(gif, "image/gif")}">')
        if not png and not gif:
            out.append('<p class="note">no samples yet</p>')
        if t.histogram is not None:
            out.append(f'<p class="note">class histogram: {e(t.histogram.source)}</p>')
        out.append("</div></div>")
    out.append("</div>")
    if exp.notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in exp.notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


# ---- VAE vs GAN ----------------------------------------------------------------------------
# When the trials span the vae family and at least one GAN family (jobs/compare_vae_gan.py),
# the report adds a section that puts the families side by side: mean ± spread over seeds of
# class coverage, FCD, precision and recall; the final sample grids; and, for the VAE,
# reconstructions of held-out real images. docs/compare.md explains how to read it.

VAE_FAMILY = "vae"
FAMILY_LABEL = {"gan": "GAN", "wgan-gp": "WGAN-GP", "began": "BEGAN", VAE_FAMILY: "VAE"}
# Family colours of the comparison figures (Okabe-Ito blue for the VAE, greys for the GANs).
FAMILY_COLOUR = {VAE_FAMILY: "#0072B2", "gan": "#444444", "wgan-gp": "#7F7F7F", "began": "#56B4E9"}
# (metrics.jsonl key, label, which way is better)
COMPARE_METRICS = (
    ("classes_covered", "classes covered", "higher"),
    ("kl_uniform", "KL to uniform (nats)", "lower"),
    ("fcd", "FCD", "lower"),
    ("precision", "precision (sharpness/realism)", "higher"),
    ("recall", "recall (coverage)", "higher"),
)
# Supporting numbers, in the table only: where precision and recall disagree with the eye, these tell why.
SUPPORT_METRICS = (
    ("coverage", "PRDC coverage (real samples with a generated one in their k-NN ball)", "higher"),
    ("near_real_share", "near-real share (realism with one global radius)", "higher"),
    ("spread_ratio", "pixel spread ratio (1 = like the data; smooth, blurred samples < 1)", "closer to 1"),
    ("mean_confidence", "classifier confidence", "higher"),
)
RECON_SHOWN = 8  # held-out images shown per VAE trial (originals above, reconstructions below)
RECON_MSE_MAX = 500  # held-out images behind the reconstruction MSE
PRECISION_RECALL_TEXT = (
    "Precision is the share of generated samples that land inside the k-nearest-neighbour ball of some real "
    "sample in the reference classifier's feature space: it measures sharpness/realism (samples unlike any "
    "real one fall outside every ball). Recall is the share of real samples that land inside the k-NN ball of "
    "some generated sample: it measures coverage (a dropped mode leaves its real samples unrecalled). "
    "k-NN precision can be fooled by the few real outliers whose k-NN balls are huge (docs/metrics.md); the "
    "near-real share, with one global radius, is the sturdier realism number. "
    "Classes covered and KL to uniform come from the classifier's labels of the generated samples, over the "
    "classes the data holds; FCD is the Fréchet distance of the classifier features (lower is closer to the "
    "real data).")


@dataclass
class Spread:
    """One number per seed, summarised: mean ± sample standard deviation (0 for a single seed)."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def sd(self) -> float:
        # s = sqrt(Σ_i (v_i − mean)² / (n − 1)), the spread over seeds; 0 when there is one seed
        if len(self.values) < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))


@dataclass
class FamilyNumbers:
    """The final metrics of one family's trials (one per seed)."""

    family: str
    trials: list[str]
    metrics: dict[str, Spread]  # COMPARE_METRICS and SUPPORT_METRICS keys logged by at least one trial
    verdicts: list[str] = field(default_factory=list)
    recon_mse: Spread | None = None  # VAE: held-out reconstruction MSE (Σ over pixels, per image)

    @property
    def label(self) -> str:
        return FAMILY_LABEL.get(self.family, self.family)


@dataclass
class Reconstruction:
    """Held-out real images and the VAE's deterministic reconstructions G(μ(x))."""

    trial: str
    step: int
    originals: torch.Tensor  # [n, C, H, W] in [-1, 1]
    reconstructions: torch.Tensor  # [n, C, H, W]
    mse: float  # mean over RECON_MSE_MAX held-out images of Σ_pixels (x − G(μ(x)))²
    n_mse: int  # images behind `mse`


@dataclass
class Comparison:
    families: dict[str, FamilyNumbers]  # the VAE first, then the GAN families
    sentences: list[str]  # the numbers read in words
    n_classes: int | None  # K of "classes covered ... of K"
    reconstructions: list[Reconstruction] = field(default_factory=list)
    figures: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # file name -> (caption, PNG)
    notes: list[str] = field(default_factory=list)


def family_of(t: Trial) -> str | None:
    f = t.params.get("family")
    return f if isinstance(f, str) else None


def compares_vae_with_gan(exp: Experiment) -> bool:
    """True when the trials span the vae family and at least one GAN family."""
    families = {family_of(t) for t in exp.trials} - {None}
    return VAE_FAMILY in families and bool(families - {VAE_FAMILY})


def family_numbers(exp: Experiment) -> dict[str, FamilyNumbers]:
    """{family: its trials' final metrics}, the VAE first; trials that logged nothing count in no mean."""
    order = [VAE_FAMILY] + [f for f in FAMILY_LABEL if f != VAE_FAMILY]
    out: dict[str, FamilyNumbers] = {}
    for fam in sorted({family_of(t) for t in exp.trials} - {None},
                      key=lambda f: (order.index(f) if f in order else len(order), f)):
        trials = [t for t in exp.trials if family_of(t) == fam]
        metrics = {}
        for key, _label, _better in COMPARE_METRICS + SUPPORT_METRICS:
            values = [v for t in trials if (v := t.final(key)) is not None and math.isfinite(v)]
            if values:
                metrics[key] = Spread(values)
        out[fam] = FamilyNumbers(fam, [t.name for t in trials], metrics, [t.verdict_name for t in trials])
    return out


def classes_in(cfg: Config | None) -> int | None:
    """K of the class metrics: the size of data.classes, else the dataset's classes (None: unknown)."""
    if cfg is None:
        return None
    if cfg.data.classes:
        return len(cfg.data.classes)
    return {"stacked-mnist": 1000, "ring8": 8, "grid25": 25}.get(cfg.data.dataset, 10)


def _fmt_spread(s: Spread | None) -> str:
    """"0.62 ± 0.03 (2 seeds)", "1437 ± 28 (2 seeds)", "0.62 (1 seed)"."""
    if s is None:
        return "n/a"
    seeds = f"{s.n} seed" + ("s" if s.n != 1 else "")
    return f"{_num(s.mean)} ± {_num(s.sd)} ({seeds})" if s.n > 1 else f"{_num(s.mean)} ({seeds})"


RECALL_FLOOR = 0.05  # below this recall for every family, no sample resembles the real data yet
LEVEL_GAP = 0.01  # a precision/recall gap below this is no gap


def _num(v: float) -> str:
    """2 decimals below 10, 1 below 100, none above: "0.62", "45.3", "1437"."""
    return f"{v:.2f}" if abs(v) < 10 else (f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}")


def relation(a: Spread, b: Spread) -> str:
    """">", "<" or "≈" (level: a gap below LEVEL_GAP, or within the two seeds' spreads together)."""
    gap = a.mean - b.mean
    if abs(gap) < LEVEL_GAP or (a.n > 1 and b.n > 1 and abs(gap) <= a.sd + b.sd):
        return "≈"
    return ">" if gap > 0 else "<"


# (VAE recall vs GAN, VAE precision vs GAN) -> what the numbers say ({G}: the GAN family's name)
TRADE_OFF_READING = {
    (">", "<"): "the VAE covers the modes but blurs; the {G} is sharper but covers less",
    ("≈", "<"): "the VAE covers the data as well as the {G} but blurs; the {G} is sharper",
    ("<", "<"): "the {G} is ahead on both: its samples are more realistic and cover more of the real data",
    (">", ">"): "the VAE is ahead on both: the {G} is neither sharper nor more diverse at this budget",
    (">", "≈"): "the VAE covers more of the data and is as realistic: the {G} is not sharper at this budget",
    ("≈", ">"): "the VAE is more realistic and covers as much: the {G} is not sharper at this budget",
    ("<", ">"): ("the reverse of the textbook trade-off: the VAE's samples land inside the real data's k-NN balls "
                 "but bunch in a small part of it, the {G}'s spread over more of it with more samples off it"),
    ("<", "≈"): "the {G} covers more of the real data at the same realism",
    ("≈", "≈"): "the two families are level on precision and recall at this budget",
}


def trade_off_sentence(vae: FamilyNumbers, gan: FamilyNumbers) -> str:
    """The precision/recall numbers of the VAE and one GAN family, read in words."""
    G = gan.label
    rv, rg = vae.metrics.get("recall"), gan.metrics.get("recall")
    pv, pg = vae.metrics.get("precision"), gan.metrics.get("precision")
    if None in (rv, rg, pv, pg):
        return (f"VAE vs {G}: no precision/recall for both families (add prdc to eval.metrics), so the "
                "sharpness/coverage trade-off cannot be read.")
    head = (f"VAE recall {rv.mean:.2f} {'≥' if rv.mean >= rg.mean else '<'} {G} {rg.mean:.2f}, "
            f"VAE precision {pv.mean:.2f} {'<' if pv.mean < pg.mean else '≥'} {G} {pg.mean:.2f}")
    if max(rv.mean, rg.mean) < RECALL_FLOOR:
        return (f"{head}: recall is near 0 for both, so neither family's samples cover the real data yet; "
                "train longer before reading the trade-off.")
    rel = (relation(rv, rg), relation(pv, pg))
    reading = TRADE_OFF_READING[rel].format(G=G)
    bad = [v for v in gan.verdicts if v in ("collapsed", "garbage", "diverged", "partial_collapse")]
    if bad and rel in ((">", ">"), (">", "≈"), ("≈", ">")):  # the VAE ahead: say what became of the GAN
        reading += f" ({len(bad)} of {len(gan.verdicts)} {G} trials {SUMMARY_LABEL[bad[0]]})"
    level = [name for name, r in zip(("recall", "precision"), rel) if r == "≈"
             and not (abs(vae.metrics[name].mean - gan.metrics[name].mean) < LEVEL_GAP)]
    caveat = f" (the {' and '.join(level)} gap is within the seeds' spread)" if level else ""
    return f"{head}: {reading}{caveat}."


def coverage_sentence(nums: dict[str, FamilyNumbers], n_classes: int | None) -> str | None:
    """"Classes covered: VAE 2.00 of 2 (KL to uniform 0.01 nats), GAN 1.50 of 2 (...); FCD: VAE 45 vs GAN 30"."""
    of = f" of {n_classes}" if n_classes else ""
    parts = []
    for f in nums.values():
        c, kl = f.metrics.get("classes_covered"), f.metrics.get("kl_uniform")
        if c is not None:
            parts.append(f"{f.label} {c.mean:.2f}{of}" + (f" (KL to uniform {kl.mean:.2f} nats)" if kl else ""))
    fcd = [f"{f.label} {_num(f.metrics['fcd'].mean)}" for f in nums.values() if "fcd" in f.metrics]
    text = []
    if parts:
        text.append("Classes covered: " + ", ".join(parts))
    if fcd:
        text.append("FCD (lower is closer to the real data): " + " vs ".join(fcd))
    return "; ".join(text) + "." if text else None


PRECISION_OVERSTATES_GAP = 0.3  # precision this far above the near-real share: it overstates realism


def precision_caveat(f: FamilyNumbers) -> str | None:
    """A sentence when k-NN precision and the near-real share disagree by PRECISION_OVERSTATES_GAP or more."""
    p, near = f.metrics.get("precision"), f.metrics.get("near_real_share")
    if p is None or near is None or p.mean - near.mean < PRECISION_OVERSTATES_GAP:
        return None
    # share inside some real k-NN ball AND farther than q95 from every real sample ≥ precision − near_real_share
    return (f"{f.label} precision {p.mean:.2f} but near-real share {near.mean:.2f}: at least "
            f"{p.mean - near.mean:.0%} of its samples lie inside some real sample's k-NN ball yet farther from every "
            "real sample than 95% of real samples lie from their nearest neighbour, so here precision overstates "
            "realism.")


def support_sentence(vae: FamilyNumbers, gan: FamilyNumbers) -> str | None:
    """"Supporting numbers: pixel spread ratio VAE 0.54 vs GAN 1.08, ..." for the SUPPORT_METRICS both logged."""
    parts = [f"{label.split(' (')[0]} VAE {vae.metrics[key].mean:.2f} vs {gan.label} {gan.metrics[key].mean:.2f}"
             for key, label, _better in SUPPORT_METRICS if key in vae.metrics and key in gan.metrics]
    return f"Supporting numbers (VAE vs {gan.label}): " + "; ".join(parts) + "." if parts else None


def held_out_images(cfg: Config, n: int, seed: int = 0) -> torch.Tensor:
    """Up to `n` held-out (test split) real images [n, C, H, W], taken in turn from each class present."""
    import torch  # noqa: PLC0415

    from ganray.data import load_dataset  # noqa: PLC0415

    ds = load_dataset(cfg.data, "test")
    g = torch.Generator().manual_seed(seed)
    per_class = []  # each class's test images, in a seeded random order
    for c in torch.unique(ds.y):
        idx = torch.nonzero(ds.y == c).flatten()
        per_class.append(idx[torch.randperm(idx.numel(), generator=g)])
    # round robin over the classes: x_0 of class a, x_0 of class b, x_1 of class a, ...
    order = [int(p[i]) for i in range(max(p.numel() for p in per_class)) for p in per_class if i < p.numel()]
    return ds.x[torch.tensor(order[:n], dtype=torch.long)]


def reconstruct_trial(t: Trial, n_shown: int = RECON_SHOWN, n_mse: int = RECON_MSE_MAX) -> Reconstruction:
    """Load the VAE trial's newest checkpoint, rebuild encoder (D) and decoder (G) with the vae
    family's build, and reconstruct held-out real images with G(μ(x))."""
    from ganray import checkpoint  # noqa: PLC0415
    from ganray.families import get_family  # noqa: PLC0415
    from ganray.families.vae import reconstruct  # noqa: PLC0415

    if not t.checkpoints:
        raise ReportError(f"trial {t.name}: no checkpoint to reconstruct with")
    step, uri = t.checkpoints[-1]
    state = checkpoint.load(uri)
    cfg = checkpoint.config_of(state)
    if cfg.train.family != VAE_FAMILY:
        raise ConfigError(f"train.family: trial {t.name} is {cfg.train.family!r}, not {VAE_FAMILY!r}")
    x = held_out_images(cfg, max(n_shown, n_mse), seed=cfg.experiment.seed)
    m = get_family(VAE_FAMILY).build(cfg, tuple(x.shape[1:]))
    m.G_module.load_state_dict(state["G"])  # decoder
    m.D_module.load_state_dict(state["D"])  # encoder q(z|x)
    x_hat = reconstruct(m, x)  # G(μ(x)) [n, C, H, W]
    # MSE = mean over images of Σ_pixels (x − G(μ(x)))², the training loss's reconstruction term
    mse = float((x - x_hat).pow(2).flatten(1).sum(1).mean())
    return Reconstruction(t.name, int(state.get("step", step)), x[:n_shown], x_hat[:n_shown], mse, int(x.shape[0]))


def attach_reconstructions(exp: Experiment, nums: dict[str, FamilyNumbers], notes: list[str]) -> list[Reconstruction]:
    """Reconstructions of every VAE trial with a checkpoint; failures become notes."""
    out = []
    for t in exp.trials:
        if family_of(t) != VAE_FAMILY:
            continue
        try:
            out.append(reconstruct_trial(t))
        except Exception as e:  # noqa: BLE001 — one bad checkpoint must not sink the report
            log.warning("trial %s: no reconstructions (%s)", t.name, _brief(e, 1000))
            notes.append(f"{t.name}: reconstructions unavailable ({_brief(e)})")
    if out and VAE_FAMILY in nums:
        nums[VAE_FAMILY].recon_mse = Spread([r.mse for r in out])
    return out


def figure_vae_vs_gan_metrics(nums: dict[str, FamilyNumbers], n_classes: int | None) -> bytes | None:
    """One panel per metric: a bar per family at the mean, ± the spread, a dot per seed."""
    keys = [(k, label, better) for k, label, better in COMPARE_METRICS if any(k in f.metrics for f in nums.values())]
    if not keys:
        return None
    fams = list(nums.values())
    fig = _figure(2.5 * len(keys) + 0.4, 3.2)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, (key, label, better) in zip(axes, keys):
        for i, f in enumerate(fams):
            s = f.metrics.get(key)
            if s is None:
                continue
            colour = FAMILY_COLOUR.get(f.family, "#999999")
            ax.bar(i, s.mean, yerr=s.sd if s.n > 1 else None, color=colour, alpha=0.55, capsize=4, width=0.6)
            ax.scatter([i] * s.n, s.values, color=colour, edgecolor="black", linewidths=0.5, s=18, zorder=3)
        ax.set_xticks(range(len(fams)), [f.label for f in fams], fontsize=8)
        title = label + (f" (of {n_classes})" if key == "classes_covered" and n_classes else "")
        ax.set_title(f"{title}\n{better} is better", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        if key in ("precision", "recall"):
            ax.set_ylim(0, 1.05)
        if key == "classes_covered" and n_classes:
            ax.set_ylim(0, n_classes + 0.3)
    seeds = sorted({s.n for f in fams for s in f.metrics.values()})
    fig.suptitle(f"VAE vs GAN: final metrics per family (bar: mean; error bar: sd over seeds; dots: one seed each; "
                 f"{'/'.join(map(str, seeds))} seeds)", fontsize=9)
    return _png(fig)


def _decode_png(data: bytes) -> np.ndarray:
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L") if im.mode in ("L", "LA", "P", "I") else im.convert("RGB"))


def figure_vae_vs_gan_samples(exp: Experiment, nums: dict[str, FamilyNumbers]) -> bytes | None:
    """The final sample grid of every trial: one column per family, one row per seed."""
    by_family = {f: [t for t in exp.trials if family_of(t) == f and t.last_samples_png] for f in nums}
    by_family = {f: ts for f, ts in by_family.items() if ts}
    if not by_family:
        return None
    n_rows = max(len(ts) for ts in by_family.values())
    fig = _figure(3.0 * len(by_family) + 0.2, 3.2 * n_rows + 0.5)
    grid = fig.subplots(n_rows, len(by_family), squeeze=False)
    for ax in grid.flat:
        ax.set_visible(False)
    for c, (fam, trials) in enumerate(by_family.items()):
        for r, t in enumerate(trials):
            ax = grid[r][c]
            ax.set_visible(True)
            img = _decode_png(t.last_samples_png)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            seed = t.params.get("seed")
            ax.set_title(f"{FAMILY_LABEL.get(fam, fam)}" + (f" seed {seed}" if seed is not None else "")
                         + f", step {t.samples[-1][0]}\n{t.status}", fontsize=8, color=_text_colour(t.verdict_name))
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Final sample grids (the same fixed z per seed; VAE samples are G(z), z ~ N(0, I))", fontsize=9)
    return _png(fig)


def image_rows(rows: list[Any], pad: int = 2) -> np.ndarray:
    """Images [n, C, H, W] in [-1, 1] per row -> one uint8 picture [H', W', C], rows stacked, gray padding."""
    import numpy as np  # noqa: PLC0415

    arrays = [r.detach().float().cpu().numpy() if hasattr(r, "detach") else np.asarray(r, dtype=np.float32)
              for r in rows]
    n = max(a.shape[0] for a in arrays)
    _, c, h, w = arrays[0].shape
    out = np.full((len(arrays) * (h + pad) + pad, n * (w + pad) + pad, c), 128, dtype=np.uint8)
    for r, a in enumerate(arrays):
        # x ∈ [-1, 1] -> pixel = round(255 · (x + 1) / 2), clipped
        pixels = np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
        for i in range(a.shape[0]):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            out[y:y + h, x:x + w, :] = pixels[i].transpose(1, 2, 0)
    return out


def figure_vae_reconstructions(recons: list[Reconstruction]) -> bytes | None:
    """Per VAE trial: held-out originals above, their reconstructions G(μ(x)) below."""
    if not recons:
        return None
    n = max(r.originals.shape[0] for r in recons)
    fig = _figure(max(4.0, 0.55 * n + 1.4), 1.5 * len(recons) + 0.6)
    axes = fig.subplots(len(recons), 1, squeeze=False)[:, 0]
    for ax, r in zip(axes, recons):
        img = image_rows([r.originals, r.reconstructions])
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        h = r.originals.shape[2] + 2
        ax.set_yticks([2 + h / 2 - 1, 2 + h + h / 2 - 1], ["held-out", "reconstructed"], fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"{r.trial}, step {r.step}: held-out MSE {r.mse:.1f} (Σ over pixels, mean of {r.n_mse} images)",
                     fontsize=8)
    fig.suptitle("VAE reconstructions: originals above, G(μ(x)) below", fontsize=9)
    return _png(fig)


COMPARE_FIGURES = (  # (file name, caption, what to look for)
    ("vae_vs_gan_metrics.png", "VAE vs GAN: final metrics per family",
     "Bars at the mean over seeds, error bars at the spread, one dot per seed. The textbook trade-off: the VAE "
     "higher on recall and classes covered, the GAN higher on precision."),
    ("vae_vs_gan_samples.png", "VAE vs GAN: final sample grids",
     "Side by side: VAE samples are typically smooth and blurry, GAN samples sharp but possibly repetitive."),
    ("vae_reconstructions.png", "VAE reconstructions of held-out images",
     "Originals from the test split above, the VAE's reconstructions G(μ(x)) below: close copies mean the "
     "encoder and decoder learnt the data; blur here is the same blur as in the samples."),
)


def vae_vs_gan(exp: Experiment) -> Comparison | None:
    """The VAE vs GAN comparison (numbers, sentences, reconstructions, figures), or None when the
    trials do not span the vae family and a GAN family. Call after attach_media (sample grids)."""
    if not compares_vae_with_gan(exp):
        return None
    nums = family_numbers(exp)
    c = Comparison(nums, [], classes_in(exp.config))
    others = [a for a in varying_axes(exp.trials) if a not in ("family", "seed")]
    if others:
        c.notes.append(f"the trials also vary {', '.join(others)}; the family numbers pool over them")
    c.reconstructions = attach_reconstructions(exp, nums, c.notes)
    vae = nums[VAE_FAMILY]
    gans = [g for fam, g in nums.items() if fam != VAE_FAMILY]
    c.sentences = [trade_off_sentence(vae, g) for g in gans]
    if (cov := coverage_sentence(nums, c.n_classes)) is not None:
        c.sentences.append(cov)
    c.sentences += [x for g in gans if (x := support_sentence(vae, g)) is not None]
    c.sentences += [x for f in nums.values() if (x := precision_caveat(f)) is not None]
    draw = {"vae_vs_gan_metrics.png": lambda: figure_vae_vs_gan_metrics(nums, c.n_classes),
            "vae_vs_gan_samples.png": lambda: figure_vae_vs_gan_samples(exp, nums),
            "vae_reconstructions.png": lambda: figure_vae_reconstructions(c.reconstructions)}
    for name, caption, _explain in COMPARE_FIGURES:
        try:
            png = draw[name]()
        except Exception as e:  # noqa: BLE001 — a figure's bug must not cost the whole report
            log.exception("figure %s failed", name)
            c.notes.append(f"figure {name} could not be drawn ({_brief(e)})")
            continue
        if png is not None:
            c.figures[name] = (caption, png)
    return c


def _compare_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per metric, one column per family."""
    fams = list(c.families.values())
    head = ["metric"] + [f"{f.label} ({len(f.trials)} trial{'s' if len(f.trials) != 1 else ''})" for f in fams]
    rows = []
    for key, label, better in COMPARE_METRICS + SUPPORT_METRICS:
        if any(key in f.metrics for f in fams):
            of = f" of {c.n_classes}" if key == "classes_covered" and c.n_classes else ""
            rows.append([f"{label}{of}, {better} is better"] + [_fmt_spread(f.metrics.get(key)) for f in fams])
    vae = c.families.get(VAE_FAMILY)
    if vae is not None and vae.recon_mse is not None:
        rows.append(["held-out reconstruction MSE (Σ over pixels, per image)"]
                    + [_fmt_spread(vae.recon_mse) if f.family == VAE_FAMILY else "—" for f in fams])
    rows.append(["verdicts"] + [", ".join(f"{n} {VERDICT_LABEL[v]}" for v, n in Counter(f.verdicts).most_common())
                                for f in fams])
    return head, rows


def vae_vs_gan_markdown(c: Comparison) -> list[str]:
    """The "VAE vs GAN" section of report.md (figures linked from figures/)."""
    head, rows = _compare_table(c)
    lines = ["## VAE vs GAN", ""] + [x for s in c.sentences for x in (s, "")] + [
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_escape(x) for x in r) + " |" for r in rows]
    lines += ["", "Mean ± sample standard deviation over seeds, at each trial's last evaluation. "
              + PRECISION_RECALL_TEXT, ""]
    explain = {name: text for name, _, text in COMPARE_FIGURES}
    for name, (caption, _) in c.figures.items():
        lines += [f"### {caption}", "", explain[name], "", f"![{caption}](figures/{name})", ""]
    lines += [f"- note: {n}" for n in c.notes]
    return lines + ([""] if c.notes else [])


def vae_vs_gan_html(c: Comparison) -> list[str]:
    """The "VAE vs GAN" section of report.html (figures inline)."""
    e = html.escape
    head, rows = _compare_table(c)
    out = ['<h2 id="vae-vs-gan">VAE vs GAN</h2>']
    out += [f'<p class="summary">{e(s)}</p>' for s in c.sentences]
    out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>" + f"<td>{e(r[0])}</td>" + "".join(f'<td class="num">{e(x)}</td>' for x in r[1:]) + "</tr>")
    out.append(f'</tbody></table><p class="explain">Mean ± sample standard deviation over seeds, at each trial\'s '
               f"last evaluation. {e(PRECISION_RECALL_TEXT)}</p>")
    explain = {name: text for name, _, text in COMPARE_FIGURES}
    for name, (caption, png) in c.figures.items():
        out.append(f'<figure id="{e(name)}"><figcaption><b>{e(caption)}</b><p class="explain">{e(explain[name])}'
                   f'</p></figcaption><img alt="{e(caption)}" src="{_data_uri(png, "image/png")}"></figure>')
    if c.notes:
        out.append("<ul>" + "".join(f'<li class="note">{e(n)}</li>' for n in c.notes) + "</ul>")
    return out


# ---- writing -------------------------------------------------------------------------------


def write_report(experiment_uri: str, *, n_samples: int = DEFAULT_N_SAMPLES) -> str:
    """Write report.md, report.html, trials.csv and figures/*.png next to the trials of
    `experiment_uri` (a local path, s3:// or gs:// URI); returns the URI of report.html."""
    exp_uri = experiment_uri.rstrip("/")
    exp = load_experiment(exp_uri)
    log.info("report for %s: %d trials", exp_uri, len(exp.trials))
    attach_histograms(exp, n_samples)
    attach_media(exp)
    figures = make_figures(exp)
    comparison = vae_vs_gan(exp)  # None unless the trials span the vae family and a GAN family
    for name, (_, png) in [*figures.items(), *(comparison.figures.items() if comparison else ())]:
        storage.put_bytes(storage.join(exp_uri, "figures", name), png)
    storage.put_bytes(storage.join(exp_uri, "trials.csv"), trials_csv(exp).encode())
    storage.put_bytes(storage.join(exp_uri, "report.md"), report_markdown(exp, figures, comparison).encode())
    html_uri = storage.join(exp_uri, "report.html")
    # last: its presence means a complete report
    storage.put_bytes(html_uri, report_html(exp, figures, comparison).encode())
    return html_uri


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganray report",
        description="Write the sweep report (report.md, report.html, trials.csv, figures/) next to the trials "
                    "of <storage>/<experiment>.")
    p.add_argument("experiment", help="<storage>/<experiment>: a local path, s3://bucket/prefix/exp or gs://...")
    p.add_argument("--samples", type=int, default=DEFAULT_N_SAMPLES,
                   help="generated samples per trial when a class histogram is computed from a checkpoint "
                        f"(default {DEFAULT_N_SAMPLES})")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for generating samples (default 1)")
    return p


def _bad_input() -> tuple[type[BaseException], ...]:
    from ganray.checkpoint import CheckpointError  # noqa: PLC0415

    return (ReportError, ConfigError, storage.StorageError, CheckpointError)


def main(argv: list[str] | None = None) -> int:
    """`ganray report <storage>/<experiment>`: 0 written, 2 bad input, 1 failure."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        errs = check_storage_uri(args.experiment, "experiment")
        if errs:
            raise ConfigError(errs)
        if args.samples < 1:
            raise ConfigError(f"--samples: must be >= 1 (got {args.samples})")
        import torch  # noqa: PLC0415

        torch.set_num_threads(max(1, args.threads))
        where = write_report(args.experiment, n_samples=args.samples)
    except _bad_input() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001
        log.exception("report failed")
        print(f"error: report failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report: {where}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
