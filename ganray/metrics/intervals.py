"""Intervals for the statistics a verdict rests on (the margins of docs/metrics.md).

Every verdict rule compares one statistic of the evaluated samples with a threshold; `Evidence`
gives an interval at eval.interval_level for each such statistic, from the same samples:

  a share (duplicate_share, near_real_share, hq_share)   exact: Clopper–Pearson (binomial)
  a histogram statistic (classes_covered, modes_covered,  bootstrap over the samples = resampling
    kl_uniform, reverse_kl)                               the histogram's counts (multinomial),
                                                          recomputed with the metric's own functions;
                                                          percentile interval, or centred on the
                                                          estimate where the plug-in is biased
  mean_confidence                                         bootstrap of the per-sample confidences

The bootstrap draws eval.bootstrap resamples from a generator seeded with (experiment seed,
step), so an evaluation's intervals are reproducible; eval.bootstrap 0 leaves the bootstrapped
statistics without an interval (low = high = the value).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ganray.metrics import POINTS, STACKED
from ganray.metrics.class_coverage import covered
from ganray.metrics.inputs import MetricInputs, kl_to_uniform_rows, nearest_mode

BISECTIONS = 50  # Clopper–Pearson bounds by bisection on p: to 2^-50 ≈ 1e-15


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # "exact Clopper–Pearson (binomial)" | "bootstrap (200 resamples)" | "none (eval.bootstrap 0)"


def _log_choose(n: int) -> np.ndarray:
    """ln C(n, j), j = 0..n [n + 1] (float64): ln C(n, j) = ln C(n, j − 1) + ln(n − j + 1) − ln j."""
    j = np.arange(1, n + 1, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(np.log(n - j + 1) - np.log(j))])


def _sum_exp(log_terms: np.ndarray) -> float:
    """Σ exp(x) of log-terms without overflow: e^m Σ e^(x − m), m = max x."""
    m = float(log_terms.max())
    return math.exp(m) * float(np.exp(log_terms - m).sum())


def _bisect(tail, target: float) -> float:
    """p in (0, 1) where the increasing function tail(p) crosses target."""
    lo, hi = 0.0, 1.0
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if tail(mid) < target else (lo, mid)
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float) -> tuple[float, float]:
    """Exact (Clopper–Pearson) interval for a binomial share from k successes of n trials.

    With α = 1 − level, the bounds are the p at which the observed k sits in a tail of α/2:
      low:  P(X ≥ k | p_low)  = α/2   (0 when k = 0)
      high: P(X ≤ k | p_high) = α/2   (1 when k = n)
    i.e. the α/2 and 1 − α/2 quantiles of Beta(k, n − k + 1) and Beta(k + 1, n − k). Covers the
    true share with probability ≥ level for every p (conservative: the binomial is discrete).
    """
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    half = (1.0 - level) / 2
    log_choose = _log_choose(n)

    def mass(first: int, last: int, p: float) -> float:
        """P(first ≤ X ≤ last | p) = Σ_j C(n, j) p^j (1 − p)^(n − j), over the j within 40 sd + 40 of np
        (the rest is below e^-50 of the total)."""
        width = 40 * math.sqrt(n * p * (1 - p)) + 40
        first, last = max(first, math.floor(n * p - width)), min(last, math.ceil(n * p + width))
        if first > last:
            return 0.0
        j = np.arange(first, last + 1, dtype=np.float64)
        return _sum_exp(log_choose[first : last + 1] + j * math.log(p) + (n - j) * math.log1p(-p))

    def p_at_least_k(p: float) -> float:  # P(X ≥ k | p): grows with p
        return mass(k, n, p)

    def p_above_k(p: float) -> float:  # P(X > k | p) = 1 − P(X ≤ k | p): grows with p
        return 1.0 - mass(0, k, p)

    low = 0.0 if k == 0 else _bisect(p_at_least_k, half)
    high = 1.0 if k == n else _bisect(p_above_k, 1.0 - half)
    return low, high


def quantiles(values: np.ndarray, level: float) -> tuple[float, float]:
    """The (1 − level)/2 and (1 + level)/2 quantiles of bootstrap values (inverted CDF: observed values)."""
    half = (1.0 - level) / 2
    lo, hi = np.quantile(values, [half, 1.0 - half], method="inverted_cdf")
    return float(lo), float(hi)


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile bootstrap: [q_{α/2}, q_{1−α/2}] of the statistic over the resamples."""
    return quantiles(values, level)


def centred_interval(estimate: float, values: np.ndarray, level: float) -> tuple[float, float]:
    """The bootstrap's spread around its own mean, moved onto an (about) unbiased estimate θ̂:
    [θ̂ + q_{α/2} − mean θ*, θ̂ + q_{1−α/2} − mean θ*].
    For statistics whose plug-in value is biased, where the resample repeats the bias:
      KL(p̂‖U): E KL(p̂‖U) ≈ KL(p‖U) + (K − 1)/2n (Miller–Madow), and a resample adds it again, so
        θ* ≈ θ̂_plug-in + (K − 1)/2n; θ̂ = the bias-corrected value the verdict compares
      modes covered with ≥ 1 sample: a resample loses each mode seen once with probability
        (1 − 1/n)^n ≈ e^−1, so θ* sits below θ̂, itself an unbiased draw of the count."""
    lo, hi = quantiles(values, level)
    shift = estimate - float(values.mean())
    return lo + shift, hi + shift


