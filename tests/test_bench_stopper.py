"""bench/bench_stopper.py's replay of the collapse stopper on a run without it (`--simulate`),
on known verdict sequences: the step each (patience, grace_steps) stops at, the trial-steps
ratio, false stops and the best trial; and the verdicts judged again from metrics rows."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ganray.config import load

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_stopper", ROOT / "bench" / "bench_stopper.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_stopper"] = bench  # its dataclasses look their module up
_spec.loader.exec_module(bench)

G, C, H, P = "garbage", "collapsed", "healthy", "partial_collapse"
# evaluations every 100 steps of a 600-step trial
MIXED = [(100, G), (200, G), (300, C), (400, H), (500, C), (600, C)]


@pytest.mark.parametrize("patience, grace, stops_at", [
    (1, 0, 100),      # the first bad evaluation
    (2, 0, 200),
    (2, 200, 300),    # 100 is inside the grace; 200 and 300 are bad in a row
    (2, 300, 600),    # 300 bad, 400 healthy resets the count, 500 bad, 600 is the last step anyway
    (3, 100, 300),
    (3, 200, 600),    # 200, 300 bad, then 400 healthy
])
def test_replay_stopper_stops_where_the_collapse_stopper_would(patience, grace, stops_at):
    assert bench.replay_stopper(MIXED, 600, patience, grace) == stops_at


def _trial(name: str, verdicts: list, fcd: float) -> "bench.TrialOutcome":
    return bench.TrialOutcome(trial=name, steps=600, verdict=verdicts[-1][1], verdict_step=600, stopped_early=False,
                              fcd=fcd, modes_covered=None, hq_share=None, verdicts=[list(v) for v in verdicts])


def test_replay_counts_trial_steps_false_stops_and_the_best_trial():
    trials = [
        _trial("collapses", [(s, C) for s in range(100, 700, 100)], 900.0),
        _trial("late-bloomer", [(100, G), (200, G), (300, H), (400, H), (500, H), (600, H)], 200.0),
        _trial("steady", [(s, H) for s in range(100, 700, 100)], 250.0),
        _trial("partial", [(100, G), (200, G), (300, P), (400, P), (500, P), (600, P)], 150.0),
    ]
    early = bench.replay(trials, 600, patience=2, grace_steps=0)
    assert early.stopped == {"collapses": 200, "late-bloomer": 200, "partial": 200}
    assert early.trial_steps == 3 * 200 + 600 and early.trial_steps_ratio == pytest.approx(1200 / 2400)
    assert early.false_stops == ["late-bloomer"]                     # ends healthy without the stopper
    assert early.stopped_not_bad == ["late-bloomer", "partial"]      # partial_collapse is not a bad verdict
    assert (early.best, early.best_without) == ("steady", "partial")  # the best one was stopped: not the same

    graced = bench.replay(trials, 600, patience=2, grace_steps=200)
    assert graced.stopped == {"collapses": 300}
    assert graced.trial_steps_ratio == pytest.approx((300 + 3 * 600) / 2400)
    assert graced.false_stops == [] and graced.stopped_not_bad == []
    assert graced.best == graced.best_without == "partial"


def test_verdicts_are_judged_again_from_rows_with_the_configured_metrics():
    healthy = {"classes_covered": 10.0, "covered_share": 1.0, "kl_uniform": 0.01, "mean_confidence": 0.95,
               "fcd": 250.0, "duplicate_share": 0.0, "spread_ratio": 1.0}
    rows = [{"step": 20, "loss_D": 1.3},                                   # a log row: no evaluation
            {"step": 100, **healthy, "duplicate_share": 1.0, "near_real_share": 0.5},   # near-copies
            {"step": 200, **healthy, "near_real_share": 0.1},             # away from the real features
            {"step": 300, **healthy, "near_real_share": 0.5, "classes_covered": 8.0}]
    assert bench.verdict_judge(load(None))(rows) == [(100, C), (200, G), (300, P)]
    no_near_real = load(None, ["eval.metrics=[class_coverage,fcd,prdc,sample_diversity]"])
    assert bench.verdict_judge(no_near_real)(rows) == [(100, C), (200, H), (300, P)]
    strict = load(None, ["eval.near_real_garbage=0.6"])
    assert bench.verdict_judge(strict)(rows) == [(100, C), (200, G), (300, G)]


def _timed(name: str, fcd_at: dict[int, float]) -> "bench.TrialOutcome":
    t = _trial(name, [(s, H) for s in range(100, 700, 100)], fcd_at[600])
    t.evals = [[s, s / 10, fcd_at[s], fcd_at[s]] for s in range(100, 700, 100)]  # 10 steps a second
    return t


def test_replay_asha_stops_trials_below_the_rung_quantile_in_arrival_order():
    def fcds(at100: float, at400: float) -> dict[int, float]:
        return {s: at100 if s < 400 else at400 for s in range(100, 700, 100)}

    trials = [_timed("a", fcds(900, 800)), _timed("b", fcds(500, 300)), _timed("c", fcds(700, 650)),
              _timed("d", fcds(400, 600))]
    full = {t.trial: 600 for t in trials}
    # one slot: a, b, c, d reach each rung in that order; rungs at 100 and 400 (100 x 4^k < 600)
    # rung 100: a first (continues); b 500 beats a; c 700 is below the 75% quantile of {900, 500}
    # (600): stopped; d 400 continues. Rung 400: a, b continue; d 600 is below that of {800, 300} (425).
    assert bench.replay_asha(trials, 600, full, grace_period=100, slots=1) == {"a": 600, "b": 600, "c": 100, "d": 400}
    # a trial the collapse stopper ends at 300 never reaches rung 400: b is first there and d is
    # measured against b alone
    assert bench.replay_asha(trials, 600, {**full, "a": 300}, grace_period=100, slots=1) == {
        "a": 300, "b": 600, "c": 100, "d": 400}
    r = bench.replay(trials, 600, patience=2, grace_steps=200,
                     asha={"grace_period": 100, "slots": 1, "setup_sec": 0.0})
    assert r.asha == 100 and r.stopped == {"c": 100, "d": 400} and r.false_stops == ["c", "d"]  # all four end healthy
    assert (r.best, r.best_without) == ("b", "b")
