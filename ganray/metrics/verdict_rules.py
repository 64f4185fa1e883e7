"""The verdict's rules: one `Rule` per comparison of a statistic with a threshold, the findings they
make, and `assess` / `judge`, which turn a flat metrics dict into a verdict with reasons that quote
the numbers. The precedence of the findings is documented in ganray/collapse.py (which re-exports
every public name here); the rules for conditional runs (`ignores_condition`,
`collapsed_per_condition`) are in `_conditional`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganray.config import EvalConfig
from ganray.metrics import IMAGE, POINTS, STACKED
from ganray.metrics.inputs import expected_modes_covered
from ganray.metrics.mixture_coverage import HQ_SIGMAS
from ganray.metrics.prdc import expected_coverage

# P(‖ε‖ ≤ 3σ) for a 2D isotropic Gaussian: 1 − exp(−9/2)
HQ_PROBABILITY = 1.0 - math.exp(-(HQ_SIGMAS**2) / 2)

# Finding ranks: the verdict is the lowest rank found (the order is ganray/collapse.py's precedence).
_RANK = {"diverged": 0, "condition_copies": 1, "translation_copies": 2, "collapsed_copies": 3, "garbage": 4,
         "condition_spread": 5, "translation_spread": 6, "collapsed": 7, "ignores_condition": 8, "content_lost": 9,
         "partial_collapse": 10}
_HEALTHY = len(_RANK)  # the rank of no finding
_VERDICT_AT = np.array(["diverged", "collapsed_per_condition", "many_to_one", "collapsed", "garbage",
                        "collapsed_per_condition", "many_to_one", "collapsed", "ignores_condition", "content_lost",
                        "partial_collapse", "healthy"])  # rank -> verdict

# The conditional and translation thresholds: EvalConfig fields (ganray/config/sections.py), whose
# defaults these are (tests/test_conditional_metrics.py checks they agree)
PENDING_THRESHOLDS = {
    "fidelity_ignores": 0.5,  # ignores_condition below this share of samples classified as asked
    "condition_spread_collapsed": 0.25,  # collapsed_per_condition below this within-condition spread ratio
    "content_kept_lost": 0.5,  # content_lost below this share of translations that keep the input's class
    "translation_spread_collapsed": 0.25,  # many_to_one below this spread of the outputs over their inputs'
}
# Translation runs (cyclegan): the metric keys the verdict reads, per direction d ("ab": A -> B, "ba"), written by
# the translation metrics (issue 15): content_kept_<d> (a share), translation_spread_ratio_<d> (the outputs'
# spread in classifier features over the inputs'), translation_duplicate_share_<d> (near-copies among the outputs)
DIRECTIONS = {"ab": "A→B", "ba": "B→A"}


def thresholds_of(th: EvalConfig) -> dict[str, float]:
    """The conditional and translation verdicts' thresholds (eval.fidelity_ignores, ...)."""
    return {name: float(getattr(th, name)) for name in PENDING_THRESHOLDS}


@dataclass(frozen=True)
class Setting:
    """What the verdict needs to know besides the numbers."""

    dataset: str
    kind: str  # image | stacked | 2d
    num_modes: int  # K
    n: int  # generated samples
    n_real: int = 0  # real samples in the PRDC reference
    prdc_k: int = 5
    # conditional runs: the per-condition vectors behind the condition_* metrics (ganray.metrics.conditional),
    # so that the reasons can name the classes; None otherwise
    conditions: dict[str, Any] | None = field(default=None, compare=False)


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
    items: list[tuple[int, str, str]] = field(default_factory=list)  # (rank, verdict, reason) of each finding
    notes: list[str] = field(default_factory=list)  # advisory
    rules: list[tuple[str, Rule]] = field(default_factory=list)  # every rule checked, with the finding it makes

    def add(self, key: str, reason: str) -> None:
        self.items.append((_RANK[key], str(_VERDICT_AT[_RANK[key]]), reason))

    def check(self, key: str, *rules: Rule) -> None:
        self.rules += [(key, rule) for rule in rules]


