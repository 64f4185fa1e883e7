"""Verdicts on the acceptance cases of issue 4 (known answers), the pure `judge`, the
Evaluator's bookkeeping, and the training loop's own evaluation flagging a collapsed G."""
from __future__ import annotations

import math

import pytest
import torch

from ganray.collapse import VERDICTS, Evaluator, Setting, judge
from ganray.config import ConfigError, DataConfig, EvalConfig, from_dict, load
from ganray.data import load_dataset
from ganray.data.mixtures import mixture_spec, sample_mixture
from ganray.metrics import calibrate
from ganray.train import train

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(DataConfig(dataset="mnist5k"), "train"), load_dataset(DataConfig(dataset="mnist5k"), "test")


@pytest.fixture(scope="module")
def evaluator(mnist):
    """The evaluator a mnist5k run builds: default metrics, reference = the train split."""
    return Evaluator(from_dict({"data": {"dataset": "mnist5k"}}), mnist[0], "cpu")


# ---- images: the acceptance cases ------------------------------------------------------------------


def test_balanced_held_out_digits_are_healthy(evaluator, mnist):
    r = evaluator(mnist[1].x, None, 100, [])
    assert r.verdict == "healthy", r.reasons
    assert r.metrics["classes_covered"] == 10 and r.metrics["kl_uniform"] < 0.05
    assert r.first_seen_step is None
    assert "10 of 10 classes hold 100% of 500 samples; KL to uniform 0.00 nats" in r.reasons[0]


@pytest.mark.parametrize("digit", range(10))
def test_one_digit_is_collapsed(evaluator, mnist, digit):
    """All 500 mnist5k images of one digit (train + test; the test split has only 50 per digit)."""
    x = torch.cat([mnist[0].x[mnist[0].y == digit], mnist[1].x[mnist[1].y == digit]])
    r = evaluator(x, None, 0, [])
    assert r.verdict == "collapsed", r.reasons
    assert r.metrics["classes_covered"] <= 3 and r.metrics["kl_uniform"] >= 1.5


def test_three_digits_are_partial_or_full_collapse(evaluator, mnist):
    test = mnist[1]
    r = evaluator(test.x[torch.isin(test.y, torch.tensor([1, 4, 7]))], None, 0, [])
    assert r.verdict in ("partial_collapse", "collapsed"), r.reasons
    assert r.metrics["classes_covered"] == 3
    assert r.reasons[0].startswith("3 of 10 classes hold ")


def test_uniform_noise_is_garbage(evaluator):
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = evaluator(noise, None, 0, [])
    assert r.verdict == "garbage", r.reasons
    # the classifier alone is fooled: it labels noise as one digit, confidently; PRDC's precision
    # is fooled too (noise features land in a few outsized real k-NN balls); the distance is not
    assert r.metrics["mean_confidence"] > 0.9 and r.metrics["precision"] > 0.1
    assert r.metrics["near_real_share"] < 0.05
    assert r.reasons[0].startswith("only 0% of samples lie as near the real data")


def test_one_image_repeated_is_collapsed(evaluator, mnist):
    r = evaluator(mnist[1].x[11:12].repeat(500, 1, 1, 1), None, 0, [])
    assert r.verdict == "collapsed", r.reasons
    assert r.metrics["duplicate_share"] == 1.0
    assert r.reasons[0].startswith("100% of 500 samples are near-copies of another sample")


def test_nine_digits_are_partial_collapse(evaluator, mnist):
    test = mnist[1]
    r = evaluator(test.x[test.y != 5], None, 0, [])
    assert r.verdict == "partial_collapse", r.reasons
    assert r.metrics["classes_covered"] == 9


def test_non_finite_samples_and_statistics_are_diverged(evaluator, mnist):
    x = mnist[1].x[:100].clone()
    x[3, 0, 0, 0] = float("nan")
    r = evaluator(x, None, 7, [])
    assert r.verdict == "diverged" and r.reasons == ["1 of 100 generated samples hold NaN or inf"]
    assert r.first_seen_step == 7
    hist = [{"step": 5, "loss_D": float("inf"), "loss_G": 1.0}]
    r2 = evaluator(mnist[1].x, None, 8, hist)
    assert r2.verdict == "diverged" and "1 logged training entries hold NaN or inf" in r2.reasons[0]
    assert r2.first_seen_step == 7


