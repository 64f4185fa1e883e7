"""Conditional collapse (issue 14): the condition_* metrics on small inputs with exact answers, the
attribute rank correlation, the ignores_condition / collapsed_per_condition rules, and the known-answer
cases on real mnist5k test digits with the shipped classifier: one image repeated per condition ->
collapsed_per_condition, every condition given another class's digits -> ignores_condition, real digits
with their own labels -> healthy."""
from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
import torch

from ganray.artifacts.layout import BAD_VERDICTS, VERDICT_CODES, VERDICTS
from ganray.collapse import Evaluator, Setting, judge, thresholds_of
from ganray.config import DataConfig, EvalConfig, from_dict
from ganray.data import load_dataset
from ganray.metrics import get_metric, signal_names
from ganray.metrics.conditional import average_ranks, condition_scalars, rank_correlation
from ganray.metrics.inputs import Labelled, MetricInputs, Reference
from ganray.report.model import SEVERITY, VERDICT_COLOUR, VERDICT_LABEL
from ganray.sweep import CollapseStopper

torch.set_num_threads(1)

CONDITIONAL = ("condition_fidelity", "condition_diversity", "condition_fcd", "condition_coverage")
ALL_TEN = "classes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 (10 of 10)"


# ---- the metrics on small inputs -------------------------------------------------------------------


def _inputs(features, labels, conditions, *, real_features, real_labels, samples=None, real_sample=None,
            prdc_k: int = 1) -> MetricInputs:
    """MetricInputs whose classifier view (features, labels) is given, not computed."""
    f = torch.tensor(features, dtype=torch.float32)
    rf = torch.tensor(real_features, dtype=torch.float32)
    ref = Reference("mnist5k", "image", 3, real_features=rf, real_labels=torch.tensor(real_labels),
                    real_sample=rf if real_sample is None else torch.tensor(real_sample, dtype=torch.float32),
                    prdc_k=prdc_k)
    x = f if samples is None else torch.tensor(samples, dtype=torch.float32)
    inp = MetricInputs(x, ref, conditions=torch.tensor(conditions))
    inp.__dict__["labelled"] = Labelled(f, torch.tensor(labels), torch.ones(len(labels)))  # the cached_property
    return inp


def _run(name: str, inp: MetricInputs) -> dict[str, float]:
    return get_metric(name).fn(inp)


def test_fidelity_counts_the_samples_classified_as_asked():
    # asked 0 | 1 1 1 1 | 2, classified 0 | 0 1 1 1 | 2: 5 of 6 overall, class 1 worst with 3 of 4
    inp = _inputs([[0, 0]] * 6, [0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 1, 2], real_features=[[0, 0]], real_labels=[0])
    out = _run("condition_fidelity", inp)
    assert out == {"condition_fidelity": 5 / 6, "condition_fidelity_min": 0.75}
    rec = inp.shared["conditions"]
    assert rec["names"] == ["0", "1", "2"] and rec["n"] == [1, 4, 1] and rec["hits"] == [1, 3, 1]
    assert inp.shared["share_trials"] == {"condition_fidelity": 6, "condition_fidelity_min": 4}