@dataclass(frozen=True)
class Assessment:
    verdict: str
    reasons: list[str]
    rules: tuple[tuple[str, Rule], ...] = ()  # every rule checked, fired or not, with its finding (a `_RANK` key)
    floor: int = _HEALTHY  # the rank of the findings no rule compares (diverged: 0): a resample cannot change them

    def rank_of(self, fires: list[np.ndarray | bool]) -> np.ndarray:
        """The verdict's rank where rule i fires as fires[i] (one bool, or one per resample [B])."""
        rank = np.asarray(self.floor)
        for (key, _), fired in zip(self.rules, fires):
            rank = np.where(fired, np.minimum(rank, _RANK[key]), rank)
        return rank

    def verdicts_at(self, values: list[np.ndarray | float]) -> np.ndarray:
        """The verdict of each resample [B] where rule i's statistic takes values[i] ([B], or the point value):
        the same rules, every one evaluated (a verdict changes only when every rule giving it stops firing)."""
        return _VERDICT_AT[self.rank_of([rule.fires(np.asarray(v)) for (_, rule), v in zip(self.rules, values)])]


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
    # every rule is checked (the margins re-judge them all); the reason quotes the severest that fired
    f.check("collapsed", collapsed)
    f.check("partial_collapse", partial, *([kl_rule] if kl_rule is not None else []))
    if collapsed.fires(covered):
        f.add("collapsed", text)
    elif partial.fires(covered):
        f.add("partial_collapse", text)
    elif kl_rule is not None and kl_rule.fires(kl_excess):
        f.add("partial_collapse", text + f" (above {th.kl_partial:g} after the {bias:.3f} small-sample bias)")
    else:
        f.notes.append(text)


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
    f.check("collapsed_copies", collapsed)
    f.check("partial_collapse", partial)
    if collapsed.fires(dup):
        f.add("collapsed_copies", text)
    elif partial.fires(dup):
        f.add("partial_collapse", text)


def _garbage(m: dict[str, float], s: Setting, th: EvalConfig, f: _Findings) -> None:
    if s.kind == POINTS:
        if "hq_share" in m:
            rule = Rule("hq_share", m["hq_share"], th.hq_garbage, "<",
                        f"garbage below {th.hq_garbage:.0%} of samples within {HQ_SIGMAS:g} sigma of a mode")
            f.check("garbage", rule)
            if rule.fires(rule.value):
                f.add("garbage", f"only {m['hq_share']:.1%} of samples lie within {HQ_SIGMAS:g} sigma of a mode "
                                 f"(a perfect generator: {HQ_PROBABILITY:.1%})")
        return
    if "near_real_share" in m:
        rule = Rule("near_real_share", m["near_real_share"], th.near_real_garbage, "<",
                    f"garbage below {th.near_real_garbage:.0%} of samples as near the real features as real ones are")
        f.check("garbage", rule)
        if rule.fires(rule.value):
            text = (f"only {m['near_real_share']:.0%} of samples lie as near the real data (classifier features) "
                    "as 95% of real samples do")
            extra = [f"{k} {m[k]:.{p}f}" for k, p in (("fcd", 1), ("density", 2)) if k in m]
            f.add("garbage", text + (f" ({', '.join(extra)})" if extra else ""))
    elif "mean_confidence" in m:
        rule = Rule("mean_confidence", m["mean_confidence"], th.confidence_garbage, "<",
                    f"garbage below a mean classifier confidence of {th.confidence_garbage:g}")
        f.check("garbage", rule)
        if rule.fires(rule.value):
            f.add("garbage", f"mean classifier confidence {m['mean_confidence']:.2f}")


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
    """The verdict, its reasons and every rule checked (`Assessment.verdicts_at` re-judges them)."""
    f = _Findings()
    if m.get("nonfinite_stats", 0.0) > 0:
        f.add("diverged", f"{int(m['nonfinite_stats'])} logged training entries hold NaN or inf")
    _copies(m, th, f, s.n)
    _garbage(m, s, th, f)
    _coverage(m, s, th, f)
    _conditional(m, s, th, f)
    _translation(m, th, f)
    _prdc_note(m, s, f)
    _advisory(m, th, f)
    floor = _RANK["diverged"] if m.get("nonfinite_stats", 0.0) > 0 else _HEALTHY
    if not f.items:
        return Assessment("healthy", f.notes, tuple(f.rules), floor)
    f.items.sort(key=lambda t: t[0])
    return Assessment(f.items[0][1], [r for _, _, r in f.items] + f.notes, tuple(f.rules), floor)


