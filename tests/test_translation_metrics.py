"""Translation collapse (ganray.metrics.translation): known-answer translators on the real digits2inverse test
split with the shipped MNIST classifier (one fixed image -> many_to_one, the exact inverse -> healthy, class k ->
a digit of class k+1 -> content_lost), exact values of each metric, a photo pair without a classifier, and the
evaluator's resume state."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from ganray.config import Config, ConfigError, DataConfig
from ganray.data import Dataset
from ganray.data.unpaired import Unpaired, load_digits2inverse
from ganray.metrics import SPECS, config_metric_errors, get_metric, signal_names
from ganray.metrics.classifier.store import load_shipped
from ganray.metrics.fcd import frechet_distance
from ganray.metrics.inputs import MetricInputs, Reference, classify
from ganray.metrics.translation import (
    TRANSLATION_METRICS,
    TranslationEvaluator,
    cycle_l1,
    pooled,
)

torch.set_num_threads(1)


class Fn(nn.Module):
    """A translator that is a fixed function (no parameters: it runs on the evaluator's device)."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class Lookup(nn.Module):
    """A translator that knows its inputs: the image equal to keys[i] goes to values[i] (any other image, as on
    the way back of a cycle, to the value of its nearest key)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys.flatten(1), values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the direct form: exactly 0 for an image equal to a key (the matrix-product form rounds it to ~0.01)
        d = torch.cdist(x.flatten(1), self.keys, compute_mode="donot_use_mm_for_euclid_dist")  # [n, N]
        return self.values[d.argmin(1)]


def config(**data) -> Config:
    cfg = Config()
    return replace(cfg, data=DataConfig(dataset="digits2inverse", **data),
                   eval=replace(cfg.eval, metrics=(*TRANSLATION_METRICS, "training_signals")))


@pytest.fixture(scope="module")
def cfg() -> Config:
    return config()


@pytest.fixture(scope="module", params=["invert-transpose", "thick-invert"])
def pair(request, cfg) -> Unpaired:
    return load_digits2inverse(cfg.data, "test", transform=request.param)


@pytest.fixture(scope="module")
def exact_pair(cfg) -> Unpaired:
    return load_digits2inverse(cfg.data, "test", transform="invert-transpose")


def shifted(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """For each image of class k, an image of class (k + 1) % 10 of the same set (the i-th of class k gets the
    i-th of class k + 1): a permutation of x when the classes are of one size."""
    out = torch.empty_like(x)
    for k in range(10):
        src, dst = (y == k).nonzero().flatten(), (y == (k + 1) % 10).nonzero().flatten()
        out[src] = x[dst[torch.arange(len(src)) % len(dst)]]
    return out


# ---- the known answers of the issue ----------------------------------------------------------------


def test_one_fixed_image_is_many_to_one(cfg, exact_pair):
    ev = TranslationEvaluator(cfg, test=exact_pair)
    a0, b0 = exact_pair.a.x[:1], exact_pair.b.x[:1]  # a 0 and a transformed 0 (class-sorted)
    r = ev(Fn(lambda x: b0.expand(len(x), -1, -1, -1)), Fn(lambda x: a0.expand(len(x), -1, -1, -1)), 10, [])
    assert r.verdict == "many_to_one" and r.first_seen_step == 10
    m = r.metrics
    assert m["translation_duplicate_share_ab"] == m["translation_duplicate_share_ba"] == 1.0
    # identical images: identical features up to the convolutions' rounding across a batch
    assert m["translation_spread_ratio_ab"] == pytest.approx(0.0, abs=1e-6)
    assert m["translation_spread_ratio_ba"] == pytest.approx(0.0, abs=1e-6)
    # every output classified as a 0: 25 of the 250 inputs (25 per class) keep their class, chance
    assert m["content_kept_ab"] == m["content_kept_ba"] == pytest.approx(0.1)
    assert r.reasons[0] == "A→B: 100% of the translations are near-copies of another (many inputs, one output)"
    assert r.reasons[1].startswith("B→A: 100%")
    assert "A→B: 10% of the translated test images keep their input's class" in r.reasons  # content_lost, listed
    assert r.margin["statistic"] == "translation_duplicate_share_ab" and r.margin["value"] == 1.0


def test_exact_inverse_is_healthy(cfg, pair):
    ev = TranslationEvaluator(cfg, test=pair)
    r = ev(Fn(pair.to_b), Fn(pair.undo_b), 10, [])
    m = r.metrics
    assert r.verdict == "healthy" and r.first_seen_step is None
    assert m["content_kept_ab"] >= 0.95 and m["content_kept_ba"] >= 0.95
    assert m["translation_duplicate_share_ab"] < 0.1 and m["translation_duplicate_share_ba"] < 0.1
    assert 0.95 <= m["translation_spread_ratio_ab"] <= 1.0 + 1e-9
    assert m["cycle_l1_b"] == 0.0  # B -> undo_b -> to_b: both transformations put back what undo_b gives
    if pair.exact:  # undo_b(to_b(a)) == a: the outputs are the inputs, in digit space
        assert m["cycle_l1_a"] == 0.0 and m["translation_spread_ratio_ab"] == pytest.approx(1.0, abs=1e-12)
    assert r.reasons[0].startswith("A→B: 96% of the translated test images keep their input's class")
    assert r.margin is not None and r.margin["borderline"] is False


def test_every_digit_to_another_class_is_content_lost(cfg, pair):
    ev = TranslationEvaluator(cfg, test=pair)
    a, b = pair.a, pair.b
    G_AB = Lookup(a.x, pair.to_b(shifted(a.x, a.y)))  # a of class k -> to_b(a' of class k + 1)
    G_BA = Lookup(b.x, pair.undo_b(shifted(b.x, b.y)))  # b of class k -> undo_b(b' of class k + 1)
    r = ev(G_AB, G_BA, 10, [])
    m = r.metrics
    assert r.verdict == "content_lost"
    assert m["content_kept_ab"] <= 0.05 and m["content_kept_ba"] <= 0.05
    # the outputs are the perfect translator's, permuted: as varied as the inputs, no more copies
    assert m["translation_spread_ratio_ab"] >= 0.95 and m["translation_duplicate_share_ab"] < 0.1
    assert r.reasons[0].startswith("A→B: 0% of the translated test images") and r.reasons[1].startswith("B→A: 0%")
    assert r.margin["statistic"] in ("content_kept_ab", "content_kept_ba") and r.margin["high"] < 0.05


def test_one_image_per_class_keeps_content_but_is_many_to_one(cfg, exact_pair):
    """The content survives (each output is a digit of the input's class), the near-copies catch it."""
    a, b = exact_pair.a, exact_pair.b
    first_a = a.x[torch.searchsorted(a.y, a.y)]  # class-sorted: each image -> the first of its class
    first_b = b.x[torch.searchsorted(b.y, b.y)]
    r = TranslationEvaluator(cfg, test=exact_pair)(Lookup(a.x, exact_pair.to_b(first_a)),
                                                   Lookup(b.x, exact_pair.undo_b(first_b)), 10, [])
    assert r.verdict == "many_to_one"
    assert r.metrics["content_kept_ab"] >= 0.9 and r.metrics["translation_duplicate_share_ab"] == 1.0


# ---- exact values ----------------------------------------------------------------------------------


def test_content_kept_and_fcd_are_the_classifiers_own_numbers(cfg, exact_pair):
    u = exact_pair
    m = TranslationEvaluator(cfg, test=u)(Fn(u.to_b), Fn(u.undo_b), 10, []).metrics
    model = load_shipped("mnist")[0]
    la, lb = classify(model, u.a.x, "image"), classify(model, u.undo_b(u.b.x), "image")
    assert m["content_kept_ab"] == float((la.labels == u.a.y).double().mean()) == pytest.approx(0.964)
    assert m["content_kept_ba"] == float((lb.labels == u.b.y).double().mean()) == 1.0
    fa, fb = la.features.double(), lb.features.double()
    # A→B compares undo_b(G_AB(a)) = a with the real B undone; B→A the reverse: the same two sets
    fcd = frechet_distance(fb.mean(0), torch.cov(fb.T), fa.mean(0), torch.cov(fa.T))
    assert m["fcd_ab"] == pytest.approx(fcd, rel=1e-9) and m["fcd_ba"] == pytest.approx(fcd, rel=1e-6)
    assert 10 < fcd < 60  # two halves of one test split, 250 each: the small-sample floor of this FCD


def test_cycle_l1_and_pooling_exact():
    x = torch.zeros(2, 1, 4, 4)
    assert cycle_l1(x, x + 0.25) == pytest.approx(0.25, abs=1e-12) and cycle_l1(x, x) == 0.0
    assert cycle_l1(x, torch.cat([x[:1], x[1:] - 1])) == 0.5  # one image off by 1, one exact
    img = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64)
    assert torch.equal(pooled(img), torch.nn.functional.avg_pool2d(img, 2))  # 64² -> 32², block means
    small = torch.randn(2, 3, 28, 28)
    assert pooled(small) is small


def photo_pair(n: int = 100, side: int = 8) -> Unpaired:
    """Two photo domains of the same n random uint8 RGB images (labels 0: one class), no known transformation."""
    x = torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    y = torch.zeros(n, dtype=torch.int64)
    return Unpaired("cyclegan:tiny", Dataset("tiny/A", x, y, 1), Dataset("tiny/B", x.clone(), y, 1))


def test_photo_pair_without_classifier_exact():
    cfg = replace(config(), data=DataConfig(dataset="cyclegan:horse2zebra"))
    ev = TranslationEvaluator(cfg, test=photo_pair())
    assert ev.ref.classifier is None
    r = ev(Fn(lambda x: 0.5 * x), Fn(lambda x: 2 * x + 0.1), 10, [])
    m = r.metrics
    assert "content_kept_ab" not in m and "fcd_ab" not in m
    assert m["cycle_l1_a"] == pytest.approx(0.1, abs=1e-6)  # 2 (a / 2) + 0.1 − a
    assert m["cycle_l1_b"] == pytest.approx(0.05, abs=1e-6)  # (2b + 0.1) / 2 − b
    assert m["translation_spread_ratio_ab"] == pytest.approx(0.5, rel=1e-6)
    assert m["translation_spread_ratio_ba"] == pytest.approx(2.0, rel=1e-6)
    # the outputs are the target's real images scaled (and shifted), and the near-copy distance is relative to the
    # set's spread: they are near-copies exactly as often as the real images are. Of 100 real images none: the
    # 1% quantile of their nearest-neighbour distances lies between the two smallest, and these are equal (the
    # closest pair is each other's nearest), so nothing lies below it
    assert m["translation_duplicate_share_ab"] == m["translation_duplicate_share_ba"] == 0.0
    assert r.verdict == "healthy"
    const = ev(Fn(lambda x: torch.zeros_like(x)), Fn(lambda x: x), 20, [])
    assert const.verdict == "many_to_one" and const.metrics["translation_duplicate_share_ab"] == 1.0
    assert const.reasons[0].startswith("A→B: 100%") and not any(s.startswith("B→A: 100%") for s in const.reasons)


# ---- the evaluator ---------------------------------------------------------------------------------


def test_resume_judges_as_a_straight_run(cfg, exact_pair):
    u = exact_pair
    const = (Fn(lambda x: u.b.x[:1].expand(len(x), -1, -1, -1)), Fn(lambda x: u.a.x[:1].expand(len(x), -1, -1, -1)))
    straight = TranslationEvaluator(cfg, test=u)
    assert [straight(*const, s, []).first_seen_step for s in (10, 20, 30)] == [10, 10, 10]
    first = TranslationEvaluator(cfg, test=u)
    first(*const, 10, [])
    first(*const, 20, [])
    resumed = TranslationEvaluator(cfg, test=u)
    resumed.load_state_dict(first.state_dict())
    assert resumed(*const, 30, []).first_seen_step == 10
    assert resumed(Fn(u.to_b), Fn(u.undo_b), 40, []).first_seen_step is None


def test_nonfinite_translations_are_diverged(cfg, exact_pair):
    def half_nan(x):
        out = exact_pair.to_b(x).clone()
        out[: len(x) // 2] = float("nan")
        return out

    r = TranslationEvaluator(cfg, test=exact_pair)(Fn(half_nan), Fn(exact_pair.undo_b), 10, [])
    # A→B: half the translations; B→A: their cycles back through G_AB, the same half
    assert r.verdict == "diverged" and r.metrics == {"nonfinite_samples": 0.5} and r.first_seen_step == 10
    assert r.reasons == ["A→B: 125 of 250 translated test images (or their cycle back, A→B→A) hold NaN or inf",
                         "B→A: 125 of 250 translated test images (or their cycle back, B→A→B) hold NaN or inf"]


def test_registry_and_config(cfg):
    assert set(TRANSLATION_METRICS) <= set(SPECS)
    assert {"content_kept_ab", "translation_spread_ratio_ba", "translation_duplicate_share_ab", "fcd_ba",
            "cycle_l1_a"} <= signal_names(TRANSLATION_METRICS)
    assert config_metric_errors(cfg) == []
    # on a run that is not a translation run (no translations in inp.shared), every one reports nothing
    inp = MetricInputs(torch.zeros(4, 1, 28, 28), Reference("mnist5k", "image", 10))
    assert all(get_metric(name).fn(inp) == {} for name in TRANSLATION_METRICS)
    with pytest.raises(ConfigError, match="eval.metrics"):
        TranslationEvaluator(replace(cfg, eval=replace(cfg.eval, metrics=())))


def test_a_list_without_translation_metrics_computes_them_all(cfg, exact_pair):
    """The default eval.metrics (no translation_* name yet): every translation metric, the image ones skipped."""
    ev = TranslationEvaluator(replace(cfg, eval=replace(cfg.eval, metrics=("fcd", "class_coverage",
                                                                           "training_signals"))), test=exact_pair)
    assert [m.name for m in ev.metrics] == [*TRANSLATION_METRICS, "training_signals"]
    m = ev(Fn(exact_pair.to_b), Fn(exact_pair.undo_b), 10, []).metrics
    assert {"content_kept_ab", "fcd_ba", "translation_spread_ratio_ab", "nonfinite_stats"} <= set(m)
    assert "classes_covered" not in m and "fcd" not in m