@dataclass
class Evidence:
    """What one evaluation's intervals are computed from: its histogram (and per-sample
    confidences), the level, and the bootstrap's size and seed."""

    kind: str  # image | stacked | 2d
    n: int  # evaluated samples
    level: float  # eval.interval_level
    resamples: int  # eval.bootstrap
    seed: tuple[int, int]  # (experiment seed, step): the bootstrap's generator
    cells: np.ndarray | None = None  # int64 [C]: the samples per category the histogram statistics derive from
    K: int = 0  # classes or modes: the first K cells (images: + samples outside a class subset; 2d: + off-mode)
    confidence: Tensor | None = None  # [N]: per-sample max-softmax probability (mean_confidence)
    _boot: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, inp: MetricInputs, *, level: float, resamples: int, seed: int, step: int) -> "Evidence":
        ev = cls(inp.ref.kind, inp.n, level, resamples, (int(seed), int(step)))
        rec = inp.shared.get("counts")
        if rec is not None and inp.ref.kind == POINTS:
            # cells: high-quality samples per mode (the record's counts), then the off-mode samples per
            # nearest mode — together every sample's nearest mode, which reverse_kl counts
            ev.K = len(rec["counts"]) - 1
            hq = np.asarray(rec["counts"][: ev.K], dtype=np.int64)
            nearest = torch.bincount(nearest_mode(inp.samples, inp.ref.means)[0], minlength=ev.K).numpy()
            ev.cells = np.concatenate([hq, nearest - hq])
        elif rec is not None:
            counts = np.asarray(rec["counts"], dtype=np.int64)  # classes (stacked: modes)
            ev.K = counts.size
            # + the samples labelled outside a class subset (data.classes): in n, in no class
            ev.cells = np.append(counts, inp.n - counts.sum())
        if "labelled" in inp.__dict__:  # computed by a metric already (a cached_property): reuse, never classify here
            ev.confidence = inp.labelled.confidence.double().cpu()
        return ev

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(list(self.seed)))

    def resampled(self) -> np.ndarray:
        """[B, C]: the histogram of each bootstrap resample of the n samples = Multinomial(n, cells / n)."""
        if self._boot is None:
            self._boot = self._rng().multinomial(self.n, self.cells / self.cells.sum(), size=self.resamples)
        return self._boot

    def _histogram_statistic(self, statistic: str) -> np.ndarray:
        """The statistic on every resampled histogram [B], with the metrics' own functions."""
        c = torch.from_numpy(self.resampled())
        if statistic == "classes_covered":
            return covered(c[:, : self.K], self.n, self.kind == STACKED).sum(-1).numpy().astype(np.float64)
        if statistic == "modes_covered":  # a mode is covered with ≥ 1 high-quality sample
            return (c[:, : self.K] >= 1).sum(-1).numpy().astype(np.float64)
        if statistic == "reverse_kl":  # every sample at its nearest mode
            return kl_to_uniform_rows(c[:, : self.K] + c[:, self.K :]).numpy()
        classes = c[:, : self.K]  # kl_uniform; a resample with no sample in any class: ln K, as the metric
        kl = kl_to_uniform_rows(classes)
        return torch.where(classes.sum(-1) > 0, kl, math.log(self.K)).numpy()

    def interval(self, statistic: str, value: float) -> Interval | None:
        """The interval of `statistic` around its point estimate `value` (KL statistics: the
        plug-in KL less its (K − 1)/2n, as the verdict compares it); None when the evaluation
        holds nothing to compute one from."""
        level = self.level
        if statistic in ("duplicate_share", "near_real_share", "hq_share"):
            # duplicate_share is judged on min(n, 1,000) samples (sample_diversity)
            trials = min(self.n, 1000) if statistic == "duplicate_share" else self.n
            low, high = clopper_pearson(int(round(value * trials)), trials, level)
            return Interval(low, high, "exact Clopper–Pearson (binomial)")
        histogram = statistic in ("classes_covered", "modes_covered", "kl_uniform", "reverse_kl")
        if not ((histogram and self.cells is not None) or (statistic == "mean_confidence" and self.confidence is not None)):
            return None  # a statistic no rule bootstraps, or one this evaluation holds no data for
        if self.resamples == 0:
            return Interval(value, value, "none (eval.bootstrap 0)")
        method = f"bootstrap ({self.resamples} resamples)"
        if statistic == "mean_confidence":  # resample the samples themselves: B × n indices
            idx = torch.from_numpy(self._rng().integers(0, self.n, size=(self.resamples, self.n)))
            return Interval(*percentile_interval(self.confidence[idx].mean(1).numpy(), level), method)
        values = self._histogram_statistic(statistic)
        if statistic in ("kl_uniform", "reverse_kl", "modes_covered") or self.kind == STACKED:
            return Interval(*centred_interval(value, values, level), method)  # biased plug-ins (KL; ≥ 1-sample rule)
        # images: a class counts with ≥ 10% of its uniform share, which a resample keeps as often as it
        # loses (its count is centred on the observed one): the plain percentile interval
        return Interval(*percentile_interval(values, level), method)