def _worst(per: dict[str, Any], key: str, highest: bool = False) -> int | None:
    """Index of the condition with the lowest (highest) per[key], the first of ties; None where none has one."""
    vals = [(-v if highest else v, i) for i, v in enumerate(per.get(key) or []) if v is not None]
    return min(vals)[1] if vals else None


def _which(per: dict[str, Any], key: str, fires) -> str:
    """"classes 3, 5 (2 of 10)": the conditions whose per[key] fires."""
    vals = per.get(key) or []
    hit = [str(per["names"][i]) for i, v in enumerate(vals) if v is not None and fires(v)]
    return f"class{'es' if len(hit) != 1 else ''} {', '.join(hit)} ({len(hit)} of {len(vals)})"


def _conditional(m: dict[str, float], s: Setting, th: EvalConfig, f: _Findings) -> None:
    """collapsed_per_condition and ignores_condition: the condition_* metrics of conditional runs (absent otherwise)."""
    t, per = thresholds_of(th), s.conditions or {}
    if "condition_duplicate_share_max" in m:
        dup = m["condition_duplicate_share_max"]
        rule = Rule("condition_duplicate_share_max", dup, th.duplicate_collapsed, ">=", "collapsed_per_condition at "
                    f"or above {th.duplicate_collapsed:.0%} near-copies among the samples of one condition")
        f.check("condition_copies", rule)
        k = _worst(per, "duplicate_share", highest=True)
        if rule.fires(dup) and k is not None:
            spread = per["spread_ratio"][k] if per.get("spread_ratio") else None
            f.add("condition_copies", f"class {per['names'][k]}: {per['duplicates'][k]} of {per['judged'][k]} samples "
                  f"asked for it are near-copies of another of them (real images: under 1%)"
                  + (f"; spread ratio {spread:.2f} (real 1.0)" if spread is not None else "")
                  + f"; at or above {th.duplicate_collapsed:.0%}: "
                  + _which(per, "duplicate_share", lambda v: v >= th.duplicate_collapsed))
        elif rule.fires(dup):
            f.add("condition_copies", f"{dup:.0%} of the samples of one condition are near-copies of another of them")
    if "condition_spread_ratio_min" in m:
        low, cut = m["condition_spread_ratio_min"], t["condition_spread_collapsed"]
        rule = Rule("condition_spread_ratio_min", low, cut, "<", f"collapsed_per_condition below a spread ratio of "
                    f"{cut:g} for one condition (its samples vs real images of its class, classifier features)")
        f.check("condition_spread", rule)
        k = _worst(per, "spread_ratio")
        if rule.fires(low):
            name = f"class {per['names'][k]}" if k is not None else "the worst condition"
            f.add("condition_spread", f"{name}: spread ratio {low:.2f} (real 1.0): its samples lie {low:.2f}x as far "
                  "apart as real images of the class (classifier features), so G ignores z for it; mean over "
                  f"conditions {m.get('condition_spread_ratio', float('nan')):.2f}"
                  + (f"; below {cut:g}: " + _which(per, "spread_ratio", lambda v: v < cut) if k is not None else ""))
    _fidelity(m, s, t, f)
    _condition_notes(m, s, f)


