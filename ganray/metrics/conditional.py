"""Conditional collapse: metrics of the samples of a conditional generator, condition by condition.

Each sample was asked for a class (`MetricInputs.conditions`, int64 [N]: cgan's label, or the digit a
caption names); real images of class k are the reference's rows with that label (`Reference.real_labels`).
Every metric here returns {} when the samples carry no conditions (unconditional runs). Per condition k:

  condition_fidelity      share of all samples the reference classifier puts in the class they were asked
                          for; chance 1/K for a G that ignores the condition, ≈ the classifier's accuracy
                          (MNIST: 98%) for real images with their own labels. _min: the worst condition's share
  condition_spread_ratio  mean ‖f(G(z_i, k)) − f(G(z_j, k))‖ / mean ‖f(x_i) − f(x_j)‖, x real images of class
                          k, f the classifier's features, pairs i ≠ j: ≈ 1 like the data, 0 when G ignores z for
                          k. Mean over conditions; _min: the worst condition's
  condition_duplicate_share  near-copies within a condition (data space): a sample whose nearest other sample
                          of the same condition lies closer than all but 1% of real images of any class lie to
                          their nearest same-class neighbour, at the same number of images, in units of the
                          overall spread (all samples' vs all real images'; `_duplicates` says why), or an exact
                          copy: the share of every judged sample; _max: the worst condition's share (1.0: one
                          image repeated for that condition, pixel noise on it too)
  condition_fcd           Fréchet distance in classifier features, samples for k vs real images of k (fcd's
                          maths); mean over conditions; _max: the worst condition's
  condition_coverage      PRDC coverage per condition: the share of real class-k features with a sample for
                          k inside their k-NN ball (balls among real class-k features); mean; _min: the worst.
                          For identical distributions E = prdc.expected_coverage(N_k, M_k, k): it depends on the
                          sizes (450 real vs 50 samples, k = 5: 0.41), which the record keeps beside it.

Conditions with too few samples for a statistic (< 2; coverage ≤ k) or no real images are left out of it.
The per-condition vectors go to inp.shared["conditions"] ({"names", "n", "hits", "fidelity", ...}, None where
left out): the verdict names the classes with them and the record keeps them for the report.

`rank_correlation` is the attribute check of captioned runs: Spearman's ρ between requested and measured
attribute values (thickness, slant, size), per attribute.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ganray.metrics import register_metric
from ganray.metrics.fcd import frechet_distance, sqrtm_psd
from ganray.metrics.inputs import MetricInputs, Reference, knn_radii
from ganray.metrics.prdc import compute_prdc, expected_coverage
from ganray.metrics.sample_diversity import EXACT, MAX_SAMPLES, REAL_QUANTILE, _subsample, spread_and_nn


def _per_condition(inp: MetricInputs) -> tuple[list[tuple[int, Tensor]], dict[str, Any]]:
    """((class k, indices of the samples asked for k) for each class asked for, in order of k; the
    per-condition record every metric here adds its vectors to, inp.shared["conditions"])."""
    c = inp.conditions
    if c.shape != (inp.n,):
        raise ValueError(f"conditions: expected one class per sample, shape ({inp.n},), got {tuple(c.shape)}")
    c = c.long().cpu()
    groups = [(int(k), (c == k).nonzero().flatten()) for k in torch.unique(c)]
    return groups, inp.shared.setdefault("conditions", {"names": [str(k) for k, _ in groups],
                                                        "n": [int(i.numel()) for _, i in groups]})


def _real_rows(ref: Reference, k: int) -> Tensor:
    """Indices of the real features of class k."""
    if ref.real_labels is None:
        raise ValueError(f"{ref.dataset}: conditional metrics need the real labels in the reference "
                         "(Reference.build's real_y)")
    return (ref.real_labels == k).nonzero().flatten()


def _summary(values: list[float | None], name: str, worst: str) -> dict[str, float]:
    """{name: mean over the conditions that have a value, name_<worst>: their min or max}; {} when none has one."""
    v = [x for x in values if x is not None]
    if not v:
        return {}
    return {name: float(np.mean(v)), f"{name}_{worst}": float(min(v) if worst == "min" else max(v))}


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def condition_fidelity(inp: MetricInputs) -> dict[str, float]:
    if inp.conditions is None:
        return {}
    groups, rec = _per_condition(inp)
    # hit_i = 1[classifier label of G(z_i, c_i) = c_i]
    hit = inp.labelled.labels.cpu() == inp.conditions.long().cpu()  # [N]
    rec["hits"] = [int(hit[i].sum()) for _, i in groups]
    rec["fidelity"] = [h / int(i.numel()) for h, (_, i) in zip(rec["hits"], groups)]
    worst = int(np.argmin(rec["fidelity"]))
    # binomial shares for the margins (metrics/intervals.py): of all samples, of the worst condition's
    inp.shared.setdefault("share_trials", {}).update(condition_fidelity=inp.n, condition_fidelity_min=rec["n"][worst])
    return {"condition_fidelity": float(hit.double().mean()), "condition_fidelity_min": min(rec["fidelity"])}


def spread(x: Tensor, seed: int) -> float:
    """Mean ‖x_i − x_j‖ over pairs i ≠ j of (up to MAX_SAMPLES of) the rows of x [n, ...] (n ≥ 2), in float64."""
    return spread_and_nn(_subsample(x, MAX_SAMPLES, seed))[0]


def _real_spread(ref: Reference, k: int, seed: int) -> float | None:
    """Mean pairwise distance of (up to MAX_SAMPLES) real class-k features, cached; None below 2 of them."""
    key = ("condition_real_spread", k)
    if key not in ref.cache:
        rows = _real_rows(ref, k)
        ref.cache[key] = spread(ref.real_features[rows].cpu(), seed) if rows.numel() >= 2 else None
    return ref.cache[key]


def copy_distance(ref: Reference, m: int, seed: int) -> float | None:
    """The near-copy distance at m samples: min over the real classes c of the 1% quantile of the distance of
    each of m real class-c images (data space, ref.real_sample's) to its nearest other one; cached per m.
    None below 2 real images in every class."""
    key = ("condition_copy_distance", m)
    if key not in ref.cache:
        labels = ref.real_labels[: ref.real_sample.shape[0]].cpu()
        q = []
        for c in torch.unique(labels):
            real = ref.real_sample[labels == c]
            if real.shape[0] >= max(m, 2):
                q.append(float(torch.quantile(spread_and_nn(_subsample(real, m, seed))[1], REAL_QUANTILE)))
        ref.cache[key] = min(q) if q else None
    return ref.cache[key]


def _duplicates(inp: MetricInputs, idx: Tensor, scale: float) -> tuple[int, int] | None:
    """(near-copies, samples judged) among the samples asked for one condition; None when fewer than 2.

    A near-copy lies closer to another sample of its condition than all but 1% of real images of any class
    lie to their nearest same-class neighbour, at the same number m of images (`copy_distance`), the distance
    measured in units of the overall spread (`scale` = the samples' mean pairwise distance over the real
    images'), or is an exact copy. Not relative to the condition's own spread, as sample_diversity's is to the
    whole set's: a collapsed condition's spread collapses with it (one image plus pixel noise is as spread,
    relative to itself, as real data); relative to the overall spread, blurry but varied samples, whose every
    distance shrinks, are not copies. The least over the classes: samples of another class than asked (a G
    that ignores the condition) are not copies by the standard of a class whose images lie further apart
    (mnist5k at m = 50: 1s 3.5, 2s 10)."""
    labels = inp.ref.real_labels[: inp.ref.real_sample.shape[0]]
    smallest = min([int(n) for n in torch.bincount(labels) if n > 0], default=0)
    m = min(int(idx.numel()), smallest, MAX_SAMPLES)
    cut = copy_distance(inp.ref, m, inp.seed) if m >= 2 else None
    if cut is None:
        return None
    _, nn = spread_and_nn(_subsample(inp.samples[idx], m, inp.seed))
    # near-copy: NN_i / spread_G < copy distance / spread_real, or NN_i at float64 rounding level (exact)
    return int(((nn < cut * scale) | (nn <= EXACT * cut)).sum()), m


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def condition_diversity(inp: MetricInputs) -> dict[str, float]:
    if inp.conditions is None:
        return {}
    groups, rec = _per_condition(inp)
    feats = inp.labelled.features.cpu()
    ratios, copies = [], []
    key = ("condition_real_overall_spread",)
    if key not in inp.ref.cache:
        inp.ref.cache[key] = spread(inp.ref.real_sample, inp.seed)
    scale = spread(inp.samples, inp.seed) / max(inp.ref.cache[key], 1e-12)  # the samples' spread / real
    for k, idx in groups:
        real = _real_spread(inp.ref, k, inp.seed)
        ok = idx.numel() >= 2 and real is not None and real > 0
        # spread ratio_k = mean pairwise feature distance of the samples for k / that of real class-k images
        ratios.append(spread(feats[idx], inp.seed) / real if ok else None)
        copies.append(_duplicates(inp, idx, scale))
    rec["spread_ratio"] = ratios
    rec["duplicates"] = [c[0] if c else None for c in copies]
    rec["judged"] = [c[1] if c else None for c in copies]
    rec["duplicate_share"] = [c[0] / c[1] if c else None for c in copies]
    out = _summary(ratios, "condition_spread_ratio", "min")
    judged = sum(c[1] for c in copies if c)
    if judged:  # the pooled share of every judged sample, and the worst condition's share
        out["condition_duplicate_share"] = sum(c[0] for c in copies if c) / judged
        worst = max((s, i) for i, s in enumerate(rec["duplicate_share"]) if s is not None)
        out["condition_duplicate_share_max"] = worst[0]
        inp.shared.setdefault("share_trials", {}).update(condition_duplicate_share=judged,
                                                         condition_duplicate_share_max=rec["judged"][worst[1]])
    return out


def _real_gaussian(ref: Reference, k: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """(μ_k, Σ_k, Σ_k^{1/2}) of the real class-k features (float64), cached; None below 2 of them."""
    key = ("condition_real_gaussian", k)
    if key not in ref.cache:
        f = ref.real_features[_real_rows(ref, k)].double().cpu()
        ref.cache[key] = (f.mean(0), torch.cov(f.T), sqrtm_psd(torch.cov(f.T))) if f.shape[0] >= 2 else None
    return ref.cache[key]


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def condition_fcd(inp: MetricInputs) -> dict[str, float]:
    if inp.conditions is None:
        return {}
    groups, rec = _per_condition(inp)
    feats = inp.labelled.features.double().cpu()
    out = []
    for k, idx in groups:
        real = _real_gaussian(inp.ref, k)
        if real is None or idx.numel() < 2:
            out.append(None)
            continue
        f = feats[idx]  # [M_k, d]
        # FCD_k = ‖μ_k − μ_g,k‖² + Tr(Σ_k + Σ_g,k − 2 (Σ_k Σ_g,k)^{1/2})
        out.append(frechet_distance(real[0], real[1], f.mean(0), torch.cov(f.T), real[2]))
    rec["fcd"] = out
    return _summary(out, "condition_fcd", "max")


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def condition_coverage(inp: MetricInputs) -> dict[str, float]:
    if inp.conditions is None:
        return {}
    groups, rec = _per_condition(inp)
    ref, k_nn = inp.ref, inp.ref.prdc_k
    feats = inp.labelled.features.to(ref.device)
    cov, exp = [], []
    for k, idx in groups:
        rows = _real_rows(ref, k)
        if idx.numel() <= k_nn or rows.numel() <= k_nn:
            cov.append(None)
            exp.append(None)
            continue
        key = ("condition_real_radii", k)
        if key not in ref.cache:  # NND_k among the real class-k features
            ref.cache[key] = knn_radii(ref.real_features[rows], k_nn)
        # coverage_k = 1/N_k Σ_i 1[∃ j asked for k: ‖Y_j − X_i‖ < NND_k(X_i)], X_i real of class k
        cov.append(compute_prdc(ref.real_features[rows], ref.cache[key], feats[idx.to(ref.device)], k_nn)["coverage"])
        exp.append(expected_coverage(int(rows.numel()), int(idx.numel()), k_nn))
    rec["coverage"], rec["expected_coverage"] = cov, exp
    return _summary(cov, "condition_coverage", "min")


# the per-condition vectors (inp.shared["conditions"]) that have a scalar per condition, and its name
PER_CONDITION = (("fidelity", "condition_fidelity"), ("spread_ratio", "condition_spread_ratio"),
                 ("duplicate_share", "condition_duplicate_share"), ("fcd", "condition_fcd"),
                 ("coverage", "condition_coverage"))


def condition_scalars(per: dict[str, Any] | None, most: int | None = None) -> dict[str, float]:
    """The per-condition scalars of an evaluation's `conditions` record, for TensorBoard and the metrics
    log: {"condition_fidelity/3": 0.92, "condition_spread_ratio/3": 0.81, ...}; {} for None or for more
    than `most` conditions."""
    if not per or (most is not None and len(per["names"]) > most):
        return {}
    return {f"{name}/{c}": float(v) for key, name in PER_CONDITION
            for c, v in zip(per["names"], per.get(key) or []) if v is not None}


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each column of x [n, A], ties sharing the mean of the ranks they span (float64)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for a in range(x.shape[1]):
        col = x[:, a]
        order = np.argsort(col, kind="stable")
        sorted_col = col[order]
        # runs of equal values: each gets the mean of positions first..last (1-based)
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_col)) + 1]
        ends = np.r_[starts[1:], col.size]
        ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
        out[order, a] = ranks
    return out


def rank_correlation(requested: np.ndarray | Tensor, measured: np.ndarray | Tensor) -> np.ndarray:
    """Spearman's ρ per attribute of requested [n, A] vs measured [n, A] -> float64 [A]: the Pearson
    correlation of their average ranks (ties share the mean rank), ρ = Σ (r_i − r̄)(s_i − s̄) / √(Σ (r_i − r̄)² Σ (s_i − s̄)²);
    NaN for an attribute constant in either (no order to correlate)."""
    r, s = (np.asarray(v.cpu() if torch.is_tensor(v) else v, dtype=np.float64) for v in (requested, measured))
    if r.ndim != 2 or r.shape != s.shape or r.shape[0] < 2:
        raise ValueError(f"rank_correlation: need two [n, A] arrays of one shape, n >= 2; got {r.shape}, {s.shape}")
    r, s = average_ranks(r), average_ranks(s)
    r, s = r - r.mean(0), s - s.mean(0)
    den = np.sqrt((r**2).sum(0) * (s**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (r * s).sum(0) / np.where(den > 0, den, 1.0), math.nan)


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def caption_attributes(inp: MetricInputs) -> dict[str, float]:
    """Does G draw the attributes a caption asks for? Spearman's ρ (`rank_correlation`) between the
    (thickness, slant, size) buckets each sample's caption names (0, 1, 2: ganray.data.captioned) and
    the values measured on the sample (ganray.data.attributes.measure): ≈ 0 for a G that ignores the
    attribute words, up to 1 when they order the samples as the captions do (real digits with their
    own captions: see tests/test_conditional_metrics.py). captioned-mnist only ({} otherwise); NaN for
    an attribute no caption varies."""
    if inp.attributes is None:
        return {}
    from ganray.data.attributes import NAMES, measure  # noqa: PLC0415

    # ρ_a = corr(rank(requested_a), rank(measured_a)) over the n samples, per attribute a
    rho = rank_correlation(inp.attributes, measure(inp.samples))
    return {f"attribute_rho_{name}": float(r) for name, r in zip(NAMES, rho)}
