"""The collapse verdict: healthy | partial_collapse | collapsed | garbage | diverged, from numbers.

`Evaluator` is what the training loop calls on rank 0 every `eval_every` steps (and what
`ganray eval` calls once): it caches the reference statistics of the real data, runs the
configured metrics, and `judge` turns the numbers into a verdict with reasons that quote them.

Precedence, most severe first (every finding is listed in the reasons, the verdict is the
first that applies):
  diverged          non-finite samples, or NaN/inf in the loop's logged statistics
  collapsed         ≥ eval.duplicate_collapsed of the samples are near-copies of another
                    (one image repeated, a constant generator) — whatever they look like
  garbage           near_real_share < eval.near_real_garbage (images: samples lie away from the
                    real features) or high-quality share < eval.hq_garbage (2D)
  collapsed         modes covered ≤ eval.coverage_collapsed of what a uniform sample covers
  partial_collapse  modes covered < eval.coverage_partial of that, KL to uniform (less its
                    (K−1)/2n small-sample bias) > eval.kl_partial, or ≥ eval.duplicate_partial near-copies
  healthy           none of the above
Advisory reasons (no verdict of their own): fixed-z flip rate, flat losses or D accuracy,
BEGAN's M_global rising.

Margins: each rule above compares one statistic with one threshold (`Rule`). The verdict's
deciding rule (a healthy verdict: the rule nearest to flipping it) comes with an interval for its
statistic at eval.interval_level (ganray/metrics/intervals.py) in the result's `margin`; when the
interval straddles the threshold the deciding reason says "borderline". The point estimate alone
decides the verdict.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from ganray.artifacts.layout import VERDICTS  # noqa: F401 (re-exported: the record's verdict names)
from ganray.config import Config, ConfigError, EvalConfig
from ganray.data import Dataset
from ganray.data.download import cache_root
from ganray.metrics import IMAGE, POINTS, STACKED, data_kind, get_metric
from ganray.metrics.classifier import classifier_key
from ganray.metrics.classifier.store import reference_classifier
from ganray.metrics.inception import InceptionScorer
from ganray.metrics.inputs import MetricInputs, Reference, expected_modes_covered
from ganray.metrics.intervals import Evidence
from ganray.metrics.mixture_coverage import HQ_SIGMAS
from ganray.metrics.prdc import expected_coverage

log = logging.getLogger(__name__)

# P(‖ε‖ ≤ 3σ) for a 2D isotropic Gaussian: 1 − exp(−9/2)
HQ_PROBABILITY = 1.0 - math.exp(-(HQ_SIGMAS**2) / 2)

# Finding ranks: the verdict is the lowest rank found.
_RANK = {"diverged": 0, "collapsed_copies": 1, "garbage": 2, "collapsed": 3, "partial_collapse": 4}


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat: classes_covered, kl_uniform, fcd, precision, ...
    verdict: str  # healthy | partial_collapse | collapsed | garbage | diverged
    reasons: list[str]  # quote the numbers
    first_seen_step: int | None  # step at which the current non-healthy verdict was first seen
    counts: dict[str, Any] | None = None  # the class (or mode) histogram behind the numbers, for the record
    margin: dict[str, Any] | None = None  # the deciding statistic, its threshold and interval (`margin_of`)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Setting:
    """What the verdict needs to know besides the numbers."""

    dataset: str
    kind: str  # image | stacked | 2d
    num_modes: int  # K
    n: int  # generated samples
    n_real: int = 0  # real samples in the PRDC reference
    prdc_k: int = 5


@dataclass(frozen=True)
class Rule:
    """One comparison of the verdict: the finding holds when `value op threshold`."""

    statistic: str  # the metric key: classes_covered, kl_uniform, duplicate_share, ...
    value: float  # the point estimate the rule compares (KL: less its small-sample bias)
    threshold: float
    op: str  # "<" | "<=" | ">" | ">="
    text: str  # the rule in words: "partial_collapse above 0.1 nats ..."

    def fires(self, x: float) -> bool:
        t = self.threshold
        return {"<": x < t, "<=": x <= t, ">": x > t, ">=": x >= t}[self.op]


@dataclass
class _Findings:
    # (rank, verdict, reason, rules): the rule that fired, then the next verdict's on the same statistic
    items: list[tuple[int, str, str, tuple[Rule, ...]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # advisory
    unfired: list[Rule] = field(default_factory=list)  # rules checked that did not fire

    def add(self, key: str, reason: str, *rules: Rule) -> None:
        verdict = "collapsed" if key == "collapsed_copies" else key
        self.items.append((_RANK[key], verdict, reason, rules))


@dataclass(frozen=True)
class Assessment:
    verdict: str
    reasons: list[str]
    deciding: tuple[Rule, ...]  # the rule behind the verdict, then the severer one it could flip to (): healthy, diverged
    unfired: list[Rule]  # the rules checked that did not fire: a healthy verdict's margin is one of them


def _n(x: float) -> str:
    return f"{int(round(x)):,}"


def expected_covered(s: Setting) -> float:
    """Modes a sample of s.n from the true distribution would cover, by the metric's own rule."""
    if s.kind == STACKED:  # a mode counts with ≥ 1 sample
        return expected_modes_covered(s.n, s.num_modes)
    if s.kind == POINTS:  # ≥ 1 high-quality sample; each sample is high quality with P(3σ)
        return expected_modes_covered(round(s.n * HQ_PROBABILITY), s.num_modes)
    return float(s.num_modes)  # images: ≥ 10% of the uniform share, met by every class of a uniform sample


