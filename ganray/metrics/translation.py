"""Translation collapse (cyclegan): metrics of a run's two translators on the test split, per direction,
and `TranslationEvaluator`, what the loop calls for a translation family instead of `ganray.collapse.Evaluator`.

Every test image is translated each way, and back: direction "ab" is A → B → A (G_AB, then G_BA), "ba" is
B → A → B. For the offline pair (digits2inverse) the domain transformation is known, so the reference
classifier (the MNIST one) reads every image in digit space: A images as they are, B images after undo_b.

  content_kept_<d>       share of translated test images whose class, after undoing the domain transformation,
                         is the input's: A→B classify undo_b(G_AB(a)), B→A classify G_BA(b), against the label
                         of a (of b before to_b). ≈ the classifier's accuracy for a perfect translator (the test
                         split: 0.964 A→B, 1.0 B→A), chance 1/10 for one that ignores the digit. Offline pair only
  cycle_l1_<a|b>         mean |G_BA(G_AB(a)) − a| over pixels and test images (a: A→B→A, b: B→A→B), on the
                         [-1, 1] scale: 0 for exact inverses, ≈ 1 for unrelated images. Every pair
  translation_spread_ratio_<d>  mean ‖v(G(x_i)) − v(G(x_j))‖ / mean ‖v(x_i) − v(x_j)‖ over pairs i ≠ j of the
                         test inputs x (`spread`, ganray.metrics.conditional's), v the comparison space: the
                         classifier's features in digit space (offline pair), pixels area-downsampled to at
                         most POOL_SIDE² (photo pairs: the pooled images, flattened). ≈ 1 for a translator
                         that keeps the inputs apart, 0 for one output whatever the input (many-to-one)
  translation_duplicate_share_<d>  near-copies among the outputs, exactly as sample_diversity defines them
                         (its function, run on the outputs against the real test images of the target domain,
                         in data space; photos: the pooled images): near 0 for real images (the exact inverse on
                         the test split: 0% A→B, 5.6% B→A, 250 images each), 1 for one output whatever the input
  fcd_<d>                Fréchet distance in classifier features (fcd's maths) between the translations and the
                         real test images of the target domain, both in digit space: A→B undo_b(G_AB(a)) vs
                         undo_b(b); B→A G_BA(b) vs a. Offline pair only. Advisory: no verdict reads it

The verdicts (ganray.metrics.verdict_rules `_translation`, precedence in ganray/collapse.py): diverged (a
translation holds NaN or inf; NaN or inf in the loop's logged numbers) > many_to_one (near-copies ≥
eval.duplicate_collapsed, or spread ratio < eval.translation_spread_collapsed, in either direction) >
content_lost (content kept < eval.content_kept_lost in either direction) > healthy. Reasons name the direction.
The thresholds' numbers, on digits2inverse's test split (250 images per domain): the exact inverse keeps
0.964 / 1.0 of the content (thick-invert: 0.964 / 0.992), spread ratio 0.97-1.0, FCD 27-37 (two halves of one
split: the small-sample floor); one fixed output keeps 0.10 (chance), spread 0, near-copies 1.0; class k -> a
digit of class k+1 keeps 0.0 at spread 1.0 (tests/test_translation_metrics.py). configs/cyclegan_digits_local.yaml
(thick-invert, 400 steps, 47 s on a CPU) kept 72% / 93% / 94% / 96% A→B after 100 / 200 / 300 / 400 steps
(healthy throughout, spread 0.64 -> 0.93); without its cycle and identity terms 25% / 56% / 83% / 84% A→B and
15% / 34% / 35% / 40% B→A, spread 0.22 / 0.15 at step 100 (many_to_one), then content_lost from step 200.

The three metrics are registered like every other (ganray.metrics.SPECS); each returns {} unless the evaluator
left the translations in inp.shared["translation"], so they can sit in the default eval.metrics of every run.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganray.collapse import EvalResult, Evaluator, margin_of
from ganray.config import Config, ConfigError
from ganray.data.unpaired import Unpaired, load_unpaired
from ganray.metrics import IMAGE, get_metric, register_metric
from ganray.metrics.classifier.model import Classifier
from ganray.metrics.classifier.store import reference_classifier
from ganray.metrics.conditional import spread
from ganray.metrics.fcd import _sqrt_sigma_real, frechet_distance
from ganray.metrics.inputs import Labelled, MetricInputs, Reference, classify
from ganray.metrics.intervals import Evidence
from ganray.metrics.sample_diversity import sample_diversity
from ganray.metrics.verdict_rules import DIRECTIONS, Setting, assess

log = logging.getLogger(__name__)

POOL_SIDE = 32  # photo pairs: the comparison space, pixels area-averaged to at most 32x32 (3,072 numbers for RGB)
BATCH_PIXELS = 1 << 20  # translation batches of about this many pixels per channel: 1,337 digits, 16 images at 256²
# the offline pair -> the dataset whose reference classifier reads its digits (key "mnist": shipped)
CLASSIFIER_SOURCE = {"digits2inverse": "mnist5k"}
CYCLES = {"ab": ("a", "A→B→A"), "ba": ("b", "B→A→B")}  # direction -> (the cycle_l1 key's domain, the cycle)
TARGETS = {"ab": "B", "ba": "A"}  # direction -> its target domain

# The registry's entries are in ganray.metrics.SPECS (config_metric_errors knows them without torch)
TRANSLATION_METRICS = ("translation_content", "translation_diversity", "translation_fcd")


def pooled(x: Tensor) -> Tensor:
    """Photo pairs' comparison space: x [n, C, H, W] area-averaged to at most POOL_SIDE² (each output pixel the
    mean of a block: linear, so scaling the images scales every distance alike); as is when already that small."""
    h, w = x.shape[-2:]
    if max(h, w) <= POOL_SIDE:
        return x
    return F.adaptive_avg_pool2d(x, (min(h, POOL_SIDE), min(w, POOL_SIDE)))  # [n, C, ≤32, ≤32]


def cycle_l1(x: Tensor, back: Tensor) -> float:
    """Mean |G'(G(x)) − x| over every pixel of every image (x, back [n, C, H, W]), in float64."""
    return float((back.double() - x.double()).abs().mean())


