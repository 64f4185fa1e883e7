"""Margins (issue 16): every verdict names its deciding statistic, the threshold and an interval at
eval.interval_level; "borderline" when the interval straddles the threshold. Known answers: class
histograms exactly at a threshold and far from it, the exact Clopper–Pearson bounds, and the
coverage of the KL interval over simulated draws; then the loop's payload through the record."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from ganray.artifacts import layout, reader
from ganray.artifacts.recorder import TrialRecorder
from ganray.collapse import Evaluator, Setting, assess, margin_of
from ganray.config import EvalConfig, from_dict, load
from ganray.data import load_dataset
from ganray.data.mixtures import sample_mixture
from ganray.metrics import calibrate
from ganray.metrics.class_coverage import class_coverage
from ganray.metrics.inputs import Labelled, MetricInputs, Reference, kl_to_uniform
from ganray.metrics.intervals import Evidence, clopper_pearson
from ganray.train import train

torch.set_num_threads(1)

TH = EvalConfig()  # level 0.95, 200 resamples, kl_partial 0.1, coverage_partial 0.95, coverage_collapsed 0.5
BORDERLINE = re.compile(r"\(borderline: 95% interval (\S+)–(\S+) straddles (\S+)\)")


def judge_histogram(counts: list[int], th: EvalConfig = TH, step: int = 0):
    """(verdict, reasons, margin) of samples whose classifier labels make this class histogram:
    the class_coverage metric itself on them, then the Evaluator's assess / Evidence / margin_of."""
    c = torch.tensor(counts)
    n, K = int(c.sum()), c.numel()
    inp = MetricInputs(torch.zeros(n, 2), Reference("mnist5k", "image", K))
    inp.__dict__["labelled"] = Labelled(torch.zeros(n, 1), torch.repeat_interleave(torch.arange(K), c), torch.ones(n))
    metrics = class_coverage(inp)
    a = assess(metrics, Setting("mnist5k", "image", K, n), th)
    margin, reasons = margin_of(a, Evidence.of(inp, level=th.interval_level, resamples=th.bootstrap, seed=0, step=step))
    return a.verdict, reasons, margin


def plug_in_kl(counts: list[int]) -> float:
    """Σ_k p_k ln(K p_k) by hand: the number a user reads, less nothing."""
    n, K = sum(counts), len(counts)
    return sum(c / n * math.log(K * c / n) for c in counts if c)


# ---- exact intervals -------------------------------------------------------------------------------------


def test_clopper_pearson_known_values():
    # 5 of 10: the textbook 95% interval 0.1871–0.8129 (Beta(5, 6) and Beta(6, 5) quantiles)
    low, high = clopper_pearson(5, 10, 0.95)
    assert low == pytest.approx(0.187086, abs=1e-6) and high == pytest.approx(0.812914, abs=1e-6)
    # 0 of n: [0, 1 − (α/2)^(1/n)]; n of n: [(α/2)^(1/n), 1]
    assert clopper_pearson(0, 10, 0.95) == pytest.approx((0.0, 1 - 0.025 ** 0.1), abs=1e-12)
    assert clopper_pearson(1000, 1000, 0.99) == pytest.approx((0.005 ** 0.001, 1.0), abs=1e-12)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        clopper_pearson(11, 10, 0.95)


# ---- known answers: at a threshold, far from it ------------------------------------------------------------


KL_COUNTS = [289] * 5 + [111] * 5  # 2,000 samples: KL(p̂‖U) − 9/4000 = 0.10032, just over eval.kl_partial 0.1


def test_histogram_just_over_the_kl_threshold_is_borderline_partial_collapse():
    verdict, reasons, margin = judge_histogram(KL_COUNTS)
    value = plug_in_kl(KL_COUNTS) - 9 / 4000
    assert value == pytest.approx(0.1003205464773683, abs=1e-12)
    assert verdict == "partial_collapse"  # the point estimate decides, as before
    assert margin["statistic"] == "kl_uniform" and margin["threshold"] == 0.1 and margin["borderline"] is True
    assert margin["value"] == pytest.approx(value, abs=1e-12)
    assert margin["level"] == 0.95 and margin["method"] == "bootstrap (200 resamples)"
    assert margin["rule"] == "partial_collapse above 0.1 nats of KL to uniform less its (K − 1)/2n = 0.00225 " \
                             "small-sample bias"
    assert reasons[0].startswith("10 of 10 classes hold 100% of 2,000 samples; KL to uniform 0.10 nats "
                                 "(above 0.1 after the 0.002 small-sample bias) (borderline: 95% interval ")
    low, high, threshold = BORDERLINE.search(reasons[0]).groups()
    assert threshold == "0.1" and (low, high) == (f"{margin['low']:.3g}", f"{margin['high']:.3g}")
    # the interval's half-width is the delta method's 1.96·sd(ln K p̂)/√n to within 25%
    p = np.array(KL_COUNTS) / 2000
    se = math.sqrt(float((p * np.log(10 * p) ** 2).sum() - (p * np.log(10 * p)).sum() ** 2) / 2000)
    assert (margin["high"] - margin["low"]) / 2 == pytest.approx(1.96 * se, rel=0.25)
    assert margin["low"] < value < margin["high"]


