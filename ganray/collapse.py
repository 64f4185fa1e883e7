"""The collapse verdict: healthy | partial_collapse | collapsed | garbage | diverged, for conditional
runs ignores_condition | collapsed_per_condition, for translation runs content_lost | many_to_one, from numbers.

`Evaluator` is what the training loop calls on rank 0 every `eval_every` steps (and what
`ganray eval` calls once): it caches the reference statistics of the real data, runs the
configured metrics, and `judge` turns the numbers into a verdict with reasons that quote them
(the rules: ganray/metrics/verdict_rules.py; every public name there is importable from here).

Precedence, most severe first (every finding is listed in the reasons, the verdict is the
first that applies):
  diverged          non-finite samples, or NaN/inf in the loop's logged statistics
  collapsed_per_condition  (conditional runs) in some condition ≥ eval.duplicate_collapsed of its samples
                    are near-copies of another of that condition — G ignores z there, whatever the images
                    look like. Before `collapsed`: one image per condition is also 100% copies overall,
                    and "per condition" is the diagnosis (a G that ignores condition and z alike gets it
                    too, with ignores_condition and the overall copies among its reasons)
  many_to_one       (translation runs, per direction) ≥ eval.duplicate_collapsed of the translations are
                    near-copies of another (many inputs, one output)
  collapsed         ≥ eval.duplicate_collapsed of the samples are near-copies of another
                    (one image repeated, a constant generator) — whatever they look like
  garbage           near_real_share < eval.near_real_garbage (images: samples lie away from the
                    real features) or high-quality share < eval.hq_garbage (2D)
  collapsed_per_condition  (conditional runs) some condition's spread ratio (its samples' mean pairwise
                    distance in classifier features / that of real images of its class) is below
                    eval.condition_spread_collapsed. After garbage: the features of noise bunch together
  many_to_one       (translation runs) the translations' spread over their inputs' (classifier features) is
                    below eval.translation_spread_collapsed
  collapsed         modes covered ≤ eval.coverage_collapsed of what a uniform sample covers
  ignores_condition (conditional runs) the share of samples the classifier puts in the class they were asked
                    for is below eval.fidelity_ignores, overall or in some condition. After the coverage
                    collapse, which implies it (a G making only 3s ignores every other condition) and says
                    more; before partial_collapse, which a G that ignores the condition need not show
  content_lost      (translation runs) the share of translated test images that keep their input's class is
                    below eval.content_kept_lost (the metric keys: verdict_rules.DIRECTIONS)
  partial_collapse  modes covered < eval.coverage_partial of that, KL to uniform (less its
                    (K−1)/2n small-sample bias) > eval.kl_partial, or ≥ eval.duplicate_partial near-copies
  healthy           none of the above
Advisory reasons (no verdict of their own): fixed-z flip rate, flat losses or D accuracy,
BEGAN's M_global rising; per-class FCD and coverage (conditional runs: the worst class).

Margins: each rule above compares one statistic with one threshold (`Rule`), and every rule is
checked every time. The result's `margin` names the deciding rule's statistic (a healthy verdict:
the rule nearest to flipping it) with an interval at eval.interval_level (ganray/metrics/intervals.py);
the verdict is borderline, and its reason says so, when ≥ (1 − level)/2 of the bootstrap resamples,
re-judged with every rule, give another verdict (`flip_share`). The point estimate alone decides the verdict.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ganray.artifacts.layout import VERDICTS  # noqa: F401 (re-exported: the record's verdict names)
from ganray.config import Config, ConfigError
from ganray.data import Dataset
from ganray.data.download import cache_root
from ganray.metrics import IMAGE, POINTS, STACKED, data_kind, get_metric
from ganray.metrics.classifier import classifier_key
from ganray.metrics.classifier.store import reference_classifier
from ganray.metrics.inception import InceptionScorer
from ganray.metrics.inputs import MetricInputs, Reference
from ganray.metrics.intervals import APPROXIMATE_BELOW, Evidence
from ganray.metrics.mixture_coverage import HQ_SIGMAS
from ganray.metrics.verdict_rules import (  # noqa: F401 (re-exported: the verdict's public names live in ganray.collapse)
    _RANK,
    _VERDICT_AT,
    HQ_PROBABILITY,
    Assessment,
    Rule,
    Setting,
    assess,
    expected_covered,
    judge,
    thresholds_of,
)

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat: classes_covered, kl_uniform, fcd, precision, ...
    verdict: str  # one of layout.VERDICTS: healthy | partial_collapse | collapsed | garbage | diverged | ...
    reasons: list[str]  # quote the numbers
    first_seen_step: int | None  # step at which the current non-healthy verdict was first seen
    counts: dict[str, Any] | None = None  # the class (or mode) histogram behind the numbers, for the record
    margin: dict[str, Any] | None = None  # the deciding statistic, its threshold and interval (`margin_of`)
    # conditional runs: the per-condition vectors (names, n, fidelity, spread_ratio, duplicate_share, fcd,
    # coverage, ...: ganray.metrics.conditional), for the record and the report; None otherwise
    conditions: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["conditions"] is None:  # an unconditional run's record is as before
            del d["conditions"]
        return d


def _num(x: float, digits: int = 3) -> str:
    """A statistic or bound as a reason quotes it: 3 significant digits (9, 9.5, 0.0812, 822)."""
    return f"{x:,.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


def format_margin(margin: dict[str, Any]) -> str:
    """One line for a margin payload: "margin: kl_uniform 0.1003, threshold 0.1, 95% interval
    0.0782–0.12 (bootstrap (200 resamples)); 50% of resamples judge otherwise; BORDERLINE; partial_collapse
    above ..." (BORDERLINE when so; the flip share where there were resamples)."""
    text = (f"margin: {margin['statistic']} {_num(margin['value'], 4)}, threshold {_num(margin['threshold'], 4)}, "
            f"{margin['level'] * 100:g}% interval {_num(margin['low'])}–{_num(margin['high'])} ({margin['method']})")
    if margin.get("flip_share") is not None:
        text += f"; {margin['flip_share']:.1%} of resamples judge otherwise"
    return text + ("; BORDERLINE" if margin["borderline"] else "") + f"; {margin['rule']}"