def test_spread_ratio_and_duplicates_within_each_condition():
    # features on a line. Real class 0 at 0, 1, 2: mean pairwise distance (1 + 2 + 1) / 3 = 4/3; its samples at
    # 0, 0, 1: 2/3 -> ratio 1/2. Real class 1 at 10, 13, 16: 4; its samples at 10, 10, 12: 4/3 -> ratio 1/3
    feats = [[0, 0], [0, 0], [1, 0], [10, 0], [10, 0], [12, 0]]
    real = [[0, 0], [1, 0], [2, 0], [10, 0], [13, 0], [16, 0]]
    # data space: real class 0 at (0,0) (3,0) (0,4) and class 1 at (10,0) (10,1) (20,0): nearest-neighbour
    # distances 3 3 4 and 1 1 10 at m = 3; the copy distance is the least class's 1% quantile: 1
    real_x = [[0, 0], [3, 0], [0, 4], [10, 0], [10, 1], [20, 0]]
    # in units of the overall spread: the samples' mean pairwise distance 8.02 over the real images' 9.72 = 0.825.
    # Samples for 0 at (0,0) (0,0.5) (5,5): two lie 0.5 apart (< 0.825), copies; for 1, 2 apart each: none
    x = [[0, 0], [0, 0.5], [5, 5], [10, 0], [12, 0], [14, 0]]
    cond = [0, 0, 0, 1, 1, 1]
    inp = _inputs(feats, cond, cond, real_features=real, real_labels=cond, samples=x, real_sample=real_x)
    out = _run("condition_diversity", inp)
    rec = inp.shared["conditions"]
    assert rec["spread_ratio"] == pytest.approx([0.5, 1 / 3])
    assert out["condition_spread_ratio"] == pytest.approx(5 / 12)
    assert out["condition_spread_ratio_min"] == pytest.approx(1 / 3)
    assert rec["duplicates"] == [2, 0] and rec["judged"] == [3, 3] and rec["duplicate_share"] == [2 / 3, 0.0]
    assert out["condition_duplicate_share"] == 2 / 6 and out["condition_duplicate_share_max"] == 2 / 3
    assert inp.shared["share_trials"] == {"condition_duplicate_share": 6, "condition_duplicate_share_max": 3}


def test_per_class_fcd_is_the_frechet_distance_of_each_class():
    # class 0: the samples are the real class-0 square moved by (3, 4): same covariance, FCD = 3² + 4² = 25;
    # class 1: the samples are the real class-1 points: 0
    sq = [[0, 0], [2, 0], [0, 2], [2, 2]]
    c1 = [[5, 5], [6, 5], [5, 7]]
    moved = [[a + 3, b + 4] for a, b in sq]
    inp = _inputs(moved + c1, [0] * 4 + [1] * 3, [0] * 4 + [1] * 3, real_features=sq + c1, real_labels=[0] * 4 + [1] * 3)
    out = _run("condition_fcd", inp)
    assert inp.shared["conditions"]["fcd"] == pytest.approx([25.0, 0.0], abs=1e-9)
    assert out == pytest.approx({"condition_fcd": 12.5, "condition_fcd_max": 25.0}, abs=1e-9)


def test_per_class_coverage_uses_each_class_balls():
    # real class 0 at 0, 1, 10 (k = 1 radii 1, 1, 9); its samples at 0.2, 0.5 cover 0 and 1, not 10 (9.5 > 9): 2/3.
    # Class 1 real at 50, 51, 52 (radii 1, 1, 1), samples at 50.1, 51.9: cover 50, 52 and 51 (0.9 < 1): 1.
    real = [[0, 0], [1, 0], [10, 0], [50, 0], [51, 0], [52, 0]]
    inp = _inputs([[0.2, 0], [0.5, 0], [50.1, 0], [51.9, 0]], [0, 0, 1, 1], [0, 0, 1, 1], real_features=real,
                  real_labels=[0, 0, 0, 1, 1, 1])
    out = _run("condition_coverage", inp)
    rec = inp.shared["conditions"]
    assert rec["coverage"] == pytest.approx([2 / 3, 1.0])
    assert rec["expected_coverage"] == pytest.approx([0.5, 0.5])  # 1 − (3 − 1)/(3 + 2 − 1)
    assert out == pytest.approx({"condition_coverage": 5 / 6, "condition_coverage_min": 2 / 3})


def test_without_conditions_every_conditional_metric_reports_nothing():
    inp = _inputs([[0, 0]] * 3, [0, 0, 0], [0, 0, 0], real_features=[[0, 0], [1, 0]], real_labels=[0, 0])
    inp.conditions = None
    assert all(_run(name, inp) == {} for name in CONDITIONAL) and inp.shared == {}
    assert {"condition_fidelity", "condition_spread_ratio_min", "condition_duplicate_share_max", "condition_fcd_max",
            "condition_coverage_min"} <= signal_names(CONDITIONAL)


