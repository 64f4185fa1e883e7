"""Metrics on known inputs with known answers: the registry, KL, FCD, PRDC, mode coverage, flip
rate, sample diversity, training signals, and the reference classifiers (shipped, trained on
first use, stored under a storage URI)."""
from __future__ import annotations

import gzip
import json
import logging
import math

import numpy as np
import pytest
import torch

from ganray.args import load_config
from ganray.config import ConfigError, DataConfig, load
from ganray.data import load_dataset
from ganray.data.idx import FILES
from ganray.data.mixtures import mixture_spec, sample_mixture
from ganray.metrics import get_metric, metric_names, register_metric, signal_names
from ganray.metrics.classifier import classifier_key
from ganray.metrics.classifier import cli as clf_cli
from ganray.metrics.classifier import model as clf_model
from ganray.metrics.classifier import store as clf_store
from ganray.metrics.fcd import frechet_distance
from ganray.metrics.inputs import MetricInputs, Reference, expected_modes_covered, kl_to_uniform, knn_radii
from ganray.metrics.kid import (
    kid_from_sums,
    kid_subsets,
    polynomial_kernel,
    subset_indicators,
    subset_pair_sums,
    subset_self_sums,
)
from ganray.metrics.prdc import compute_prdc, expected_coverage
from ganray.storage import StorageError

torch.set_num_threads(1)
LN = math.log


# ---- shared fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(DataConfig(dataset="mnist5k"), "train"), load_dataset(DataConfig(dataset="mnist5k"), "test")


@pytest.fixture(scope="module")
def ref(mnist):
    """Reference statistics of mnist5k's train split with the shipped classifier."""
    train, _ = mnist
    return Reference.build("mnist5k", train.x, classifier=clf_store.load_shipped(), num_modes=10)


def run(name: str, samples: torch.Tensor, ref: Reference, **kw) -> dict[str, float]:
    return get_metric(name).fn(MetricInputs(samples, ref, **kw))


# ---- registry ----------------------------------------------------------------------------------


def test_registry_lists_every_metric_and_its_signals():
    names = metric_names()
    for m in ("class_coverage", "mixture_coverage", "fcd", "prdc", "fixed_z_flip_rate", "sample_diversity",
              "training_signals"):
        assert m in names
    assert signal_names(("class_coverage", "prdc")) == {
        "classes_covered", "covered_share", "kl_uniform", "max_class_share", "mean_confidence",
        "precision", "recall", "density", "coverage"}
    assert signal_names(("nope",)) == set()


def test_register_metric_bare_and_with_signals_and_duplicates():
    @register_metric
    def _test_metric_bare(inp):
        return {"_test_metric_bare": 1.0}

    assert "_test_metric_bare" in metric_names() and signal_names(("_test_metric_bare",)) == {"_test_metric_bare"}

    def _test_metric_bare2(inp):  # a different function under an existing name
        return {}
    _test_metric_bare2.__name__ = "_test_metric_bare"
    with pytest.raises(ValueError, match="registered twice"):
        register_metric(_test_metric_bare2)
    with pytest.raises(ValueError, match="unknown kinds"):
        register_metric(kinds=("video",))(lambda inp: {})


def test_register_metric_with_its_own_spec_and_the_builtins_spec_table():
    from ganray.metrics import IMAGE_KINDS, SPECS, applicable_metrics

    @register_metric(signals=("_a", "_b"), kinds=IMAGE_KINDS, needs_real_features=True)
    def _test_metric_described(inp):
        return {"_a": 1.0, "_b": 2.0}

    m = get_metric("_test_metric_described")
    assert m.fn is _test_metric_described and m.signals == ("_a", "_b") and m.needs_features and m.needs_real_features
    assert applicable_metrics("mnist5k", ("_test_metric_described",)) == ("_test_metric_described",)
    assert applicable_metrics("ring8", ("_test_metric_described",)) == ()
    # a built-in metric is described once, in SPECS: its module registers the function bare
    for name, spec in SPECS.items():
        if spec.module is not None:
            assert get_metric(name).fn.__module__ == spec.module and get_metric(name).fn.__name__ == name

    def fcd(inp):  # a second description of a built-in metric
        return {}
    with pytest.raises(ValueError, match="described in ganray.metrics.SPECS"):
        register_metric(signals=("fcd",))(fcd)