def _straddles(rule: Rule, low: float, high: float) -> bool:
    """Whether [low, high] holds values that fire the rule and values that do not."""
    return (rule.fires(low) or rule.fires(high)) and not (rule.fires(low) and rule.fires(high))


def _nearness(rule: Rule, low: float, high: float) -> tuple[bool, float, float]:
    """Sort key of "nearest to flipping": straddling first, then the gap to the threshold in units
    of the interval's half-width on the threshold's side, then the gap relative to the threshold."""
    gap = rule.threshold - rule.value
    half = high - rule.value if gap > 0 else rule.value - low
    scaled = abs(gap) / half if half > 0 else math.inf
    return not _straddles(rule, low, high), scaled, abs(gap) / max(abs(rule.threshold), 1e-12)


def _deciding(a: Assessment, scored: dict[int, tuple]) -> int:
    """The rule whose margin the payload quotes (an index into a.rules): among the firmest of the rules
    giving the verdict's first reason (it turns milder only when every one of them stops firing) and each
    severer rule that did not fire (any one firing turns it severer), a straddling interval first, then
    the rule giving the verdict, then `_nearness`; for a healthy verdict the nearest of every rule."""
    point = [rule.fires(rule.value) for _, rule in a.rules]
    rank = int(a.rank_of(point))
    giving = [i for i in scored if point[i] and _RANK[a.rules[i][0]] == rank]  # the first reason's finding
    severer = [i for i in scored if not point[i] and _RANK[a.rules[i][0]] < rank
               and _VERDICT_AT[_RANK[a.rules[i][0]]] != a.verdict]
    firmest = [max(giving, key=lambda i: scored[i][0])] if giving else []
    return min(firmest + severer or list(scored), key=lambda i: (scored[i][0][0], i not in giving, *scored[i][0][1:]))