def test_histogram_exactly_at_the_kl_threshold_is_borderline_healthy():
    at = kl_to_uniform(torch.tensor(KL_COUNTS)) - 9 / 4000  # the verdict's own number, bit for bit
    verdict, reasons, margin = judge_histogram(KL_COUNTS, EvalConfig(kl_partial=at))
    assert verdict == "healthy"  # partial_collapse only above the threshold
    assert margin["statistic"] == "kl_uniform" and margin["value"] == margin["threshold"] == at
    assert margin["borderline"] is True
    assert reasons[0].startswith("kl_uniform 0.1: borderline: 95% interval ")
    assert reasons[0].endswith(" straddles 0.1 (partial_collapse above 0.100321 nats of KL to uniform less its "
                               "(K − 1)/2n = 0.00225 small-sample bias)")


def test_a_class_at_the_coverage_cutoff_is_borderline():
    """Nine classes of 220 and one of exactly 20 = 10% of its uniform share 2,000/10: it counts
    (≥), and about half the resamples (P(Bin(2000, 0.01) < 20) ≈ 0.47) lose it: 9–10 classes."""
    verdict, reasons, margin = judge_histogram([220] * 9 + [20])
    assert verdict == "healthy"
    assert margin == {"statistic": "classes_covered", "value": 10.0, "threshold": 9.5, "low": 9.0, "high": 10.0,
                      "level": 0.95, "method": "bootstrap (200 resamples)", "borderline": True,
                      "rule": "partial_collapse below 0.95 × the 10 classes a uniform sample of 2,000 covers"}
    assert reasons[0] == ("classes_covered 10: borderline: 95% interval 9–10 straddles 9.5 (partial_collapse "
                          "below 0.95 × the 10 classes a uniform sample of 2,000 covers)")
    assert reasons[1] == "10 of 10 classes hold 100% of 2,000 samples; KL to uniform 0.07 nats"


def test_six_classes_one_at_the_cutoff_is_borderline_between_partial_and_collapsed():
    """Five classes of 396 and one of 20: 6 classes (partial_collapse), 5 in half the resamples
    (collapsed at or below 0.5 × 10): the interval 5–6 straddles 5."""
    verdict, reasons, margin = judge_histogram([396] * 5 + [20] + [0] * 4)
    assert verdict == "partial_collapse"
    assert (margin["statistic"], margin["value"], margin["threshold"], margin["low"], margin["high"]) == \
           ("classes_covered", 6.0, 5.0, 5.0, 6.0)
    assert margin["borderline"] is True
    assert reasons[0].endswith("(borderline: 95% interval 5–6 straddles 5)")


def test_histograms_far_from_every_threshold_are_not_borderline():
    verdict, reasons, margin = judge_histogram([200] * 10)  # uniform: KL 0, less the bias
    assert verdict == "healthy" and margin["borderline"] is False
    assert margin["statistic"] == "kl_uniform" and margin["value"] == pytest.approx(-9 / 4000, abs=1e-15)
    assert margin["threshold"] == 0.1 and margin["high"] < 0.01
    assert not any("borderline" in r for r in reasons)
    verdict, reasons, margin = judge_histogram([500] * 3 + [0] * 7)  # three classes
    assert verdict == "collapsed" and margin["borderline"] is False
    assert (margin["statistic"], margin["value"], margin["threshold"], margin["low"], margin["high"]) == \
           ("classes_covered", 3.0, 5.0, 3.0, 3.0)
    assert reasons == ["3 of 10 classes hold 100% of 1,500 samples; KL to uniform 1.20 nats"]


def test_the_bootstrap_is_seeded_by_the_step_and_eval_bootstrap_0_leaves_exact_intervals_only():
    a, b, c = (judge_histogram(KL_COUNTS, step=s)[2] for s in (100, 100, 200))
    assert a == b and a["low"] != c["low"]  # the same evaluation quotes the same interval
    _, reasons, margin = judge_histogram(KL_COUNTS, EvalConfig(bootstrap=0))
    assert margin["method"] == "none (eval.bootstrap 0)" and margin["low"] == margin["high"] == margin["value"]
    assert margin["borderline"] is False and not any("borderline" in r for r in reasons)


