"""Seeds together: records written by the trial recorder (no training) for two z_dim grid points
× three seeds (z_dim 10 settled healthy, z_dim 2 split between collapsed and a borderline partial
collapse) and for a remedies sweep (three sweep.variants × three seeds); the report's summary,
its grid-point and remedies tables, trials.csv, points.csv and the sweep's console summary give
the verdict counts, the agreement, the borderline marks, mean ± sd over seeds and the speeds."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from ganray import report
from ganray.artifacts import layout
from ganray.artifacts.recorder import TrialRecorder
from ganray.config import load
from ganray.report import figures, model, points
from ganray.sweep import grid, trial_configs, trial_names, trial_summaries

KL_REASON = "KL to uniform 0.103 nats > 0.1 (borderline: 95% 0.09–0.12)"
BORDERLINE_KL = {"statistic": "kl_uniform", "value": 0.103, "threshold": 0.1, "low": 0.09, "high": 0.12,
                 "level": 0.95, "method": "bootstrap (200 resamples)", "borderline": True, "rule": "KL > 0.1"}


def _margin(value: float, low: float, high: float, borderline: bool = False) -> dict:
    return {**BORDERLINE_KL, "value": value, "low": low, "high": high, "borderline": borderline}


def _sweep(root: Path, names_cfgs, outcomes: dict) -> str:
    """Write each trial's record through the recorder: metrics rows every 50 steps (elapsed_sec
    at the trial's speed), an evaluation every 100 with its verdict; returns the experiment URI."""
    exp_uri = str(root / "exp")
    for name, cfg in names_cfgs:
        verdict, first_seen, finals, speed, margin = outcomes[name]
        with TrialRecorder(layout.trial_paths(exp_uri, name), config_yaml=cfg.to_yaml()) as rec:
            for step in range(50, 301, 50):
                metrics = {"loss_D": 1.0, "loss_G": 1.0, "elapsed_sec": step / speed}
                payload = None
                if step % 100 == 0:
                    classes, kl, fcd = finals if step == 300 else (10, 0.02, 50.0)
                    metrics.update(classes_covered=classes, kl_uniform=kl, fcd=fcd)
                    now = verdict if step >= first_seen else "healthy"
                    payload = {"verdict": now, "step": step, "first_seen_step": first_seen if now == verdict else 100,
                               "reasons": [KL_REASON if margin and margin["borderline"] else f"{now} at {step}"],
                               "stopped_early": False}
                    if margin is not None:  # records of older ganray versions have no margin
                        payload["margin"] = margin
                rec.report(step, metrics, verdict=payload)
    return exp_uri


def _trials(cfg) -> list[tuple[str, object]]:
    points_ = grid(cfg)
    return list(zip(trial_names(points_), trial_configs(cfg, points_)))