def test_each_metric_reports_only_the_signals_of_its_spec(mnist, ref):
    """The spec table's signals are what ASHA and the config check accept: every key a metric
    returns must be listed there."""
    _, test = mnist
    x = test.x[:300]
    ring = _mixture_ref("ring8")
    points = sample_mixture("ring8", 300, torch.Generator().manual_seed(1))[0]
    hist = [{"step": i, "loss_D": 0.5 + 0.1 * (i % 3), "loss_G": 1.0 + 0.1 * (i % 2), "d_acc": 0.6} for i in range(12)]
    for name in metric_names():
        if name.startswith("_test"):
            continue
        m = get_metric(name)
        for samples, reference in ((x, ref), (points, ring)):
            if reference.kind not in m.kinds:
                continue
            out = m.fn(MetricInputs(samples, reference, fixed_samples=samples[:16], history=hist))
            assert set(out) <= set(m.signals), (name, set(out) - set(m.signals))


def test_the_registry_names_signals_and_checks_configs_without_torch():
    import subprocess
    import sys

    code = ("import sys; from ganray import metrics; from ganray.config import Config; "
            "n = metrics.metric_names(); metrics.signal_names(n); metrics.applicable_metrics('ring8', n); "
            "assert metrics.config_metric_errors(Config()) == []; print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_config_checks_metric_names_and_asha_metric():
    with pytest.raises(ConfigError, match=r"eval\.metrics\[1\]: unknown metric 'fdc'.*did you mean 'fcd'"):
        load_config(None, ["eval.metrics=[class_coverage, fdc]"])
    load_config(None, ["sweep.asha=true", "sweep.asha_metric=kl_uniform"])  # a signal of class_coverage
    with pytest.raises(ConfigError, match="sweep.asha_metric: unknown metric 'precision'"):
        load_config(None, ["sweep.asha=true", "sweep.asha_metric=precision", "eval.metrics=[class_coverage]"])


def test_eval_thresholds_are_validated():
    with pytest.raises(ConfigError, match="eval.coverage_collapsed: must be <= eval.coverage_partial"):
        load(None, ["eval.coverage_collapsed=0.99"])
    with pytest.raises(ConfigError, match="eval.near_real_garbage: must be <= 1"):
        load(None, ["eval.near_real_garbage=2"])
    with pytest.raises(ConfigError, match=r"eval.n: prdc needs more samples than eval.prdc_k \(20\); got 12"):
        load(None, ["eval.n=12", "eval.prdc_k=20"])
    load(None, ["eval.n=12", "eval.prdc_k=20", "eval.metrics=[class_coverage]"])


# ---- small formulas ----------------------------------------------------------------------------


def test_kl_to_uniform_known_values():
    assert kl_to_uniform(torch.tensor([5, 5, 5, 5])) == pytest.approx(0.0)
    assert kl_to_uniform(torch.tensor([9, 0, 0, 0, 0, 0, 0, 0, 0, 0])) == pytest.approx(LN(10))
    assert kl_to_uniform(torch.tensor([4, 4, 4, 0, 0, 0, 0, 0])) == pytest.approx(LN(8 / 3))


def test_expected_modes_and_coverage_formulas():
    assert expected_modes_covered(26_000, 1000) == pytest.approx(1000.0, abs=1e-6)
    assert expected_modes_covered(2000, 1000) == pytest.approx(1000 * (1 - (1 - 1 / 1000) ** 2000))
    assert expected_coverage(10_000, 10_000, 5) == pytest.approx(1 - 0.5**5, abs=2e-3)  # Naeem et al. Lemma 2
    assert expected_coverage(4500, 500, 5) == pytest.approx(1 - math.prod((4500 - i) / (5000 - i) for i in range(1, 6)))


def test_frechet_distance_closed_form():
    # diagonal covariances: FD = ‖μ1 − μ2‖² + Σ (√s1 − √s2)²
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64), torch.tensor([4.0, 4.0, 1.0], dtype=torch.float64)
    want = float(((mu1 - mu2) ** 2).sum() + ((s1.sqrt() - s2.sqrt()) ** 2).sum())  # 5 + 1 + 0 + 4
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(want) == pytest.approx(10.0)
    # a rotation of both covariances leaves it unchanged
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    got = frechet_distance(q @ mu1, q @ torch.diag(s1) @ q.T, q @ mu2, q @ torch.diag(s2) @ q.T)
    assert got == pytest.approx(10.0, abs=1e-8)