# ---- the KL interval covers the true value -----------------------------------------------------------------


def test_kl_interval_covers_the_true_value_in_at_least_90_of_100_draws():
    """100 histograms of 2,000 samples from a known p (KL(p‖U_10) = 0.12164 nats); each one's 95%
    interval, as a verdict quotes it, for the bias-corrected KL. Seen: 96 of 100."""
    p = np.array([0.2, 0.15, 0.15, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05])
    true = float((p * np.log(10 * p)).sum())
    assert true == pytest.approx(0.1216395324324493, abs=1e-12)
    rng = np.random.default_rng(2026)
    covered = 0
    for draw in range(100):
        counts = rng.multinomial(2000, p)
        ev = Evidence("image", 2000, 0.95, 200, (0, draw), cells=np.append(counts, 0), K=10)
        value = kl_to_uniform(torch.from_numpy(counts)) - 9 / 4000
        iv = ev.interval("kl_uniform", value)
        covered += iv.low <= true <= iv.high
    print(f"the KL interval covered KL(p||U) = {true:.5f} in {covered} of 100 draws")
    assert covered >= 90


# ---- the 2D rules, the loop's payload, the record -------------------------------------------------------------


@pytest.fixture(scope="module")
def ring8():
    cfg = from_dict({"data": {"dataset": "ring8"}})
    return Evaluator(cfg, load_dataset(cfg.data, "train"), "cpu")


def test_ring8_margins(ring8):
    x, _ = sample_mixture("ring8", 2500, torch.Generator().manual_seed(0))
    healthy = ring8(x, None, 100)
    assert healthy.verdict == "healthy" and healthy.margin["borderline"] is False
    assert healthy.margin["statistic"] in ("reverse_kl", "duplicate_share", "hq_share", "modes_covered")
    assert ring8(x, None, 100).margin == healthy.margin  # reproducible: seeded by (seed, step)
    (case,) = [c for c in calibrate.mixture_cases() if c.name == "ring8, 3 of the modes"]
    three = case.make(torch.Generator().manual_seed(0))
    res = ring8(three, None, 100)
    assert three.shape[0] == 2500
    assert res.verdict == "collapsed" and res.margin["statistic"] == "modes_covered"
    assert (res.margin["value"], res.margin["low"], res.margin["high"]) == (3.0, 3.0, 3.0)
    assert res.margin["threshold"] == pytest.approx(4.0, abs=1e-3)  # 0.5 × the 8.00 modes 2,472 samples cover


def test_the_loop_payload_carries_the_margin_into_verdict_json(tmp_path):
    cfg = load(None, ["data.dataset=ring8", "data.n_train=2000", "train.steps=6", "train.batch_size=16",
                      "train.log_every=3", "train.eval_every=3", "train.sample_every=6", "train.checkpoint_every=6",
                      "eval.n=300", "eval.n_fixed_z=16"])
    verdicts: list[dict] = []
    train(cfg, report=lambda step, metrics, **kw: kw.get("verdict") and verdicts.append(kw["verdict"]),
          save_checkpoint=lambda *a: None, should_stop=lambda s, m: False)
    assert [v["step"] for v in verdicts] == [3, 6]
    margin = verdicts[-1]["margin"]
    assert set(margin) == {"statistic", "value", "threshold", "low", "high", "level", "method", "borderline", "rule"}
    assert margin["low"] <= margin["high"] and margin["level"] == 0.95
    paths = layout.trial_paths(str(tmp_path / "exp"), "t0")
    with TrialRecorder(paths) as rec:
        rec.verdict(verdicts[-1])
    assert reader.read_verdict(paths.trial)["margin"] == margin


def test_ganray_eval_prints_the_margin(tmp_path, capsys):
    from ganray.evaluate import main  # noqa: PLC0415

    (case,) = [c for c in calibrate.mixture_cases() if c.name == "ring8, 3 of the modes"]
    path = tmp_path / "three.npy"
    np.save(path, case.make(torch.Generator().manual_seed(0)).numpy())
    assert main([str(path), "--dataset", "ring8", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["verdict"] == "collapsed" and payload["margin"]["statistic"] == "modes_covered"
    assert main([str(path), "--dataset", "ring8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ring8: 2,500 samples -> collapsed"
    threshold = payload["margin"]["threshold"]
    assert f"  margin: modes_covered 3, threshold {threshold:.4g}, 95% interval 3–3 (bootstrap (200 resamples)); " \
           f"collapsed at or below 0.5 × the 8 modes a uniform sample of 2,500 covers" in lines