def _coverage(m: dict[str, float], s: Setting, th: EvalConfig, f: _Findings) -> None:
    key, kl_key = ("modes_covered", "reverse_kl") if s.kind == POINTS else ("classes_covered", "kl_uniform")
    if key not in m:
        return
    covered, K = m[key], s.num_modes
    expected = expected_covered(s)
    ratio = covered / expected if expected > 0 else 0.0
    what = "modes" if s.kind != IMAGE else "classes"
    if s.kind == IMAGE and "covered_share" in m:
        text = f"{_n(covered)} of {_n(K)} {what} hold {m['covered_share']:.0%} of {_n(s.n)} samples"
    elif s.kind == POINTS:
        text = f"{_n(covered)} of {_n(K)} {what} covered by {_n(s.n)} samples"
    else:
        text = f"{_n(covered)} of {_n(K)} {what} covered by {_n(s.n)} samples (a uniform sample covers {expected:,.0f})"
    kl = m.get(kl_key)
    # Miller–Madow: E[KL(p̂‖U)] ≈ KL(p‖U) + (K − 1)/(2n) for a histogram of n samples
    bias = (K - 1) / (2 * s.n)
    kl_excess = kl - bias if kl is not None else None
    if kl is not None:
        text += f"; KL to uniform {kl:.2f} nats"
    of = f"the {expected:,.4g} {what} a uniform sample of {_n(s.n)} covers"
    collapsed = Rule(key, covered, th.coverage_collapsed * expected, "<=",
                     f"collapsed at or below {th.coverage_collapsed:g} × {of}")
    partial = Rule(key, covered, th.coverage_partial * expected, "<", f"partial_collapse below {th.coverage_partial:g} × {of}")
    kl_rule = (Rule(kl_key, kl_excess, th.kl_partial, ">", f"partial_collapse above {th.kl_partial:g} nats of KL to "
                    f"uniform less its (K − 1)/2n = {bias:.3g} small-sample bias") if kl is not None else None)
    if ratio <= th.coverage_collapsed:
        f.add("collapsed", text, collapsed)
    elif ratio < th.coverage_partial:
        f.add("partial_collapse", text, partial, collapsed)  # flips to healthy above, to collapsed below
    elif kl_excess is not None and kl_excess > th.kl_partial:
        f.add("partial_collapse", text + f" (above {th.kl_partial:g} after the {bias:.3f} small-sample bias)", kl_rule)
    else:
        f.notes.append(text)
        f.unfired += [partial] + ([kl_rule] if kl_rule is not None else [])


def _copies(m: dict[str, float], th: EvalConfig, f: _Findings, n: int) -> None:
    if "duplicate_share" not in m:
        return
    dup, spread = m["duplicate_share"], m.get("spread_ratio", float("nan"))
    text = (f"{dup:.0%} of {_n(min(n, 1000))} samples are near-copies of another sample (real data: 1%); "
            f"their spread is {spread:.2f}x the real data's")
    of = f"near-copies among {_n(min(n, 1000))} samples"
    partial = Rule("duplicate_share", dup, th.duplicate_partial, ">=", f"partial_collapse at or above "
                   f"{th.duplicate_partial:.0%} {of}")
    collapsed = Rule("duplicate_share", dup, th.duplicate_collapsed, ">=",
                     f"collapsed at or above {th.duplicate_collapsed:.0%} {of}")
    if dup >= th.duplicate_collapsed:
        f.add("collapsed_copies", text, collapsed)
    elif dup >= th.duplicate_partial:
        f.add("partial_collapse", text, partial, collapsed)
    else:
        f.unfired.append(partial)