def test_rank_correlation_known_values_and_ties():
    req = np.array([[1, 1, 5], [2, 2, 5], [3, 2, 5], [4, 3, 5]], dtype=float)
    meas = np.array([[10, 1, 1], [20, 3, 2], [30, 2, 3], [40, 4, 4]], dtype=float)
    rho = rank_correlation(req, meas)
    # column 0: the same order, 1; column 1: ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): 4.5 / √(4.5 · 5) = 3/√10;
    # column 2: requested constant, no order: NaN
    assert rho[0] == pytest.approx(1.0) and rho[1] == pytest.approx(3 / math.sqrt(10)) and math.isnan(rho[2])
    assert rank_correlation(req[:, :1], -meas[:, :1]) == pytest.approx([-1.0])
    assert average_ranks(np.array([[3.0], [1.0], [3.0], [2.0]]))[:, 0].tolist() == [3.5, 1.0, 3.5, 2.0]
    assert rank_correlation(torch.tensor(req), torch.tensor(meas))[1] == pytest.approx(3 / math.sqrt(10))
    with pytest.raises(ValueError, match="rank_correlation"):
        rank_correlation(req, meas[:, :2])


# ---- the rules ------------------------------------------------------------------------------------------


TH = EvalConfig()
IMG = Setting("mnist5k", "image", 10, 500, 4500, 5)
FINE = {"classes_covered": 10, "covered_share": 1.0, "kl_uniform": 0.0, "duplicate_share": 0.01,
        "near_real_share": 0.9, "condition_fidelity": 0.98, "condition_fidelity_min": 0.9,
        "condition_spread_ratio": 1.0, "condition_spread_ratio_min": 0.9, "condition_duplicate_share": 0.0,
        "condition_duplicate_share_max": 0.0}


@pytest.mark.parametrize("changes,verdict", [
    ({}, "healthy"),
    ({"condition_fidelity": 0.49}, "ignores_condition"),
    ({"condition_fidelity_min": 0.49}, "ignores_condition"),  # one condition ignored is enough
    ({"condition_fidelity_min": 0.5}, "healthy"),  # at the threshold: not below it
    ({"condition_spread_ratio_min": 0.2}, "collapsed_per_condition"),
    ({"condition_duplicate_share_max": 0.5}, "collapsed_per_condition"),
    # precedence: copies within a condition before the overall copies they make; spread after garbage
    ({"condition_duplicate_share_max": 1.0, "duplicate_share": 1.0}, "collapsed_per_condition"),
    ({"condition_duplicate_share_max": 1.0, "near_real_share": 0.0}, "collapsed_per_condition"),
    ({"condition_spread_ratio_min": 0.0, "near_real_share": 0.0}, "garbage"),
    ({"condition_spread_ratio_min": 0.0, "duplicate_share": 0.6}, "collapsed"),
    ({"condition_spread_ratio_min": 0.1, "condition_fidelity": 0.1}, "collapsed_per_condition"),
    # the coverage collapse implies ignoring the condition and says more; a partial one does not
    ({"classes_covered": 1, "kl_uniform": 2.3, "condition_fidelity": 0.1}, "collapsed"),
    ({"classes_covered": 9, "kl_uniform": 0.1, "condition_fidelity": 0.3}, "ignores_condition"),
    ({"classes_covered": 9, "kl_uniform": 0.1}, "partial_collapse"),
])
def test_conditional_rules_and_their_precedence(changes, verdict):
    assert judge({**FINE, **changes}, IMG, TH)[0] == verdict