@torch.no_grad()
def translate(G: nn.Module, x: Tensor, device: torch.device) -> Tensor:
    """G(x) for images x [n, C, H, W], in eval mode (G's mode restored after), in batches of about BATCH_PIXELS
    pixels, on G's device (its parameters'; `device` for a G without any); float32 [n, ...] on CPU."""
    param = next(iter(G.parameters()), None)
    dev = param.device if param is not None else device
    bs = max(1, BATCH_PIXELS // (x.shape[-1] * x.shape[-2]))
    was = G.training
    G.eval()
    try:
        out = [G(x[i : i + bs].to(dev)).float().cpu() for i in range(0, x.shape[0], bs)]
    finally:
        G.train(was)
    return torch.cat(out)


@dataclass
class Translated:
    """One direction's test images, float32 [n, C, H, W] in [-1, 1] on CPU: its inputs x (source domain),
    outputs G(x) (target domain) and cycled G'(G(x)) (the source again); the inputs' classes, int64 [n]
    (the offline pair; B: the digit before to_b), or None (photo pairs)."""

    inputs: Tensor
    outputs: Tensor
    cycled: Tensor
    labels: Tensor | None


@dataclass
class TranslationReference:
    """The real test split, cached once by the evaluator. Per direction d ("ab", "ba"): the inputs (the test
    images of the source domain, as the networks see them), their view (the comparison space: classifier
    features in digit space, or pooled pixels) and the real target domain as a Reference: real_sample (its
    test images in data space, photos pooled: sample_diversity's near-copy threshold) and, for the offline
    pair, the Gaussian fit of its classifier features in digit space (mu_real, sigma_real: fcd)."""

    dataset: str
    num_classes: int
    classifier: Classifier | None
    undo_b: Callable[[Tensor], Tensor] | None
    inputs: dict[str, Tensor]
    labels: dict[str, Tensor | None]
    views: dict[str, Tensor]
    targets: dict[str, Reference]
    cache: dict[Any, float] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, test: Unpaired, classifier: Classifier | None) -> "TranslationReference":
        a = test.batch("a", torch.arange(len(test.a)))  # [n_A, C, H, W] float32 [-1, 1]
        b = test.batch("b", torch.arange(len(test.b)))  # [n_B, C, H, W]
        K = test.a.num_classes
        if classifier is None:  # photo pairs: pooled pixels for everything
            views = {"ab": pooled(a), "ba": pooled(b)}
            targets = {"ab": Reference(f"{name}/B", IMAGE, K, real_sample=views["ba"]),
                       "ba": Reference(f"{name}/A", IMAGE, K, real_sample=views["ab"])}
            return cls(name, K, None, test.undo_b, {"ab": a, "ba": b}, {"ab": None, "ba": None}, views, targets)
        if test.undo_b is None:
            raise ValueError(f"{name}: judging content with the classifier needs the pair's undo_b")
        # digit space: A as it is, B after undo_b; features f [n, d] (on CPU)
        views = {"ab": classify(classifier, a, IMAGE).features, "ba": classify(classifier, test.undo_b(b), IMAGE).features}
        targets = {}
        for d, real, feats in (("ab", b, views["ba"]), ("ba", a, views["ab"])):  # the target domain's real images
            f = feats.double()
            targets[d] = Reference(f"{name}/{TARGETS[d]}", IMAGE, K, real_sample=real, mu_real=f.mean(0),
                                   sigma_real=torch.cov(f.T))
        return cls(name, K, classifier, test.undo_b, {"ab": a, "ba": b}, {"ab": test.a.y, "ba": test.b.y}, views,
                   targets)

    def input_spread(self, d: str, seed: int) -> float:
        """Mean pairwise distance of direction d's inputs in the comparison space (cached per seed)."""
        if (d, seed) not in self.cache:
            self.cache[(d, seed)] = spread(self.views[d], seed)
        return self.cache[(d, seed)]