def _garbage(m: dict[str, float], s: Setting, th: EvalConfig, f: _Findings) -> None:
    if s.kind == POINTS:
        if "hq_share" in m:
            rule = Rule("hq_share", m["hq_share"], th.hq_garbage, "<",
                        f"garbage below {th.hq_garbage:.0%} of samples within {HQ_SIGMAS:g} sigma of a mode")
            if rule.fires(rule.value):
                f.add("garbage", f"only {m['hq_share']:.1%} of samples lie within {HQ_SIGMAS:g} sigma of a mode "
                                 f"(a perfect generator: {HQ_PROBABILITY:.1%})", rule)
            else:
                f.unfired.append(rule)
        return
    if "near_real_share" in m:
        rule = Rule("near_real_share", m["near_real_share"], th.near_real_garbage, "<",
                    f"garbage below {th.near_real_garbage:.0%} of samples as near the real features as real ones are")
        if rule.fires(rule.value):
            text = (f"only {m['near_real_share']:.0%} of samples lie as near the real data (classifier features) "
                    "as 95% of real samples do")
            extra = [f"{k} {m[k]:.{p}f}" for k, p in (("fcd", 1), ("density", 2)) if k in m]
            f.add("garbage", text + (f" ({', '.join(extra)})" if extra else ""), rule)
        else:
            f.unfired.append(rule)
    elif "mean_confidence" in m:
        rule = Rule("mean_confidence", m["mean_confidence"], th.confidence_garbage, "<",
                    f"garbage below a mean classifier confidence of {th.confidence_garbage:g}")
        if rule.fires(rule.value):
            f.add("garbage", f"mean classifier confidence {m['mean_confidence']:.2f}", rule)
        else:
            f.unfired.append(rule)


def _prdc_note(m: dict[str, float], s: Setting, f: _Findings) -> None:
    if "coverage" in m and s.n_real > s.prdc_k:
        exp = expected_coverage(s.n_real, s.n, s.prdc_k)
        f.notes.append(f"PRDC coverage {m['coverage']:.2f} (identical distributions: {exp:.2f}), recall "
                       f"{m.get('recall', float('nan')):.2f}")


def _advisory(m: dict[str, float], th: EvalConfig, f: _Findings) -> None:
    if m.get("fixed_z_flip_rate", 0.0) >= th.flip_rate_warn:
        f.notes.append(f"{m['fixed_z_flip_rate']:.0%} of the fixed-z samples changed class since the last evaluation")
    flat = [k for k in ("loss_D", "loss_G") if m.get(f"{k}_rel_range", float("inf")) < th.flat_rel_range]
    if flat:
        ranges = ", ".join(f"{k} {m[f'{k}_rel_range']:.2%}" for k in flat)
        f.notes.append(f"flat over the last {th.flat_window} logs: {ranges} relative range")
    if m.get("d_acc_range", float("inf")) < th.flat_rel_range:
        f.notes.append(f"D accuracy flat at {m.get('d_acc_mean', float('nan')):.2f} over the last {th.flat_window} logs")
    if m.get("m_global_trend", 0.0) > th.m_global_rise:
        f.notes.append(f"BEGAN M_global rose {m['m_global_trend']:.0%} over the last {th.flat_window} logs")


def judge(m: dict[str, float], s: Setting, th: EvalConfig) -> tuple[str, list[str]]:
    """(verdict, reasons) from a flat metrics dict."""
    a = assess(m, s, th)
    return a.verdict, a.reasons


def assess(m: dict[str, float], s: Setting, th: EvalConfig) -> Assessment:
    """The verdict, its reasons, the rule that decided it and the rules that did not fire."""
    f = _Findings()
    if m.get("nonfinite_stats", 0.0) > 0:
        f.add("diverged", f"{int(m['nonfinite_stats'])} logged training entries hold NaN or inf")
    _copies(m, th, f, s.n)
    _garbage(m, s, th, f)
    _coverage(m, s, th, f)
    _prdc_note(m, s, f)
    _advisory(m, th, f)
    if not f.items:
        return Assessment("healthy", f.notes, (), f.unfired)
    f.items.sort(key=lambda t: t[0])
    return Assessment(f.items[0][1], [r for _, _, r, _ in f.items] + f.notes, f.items[0][3], f.unfired)