@pytest.fixture(scope="module")
def zdim_sweep(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("seeds")
    cfg = load(None, {"experiment.name": "exp", "storage.uri": str(root), "sweep.z_dim": [2, 10],
                      "sweep.seeds": [0, 1, 2], "train.steps": 300})
    layout.write_experiment_config(str(root / "exp"), cfg.to_yaml())
    outcomes = {  # name: (verdict, first seen, (classes, KL, FCD) at step 300, steps/s, margin)
        "z2-s0": ("collapsed", 100, (1, 1.5, 300.0), 10.0, _margin(1.5, 1.3, 1.7)),
        "z2-s1": ("collapsed", 200, (2, 0.9, 240.0), 12.0, _margin(0.9, 0.8, 1.0)),
        "z2-s2": ("partial_collapse", 300, (3, 0.103, 180.0), 14.0, BORDERLINE_KL),
        "z10-s0": ("healthy", 100, (10, 0.02, 40.0), 8.0, None),  # an older record: no margin
        "z10-s1": ("healthy", 100, (10, 0.04, 50.0), 8.0, _margin(0.04, 0.03, 0.05)),
        "z10-s2": ("healthy", 100, (10, 0.03, 60.0), 8.0, _margin(0.03, 0.02, 0.04)),
    }
    trials = _trials(cfg)
    assert [n for n, _ in trials] == list(outcomes)
    exp_uri = _sweep(root, trials, outcomes)
    report.write_report(exp_uri)
    return exp_uri


def _csv(path: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    return {r.get("trial") or r["point"]: r for r in rows}


def test_points_csv_aggregates_the_seeds_of_each_grid_point(zdim_sweep):
    rows = _csv(Path(zdim_sweep) / "points.csv")
    assert list(rows) == ["z_dim 2", "z_dim 10"]
    z2, z10 = rows["z_dim 2"], rows["z_dim 10"]
    assert (z2["seeds"], z2["n_seeds"], z2["trials"]) == ("0 1 2", "3", "z2-s0 z2-s1 z2-s2")
    assert (z2["agreement"], z2["majority"]) == ("seeds disagree", "collapsed")
    assert z2["verdicts"] == ("collapsed in 2 of 3 seeds (first seen at steps 100–200), "
                              "partially collapsed in 1 of 3 (first seen at step 300)")
    assert (z2["n_collapsed"], z2["n_partial_collapse"], z2["n_healthy"]) == ("2", "1", "0")
    assert (z2["first_seen_min"], z2["first_seen_max"], z2["n_borderline"]) == ("100", "200", "1")
    # mean and sample sd over the three seeds: classes (1, 2, 3), FCD (300, 240, 180), steps/s (10, 12, 14)
    assert (float(z2["classes_covered_mean"]), float(z2["classes_covered_sd"])) == (2.0, 1.0)
    assert (float(z2["fcd_mean"]), float(z2["fcd_sd"])) == (240.0, 60.0)
    assert float(z2["kl_uniform_mean"]) == pytest.approx(0.834333, abs=1e-6)
    assert float(z2["kl_uniform_sd"]) == pytest.approx(0.700811, abs=1e-6)
    assert float(z2["steps_per_sec_mean"]) == pytest.approx(12.0)
    assert float(z2["steps_per_sec_sd"]) == pytest.approx(2.0)
    assert (z10["agreement"], z10["majority"], z10["verdicts"]) == ("settled", "healthy", "healthy in 3 of 3 seeds")
    assert (z10["n_healthy"], z10["n_borderline"], float(z10["fcd_mean"])) == ("3", "0", 50.0)


def test_trials_csv_keeps_one_row_per_trial_with_its_point_and_margin(zdim_sweep):
    rows = _csv(Path(zdim_sweep) / "trials.csv")
    assert list(rows) == ["z2-s0", "z2-s1", "z2-s2", "z10-s0", "z10-s1", "z10-s2"]
    s2 = rows["z2-s2"]
    assert (s2["point"], s2["point_seeds"], s2["point_agreement"], s2["point_majority"]) == (
        "z_dim 2", "3", "seeds disagree", "collapsed")
    assert (s2["verdict"], s2["borderline"], s2["margin_statistic"]) == ("partial_collapse", "True", "kl_uniform")
    assert [float(s2[f"margin_{k}"]) for k in ("value", "low", "high", "threshold", "level")] == [
        0.103, 0.09, 0.12, 0.1, 0.95]
    assert float(s2["steps_per_sec"]) == pytest.approx(14.0)
    assert (rows["z2-s0"]["borderline"], rows["z10-s0"]["borderline"], rows["z10-s0"]["margin_value"]) == (
        "False", "", "")  # z10-s0: a record without a margin
    assert rows["z10-s1"]["point_agreement"] == "settled" and rows["z10-s1"]["variant"] == ""


def test_report_says_which_points_are_settled_and_marks_borderline_verdicts(zdim_sweep):
    md = (Path(zdim_sweep) / "report.md").read_text()
    assert ("Across seeds (3 seeds per grid point): 1 of 2 points settled (all seeds agree): z_dim 10 healthy; "
            "1 disagrees: z_dim 2 — collapsed in 2 of 3 seeds (first seen at steps 100–200), partially collapsed in "
            "1 of 3 (first seen at step 300).") in md
    assert ("1 borderline (another draw of evaluation samples could give another verdict: at least "
            "(1 - level)/2 of the bootstrap resamples do): z_dim 2 seed 2 partially collapsed at step 300 "
            "(borderline: KL 0.103, 95% 0.09–0.12 vs 0.1).") in md
    row = next(line for line in md.splitlines() if line.startswith("| z2-s2 |"))
    assert "| partially collapsed at step 300 (borderline: KL 0.103, 95% 0.09–0.12 vs 0.1) |" in row
    assert "## Grid points (seeds together)" in md and "## Remedies" not in md
    assert ("| z_dim 2 | 3 | collapsed in 2 of 3 seeds (first seen at steps 100–200), partially collapsed in 1 of 3 "
            "(first seen at step 300) | seeds disagree | 1 of 3 | 2.00 ± 1.00 | 0.83 ± 0.70 | 240 ± 60.0 | "
            "12.0 ± 2.00 |") in md
    assert "| z_dim 10 | 3 | healthy in 3 of 3 seeds | settled |  | 10.0 ± 0.00 | 0.03 ± 0.01 | 50.0 ± 10.0 |" in md
    page = (Path(zdim_sweep) / "report.html").read_text()
    assert "1 of 2 points settled (all seeds agree): z_dim 10 healthy" in page
    assert '<span class="borderline">(borderline: KL 0.103, 95% 0.09–0.12 vs 0.1)</span>' in page


def test_heatmap_cells_count_the_seeds_majority_first(zdim_sweep):
    exp = model.load_experiment(zdim_sweep)
    z2 = [t for t in exp.trials if t.params["z_dim"] == 2]
    assert figures._heatmap_text(z2) == "2/3 collapsed\nfirst seen at 100–200\n1/3 partially collapsed\n1/3 borderline"
    assert figures._heatmap_text([t for t in exp.trials if t.params["z_dim"] == 10]) == "3/3 healthy"
    assert (Path(zdim_sweep) / "figures" / "verdict_heatmap.png").stat().st_size > 0


def test_console_summary_adds_one_line_per_grid_point(zdim_sweep):
    names = ["z2-s0", "z2-s1", "z2-s2", "z10-s0", "z10-s1", "z10-s2"]
    lines = trial_summaries(zdim_sweep, names)
    assert lines[:6] == [
        "  z2-s0   collapsed        step 300 (since 100): collapsed at 300",
        "  z2-s1   collapsed        step 300 (since 200): collapsed at 300",
        f"  z2-s2   partial_collapse step 300, borderline: {KL_REASON}",
        "  z10-s0  healthy          step 300 (since 100): healthy at 300",
        "  z10-s1  healthy          step 300 (since 100): healthy at 300",
        "  z10-s2  healthy          step 300 (since 100): healthy at 300",
    ]
    assert lines[6:] == [
        "  grid points: 2, 3 seeds per grid point: 1 settled, 1 seeds disagree",
        "  z_dim 2   seeds disagree   collapsed in 2 of 3 seeds (first seen at steps 100–200), partially collapsed "
        "in 1 of 3 (first seen at step 300)",
        "  z_dim 10  settled          healthy in 3 of 3 seeds",
    ]
    assert sum(" stopped early" in line for line in lines) == 0  # run_sweep counts the stopped trials so


def test_remedies_table_counts_healthy_seeds_and_speed_against_the_baseline(tmp_path):
    cfg = load(None, {"experiment.name": "exp", "storage.uri": str(tmp_path), "sweep.z_dim": [], "model.z_dim": 2,
                      "sweep.seeds": [0, 1, 2], "train.steps": 300,
                      "sweep.variants": ["baseline", "pack2: model.pack=2", "ttur: train.lr_d=0.0004"]})
    layout.write_experiment_config(str(tmp_path / "exp"), cfg.to_yaml())
    trials = _trials(cfg)
    outcomes = {}
    for name, c in trials:
        v, speed = {"baseline": (("collapsed",) * 3, (20.0, 20.0, 20.0)),
                    "pack2": (("healthy", "collapsed", "healthy"), (10.0, 10.0, 10.0)),
                    "ttur": (("partial_collapse", "collapsed", "partial_collapse"), (20.0, 18.0, 22.0))
                    }[c.experiment.variant]
        finals = {"baseline": (3, 1.2, 300.0), "pack2": (8 + c.experiment.seed, 0.1, 120.0),
                  "ttur": (5, 0.6, 200.0)}[c.experiment.variant]  # (classes covered, KL, FCD) at step 300
        outcomes[name] = (v[c.experiment.seed], 200, finals, speed[c.experiment.seed], None)
    exp_uri = _sweep(tmp_path, trials, outcomes)
    exp = model.load_experiment(exp_uri)
    assert points.remedies_table(exp) == (
        ["variant", "healthy in", "other verdicts", "classes covered (mean ± sd)", "kl uniform (mean ± sd)",
         "fcd (mean ± sd)", "steps/s (mean ± sd)", "speed vs baseline"],
        [["baseline", "0 of 3 seeds", "3 collapsed", "3.00 ± 0.00", "1.20 ± 0.00", "300 ± 0.00", "20.0 ± 0.00", "1.00×"],
         ["pack2", "2 of 3 seeds", "1 collapsed", "9.00 ± 1.00", "0.10 ± 0.00", "120 ± 0.00", "10.0 ± 0.00", "0.50×"],
         ["ttur", "0 of 3 seeds", "1 collapsed, 2 partially collapsed", "5.00 ± 0.00", "0.60 ± 0.00", "200 ± 0.00",
          "20.0 ± 2.00", "1.00×"]])
    report.write_report(exp_uri)
    md = (tmp_path / "exp" / "report.md").read_text()
    assert "## Remedies (sweep.variants)" in md
    assert "| pack2 | 2 of 3 seeds | 1 collapsed | 9.00 ± 1.00 | 0.10 ± 0.00 | 120 ± 0.00 | 10.0 ± 0.00 | 0.50× |" in md
    assert "| trial | z_dim | lr_g | lr_d | family | variant | seed |" in md  # the variant gets its column
    assert "3 of 3 points settled" not in md and "1 of 3 points settled (all seeds agree): baseline collapsed" in md


def test_one_seed_per_point_says_agreement_cannot_be_judged_and_speed_after_a_resume():
    trials = [model.Trial(f"z{z}-s0", "", params={"z_dim": z, "seed": 0}, verdict={"verdict": "healthy", "step": 9})
              for z in (2, 10)]
    exp = model.Experiment("", None, trials)
    assert points.agreement_text(exp) == (
        "One seed per grid point: agreement across seeds cannot be judged, and one seed cannot tell a settled "
        "verdict from luck (--set sweep.seeds=[0,1,2] runs three).")
    # a resumed run: elapsed_sec starts again from 0 after step 200, so 200 steps in 15 s
    t = model.Trial("r", "", rows=[{"step": s, "elapsed_sec": e} for s, e in ((100, 10.0), (200, 20.0), (300, 5.0),
                                                                               (400, 15.0))])
    assert points.steps_per_sec(t) == pytest.approx(200 / 15)
    # rows with train_sec (the training steps' seconds): the speed leaves the evaluations' seconds out
    t = model.Trial("t", "", rows=[{"step": s, "elapsed_sec": e, "train_sec": tr}
                                   for s, e, tr in ((100, 10.0, 8.0), (200, 25.0, 16.0), (300, 37.0, 24.0))])
    assert points.steps_per_sec(t) == pytest.approx(300 / 24.0)
    # a trial begun before rows had train_sec and resumed after: elapsed_sec, which every row has
    t = model.Trial("u", "", rows=[{"step": 100, "elapsed_sec": 10.0}, {"step": 200, "elapsed_sec": 20.0},
                                   {"step": 300, "elapsed_sec": 30.0, "train_sec": 28.0},
                                   {"step": 400, "elapsed_sec": 40.0, "train_sec": 36.0}])
    assert points.steps_per_sec(t) == pytest.approx(400 / 40.0)