@dataclass
class Translations:
    """One evaluation's translations, both ways (inp.shared["translation"]: what the metrics here read)."""

    ref: TranslationReference
    directions: dict[str, Translated]
    _labelled: dict[str, Labelled] = field(default_factory=dict, repr=False)

    def labelled(self, d: str) -> Labelled:
        """The classifier's view of direction d's outputs in digit space: A→B undo_b(G_AB(a)), B→A G_BA(b)."""
        if d not in self._labelled:
            out = self.directions[d].outputs
            self._labelled[d] = classify(self.ref.classifier, self.ref.undo_b(out) if d == "ab" else out, IMAGE)
        return self._labelled[d]

    def view(self, d: str) -> Tensor:
        """Direction d's outputs in the comparison space (that of TranslationReference.views)."""
        return self.labelled(d).features if self.ref.classifier is not None else pooled(self.directions[d].outputs)

    def data_view(self, d: str) -> Tensor:
        """Direction d's outputs where sample_diversity compares them with the real target images."""
        out = self.directions[d].outputs
        return out if self.ref.classifier is not None else pooled(out)


def _translations(inp: MetricInputs) -> Translations | None:
    t = inp.shared.get("translation")
    return t if isinstance(t, Translations) else None


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def translation_content(inp: MetricInputs) -> dict[str, float]:
    t = _translations(inp)
    if t is None:
        return {}
    out, trials = {}, inp.shared.setdefault("share_trials", {})
    for d, tr in t.directions.items():
        # cycle consistency on the test split: mean |G_BA(G_AB(a)) − a| (cycle_l1_a), |G_AB(G_BA(b)) − b| (_b)
        out[f"cycle_l1_{CYCLES[d][0]}"] = cycle_l1(tr.inputs, tr.cycled)
        if t.ref.classifier is not None and tr.labels is not None:
            # kept_i = 1[classifier label of G(x_i) in digit space = class of x_i]
            kept = t.labelled(d).labels.cpu() == tr.labels.cpu()  # [n]
            out[f"content_kept_{d}"] = float(kept.double().mean())
            trials[f"content_kept_{d}"] = int(kept.numel())  # a binomial share: its interval (metrics/intervals.py)
    return out


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def translation_diversity(inp: MetricInputs) -> dict[str, float]:
    t = _translations(inp)
    if t is None:
        return {}
    out, trials = {}, inp.shared.setdefault("share_trials", {})
    for d in t.directions:
        # mean ‖v(G(x_i)) − v(G(x_j))‖ / mean ‖v(x_i) − v(x_j)‖, i ≠ j (the same rows of both: same n, same seed)
        out[f"translation_spread_ratio_{d}"] = spread(t.view(d), inp.seed) / max(t.ref.input_spread(d, inp.seed), 1e-12)
        # near-copies among the outputs: sample_diversity itself, the real target domain as its reference
        sub = MetricInputs(t.data_view(d), t.ref.targets[d], seed=inp.seed)
        out[f"translation_duplicate_share_{d}"] = sample_diversity(sub)["duplicate_share"]
        trials[f"translation_duplicate_share_{d}"] = int(sub.shared["duplicate_m"])  # the outputs it judged
    return out


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def translation_fcd(inp: MetricInputs) -> dict[str, float]:
    t = _translations(inp)
    if t is None or t.ref.classifier is None:
        return {}
    out = {}
    for d in t.directions:
        # FCD = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2}), r the real target test images, g the translations
        f = t.labelled(d).features.double()  # [n, d]
        real = t.ref.targets[d]
        out[f"fcd_{d}"] = frechet_distance(real.mu_real, real.sigma_real, f.mean(0), torch.cov(f.T),
                                           _sqrt_sigma_real(real))
    return out