def _flips(a: Assessment, evidence: Evidence, held: set[str]) -> tuple[int, dict[str, int]]:
    """(resamples whose verdict differs from a.verdict, their verdicts' counts), every rule re-judged on
    the evidence's resampled values; the statistics in `held` (and those without resamples) keep their point value."""
    values = []
    for _, rule in a.rules:
        v = None if rule.statistic in held else evidence.values(rule.statistic, rule.value)
        values.append(rule.value if v is None else v)
    verdicts = np.broadcast_to(a.verdicts_at(values), (evidence.resamples,))
    other, counts = np.unique(verdicts[verdicts != a.verdict], return_counts=True)
    return int(counts.sum()), dict(zip(map(str, other), map(int, counts)))


def _flip_text(k: int, B: int, others: dict[str, int]) -> str:
    """"46 of 200 resamples judge otherwise (healthy 40, collapsed 6)"."""
    return f"{k} of {B} resamples judge otherwise ({', '.join(f'{v} {c}' for v, c in sorted(others.items()))})"


def margin_of(a: Assessment, evidence: Evidence) -> tuple[dict[str, Any] | None, list[str]]:
    """(the margin payload, the reasons with "borderline" exactly when the payload's borderline is true).

    Borderline: every resample of the evidence (the histogram's, binomial draws of the shares) is
    re-judged with every rule, and the verdict is borderline when at least (1 − level)/2 of them
    (0.95: 5 of 200) judge otherwise (`flip_share`); statistics whose bootstrap is only approximate
    (KL at n/K < 10) keep their point value there, and what they would add is reported, not counted.
    The payload's statistic is the verdict's deciding rule, or a severer one whose interval straddles
    its threshold; for a healthy verdict the rule nearest to flipping it (`_deciding`), with its
    interval. None for diverged, or when no interval can be computed."""
    reasons = list(a.reasons)
    scored = {}
    for i, (_, rule) in enumerate(a.rules):
        iv = evidence.interval(rule.statistic, rule.value)
        if iv is not None and all(math.isfinite(v) for v in (rule.value, rule.threshold, iv.low, iv.high)):
            scored[i] = (_nearness(rule, iv.low, iv.high), iv)
    if a.verdict == "diverged" or not scored:
        return None, reasons
    i = _deciding(a, scored)
    rule, iv = a.rules[i][1], scored[i][1]
    B, level = evidence.resamples, evidence.level
    held = {r.statistic for _, r in a.rules if evidence.approximate(r.statistic)}
    k, others = _flips(a, evidence, held) if B > 0 else (0, {})
    k_all, others_all = _flips(a, evidence, set()) if B > 0 and held else (k, others)
    borderline = B > 0 and k >= (1.0 - level) / 2 * B - 1e-9
    margin = {"statistic": rule.statistic, "value": float(rule.value), "threshold": float(rule.threshold),
              "low": float(iv.low), "high": float(iv.high), "level": float(level), "method": iv.method,
              "borderline": bool(borderline), "rule": rule.text, "flip_share": k / B if B > 0 else None,
              "approximate": ({"statistics": sorted(held), "flip_share": k_all / B} if held and B > 0 else None)}
    side = "straddles" if _straddles(rule, iv.low, iv.high) else "vs"
    clause = ""
    if borderline:
        clause = (f"borderline: {level * 100:g}% interval {_num(iv.low)}–{_num(iv.high)} {side} "
                  f"{_num(rule.threshold)}; {_flip_text(k, B, others)}")
    elif held and k_all >= (1.0 - level) / 2 * B - 1e-9:  # said, not counted: no "borderline" in it
        clause = (f"{_flip_text(k_all, B, others_all)} with {' and '.join(sorted(held))} resampled too, whose "
                  f"bootstrap is approximate at n/K = {evidence.n / evidence.K:.3g} < {APPROXIMATE_BELOW} (not counted)")
    if clause and a.verdict != "healthy":
        reasons[0] += f" ({clause})"
    elif clause:  # healthy, but the resamples could flip it
        reasons.insert(0, f"{rule.statistic} {_num(rule.value)}: {clause} ({rule.text})")
    return margin, reasons