def test_the_reasons_name_the_classes_and_quote_the_numbers():
    per = {"names": [str(k) for k in range(10)], "n": [50] * 10, "hits": [50] * 6 + [10, 50, 50, 50],
           "fidelity": [1.0] * 6 + [0.2, 1.0, 1.0, 1.0], "spread_ratio": [1.0] * 7 + [0.02, 1.0, 1.0],
           "duplicates": [0] * 7 + [50, 0, 0], "judged": [50] * 10, "duplicate_share": [0.0] * 7 + [1.0, 0.0, 0.0]}
    m = {**FINE, "condition_fidelity": 0.92, "condition_fidelity_min": 0.2, "condition_spread_ratio": 0.9,
         "condition_spread_ratio_min": 0.02, "condition_duplicate_share": 0.1, "condition_duplicate_share_max": 1.0}
    v, reasons = judge(m, Setting("mnist5k", "image", 10, 500, conditions=per), TH)
    assert v == "collapsed_per_condition"
    assert reasons[0] == ("class 7: 50 of 50 samples asked for it are near-copies of another of them (real images: "
                          "under 1%); spread ratio 0.02 (real 1.0); at or above 50%: class 7 (1 of 10)")
    assert reasons[1].startswith("class 7: spread ratio 0.02 (real 1.0): its samples lie 0.02x as far apart")
    assert reasons[1].endswith("mean over conditions 0.90; below 0.25: class 7 (1 of 10)")
    assert reasons[2] == ("the reference classifier puts 92% of 500 samples in the class they were asked for "
                          "(chance: 10%); worst class 6: 10 of 50; below 50%: class 6 (1 of 10)")
    # without the per-condition vectors (a replay of flat metrics) the reasons quote the scalars
    assert judge(m, IMG, TH)[1][0] == "100% of the samples of one condition are near-copies of another of them"


def test_thresholds_read_from_the_config_when_it_has_them():
    assert thresholds_of(TH) == {"fidelity_ignores": 0.5, "condition_spread_collapsed": 0.25,
                                        "content_kept_lost": 0.5, "translation_spread_collapsed": 0.25}
    strict = types.SimpleNamespace(**{**vars(TH), "fidelity_ignores": 0.95, "condition_spread_collapsed": 0.95})
    assert judge(FINE, IMG, TH)[0] == "healthy" and judge(FINE, IMG, strict)[0] == "collapsed_per_condition"
    assert judge({**FINE, "condition_spread_ratio_min": 1.0}, IMG, strict)[0] == "ignores_condition"


TRANSLATION = {"near_real_share": 0.9, "content_kept_ab": 0.9, "content_kept_ba": 0.95,
               "translation_spread_ratio_ab": 0.8, "translation_spread_ratio_ba": 0.9,
               "translation_duplicate_share_ab": 0.0, "translation_duplicate_share_ba": 0.01}


@pytest.mark.parametrize("changes,verdict,reason", [
    ({}, "healthy", "A→B: 90% of the translated test images keep their input's class"),
    ({"content_kept_ba": 0.3}, "content_lost", "B→A: 30% of the translated test images keep their input's class"),
    ({"translation_duplicate_share_ab": 1.0, "content_kept_ab": 0.1}, "many_to_one",
     "A→B: 100% of the translations are near-copies of another (many inputs, one output)"),
    ({"translation_spread_ratio_ba": 0.1}, "many_to_one", "B→A: the translations lie 0.10x as far apart as their "
     "inputs (classifier features), so the output hardly depends on the input"),
    ({"content_kept_ab": 0.1, "near_real_share": 0.0}, "garbage", None),
])
def test_translation_rules_per_direction(changes, verdict, reason):
    v, reasons = judge({**TRANSLATION, **changes}, IMG, TH)
    assert v == verdict and (reason is None or reasons[0] == reason), reasons