def _fidelity(m: dict[str, float], s: Setting, t: dict[str, float], f: _Findings) -> None:
    if "condition_fidelity" not in m:
        return
    per, cut = s.conditions or {}, t["fidelity_ignores"]
    fid, low = m["condition_fidelity"], m.get("condition_fidelity_min", m["condition_fidelity"])
    of = "of the samples the reference classifier puts in the class they were asked for"
    pooled = Rule("condition_fidelity", fid, cut, "<", f"ignores_condition below {cut:.0%} {of}")
    worst = Rule("condition_fidelity_min", low, cut, "<", f"ignores_condition below {cut:.0%} {of}, in one condition")
    f.check("ignores_condition", pooled, worst)
    k = _worst(per, "fidelity")
    text = (f"the reference classifier puts {fid:.0%} of {_n(sum(per.get('n') or [s.n]))} samples in the class they "
            f"were asked for (chance: {1 / max(s.num_modes, 1):.0%})")
    if k is not None:
        text += f"; worst class {per['names'][k]}: {per['hits'][k]} of {per['n'][k]}"
    if pooled.fires(fid) or worst.fires(low):
        f.add("ignores_condition", text + (f"; below {cut:.0%}: " + _which(per, "fidelity", lambda v: v < cut)
                                           if k is not None else ""))
    else:
        f.notes.append(text)


def _condition_notes(m: dict[str, float], s: Setting, f: _Findings) -> None:
    """Per-class FCD and coverage, advisory: which classes are furthest from their real images."""
    per = s.conditions or {}
    if "condition_fcd_max" in m:
        k = _worst(per, "fcd", highest=True)
        name = f"class {per['names'][k]} " if k is not None else ""
        f.notes.append(f"per-class FCD: worst {name}{m['condition_fcd_max']:.1f}, mean {m['condition_fcd']:.1f}")
    if "condition_coverage_min" in m:
        k = _worst(per, "coverage")
        exp = f" (identical distributions: {per['expected_coverage'][k]:.2f})" if k is not None else ""
        name = f"class {per['names'][k]} " if k is not None else ""
        f.notes.append(f"per-class coverage: worst {name}{m['condition_coverage_min']:.2f}{exp}, "
                       f"mean {m['condition_coverage']:.2f}")


# (metric key without its direction, threshold key (eval.*), op, finding, the rule in words, the reason)
_TRANSLATION_RULES = (
    ("translation_duplicate_share", "duplicate_collapsed", ">=", "translation_copies",
     "many_to_one at or above {cut:.0%} near-copies among the {name} outputs",
     "{name}: {v:.0%} of the translations are near-copies of another (many inputs, one output)"),
    ("translation_spread_ratio", "translation_spread_collapsed", "<", "translation_spread",
     "many_to_one below a spread ratio of {cut:g} of the {name} outputs over their inputs (classifier features)",
     "{name}: the translations lie {v:.2f}x as far apart as their inputs (classifier features), so the output "
     "hardly depends on the input"),
    ("content_kept", "content_kept_lost", "<", "content_lost",
     "content_lost below {cut:.0%} of {name} translations that keep the input's class",
     "{name}: {v:.0%} of the translated test images keep their input's class"),
)


def _translation(m: dict[str, float], th: EvalConfig, f: _Findings) -> None:
    """many_to_one and content_lost, per direction: the translation metrics of cyclegan runs (absent otherwise)."""
    t = {**thresholds_of(th), "duplicate_collapsed": th.duplicate_collapsed}
    for d, name in DIRECTIONS.items():
        for stat, cut_key, op, finding, rule_text, reason in _TRANSLATION_RULES:
            if f"{stat}_{d}" not in m:
                continue
            v, cut = m[f"{stat}_{d}"], t[cut_key]
            rule = Rule(f"{stat}_{d}", v, cut, op, rule_text.format(cut=cut, name=name))
            f.check(finding, rule)
            if rule.fires(v):
                f.add(finding, reason.format(v=v, name=name))
            elif finding == "content_lost":  # how much content is kept is worth reading on a healthy run too
                f.notes.append(reason.format(v=v, name=name))