def _num(x: float, digits: int = 3) -> str:
    """A statistic or bound as a reason quotes it: 3 significant digits (9, 9.5, 0.0812, 822)."""
    return f"{x:,.0f}" if abs(x) >= 10**digits else f"{x:.{digits}g}"


def format_margin(margin: dict[str, Any]) -> str:
    """One line for a margin payload: "margin: kl_uniform 0.1003, threshold 0.1, 95% interval
    0.0782–0.12 (bootstrap (200 resamples)); BORDERLINE; partial_collapse above ..." (BORDERLINE when so)."""
    text = (f"margin: {margin['statistic']} {_num(margin['value'], 4)}, threshold {_num(margin['threshold'], 4)}, "
            f"{margin['level'] * 100:g}% interval {_num(margin['low'])}–{_num(margin['high'])} ({margin['method']})")
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


def margin_of(a: Assessment, evidence: Evidence) -> tuple[dict[str, Any] | None, list[str]]:
    """(the margin payload, the reasons with "borderline" where the interval straddles the threshold).

    The margin is that of the rule nearest to flipping the verdict (`_nearness`): among the deciding
    rule and the severer one on its statistic (partial_collapse by coverage: healthy above 0.95 ×,
    collapsed at 0.5 ×), or, for a healthy verdict, among the rules that did not fire. None for
    diverged, or when no interval can be computed."""
    rules = a.deciding or ([] if a.verdict == "diverged" else a.unfired)
    scored = []
    for rule in rules:
        iv = evidence.interval(rule.statistic, rule.value)
        if iv is not None and all(math.isfinite(v) for v in (rule.value, rule.threshold, iv.low, iv.high)):
            scored.append((_nearness(rule, iv.low, iv.high), rule, iv))
    if not scored:
        return None, list(a.reasons)
    _, rule, iv = min(scored, key=lambda t: t[0])
    borderline = _straddles(rule, iv.low, iv.high)
    margin = {"statistic": rule.statistic, "value": float(rule.value), "threshold": float(rule.threshold),
              "low": float(iv.low), "high": float(iv.high), "level": float(evidence.level), "method": iv.method,
              "borderline": borderline, "rule": rule.text}
    reasons = list(a.reasons)
    if borderline:
        clause = (f"borderline: {evidence.level * 100:g}% interval {_num(iv.low)}–{_num(iv.high)} "
                  f"straddles {_num(rule.threshold)}")
        if a.deciding:
            reasons[0] += f" ({clause})"
        else:  # healthy, but the nearest rule could flip it
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

    def setting(self, n: int) -> Setting:
        n_real = 0 if self.ref.real_features is None else int(self.ref.real_features.shape[0])
        return Setting(self.cfg.data.dataset, self.kind, self.ref.num_modes, n, n_real, self.ref.prdc_k)

    def _track(self, verdict: str, step: int) -> int | None:
        if verdict == "healthy":
            self._first_seen = None
        elif verdict != self._last_verdict or self._first_seen is None:
            self._first_seen = step
        self._last_verdict = verdict
        return self._first_seen

    def __call__(self, samples: Tensor, fixed_samples: Tensor | None, step: int,
                 history: list[dict[str, float]] | None = None) -> EvalResult:
        t0 = time.time()
        x = samples.detach().float().cpu()
        bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        if bool(bad.any()):
            share = float(bad.float().mean())
            reason = f"{int(bad.sum()):,} of {x.shape[0]:,} generated samples hold NaN or inf"
            return EvalResult({"nonfinite_samples": share}, "diverged", [reason], self._track("diverged", step))
        fixed = fixed_samples.detach().float().cpu() if fixed_samples is not None else None
        inp = MetricInputs(x, self.ref, fixed, list(history or []), self.state,
                           flat_window=self.th.flat_window, seed=self.cfg.experiment.seed)
        metrics: dict[str, float] = {}
        for metric in self.metrics:
            metrics.update(metric.fn(inp))
        a = assess(metrics, self.setting(x.shape[0]), self.th)
        # the intervals: bootstrap resamples seeded by (experiment seed, step), so a rerun quotes the same
        evidence = Evidence.of(inp, level=self.th.interval_level, resamples=self.th.bootstrap,
                               seed=self.cfg.experiment.seed, step=step)
        margin, reasons = margin_of(a, evidence)
        counts = inp.shared.get("counts")
        if counts is not None:
            counts = {"labeller": self.labeller, **counts, "step": int(step)}
        log.debug("evaluation at step %d took %.2f s", step, time.time() - t0)
        return EvalResult(metrics, a.verdict, reasons, self._track(a.verdict, step), counts, margin)

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
