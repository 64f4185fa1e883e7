"""Published protocols as jobs (docs/protocols.md): the PacGAN Table 1 protocol on the 2-D ring
and grid, and the Stacked-MNIST protocol of its Table 2.

- the table (ganray.report.protocol) from hand-built trial records with known final metrics:
  exact means and sample SDs, the within-2-paper-SD flags, the "PacGAN2 covers more modes" lines;
- the settings against the authors' code (fjxmlzn/PacGAN): the mixtures' means and σ in their
  order, mixture_coverage on points whose answer their MetricLogger gives, the presets' nets,
  optimiser, batch (in points: D sees batch_size / m packs), length and evaluation;
- the jobs' own options, and `python jobs/protocol_*.py --smoke` end to end from an empty folder
  with the default storage, as a user runs them.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_sweep import SWEEP_ENV, tail

from ganray.artifacts import layout
from ganray.artifacts.recorder import TrialRecorder
from ganray.config import ConfigError, load, parse_overrides, parse_variant
from ganray.data.mixtures import mixture_spec
from ganray.metrics import get_metric
from ganray.metrics.inputs import MetricInputs, Reference
from ganray.report import protocol as P
from ganray.sweep import grid, trial_name
from ganray.sweep.protocol import ProtocolJob, protocol_overrides

ROOT = Path(__file__).resolve().parents[1]
PACGAN = ROOT / "configs" / "protocol_pacgan.yaml"
STACKED = ROOT / "configs" / "protocol_stacked_mnist.yaml"
STACKED_SMOKE = ROOT / "configs" / "protocol_stacked_mnist_smoke.yaml"
# (variant, seed) -> final (modes_covered, hq_share, reverse_kl_hq); None: no evaluation yet
FINAL = {
    ("ring8-gan", 0): (6, 0.97, 0.4), ("ring8-gan", 1): (7, 0.98, 0.5), ("ring8-gan", 2): (5, 0.99, 0.6),
    ("ring8-pacgan2", 0): (8, 0.95, 0.05), ("ring8-pacgan2", 1): (7, 0.96, 0.09),
    ("grid25-gan", 0): (18, 0.90, 0.8),
    ("grid25-pacgan2", 0): (12, 0.91, 0.2), ("grid25-pacgan2", 1): (14, 0.93, 0.3), ("grid25-pacgan2", 2): None,
    ("other", 0): (1, 0.5, 2.0),  # a variant no paper row names: not counted
}


def build_records(exp: Path) -> None:
    """One trial per FINAL entry, written by the recorder: an evaluation at 200,000 with other
    values (8 modes), the final one at 400,000, then a row of losses only."""
    base = load(PACGAN)
    layout.write_experiment_config(str(exp), base.to_yaml())
    for (variant, seed), final in FINAL.items():
        cfg = base.replace(**{"experiment.seed": seed, "experiment.variant": variant})
        with TrialRecorder(layout.trial_paths(str(exp), f"{variant}-s{seed}"), config_yaml=cfg.to_yaml()) as rec:
            rec.report(100_000, {"loss_D": 1.3, "loss_G": 0.8})
            if final is None:
                continue
            rec.report(200_000, {"loss_D": 1.3, "modes_covered": 8.0, "hq_share": 0.5, "reverse_kl_hq": 0.01})
            modes, hq, kl = final
            rec.report(400_000, {"loss_D": 1.2, "modes_covered": float(modes), "hq_share": hq, "reverse_kl_hq": kl})


def test_the_table_from_hand_built_records(tmp_path):
    exp = tmp_path / "protocol-pacgan"
    build_records(exp)
    result = P.protocol_result(str(exp), P.PACGAN_TABLE1)
    v = result.variants
    assert sorted(v) == ["grid25-gan", "grid25-pacgan2", "ring8-gan", "ring8-pacgan2"]
    assert v["ring8-gan"].seeds == [0, 1, 2] and v["ring8-gan"].steps == [400_000] * 3
    # mean and sample SD (n - 1) of the last evaluation of each seed
    assert v["ring8-gan"].summary("modes_covered") == P.Summary(6.0, 1.0, 3)
    hq = v["ring8-gan"].summary("hq_share")
    assert hq.mean == pytest.approx(0.98) and hq.sd == pytest.approx(0.01) and hq.n == 3
    assert v["ring8-pacgan2"].summary("modes_covered").sd == pytest.approx(math.sqrt(0.5))
    assert v["grid25-gan"].summary("modes_covered") == P.Summary(18.0, None, 1)
    assert v["grid25-pacgan2"].summary("modes_covered") == P.Summary(13.0, math.sqrt(2.0), 2)
    assert "grid25-pacgan2-s2: no evaluation yet (still running or failed); not counted" in result.notes
    # within 2 paper SDs, SD = SE * sqrt(10): ring GAN |6.0 - 6.3| <= 2 * 0.5 * 3.16; ring PacGAN2
    # |7.5 - 7.9| = 0.4 <= 0.63; grid GAN |18 - 17.3| <= 5.06; grid PacGAN2 |13 - 23.8| = 10.8 > 4.43
    flags = [P.within(v[r.variant].summary("modes_covered"), r.values["modes_covered"], 10)
             for r in P.PACGAN_TABLE1.rows]
    assert flags == [True, True, True, False]
    assert P.covers_more(result, "ring8-pacgan2", "ring8-gan", "modes_covered") is True
    assert P.covers_more(result, "grid25-pacgan2", "grid25-gan", "modes_covered") is False

    uri, text = P.write_protocol(str(exp), P.PACGAN_TABLE1)
    assert uri == str(exp / "protocol.md") and (exp / "protocol.md").read_text() == text
    lines = text.splitlines()
    assert ("ganray: final evaluation at step 400,000 of the authors' 400,000 (400 epochs of 100,000 packs, "
            "100 packs a step; 100.0% of their training), seeds 0, 1, 2.") in lines
    assert ("| 2D-ring | GAN | ring8-gan (3) | 6.3 ± 0.5 / 6.00 ± 1.00 | 98.2 ± 0.2% / 98.0 ± 1.0% "
            "| 0.45 ± 0.09 / 0.500 ± 0.100 | yes (Δ -0.30, 0.2 SD) |") in lines
    assert ("| 2D-ring | PacGAN2 | ring8-pacgan2 (2) | 7.9 ± 0.1 / 7.50 ± 0.71 | 95.6 ± 2.0% / 95.5 ± 0.7% "
            "| 0.07 ± 0.03 / 0.070 ± 0.028 | yes (Δ -0.40, 1.3 SD) |") in lines
    assert ("| 2D-grid | GAN | grid25-gan (1) | 17.3 ± 0.8 / 18.00 | 94.8 ± 0.7% / 90.0% "
            "| 0.70 ± 0.07 / 0.800 | yes (Δ +0.70, 0.3 SD) |") in lines
    assert ("| 2D-grid | PacGAN2 | grid25-pacgan2 (2) | 23.8 ± 0.7 / 13.00 ± 1.41 | 91.3 ± 0.8% / 92.0 ± 1.4% "
            "| 0.13 ± 0.04 / 0.250 ± 0.071 | no (Δ -10.80, 4.9 SD) |") in lines
    # Welch: SE of 7.5 - 6.0 = sqrt(0.5 / 2 + 1 / 3) = 0.7638, so +1.50 is 1.96 SE; df = 0.5833² /
    # (0.25² / 1 + 0.3333² / 2) = 2.88, t(0.975, 2.88) = 3.26: not beyond the spread
    assert ("- 2D-ring: PacGAN2 covers more modes than GAN in ganray: yes (7.50 vs 6.00; +1.50 is 1.96 "
            "standard errors over the seeds, against Welch's 3.26 at 95% (df 2.9): within the seeds' spread, "
            "not settled); in the paper: yes (7.9 vs 6.3).") in lines
    assert ("- 2D-grid: PacGAN2 covers more modes than GAN in ganray: no (13.00 vs 18.00; one seed on a "
            "side: the seeds' spread is not known); in the paper: yes (23.8 vs 17.3).") in lines
    assert "other" not in text


def test_student_t_quantiles_and_the_incomplete_beta():
    # t tables: t(0.975; 1, 2, 4, 10) and the normal's 1.959964 for a large df
    for df, t in ((1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139), (1e7, 1.959964)):
        assert P.t_quantile(0.975, df) == pytest.approx(t, abs=2e-6)
    assert P.t_quantile(0.95, 3) == pytest.approx(2.353363, abs=2e-6)
    assert P._betainc(0.5, 0.5, 0.3) == pytest.approx(2 / math.pi * math.asin(math.sqrt(0.3)), rel=1e-12)
    assert P._betainc(2, 3, 0.4) == pytest.approx(0.5248, rel=1e-12)  # 1 - sum_{j<2} C(4, j) .4^j .6^(4-j)


def test_the_seeds_spread_of_a_difference():
    col = P.PACGAN_TABLE1.columns[0]
    # 8, 8, 8 against sd 1 over 3 seeds: SE sqrt(1/3), df 2, t 4.30: 3.46 SE is not enough
    assert P.spread_note(P.Summary(8.0, 0.0, 3), P.Summary(6.0, 1.0, 3), col) == (
        "+2.00 is 3.46 standard errors over the seeds, against Welch's 4.30 at 95% (df 2.0): "
        "within the seeds' spread, not settled")
    assert P.spread_note(P.Summary(8.0, 0.0, 3), P.Summary(6.5, 0.5, 3), col) == (
        "+1.50 is 5.20 standard errors over the seeds, against Welch's 4.30 at 95% (df 2.0): "
        "beyond the seeds' spread")
    assert P.spread_note(P.Summary(8.0, 0.0, 2), P.Summary(8.0, 0.0, 2), col) == "every seed gave the same number"
    assert P.spread_note(P.Summary(7.0, 0.0, 2), P.Summary(8.0, 0.0, 2), col) == \
        "-1.00, and every seed of each gave the same number: no spread to test it against"


def test_stacked_mnist_rows_without_an_error_have_no_sd_check():
    veegan, ours, pac2 = P.STACKED_MNIST.rows
    one = P.Summary(99.0, None, 1)
    assert P.within(one, veegan.values["classes_covered"], 10) is None  # printed without an error
    assert P.within(P.Summary(1000.0, 0.0, 3), pac2.values["classes_covered"], 10) is True  # SD 0: only 1000
    assert P.within(P.Summary(999.0, 1.0, 3), pac2.values["classes_covered"], 10) is False
    # 78.9 ± 6.46 (SE of 10 runs): SD 20.43, 2 SDs 40.86, so 119.7 is within and 119.8 is not
    assert P.within(P.Summary(119.7, 1.0, 3), ours.values["classes_covered"], 10) is True
    assert P.within(P.Summary(119.8, 1.0, 3), ours.values["classes_covered"], 10) is False


def test_the_paper_rows_are_the_published_numbers():
    got = {(r.group, r.label): {k: (s.mean, s.err) for k, s in r.values.items()} for r in P.PACGAN_TABLE1.rows}
    assert got == {
        ("2D-ring", "GAN"): {"modes_covered": (6.3, 0.5), "hq_share": (0.982, 0.002), "reverse_kl_hq": (0.45, 0.09)},
        ("2D-ring", "PacGAN2"): {"modes_covered": (7.9, 0.1), "hq_share": (0.956, 0.020), "reverse_kl_hq": (0.07, 0.03)},
        ("2D-grid", "GAN"): {"modes_covered": (17.3, 0.8), "hq_share": (0.948, 0.007), "reverse_kl_hq": (0.70, 0.07)},
        ("2D-grid", "PacGAN2"): {"modes_covered": (23.8, 0.7), "hq_share": (0.913, 0.008),
                                 "reverse_kl_hq": (0.13, 0.04)},
    }
    stacked = {r.label: {k: (s.mean, s.err) for k, s in r.values.items()} for r in P.STACKED_MNIST.rows}
    assert stacked["DCGAN (VEEGAN's)"] == {"classes_covered": (99.0, None), "kl_uniform": (3.40, None)}
    assert stacked["PacDCGAN2"] == {"classes_covered": (1000.0, 0.0), "kl_uniform": (0.06, 0.003)}


# ---- the settings against the authors' code ----------------------------------------------------

def test_the_mixtures_are_the_authors():
    # their config.py: MEANS = [(cos(2πi/8), sin(2πi/8)) for i in range(8)], VARIANCES 0.01² I
    means, sigma = mixture_spec("ring8")
    ring = [(math.cos(i * math.pi * 2 / 8), math.sin(i * math.pi * 2 / 8)) for i in range(8)]
    assert sigma == 0.01 and torch.allclose(means.double(), torch.tensor(ring, dtype=torch.float64), atol=1e-7)
    # MEANS = [(i, j) for i, j in itertools.product(range(-4, 5, 2), range(-4, 5, 2))], VARIANCES 0.05² I
    means, sigma = mixture_spec("grid25")
    grid25 = list(itertools.product(range(-4, 5, 2), range(-4, 5, 2)))
    assert sigma == 0.05 and means.tolist() == [[float(i), float(j)] for i, j in grid25]


def _coverage(points: list[tuple[float, float]], name: str = "ring8") -> dict[str, float]:
    means, sigma = mixture_spec(name)
    ref = Reference.build(name, means, classifier=None, num_modes=means.shape[0], means=means, sigma=sigma)
    return get_metric("mixture_coverage").fn(MetricInputs(samples=torch.tensor(points), ref=ref))


def test_mixture_coverage_gives_the_authors_metric_logger_answer():
    """Their MetricLogger: nearest mode by √Σ(d²/σ²), high quality when < 3; the mode histogram of
    high-quality samples; reverse KL = ln K − entropy of that histogram."""
    means, s = mixture_spec("ring8")
    m0, m1, m2 = (means[k].tolist() for k in range(3))
    points = [tuple(m0), tuple(m0), (m0[0] + 2.9 * s, m0[1]),  # 3 high-quality samples of mode 0
              tuple(m1),  # 1 of mode 1
              (m2[0], m2[1] + 3.1 * s),  # 3.1σ from mode 2: not high quality
              (3.0, 0.0)]  # nowhere near a mode (nearest: mode 0)
    m = _coverage(points)
    assert m["modes_covered"] == 2.0 and m["hq_share"] == pytest.approx(4 / 6)
    p = [3 / 4, 1 / 4]  # the high-quality histogram over modes 0 and 1
    entropy = -sum(q * math.log(q) for q in p)
    assert m["reverse_kl_hq"] == pytest.approx(math.log(8) - entropy, abs=1e-12)
    assert m["reverse_kl_hq"] == pytest.approx(0.75 * math.log(6) + 0.25 * math.log(2), abs=1e-12)
    # ganray's verdict statistic counts every sample at its nearest mode: (4, 1, 1) of 6
    assert m["reverse_kl"] == pytest.approx(sum(c / 6 * math.log(8 * c / 6) for c in (4, 1, 1)), abs=1e-9)
    nowhere = _coverage([(3.0, 0.0), (0.0, 3.0)])
    assert nowhere["modes_covered"] == 0 and nowhere["hq_share"] == 0 and nowhere["reverse_kl_hq"] == math.log(8)


def _variants(cfg) -> dict[str, dict]:
    return dict(parse_variant(v) for v in cfg.sweep.variants)


def test_the_pacgan_preset_is_the_authors_protocol():
    cfg = load(PACGAN)
    m, t, e = cfg.model, cfg.train, cfg.eval
    assert (m.arch, m.z_dim, cfg.data.n_train) == ("pacgan-mlp", 2, 100_000)
    assert (t.family, t.lr_g, t.lr_d, t.beta1, t.beta2, t.n_critic, t.d_updates) == \
        ("gan", 1e-4, 1e-4, 0.8, 0.999, 1, "simultaneous")
    # 400 epochs of 100,000 packs at 100 packs a step, for every m
    assert t.steps == 400 * 100_000 // 100 == P.PACGAN_TABLE1.authors_steps
    assert t.steps % t.eval_every == 0 and not cfg.sweep.stopper and cfg.sweep.z_dim == ()
    assert (e.n, e.metrics) == (2500, ("mixture_coverage",))
    assert cfg.sweep.seeds == tuple(range(10))
    # ganray's batch_size counts points and D sees batch_size / m packs: 100 packs a step for each m
    variants = _variants(cfg)
    assert set(variants) == {r.variant for r in P.PACGAN_TABLE1.rows}
    for name, over in variants.items():
        assert over["data.dataset"] == name.split("-")[0]
        assert over["train.batch_size"] // over["model.pack"] == 100
        assert over["model.pack"] == (2 if name.endswith("pacgan2") else 1)
    names = sorted(trial_name(p) for p in grid(cfg.replace(**{"sweep.seeds": [0, 1]})))
    assert names[:2] == ["grid25-gan-s0", "grid25-gan-s1"] and len(names) == 8


def test_the_stacked_presets_are_the_authors_protocol():
    cfg, smoke = load(STACKED), load(STACKED_SMOKE)
    t = cfg.train
    assert (cfg.data.dataset, cfg.data.stacked_base, cfg.data.n_train) == ("stacked-mnist", "mnist", 128_000)
    assert (cfg.model.arch, cfg.model.z_dim, cfg.model.width) == ("dcgan", 100, 1.0)
    assert (t.lr_g, t.lr_d, t.beta1, t.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    assert t.steps == 50 * 128_000 // 64 == P.STACKED_MNIST.authors_steps
    assert cfg.eval.n == 26_000 and "class_coverage" in cfg.eval.metrics and cfg.scaling.use_gpu
    assert {k: o["train.batch_size"] // o["model.pack"] for k, o in _variants(cfg).items()} == \
        {"dcgan": 64, "pacdcgan2": 64}
    # the CPU smoke preset: the same rows and recipe, offline and small
    assert set(_variants(smoke)) == set(_variants(cfg)) and not smoke.scaling.use_gpu
    assert smoke.data.stacked_base == "mnist5k" and smoke.experiment.name != cfg.experiment.name
    assert (smoke.train.lr_g, smoke.train.beta1, smoke.model.z_dim) == (2e-4, 0.5, 100)


# ---- the jobs -------------------------------------------------------------------------------------

JOB = ProtocolJob(P.PACGAN_TABLE1, PACGAN, 1000, "test", datasets=("ring8", "grid25"))


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"epochs": None, "seeds": None, "dataset": None, "smoke": False, "config": None,
                                 "overrides": [], **kw})


def test_the_job_options_are_settings():
    over = protocol_overrides(JOB, _args(epochs=15, seeds=3, dataset="ring8"), PACGAN)
    cfg = load(PACGAN, parse_overrides(over))
    t = cfg.train
    assert (t.steps, t.eval_every, t.checkpoint_every, t.log_every) == (15_000, 1000, 1000, 1000)
    assert cfg.sweep.seeds == (0, 1, 2)
    assert [parse_variant(v)[0] for v in cfg.sweep.variants] == ["ring8-gan", "ring8-pacgan2"]
    assert load(PACGAN, parse_overrides(protocol_overrides(JOB, _args(epochs=400), PACGAN))).train.eval_every == 20_000
    assert protocol_overrides(JOB, _args(smoke=True), PACGAN) == ["sweep.seeds=[0]"]  # smoke: one seed a row
    bare = ROOT / "configs" / "ring8.yaml"  # no variants: --dataset names none
    with pytest.raises(ConfigError, match="--dataset grid25: no sweep.variants entry"):
        protocol_overrides(JOB, _args(dataset="grid25", config=str(bare)), PACGAN)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("job,exp_name,trials", [
    ("protocol_pacgan.py", "protocol-pacgan-smoke", ["grid25-gan-s0", "grid25-pacgan2-s0", "ring8-gan-s0",
                                                     "ring8-pacgan2-s0"]),
    ("protocol_stacked_mnist.py", "protocol-stacked-mnist-cpu-smoke", ["dcgan-s0", "pacdcgan2-s0"]),
])
def test_smoke_runs_end_to_end_with_the_default_storage(tmp_path, job, exp_name, trials):
    env = {k: v for k, v in os.environ.items() if k != "GANRAY_STORAGE"}
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / job), "--smoke"], capture_output=True, text=True,
                       timeout=280, cwd=tmp_path, env={**env, **SWEEP_ENV})
    assert r.returncode == 0, tail(r)
    exp = tmp_path / "ganray_results" / exp_name
    assert sorted(p.name for p in (exp / "trials").iterdir()) == trials
    assert (exp / "report.md").is_file()
    text = (exp / "protocol.md").read_text()
    assert text in r.stdout and f"protocol table: {exp}/protocol.md" in r.stdout, tail(r)
    protocol = P.PACGAN_TABLE1 if "pacgan" in job else P.STACKED_MNIST
    for row in protocol.rows:  # every paper row, beside the one seed of its variant
        assert f"| {row.group} | {row.label} | {row.variant} (1) |" in text, text
    assert "final evaluation at step 6 of the authors'" in text and "Notes:" not in text, text