def test_knn_radii_exclude_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    assert knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 3.0]
    assert knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 5.0]


# ---- PRDC ----------------------------------------------------------------------------------------


def test_prdc_on_two_samples_of_the_same_gaussian():
    """Naeem et al.'s README example (N(0, I), k = 5): P 0.48, R 0.47, D 1.06, C 0.97 in 1000-D.
    In 64-D with 2,000 points each, P and R are higher; D ≈ 1 and C ≈ 1 − 2⁻⁵."""
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(2000, 64, generator=g), torch.randn(2000, 64, generator=g)
    m = compute_prdc(real, knn_radii(real, 5), fake, 5)
    assert m["precision"] > 0.45 and m["recall"] > 0.45
    assert 0.85 < m["density"] < 1.15
    assert m["coverage"] == pytest.approx(expected_coverage(2000, 2000, 5), abs=0.03)


def test_prdc_coverage_falls_on_a_collapsed_subset():
    """Real: 10 well-separated Gaussian modes in 16-D. Fake: 2 of them, same size."""
    g = torch.Generator().manual_seed(1)
    means = 10 * torch.randn(10, 16, generator=g)
    real = means[torch.arange(2000) % 10] + torch.randn(2000, 16, generator=g)
    fake = means[torch.arange(2000) % 2] + torch.randn(2000, 16, generator=g)
    full = means[torch.arange(2000) % 10] + torch.randn(2000, 16, generator=g)
    m, ok = (compute_prdc(real, knn_radii(real, 5), f, 5) for f in (fake, full))
    assert ok["coverage"] > 0.9 and m["coverage"] < 0.25 and m["recall"] < 0.25
    assert m["precision"] > 0.8 and ok["precision"] > 0.8  # what it makes is still realistic


def test_prdc_on_mnist_features(mnist, ref):
    _, test = mnist
    same = run("prdc", test.x, ref)
    ones = run("prdc", test.x[test.y == 1], ref)
    assert same["precision"] > 0.8 and same["recall"] > 0.8
    assert same["coverage"] > 0.7 * expected_coverage(len(ref.real_features), len(test), 5)
    assert ones["coverage"] < 0.1 < same["coverage"]


# ---- class coverage, FCD --------------------------------------------------------------------------


def test_class_coverage_on_held_out_digits(mnist, ref):
    _, test = mnist
    m = run("class_coverage", test.x, ref)
    assert m["classes_covered"] == 10 and m["kl_uniform"] < 0.05 and m["covered_share"] == 1.0
    assert m["mean_confidence"] > 0.9


def test_class_coverage_of_one_digit(mnist, ref):
    _, test = mnist
    m = run("class_coverage", test.x[test.y == 7], ref)
    assert m["classes_covered"] <= 3 and m["kl_uniform"] >= 1.5 and m["max_class_share"] > 0.9


def test_class_coverage_on_a_class_subset(mnist):
    """Trained on digits 3 and 8 only: judged against those two classes."""
    train, test = mnist
    keep = (train.y == 3) | (train.y == 8)
    sub = Reference.build("mnist5k", train.x[keep], classifier=clf_store.load_shipped(), num_modes=10,
                          classes=torch.tensor([3, 8]), real_features=False)
    assert sub.num_modes == 2
    both = test.x[(test.y == 3) | (test.y == 8)]
    m = run("class_coverage", both, sub)
    assert m["classes_covered"] == 2 and m["kl_uniform"] < 0.05
    m3 = run("class_coverage", test.x[test.y == 3], sub)
    assert m3["classes_covered"] == 1 and m3["kl_uniform"] > 0.5