def test_the_new_verdicts_are_known_to_the_record_the_stopper_and_the_report():
    new = ("ignores_condition", "collapsed_per_condition", "content_lost", "many_to_one")
    assert VERDICTS[-4:] == new and VERDICT_CODES["diverged"] == 4  # appended: the old codes stay
    assert set(new) <= set(BAD_VERDICTS)
    for v in VERDICTS:
        assert v in VERDICT_COLOUR and v in VERDICT_LABEL and v in SEVERITY
    stop = CollapseStopper(patience=2)
    assert [stop(s, {"verdict": v}) for s, v in enumerate(["ignores_condition", "collapsed_per_condition"])] == [
        False, True]


# ---- known answers on real digits --------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(DataConfig(dataset="mnist5k"), "train"), load_dataset(DataConfig(dataset="mnist5k"), "test")


@pytest.fixture(scope="module")
def evaluator(mnist):
    """A mnist5k run's evaluator with the conditional metrics added; reference = the train split."""
    cfg = from_dict({"data": {"dataset": "mnist5k"}})
    return Evaluator(cfg.replace(**{"eval.metrics": cfg.eval.metrics + CONDITIONAL}), mnist[0], "cpu")


def test_real_digits_with_their_own_labels_are_healthy(evaluator, mnist):
    test = mnist[1]
    r = evaluator(test.x, None, 100, [], conditions=test.y)
    assert r.verdict == "healthy", r.reasons
    assert r.metrics["condition_fidelity"] == 491 / 500  # the classifier's held-out accuracy, 98.2%
    assert r.metrics["condition_duplicate_share_max"] == 0.0 and r.metrics["condition_spread_ratio_min"] > 0.9
    assert ("the reference classifier puts 98% of 500 samples in the class they were asked for (chance: 10%); "
            "worst class 2: 44 of 50") in r.reasons
    assert r.conditions["n"] == [50] * 10 and r.conditions["names"] == [str(k) for k in range(10)]
    scalars = condition_scalars(r.conditions)  # for TensorBoard: five per condition
    assert len(scalars) == 50 and scalars["condition_fidelity/2"] == 44 / 50 and condition_scalars(None) == {}
    json.dumps(r.to_dict(), allow_nan=False)  # the record's form: plain JSON


def test_one_image_repeated_per_condition_is_collapsed_per_condition(evaluator, mnist):
    test = mnist[1]
    first = torch.stack([(test.y == k).nonzero()[0, 0] for k in range(10)])  # one digit of each class
    r = evaluator(test.x[first[test.y]], None, 100, [], conditions=test.y)
    assert r.verdict == "collapsed_per_condition", r.reasons
    assert r.metrics["condition_fidelity"] == 1.0 and r.metrics["condition_duplicate_share_max"] == 1.0
    assert r.metrics["condition_spread_ratio_min"] == pytest.approx(0.0, abs=1e-6)
    assert r.reasons[0] == ("class 0: 50 of 50 samples asked for it are near-copies of another of them (real images: "
                            f"under 1%); spread ratio 0.00 (real 1.0); at or above 50%: {ALL_TEN}")
    # the margin: the worst condition's share, exact Clopper–Pearson for 50 of 50: [0.025^(1/50), 1]
    assert r.margin["statistic"] == "condition_duplicate_share_max" and r.margin["method"].startswith("exact")
    assert r.margin["low"] == pytest.approx(0.025 ** (1 / 50), abs=1e-9) and not r.margin["borderline"]


def test_one_condition_repeating_one_image_is_named(evaluator, mnist):
    test = mnist[1]
    x = test.x.clone()
    x[test.y == 3] = test.x[(test.y == 3).nonzero()[0, 0]]
    r = evaluator(x, None, 100, [], conditions=test.y)
    assert r.verdict == "collapsed_per_condition", r.reasons
    assert r.reasons[0].startswith("class 3: 50 of 50 samples") and r.reasons[0].endswith("class 3 (1 of 10)")
    assert r.conditions["duplicate_share"] == [0.0] * 3 + [1.0] + [0.0] * 6