def test_calibration_cases_match_their_expected_verdicts():
    """The table in docs/metrics.md: every image and 2D case gets the verdict it should."""
    results = calibrate.evaluate_cases(calibrate.image_cases() + calibrate.mixture_cases())
    wrong = [(c.name, r.verdict, r.reasons) for c, r in results if r.verdict not in c.expect]
    assert not wrong


# ---- 2D mixtures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,K", [("ring8", 8), ("grid25", 25)])
def test_mixtures_true_samples_healthy_three_modes_collapsed(name, K):
    cfg = from_dict({"data": {"dataset": name, "n_train": 5000}})
    ev = Evaluator(cfg, load_dataset(cfg.data, "train"), "cpu")
    assert [m.name for m in ev.metrics] == ["mixture_coverage", "fixed_z_flip_rate", "sample_diversity",
                                            "training_signals"]  # fcd, prdc, class_coverage skipped
    g = torch.Generator().manual_seed(3)
    x, _ = sample_mixture(name, 2500, g)
    r = ev(x, None, 0, [])
    assert r.verdict == "healthy", r.reasons
    assert r.metrics["modes_covered"] == K and r.metrics["hq_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    means, sigma = mixture_spec(name)
    pick = torch.randint(3, (2500,), generator=g)
    r3 = ev(means[pick] + sigma * torch.randn(2500, 2, generator=g), None, 0, [])
    assert r3.verdict == "collapsed" and r3.metrics["modes_covered"] == 3
    assert r3.reasons[0] == f"3 of {K} modes covered by 2,500 samples; KL to uniform {math.log(K / 3):.2f} nats"


# ---- stacked MNIST (paper protocol: 26,000 samples, 1000 modes) --------------------------------------


@pytest.fixture(scope="module")
def stacked_evaluator():
    # class_coverage is the paper's protocol; the reference needs only the classifier (no real features)
    cfg = from_dict({"data": {"dataset": "stacked-mnist", "n_train": 2000}, "eval": {"metrics": ["class_coverage"]}})
    return Evaluator(cfg, load_dataset(cfg.data, "train"), "cpu")


def test_stacked_mnist_from_real_digits(stacked_evaluator, mnist):
    test = mnist[1]
    x = calibrate.stacked_from(test.x, test.y, 26_000, torch.Generator().manual_seed(0))
    r = stacked_evaluator(x, None, 0, [])
    assert r.metrics["classes_covered"] >= 990 and r.metrics["kl_uniform"] < 0.1
    assert r.verdict == "healthy", r.reasons


def test_stacked_mnist_from_50_fixed_triples(stacked_evaluator, mnist):
    test = mnist[1]
    g = torch.Generator().manual_seed(0)
    triples = torch.randint(10, (50, 3), generator=g)
    assert len({tuple(t) for t in triples.tolist()}) == 50
    x = calibrate.stacked_from(test.x, test.y, 26_000, g, triples)
    r = stacked_evaluator(x, None, 0, [])
    # classifier errors on 3 channels scatter stray samples: well above 50 modes, well below 1000
    assert 50 < r.metrics["classes_covered"] < 500
    assert 2.3 <= r.metrics["kl_uniform"] <= 3.2  # ln 20 ≈ 3.0 for a perfect classifier
    assert r.verdict == "collapsed"


# ---- judge: thresholds and reasons ---------------------------------------------------------------------


TH = EvalConfig()
IMG = Setting("mnist5k", "image", 10, 2000, 4500, 5)


def test_judge_quotes_the_numbers():
    v, reasons = judge({"classes_covered": 3, "covered_share": 0.96, "kl_uniform": 1.21}, IMG, TH)
    assert v == "collapsed"
    assert reasons == ["3 of 10 classes hold 96% of 2,000 samples; KL to uniform 1.21 nats"]


@pytest.mark.parametrize("metrics,verdict", [
    ({"classes_covered": 10, "covered_share": 1.0, "kl_uniform": 0.01}, "healthy"),
    ({"classes_covered": 10, "covered_share": 1.0, "kl_uniform": 0.2}, "partial_collapse"),  # imbalance
    ({"classes_covered": 9, "covered_share": 0.99, "kl_uniform": 0.1}, "partial_collapse"),
    ({"classes_covered": 6, "covered_share": 0.99, "kl_uniform": 0.5}, "partial_collapse"),
    ({"classes_covered": 5, "covered_share": 0.99, "kl_uniform": 0.7}, "collapsed"),
    ({"classes_covered": 10, "kl_uniform": 0.0, "duplicate_share": 0.3, "spread_ratio": 0.9}, "partial_collapse"),
    ({"classes_covered": 10, "kl_uniform": 0.0, "duplicate_share": 0.6, "spread_ratio": 0.9}, "collapsed"),
    ({"classes_covered": 10, "kl_uniform": 0.0, "near_real_share": 0.1, "precision": 0.9}, "garbage"),
    ({"classes_covered": 10, "kl_uniform": 0.0, "near_real_share": 0.6, "precision": 0.1}, "healthy"),
    ({"classes_covered": 10, "kl_uniform": 0.0, "mean_confidence": 0.3}, "garbage"),  # near_real off
    ({"classes_covered": 1, "kl_uniform": 2.3, "near_real_share": 0.0, "duplicate_share": 1.0}, "collapsed"),
    ({"classes_covered": 1, "kl_uniform": 2.3, "near_real_share": 0.0, "nonfinite_stats": 2.0}, "diverged"),
])
def test_judge_precedence_and_thresholds(metrics, verdict):
    assert judge(metrics, IMG, TH)[0] == verdict


def test_judge_corrects_kl_for_small_samples():
    """Stacked MNIST at 2,000 samples: KL of a uniform histogram is ≈ 999/4000 = 0.25 by chance alone."""
    s = Setting("stacked-mnist", "stacked", 1000, 2000)
    assert judge({"classes_covered": 860, "kl_uniform": 0.30}, s, TH)[0] == "healthy"
    assert judge({"classes_covered": 860, "kl_uniform": 0.40}, s, TH)[0] == "partial_collapse"
    assert judge({"classes_covered": 400, "kl_uniform": 1.5}, s, TH)[0] == "collapsed"


def test_judge_advisory_reasons_keep_the_verdict():
    m = {"classes_covered": 10, "covered_share": 1.0, "kl_uniform": 0.01, "fixed_z_flip_rate": 0.75,
         "loss_D_rel_range": 0.001, "loss_G_rel_range": 0.5, "d_acc_range": 0.0, "d_acc_mean": 1.0,
         "m_global_trend": 0.3}
    v, reasons = judge(m, IMG, TH)
    assert v == "healthy"
    text = "\n".join(reasons)
    assert "75% of the fixed-z samples changed class" in text
    assert "loss_D 0.10% relative range" in text and "loss_G" not in text.split("flat over")[1].split("\n")[0]
    assert "D accuracy flat at 1.00" in text and "M_global rose 30%" in text


def test_thresholds_come_from_the_config():
    strict = load(None, ["eval.coverage_partial=1.0", "eval.coverage_collapsed=0.95"]).eval
    m = {"classes_covered": 9, "covered_share": 0.99, "kl_uniform": 0.1}
    assert judge(m, IMG, TH)[0] == "partial_collapse" and judge(m, IMG, strict)[0] == "collapsed"
    with pytest.raises(ConfigError, match="eval.duplicate_partial: must be <= eval.duplicate_collapsed"):
        load(None, ["eval.duplicate_partial=0.9"])


def test_first_seen_step_tracks_the_current_verdict(evaluator, mnist):
    test = mnist[1]
    one = test.x[11:12].repeat(200, 1, 1, 1)
    seq = [(test.x, "healthy", None), (one, "collapsed", 200), (one, "collapsed", 200),
           (test.x[test.y != 5], "partial_collapse", 400), (test.x, "healthy", None), (one, "collapsed", 600)]
    ev = Evaluator(from_dict({"data": {"dataset": "mnist5k"}, "eval": {"metrics": ["class_coverage", "sample_diversity"]}}),
                   mnist[0], "cpu")
    for i, (x, verdict, first) in enumerate(seq):
        r = ev(x, None, 100 * (i + 1), [])
        assert (r.verdict, r.first_seen_step) == (verdict, first)
    restored = Evaluator(ev.cfg, mnist[0], "cpu")
    restored.load_state_dict(ev.state_dict())
    assert restored(one, None, 700, []).first_seen_step == 600


def test_evaluator_flip_rate_across_calls(evaluator, mnist):
    ev = Evaluator(from_dict({"data": {"dataset": "mnist5k"}, "eval": {"metrics": ["fixed_z_flip_rate"]}}), mnist[0], "cpu")
    test = mnist[1]
    a, b = test.x[test.y == 2][:16], test.x[test.y == 3][:16]
    assert "fixed_z_flip_rate" not in ev(a, a, 1, []).metrics
    assert ev(a, torch.cat([a[:8], b[:8]]), 2, []).metrics["fixed_z_flip_rate"] == pytest.approx(0.5, abs=1 / 16)


def test_verdict_names():
    assert VERDICTS == ("healthy", "partial_collapse", "collapsed", "garbage", "diverged", "ignores_condition",
                        "collapsed_per_condition", "content_lost", "many_to_one")


# ---- the training loop's own evaluation -----------------------------------------------------------------


def _constant_G_state(state: dict, value: torch.Tensor | None = None) -> dict:
    """The checkpoint with G's last layer zeroed: G(z) = its bias (2D) or tanh(bias) (images) for every z."""
    G = dict(state["G"])
    last_w = [k for k in G if k.endswith("weight")][-1]
    last_b = last_w[: -len("weight")] + "bias"
    G[last_w] = torch.zeros_like(G[last_w])
    if value is not None:
        G[last_b] = value.clone()
    return {**state, "G": G}


@pytest.mark.parametrize("dataset,extra", [
    ("ring8", ["model.z_dim=1", "data.n_train=2000"]),
    ("mnist5k", ["model.width=0.125", "data.n_train=400"]),
])
def test_a_short_run_with_a_constant_generator_is_flagged_collapsed(dataset, extra):
    """Train 2 steps, make G constant (last layer's weights zero), resume with lr_g ≈ 0 for
    10 steps: the loop's evaluation (every 5 steps) reports collapsed, first seen at step 5."""
    base = ["train.batch_size=16", "train.log_every=5", "train.eval_every=5", "train.sample_every=5",
            "train.checkpoint_every=2", "eval.n=300", "eval.n_fixed_z=16", f"data.dataset={dataset}", *extra]
    ckpts: dict[int, dict] = {}
    train(load(None, [*base, "train.steps=2"]), report=lambda *a, **k: None,
          save_checkpoint=lambda step, state, metrics: ckpts.__setitem__(step, state), should_stop=lambda s, m: False)
    means, _ = mixture_spec("ring8")
    state = _constant_G_state(ckpts[2], means[3] if dataset == "ring8" else None)
    state["config"]["train"]["steps"] = 12
    cfg = load(None, [*base, "train.steps=12", "train.lr_g=1e-12"])
    verdicts: list[dict] = []
    stops: list[str] = []
    result = train(cfg, report=lambda step, metrics, **kw: kw.get("verdict") and verdicts.append(kw["verdict"]),
                   save_checkpoint=lambda *a: None, resume_from=state,
                   should_stop=lambda step, m: stops.append(m.get("verdict")) or False)
    assert result.step == 12
    assert [v["verdict"] for v in verdicts] == ["collapsed", "collapsed", "collapsed"]  # steps 5, 10, 12
    assert [v["first_seen_step"] for v in verdicts] == [5, 5, 5]
    assert stops == ["collapsed"] * 3  # what a sweep's stopper sees
    assert any("near-copies" in r for r in verdicts[0]["reasons"])
    assert result.last_metrics["duplicate_share"] == 1.0