def test_fcd_is_small_for_real_digits_and_large_for_one_digit(mnist, ref):
    _, test = mnist
    same = run("fcd", test.x, ref)["fcd"]
    one = run("fcd", test.x[test.y == 0], ref)["fcd"]
    noise = run("fcd", torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1, ref)["fcd"]
    assert same < 30 and one > 10 * same and noise > 10 * same


def test_kid_of_a_set_against_itself_is_the_unbiased_estimators_exact_value():
    """With subsets as large as the set, every subset is the whole set: KID is then one number,
    written out here pair by pair — (Σ_{i≠j} k + Σ_{i≠j} k)/(n(n−1)) − 2 Σ_{i,j} k/n² — which for
    X = Y is 2 (mean k_ij − mean k_ii)/(n − 1): ≈ 0, slightly negative, O(1/n) of the kernel."""
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, std = kid_subsets(x, x, subsets=7, subset_size=30, seed=3)
    X, (n, d) = x.numpy(), x.shape
    k = [[(X[i] @ X[j] / d + 1.0) ** 3 for j in range(n)] for i in range(n)]
    off_diagonal = sum(k[i][j] for i in range(n) for j in range(n) if i != j)
    every_pair = sum(k[i][j] for i in range(n) for j in range(n))
    exact = 2 * off_diagonal / (n * (n - 1)) - 2 * every_pair / n**2
    assert mean == pytest.approx(exact, rel=1e-12) and std == pytest.approx(0, abs=1e-12)
    diag_mean = sum(k[i][i] for i in range(n)) / n
    assert exact < 0 and abs(exact) < 2 * diag_mean / (n - 1)
    shifted = kid_subsets(x, x + 1.0, subsets=7, subset_size=30, seed=3)[0]
    assert shifted > 10 * abs(exact)
    # the subset sums (indicator-matrix products) agree with subsets taken one by one
    y = torch.randn(50, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.3
    R = subset_indicators(30, 4, 20, torch.Generator().manual_seed(3))
    F = subset_indicators(50, 4, 20, torch.Generator().manual_seed(4))
    got = kid_from_sums(subset_self_sums(x, R), subset_self_sums(y, F), subset_pair_sums(x, y, R, F), 20)
    for s in range(4):
        a, b = x[R[:, s].bool()], y[F[:, s].bool()]
        kaa, kbb, kab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
        one = ((kaa.sum() - kaa.trace()) + (kbb.sum() - kbb.trace())) / (20 * 19) - 2 * kab.sum() / 400
        assert float(got[s]) == pytest.approx(float(one), rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    real, same = torch.randn(3000, 8, generator=g), torch.randn(2000, 8, generator=g)
    cache: dict = {}
    kid_same, std_same = kid_subsets(real, same, cache=cache)  # 100 subsets of 1,000, as torch-fidelity
    kid_shift, _ = kid_subsets(real, same + 0.5, cache=cache)
    assert len(cache) == 1  # the real subsets and their sums, computed once
    assert abs(kid_same) < 3 * std_same and kid_shift > 20 * (abs(kid_same) + std_same)
    assert kid_subsets(real, same, cache=cache) == (kid_same, std_same)  # seeded: the same subsets


def test_kid_on_digits_and_in_the_default_metrics(mnist, ref):
    _, test = mnist
    same = run("kid", test.x, ref)
    one = run("kid", test.x[test.y == 0], ref)["kid"]
    noise = run("kid", torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1, ref)["kid"]
    assert abs(same["kid"]) < 3 * same["kid_std"] and one > 30 * same["kid_std"] and noise > 30 * same["kid_std"]
    assert "kid" in load(None).eval.metrics and signal_names(("kid",)) == {"kid", "kid_std"}


# ---- 2D mixtures -----------------------------------------------------------------------------------


def _mixture_ref(name: str) -> Reference:
    means, sigma = mixture_spec(name)
    real, _ = sample_mixture(name, 5000, torch.Generator().manual_seed(0))
    return Reference.build(name, real, classifier=None, num_modes=means.shape[0], means=means, sigma=sigma)


@pytest.mark.parametrize("name,K", [("ring8", 8), ("grid25", 25)])
def test_mixture_coverage_true_mixture_and_three_modes(name, K):
    ref = _mixture_ref(name)
    g = torch.Generator().manual_seed(1)
    x, _ = sample_mixture(name, 2500, g)
    m = run("mixture_coverage", x, ref)
    # the 3σ disc of a 2D Gaussian holds 1 − e^{−4.5} = 98.89%
    assert m["modes_covered"] == K and m["hq_share"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)
    assert m["reverse_kl"] < 0.02
    means, sigma = mixture_spec(name)
    pick = torch.randint(3, (2500,), generator=g)
    m3 = run("mixture_coverage", means[pick] + sigma * torch.randn(2500, 2, generator=g), ref)
    assert m3["modes_covered"] == 3 and m3["reverse_kl"] == pytest.approx(LN(K / 3), abs=0.02)


def test_mixture_coverage_counts_only_high_quality_samples():
    ref = _mixture_ref("ring8")
    means, sigma = mixture_spec("ring8")
    x = torch.cat([means[:4] + 5 * sigma, means[4:]])  # 4 points 7σ off their mode, 4 on theirs
    m = run("mixture_coverage", x, ref)
    assert m["modes_covered"] == 4 and m["hq_share"] == 0.5 and m["reverse_kl"] == pytest.approx(0.0)


# ---- flip rate, diversity, training signals --------------------------------------------------------


def test_fixed_z_flip_rate_on_mixture_modes():
    ref = _mixture_ref("ring8")
    means, _ = mixture_spec("ring8")
    state: dict = {}
    first = run("fixed_z_flip_rate", means[:1], ref, fixed_samples=means[[0, 1, 2, 3]], state=state)
    assert first == {}  # nothing to compare with yet
    second = run("fixed_z_flip_rate", means[:1], ref, fixed_samples=means[[0, 1, 5, 6]], state=state)
    assert second == {"fixed_z_flip_rate": 0.5}
    third = run("fixed_z_flip_rate", means[:1], ref, fixed_samples=means[[0, 1, 5, 6]], state=state)
    assert third == {"fixed_z_flip_rate": 0.0}


def test_fixed_z_flip_rate_on_digits(mnist, ref):
    _, test = mnist
    state: dict = {}
    fives, sixes = test.x[test.y == 5][:20], test.x[test.y == 6][:20]
    run("fixed_z_flip_rate", fives, ref, fixed_samples=torch.cat([fives, sixes]), state=state)
    m = run("fixed_z_flip_rate", fives, ref, fixed_samples=torch.cat([fives, fives]), state=state)
    assert m["fixed_z_flip_rate"] == pytest.approx(0.5, abs=0.05)  # the sixes became fives


def test_sample_diversity(mnist, ref):
    _, test = mnist
    real = run("sample_diversity", test.x, ref)
    assert real["spread_ratio"] == pytest.approx(1.0, abs=0.1) and real["duplicate_share"] < 0.05
    copies = run("sample_diversity", test.x[3:4].repeat(300, 1, 1, 1), ref)
    assert copies["spread_ratio"] < 1e-3 and copies["duplicate_share"] == 1.0
    ten = run("sample_diversity", test.x[:10].repeat(30, 1, 1, 1), ref)
    assert ten["duplicate_share"] == 1.0 and ten["spread_ratio"] > 0.5  # varied, yet all copies


def _hist(n: int, **series) -> list[dict]:
    return [{"step": 10 * (i + 1), **{k: (v(i) if callable(v) else v) for k, v in series.items()}} for i in range(n)]


def test_training_signals():
    ref = _mixture_ref("ring8")
    x = torch.zeros(4, 2)
    short = run("training_signals", x, ref, history=_hist(3, loss_D=0.5))
    assert short == {"nonfinite_stats": 0.0}
    nan = run("training_signals", x, ref, history=_hist(12, loss_D=lambda i: float("nan") if i == 4 else 0.5))
    assert nan["nonfinite_stats"] == 1.0
    flat = run("training_signals", x, ref, history=_hist(12, loss_D=1e-5, loss_G=lambda i: 9.0 + 0.001 * (i % 2),
                                                           d_acc_real=1.0, d_acc_fake=1.0))
    assert flat["loss_D_rel_range"] < 0.01 and flat["loss_G_rel_range"] < 0.01
    assert flat["d_acc_range"] == 0.0 and flat["d_acc_mean"] == 1.0
    lively = run("training_signals", x, ref, history=_hist(12, loss_D=lambda i: 0.6 + 0.2 * (i % 3),
                                                             loss_G=lambda i: 0.9 - 0.05 * i))
    assert lively["loss_D_rel_range"] > 0.3 and lively["loss_G_rel_range"] > 0.3
    rising = run("training_signals", x, ref, history=_hist(10, m_global=lambda i: 0.10 + 0.01 * i))
    # line from 0.10 to 0.19 around a mean of 0.145: +62%
    assert rising["m_global_trend"] == pytest.approx(0.09 / 0.145, rel=1e-6)


# ---- reference classifiers -----------------------------------------------------------------------


def test_shipped_mnist_classifier_is_small_and_accurate(mnist):
    pt, meta = clf_store.WEIGHTS_DIR / "mnist.pt", clf_store.WEIGHTS_DIR / "mnist.json"
    assert pt.stat().st_size < 1_000_000
    info = json.loads(meta.read_text())
    assert info["held_out_accuracy"] >= 0.97 and info["dataset"] == "mnist5k" and "seed" in info
    assert info["command"].startswith("ganray classifier train --dataset mnist5k")
    model, _ = clf_store.load_shipped()
    _, test = mnist
    acc = clf_model.accuracy(model, test.x, test.y)
    assert acc >= 0.97 and acc == pytest.approx(info["held_out_accuracy"], abs=0.004)  # fp16 storage


def test_mnist_like_datasets_use_the_shipped_classifier(tmp_path):
    for ds in ("mnist5k", "mnist", "stacked-mnist"):
        assert classifier_key(ds) == "mnist"
        model, info = clf_store.reference_classifier(DataConfig(dataset=ds, cache_dir=str(tmp_path)), str(tmp_path / "s"),
                                               train_if_missing=False)
        assert info["held_out_accuracy"] >= 0.97
    with pytest.raises(ConfigError, match="2D data"):
        clf_store.reference_classifier(DataConfig(dataset="ring8"))


def _write_idx_folder(folder, mnist, n_train=600, n_test=200):
    """Official fashion-mnist file names holding mnist5k digits: a real IDX source for data.source."""
    train, test = mnist
    folder.mkdir(parents=True, exist_ok=True)
    for split, ds, n in (("train", train, n_train), ("test", test, n_test)):
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
        images = ((ds.x[idx, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        labels = ds.y[idx].to(torch.uint8).numpy()
        for name, arr in zip(FILES[split], (images, labels)):
            header = bytes([0, 0, 8, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
            (folder / name).write_bytes(gzip.compress(header + arr.tobytes()))
    return str(folder)


def test_classifier_is_trained_on_first_use_then_found_in_storage(tmp_path, mnist, caplog):
    source = _write_idx_folder(tmp_path / "fashion", mnist)
    storage = str(tmp_path / "bucket")
    cfg = DataConfig(dataset="fashion-mnist", source=source, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="ganray.metrics.classifier"):
        model, info = clf_store.reference_classifier(cfg, storage, epochs=6)
    assert "training one (first use)" in caplog.text
    assert (tmp_path / "bucket" / "classifiers" / "fashion-mnist.pt").is_file()
    assert (tmp_path / "cache" / "classifiers" / "fashion-mnist.json").is_file()
    assert info["dataset"] == "fashion-mnist" and info["n_train"] == 600 and info["n_test"] == 200
    assert info["held_out_accuracy"] > 0.3  # 6 epochs (30 steps) on 600 digits: well above chance (0.1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ganray.metrics.classifier"):
        again, info2 = clf_store.reference_classifier(cfg, storage)
    assert "first use" not in caplog.text and "from " + clf_store.storage_folder(storage) in caplog.text
    assert info2 == info
    x = load_dataset(cfg, "test").x[:50]
    assert torch.allclose(clf_model.embed(model, x)[1], clf_model.embed(again, x)[1], atol=1e-2)  # fp16 round trip
    with pytest.raises(StorageError, match="run `ganray classifier train --dataset cifar10`"):
        clf_store.reference_classifier(DataConfig(dataset="cifar10", cache_dir=str(tmp_path / "c2")), storage,
                                 train_if_missing=False)


def test_reference_cache_key_names_the_cpu_thread_count():
    # a hit must be what this process would compute: on a CPU, another thread count is another key
    from ganray.metrics.inputs import _reference_key

    model, _ = clf_store.load_shipped()
    x = torch.zeros(4, 1, 28, 28)
    keys: dict[tuple[str, int], set[str]] = {}
    before = torch.get_num_threads()
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            for dev in ("cpu", "cuda"):  # the key only: nothing runs on the device
                keys.setdefault((dev, n), set()).add(_reference_key("mnist5k", "image", x, model, 3, torch.device(dev)))
    finally:
        torch.set_num_threads(before)
    assert all(len(k) == 1 for k in keys.values())
    assert keys[("cpu", 1)] != keys[("cpu", 2)]
    assert keys[("cuda", 1)] == keys[("cuda", 2)]  # a GPU's features do not depend on torch's CPU threads


def test_classifier_cli_trains_and_stores(tmp_path, mnist, capsys):
    source = _write_idx_folder(tmp_path / "fashion", mnist, n_train=300, n_test=100)
    rc = clf_cli.main(["train", "--dataset", "fashion-mnist", "--source", source, "--storage", str(tmp_path / "st"),
                   "--epochs", "1", "--threads", "1"])
    assert rc == 0
    info = json.loads((tmp_path / "st" / "classifiers" / "fashion-mnist.json").read_text())
    assert info["epochs"] == 1 and info["command"].startswith("ganray classifier train --dataset fashion-mnist")
    assert info["threads"] == 1 and info["device"] == "cpu"  # what its weights depend on, beside seed and torch
    assert "held-out accuracy" in capsys.readouterr().out
    found = clf_store.load_classifier(clf_store.storage_folder(str(tmp_path / "st")), "fashion-mnist")
    assert found is not None and found[1] == info


@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "ring8"], "unknown image dataset 'ring8'"),
    (["train", "--dataset", "stacked-mnist"], "uses the MNIST classifier on each channel"),
    (["train", "--dataset", "mnist5k", "--epochs", "0"], "must be >= 1"),
    (["train", "--dataset", "mnist5k", "--storage", "s3://"], "malformed storage URI"),
])
def test_classifier_cli_rejects_bad_input(argv, message, capsys):
    assert clf_cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_corrupt_stored_classifier_is_named(tmp_path):
    (tmp_path / "mnist.json").write_text("{}")
    (tmp_path / "mnist.pt").write_bytes(b"not a torch file")
    with pytest.raises(StorageError, match="mnist.pt: not a ganray classifier"):
        clf_store.load_classifier(str(tmp_path), "mnist")


@pytest.mark.parametrize("bucket", ["s3_bucket", "gcs_bucket"])
def test_classifier_in_a_bucket_takes_precedence_over_the_shipped_one(bucket, request, tmp_path):
    """Real S3 (moto_server) and GCS (gcp-storage-emulator) servers on loopback."""
    uri = request.getfixturevalue(bucket) + "/ganray"
    model, info = clf_store.load_shipped()
    marked = {**info, "dataset": "mnist", "note": "stored in a bucket"}
    where = clf_store.save_classifier(model, marked, clf_store.storage_folder(uri), "mnist")
    assert where == uri + "/classifiers/mnist.pt"
    found, found_info = clf_store.reference_classifier(DataConfig(dataset="stacked-mnist", cache_dir=str(tmp_path)), uri,
                                                 train_if_missing=False)
    assert found_info == marked
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    assert torch.equal(clf_model.embed(found, x)[1], clf_model.embed(model, x)[1])