def pair_classifier(cfg: Config) -> tuple[Classifier, dict[str, Any]]:
    """The reference classifier that reads an offline pair's digits: its source dataset's (digits2inverse:
    mnist5k's, key "mnist", shipped), looked up as every run's (<storage>/classifiers, the cache, shipped)."""
    source = CLASSIFIER_SOURCE.get(cfg.data.dataset, cfg.data.dataset)
    return reference_classifier(replace(cfg.data, dataset=source), cfg.storage.uri)


class TranslationEvaluator:
    """What the loop calls for a translation family every eval_every steps (on rank 0): caches the test
    split's reference statistics once; each call translates every test image both ways with the run's
    (unwrapped) G_AB and G_BA, scores the translations with the translation metrics of eval.metrics (and
    training_signals, when named) and judges them (ganray.metrics.verdict_rules, margins as Evaluator's)."""

    # first_seen_step bookkeeping and the resume state: the Evaluator's own, so a resumed run judges as a straight one
    _track = Evaluator._track
    state_dict = Evaluator.state_dict
    load_state_dict = Evaluator.load_state_dict

    def __init__(self, cfg: Config, device: torch.device | str = "cpu", test: Unpaired | None = None):
        """test: the pair's test split (default: load_unpaired(cfg.data, "test"))."""
        self.cfg, self.th, self.device = cfg, cfg.eval, torch.device(device)
        if not cfg.eval.metrics:
            raise ConfigError("eval.metrics: empty; a translation run's evaluator needs "
                              f"{', '.join(TRANSLATION_METRICS)} (or leave evaluation off)")
        chosen = [get_metric(name) for name in cfg.eval.metrics]
        self.metrics = [m for m in chosen if m.name in (*TRANSLATION_METRICS, "training_signals")]
        if not any(m.name in TRANSLATION_METRICS for m in self.metrics):
            log.warning("eval.metrics names no translation metric; a translation run (%s on %s) computes all of "
                        "them: %s", cfg.train.family, cfg.data.dataset, ", ".join(TRANSLATION_METRICS))
            self.metrics = [get_metric(name) for name in TRANSLATION_METRICS] + self.metrics
        skipped = [m.name for m in chosen if m not in self.metrics]
        if skipped:
            log.info("metrics not applicable to a translation run, skipped: %s", ", ".join(skipped))
        t0 = time.time()
        self.test = test if test is not None else load_unpaired(cfg.data, "test")
        # the offline pair (a known undo_b): its digits read by the reference classifier; photo pairs: none
        classifier = None
        if self.test.undo_b is not None:
            classifier = pair_classifier(cfg)[0].to(self.device).eval()
        self.ref = TranslationReference.build(cfg.data.dataset, self.test, classifier)
        # what MetricInputs carries for the metrics that read no translation (training_signals)
        self.base = Reference(cfg.data.dataset, IMAGE, self.ref.num_classes, classifier=classifier)
        log.info("translation evaluator for %s ready in %.1f s: %d A, %d B test images; %s", cfg.data.dataset,
                 time.time() - t0, len(self.test.a), len(self.test.b), ", ".join(m.name for m in self.metrics))
        self.state: dict[str, Any] = {}
        self._last_verdict: str | None = None
        self._first_seen: int | None = None

    def __call__(self, G_AB: nn.Module, G_BA: nn.Module, step: int,
                 history: list[dict[str, float]] | None = None) -> EvalResult:
        """Translate the test split A→B→A and B→A→B and judge it. G_AB, G_BA: the unwrapped networks (a DDP
        wrapper's forward is a collective: on rank 0 alone it would wait for the other ranks)."""
        t0 = time.time()
        a, b = self.ref.inputs["ab"], self.ref.inputs["ba"]
        ab, ba = translate(G_AB, a, self.device), translate(G_BA, b, self.device)  # [n_A, ...] in B, [n_B, ...] in A
        aba, bab = translate(G_BA, ab, self.device), translate(G_AB, ba, self.device)  # back to A, to B
        diverged = self._nonfinite(ab, aba, ba, bab, step)
        if diverged is not None:
            return diverged
        t = Translations(self.ref, {"ab": Translated(a, ab, aba, self.ref.labels["ab"]),
                                    "ba": Translated(b, ba, bab, self.ref.labels["ba"])})
        inp = MetricInputs(ab, self.base, None, list(history or []), self.state, flat_window=self.th.flat_window,
                           seed=self.cfg.experiment.seed, shared={"translation": t})
        metrics: dict[str, float] = {}
        for metric in self.metrics:
            metrics.update(metric.fn(inp))
        n = min(a.shape[0], b.shape[0])
        verdict = assess(metrics, Setting(self.cfg.data.dataset, IMAGE, self.ref.num_classes, n), self.th)
        # the intervals: the shares are binomial (their trials in inp.shared["share_trials"]); seeded by (seed, step)
        evidence = Evidence.of(inp, level=self.th.interval_level, resamples=self.th.bootstrap,
                               seed=self.cfg.experiment.seed, step=step)
        margin, reasons = margin_of(verdict, evidence)
        log.debug("translation evaluation at step %d took %.2f s", step, time.time() - t0)
        return EvalResult(metrics, verdict.verdict, reasons + notes(metrics), self._track(verdict.verdict, step),
                          None, margin)

    def _nonfinite(self, ab: Tensor, aba: Tensor, ba: Tensor, bab: Tensor, step: int) -> EvalResult | None:
        """The diverged result when a translation (or its way back) holds NaN or inf; None otherwise."""
        reasons, bad_total, total = [], 0, 0
        for d, out, back in (("ab", ab, aba), ("ba", ba, bab)):
            bad = ~(torch.isfinite(out.flatten(1)).all(1) & torch.isfinite(back.flatten(1)).all(1))  # [n]
            bad_total, total = bad_total + int(bad.sum()), total + bad.numel()
            if bool(bad.any()):
                reasons.append(f"{DIRECTIONS[d]}: {int(bad.sum()):,} of {bad.numel():,} translated test images "
                               f"(or their cycle back, {CYCLES[d][1]}) hold NaN or inf")
        if not reasons:
            return None
        return EvalResult({"nonfinite_samples": bad_total / total}, "diverged", reasons, self._track("diverged", step))


def notes(m: dict[str, float]) -> list[str]:
    """Advisory lines, one per direction: what the verdict's rules do not quote (spread, near-copies, FCD, cycle)."""
    out = []
    for d, name in DIRECTIONS.items():
        parts = []
        if f"translation_spread_ratio_{d}" in m:
            parts.append(f"spread ratio {m[f'translation_spread_ratio_{d}']:.2f} (outputs over inputs)")
        if f"translation_duplicate_share_{d}" in m:
            parts.append(f"{m[f'translation_duplicate_share_{d}']:.0%} near-copies (real images: 1%)")
        if f"fcd_{d}" in m:
            parts.append(f"FCD {m[f'fcd_{d}']:.2f} to the real {TARGETS[d]} test images (digit space)")
        key, cycle = f"cycle_l1_{CYCLES[d][0]}", CYCLES[d][1]
        if key in m:
            parts.append(f"cycle L1 {m[key]:.3f} ({cycle})")
        if parts:
            out.append(f"{name}: " + ", ".join(parts))
    return out