class Evaluator:
    """Caches the reference statistics of `real` once; each call scores one batch of samples."""

    def __init__(self, cfg: Config, real: Dataset, device: torch.device | str = "cpu"):
        self.cfg, self.th = cfg, cfg.eval
        self.kind = data_kind(cfg.data.dataset)
        if (self.kind == POINTS) != (not real.is_image):
            raise ConfigError(f"data.dataset: {cfg.data.dataset} is {self.kind} data, but the real samples have shape "
                              f"{tuple(real.shape)}")
        chosen = [get_metric(name) for name in cfg.eval.metrics]
        self.metrics = [m for m in chosen if self.kind in m.kinds]
        skipped = [m.name for m in chosen if self.kind not in m.kinds]
        if not self.metrics:
            raise ConfigError(f"eval.metrics: none of {list(cfg.eval.metrics)} applies to {cfg.data.dataset} "
                              f"({self.kind} data)")
        if skipped:
            log.info("metrics not applicable to %s, skipped: %s", cfg.data.dataset, ", ".join(skipped))
        needs_classifier = self.kind != POINTS and any(m.needs_features for m in self.metrics)
        classifier = reference_classifier(cfg.data, cfg.storage.uri) if needs_classifier else None
        self.labeller = labeller(cfg.data.dataset, classifier[1] if classifier is not None else None)
        if classifier is not None:
            want = 10 if self.kind == STACKED else real.num_classes
            if classifier[0].arch.num_classes != want:
                raise ConfigError(f"data.dataset: the {cfg.data.dataset} classifier has "
                                  f"{classifier[0].arch.num_classes} classes, the data {want}")
        means, sigma = (real.extra.get("means"), real.extra.get("sigma", 0.0)) if self.kind == POINTS else (None, 0.0)
        if self.kind == POINTS and means is None:
            from ganray.data.mixtures import mixture_spec  # noqa: PLC0415

            means, sigma = mixture_spec(cfg.data.dataset)
        classes = None
        if self.kind == IMAGE:  # trained on a class subset (data.classes): judge against those classes
            present = torch.unique(real.y)
            classes = present if present.numel() < real.num_classes else None
        t0 = time.time()
        self.ref = Reference.build(
            cfg.data.dataset, real.x, classifier=classifier, num_modes=real.num_classes, classes=classes,
            real_y=real.y if self.kind == IMAGE else None,  # the real classes: the conditional metrics'
            means=means, sigma=sigma, real_features=any(m.needs_real_features for m in self.metrics),
            max_real=cfg.eval.n_real, prdc_k=cfg.eval.prdc_k, seed=cfg.experiment.seed, device=device,
            cache_dir=cache_root(cfg.data.cache_dir),  # the real features: once per node, not once per trial
        )
        # FID, KID, IS in Inception features (eval.inception): built here, so that a missing package or
        # weights file fails before a run; scored only where asked (inception_metrics)
        self.inception = InceptionScorer(cfg, real.x, device) if cfg.eval.inception else None
        log.info("evaluator for %s ready in %.1f s: %s", cfg.data.dataset, time.time() - t0,
                 ", ".join(m.name for m in self.metrics))
        self.state: dict[str, Any] = {}
        self._last_verdict: str | None = None
        self._first_seen: int | None = None

    def setting(self, n: int, conditions: dict[str, Any] | None = None) -> Setting:
        n_real = 0 if self.ref.real_features is None else int(self.ref.real_features.shape[0])
        return Setting(self.cfg.data.dataset, self.kind, self.ref.num_modes, n, n_real, self.ref.prdc_k, conditions)

    def _track(self, verdict: str, step: int) -> int | None:
        if verdict == "healthy":
            self._first_seen = None
        elif verdict != self._last_verdict or self._first_seen is None:
            self._first_seen = step
        self._last_verdict = verdict
        return self._first_seen

    def __call__(self, samples: Tensor, fixed_samples: Tensor | None, step: int,
                 history: list[dict[str, float]] | None = None, conditions: Tensor | None = None,
                 attributes: Tensor | None = None) -> EvalResult:
        """Score samples [n, ...]; conditions: int64 [n], the class each sample was asked for (a conditional
        run; the condition_* metrics and verdicts), None for an unconditional one; attributes: [n, 3], the
        attribute buckets each sample's caption asked for (captioned-mnist; caption_attributes)."""
        t0 = time.time()
        x = samples.detach().float().cpu()
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        if bool(bad.any()):
            share = float(bad.float().mean())
            reason = f"{int(bad.sum()):,} of {x.shape[0]:,} generated samples hold NaN or inf"
            return EvalResult({"nonfinite_samples": share}, "diverged", [reason], self._track("diverged", step))
        fixed = fixed_samples.detach().float().cpu() if fixed_samples is not None else None
        if conditions is not None and tuple(conditions.shape) != (x.shape[0],):
            raise ValueError(f"conditions: expected one class per sample, shape ({x.shape[0]},), "
                             f"got {tuple(conditions.shape)}")
        conds = conditions.detach().long().cpu() if conditions is not None else None
        inp = MetricInputs(x, self.ref, fixed, list(history or []), self.state,
                           flat_window=self.th.flat_window, seed=self.cfg.experiment.seed, conditions=conds,
                           attributes=attributes)
        metrics: dict[str, float] = {}
        for metric in self.metrics:
            metrics.update(metric.fn(inp))
        per_condition = inp.shared.get("conditions")
        a = assess(metrics, self.setting(x.shape[0], per_condition), self.th)
        # the intervals: bootstrap resamples seeded by (experiment seed, step), so a rerun quotes the same
        evidence = Evidence.of(inp, level=self.th.interval_level, resamples=self.th.bootstrap,
                               seed=self.cfg.experiment.seed, step=step)
        margin, reasons = margin_of(a, evidence)
        counts = inp.shared.get("counts")
        if counts is not None:
            counts = {"labeller": self.labeller, **counts, "step": int(step)}
        log.debug("evaluation at step %d took %.2f s", step, time.time() - t0)
        return EvalResult(metrics, a.verdict, reasons, self._track(a.verdict, step), counts, margin, per_condition)

    def inception_metrics(self, samples: Tensor) -> dict[str, float]:
        """FID, KID and IS of `samples` in Inception features; {} unless eval.inception."""
        return self.inception(samples.detach().float().cpu()) if self.inception is not None else {}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the flip rate and first-seen step; plain lists and
        numbers (it is written into verdict.json as well as into checkpoints)."""
        state = {k: v.tolist() if torch.is_tensor(v) else v for k, v in self.state.items()}
        return {"state": state, "last_verdict": self._last_verdict, "first_seen": self._first_seen}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        # tensors (the fixed-z labels of the flip rate) were saved as lists
        self.state = {k: torch.tensor(v) if isinstance(v, list) else v for k, v in d.get("state", {}).items()}
        self._last_verdict, self._first_seen = d.get("last_verdict"), d.get("first_seen")


def labeller(dataset: str, info: dict[str, Any] | None) -> str:
    """What assigns the classes of the histogram, for the record: "the mnist classifier (held-out accuracy 98.2%)"."""
    if data_kind(dataset) == POINTS:
        return f"the nearest mode within {HQ_SIGMAS:g}σ"
    acc = (info or {}).get("held_out_accuracy")
    return f"the {classifier_key(dataset)} classifier" + (
        f" (held-out accuracy {acc:.1%})" if isinstance(acc, (int, float)) else "")