def test_one_image_plus_noise_per_condition_is_caught_by_the_spread(evaluator, mnist):
    test = mnist[1]
    first = torch.stack([(test.y == k).nonzero()[0, 0] for k in range(10)])
    noise = 0.3 * torch.randn(test.x.shape, generator=torch.Generator().manual_seed(0))
    r = evaluator((test.x[first[test.y]] + noise).clamp(-1, 1), None, 100, [], conditions=test.y)
    assert r.verdict == "collapsed_per_condition", r.reasons
    assert r.metrics["condition_duplicate_share_max"] == 0.0 and r.metrics["condition_spread_ratio_min"] < 0.25
    assert r.reasons[0].startswith("class ") and ": spread ratio 0." in r.reasons[0]


def test_blurred_but_varied_digits_are_not_copies_within_a_condition(evaluator, mnist):
    """Blurring shrinks every distance (1s most: 43 of 50 would be copies by the real images' absolute
    distances); in units of the overall spread they are not."""
    test = mnist[1]
    r = evaluator(torch.nn.functional.avg_pool2d(test.x, 5, 1, 2), None, 100, [], conditions=test.y)
    assert r.verdict == "healthy", r.reasons
    assert r.metrics["condition_duplicate_share_max"] < 0.5 and r.metrics["condition_spread_ratio_min"] > 0.25


def test_another_class_for_every_condition_ignores_the_condition(evaluator, mnist):
    test = mnist[1]
    r = evaluator(test.x, None, 100, [], conditions=(test.y + 1) % 10)  # digits of class k asked for k + 1
    assert r.verdict == "ignores_condition", r.reasons
    assert r.metrics["condition_fidelity"] == 4 / 500 and r.metrics["condition_duplicate_share_max"] == 0.0
    assert r.reasons[0].startswith("the reference classifier puts 1% of 500 samples in the class they were asked for")
    assert r.reasons[0].endswith(f"below 50%: {ALL_TEN}")
    assert r.margin["statistic"] in ("condition_fidelity", "condition_fidelity_min")


def test_the_unconditional_path_is_unchanged(evaluator, mnist):
    test = mnist[1]
    plain = Evaluator(from_dict({"data": {"dataset": "mnist5k"}}), mnist[0], "cpu")
    a, b = plain(test.x, None, 100, []), evaluator(test.x, None, 100, [])
    assert a.to_dict() == b.to_dict() and "conditions" not in a.to_dict()
    with pytest.raises(ValueError, match=r"conditions: expected one class per sample, shape \(500,\)"):
        evaluator(test.x, None, 100, [], conditions=test.y[:10])


def test_caption_attributes_of_real_digits_with_their_own_captions_and_with_shuffled_ones():
    """The attribute check on known answers: the 500 held-out captioned digits, each asked for by its
    own first caption, order as their captions say (ρ ≈ 0.9 per attribute); the same captions shuffled
    over the digits give ρ ≈ 0; without attributes (not captioned-mnist) the metric reports nothing."""
    from ganray.config import Config
    from ganray.data import load_dataset
    from ganray.data.captioned import caption_attributes
    from ganray.metrics.conditional import caption_attributes as metric
    from ganray.metrics.inputs import MetricInputs, Reference

    d = load_dataset(Config().replace(**{"data.dataset": "captioned-mnist"}).data, "test")
    asked = torch.tensor([caption_attributes(c[0]) for c in d.captions], dtype=torch.float64)  # [500, 3]
    ref = Reference("captioned-mnist", "image", 10)
    own = metric(MetricInputs(d.x, ref, attributes=asked))
    assert [round(own[f"attribute_rho_{a}"], 4) for a in ("thickness", "slant", "size")] == [0.9383, 0.9062, 0.9481]
    shuffled = metric(MetricInputs(d.x, ref, attributes=asked[torch.randperm(500, generator=torch.Generator()
                                                                                  .manual_seed(0))]))
    assert all(abs(v) < 0.06 for v in shuffled.values())
    assert metric(MetricInputs(d.x, ref)) == {}
