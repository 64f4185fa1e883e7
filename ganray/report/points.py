"""Grid points: the trials of a sweep that differ only in experiment.seed, taken together.

A sweep with `sweep.seeds: [0, 1, 2]` runs every grid point three times. One seed's verdict
cannot be told from luck; three that agree can. Per point this module counts the verdicts
("collapsed in 3 of 3 seeds; first seen at steps 100–200"), says whether the seeds agree
(settled) or not, summarises the key numbers as mean ± sd over the seeds, and, for a sweep
over `sweep.variants` (remedies), how often each variant ended healthy and at what speed.
The report (render.py, points.csv), trials.csv and the sweep's console summary
(ganray/sweep/table.py) all read it from here; docs/report.md explains how to read it.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ganray.report.compare import Spread, num
from ganray.report.model import NO_VERDICT, SEED_AXIS, SEVERITY, VERDICT_LABEL, Experiment, Trial, variant_name
from ganray.report.tables import (
    borderline_mark,
    csv_text,
    describe,
    fmt_value,
    key_metric_columns,
    name_axes,
    table_rows,
)

SETTLED, DISAGREE, OPEN, ONE_SEED = "settled", "seeds disagree", "not yet settled", "one seed"
AGREEMENTS = (SETTLED, DISAGREE, OPEN, ONE_SEED)
SEEDS_HINT = "--set sweep.seeds=[0,1,2]"
BASELINE = "baseline"  # the variant other variants' speed is compared with (else the first)


def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


@dataclass
class Point:
    """One grid point: its settings (without the seed) and its trials, one per seed."""

    params: dict[str, Any]
    trials: list[Trial]

    @property
    def n(self) -> int:
        return len(self.trials)

    @property
    def counts(self) -> Counter:
        return Counter(t.verdict_name for t in self.trials)

    @property
    def majority(self) -> str:
        """The most frequent verdict among the seeds that have one (a tie: the worse one);
        NO_VERDICT when none has."""
        known = Counter({v: c for v, c in self.counts.items() if v != NO_VERDICT})
        if not known:
            return NO_VERDICT
        return min(known, key=lambda v: (-known[v], SEVERITY.index(v)))

    @property
    def agreement(self) -> str:
        """settled (two or more seeds, all with the same verdict), seeds disagree (two verdicts or
        more), one seed, or not yet settled (a seed without a verdict, the others agreeing)."""
        known = {v for v in self.counts if v != NO_VERDICT}
        if len(known) > 1:
            return DISAGREE
        if self.n == 1:
            return ONE_SEED
        return SETTLED if known and NO_VERDICT not in self.counts else OPEN

    def first_seen(self, verdict: str) -> tuple[int, int] | None:
        """(earliest, latest) step at which the seeds with `verdict` first showed it."""
        steps = [t.verdict_step for t in self.trials if t.verdict_name == verdict and t.verdict_step is not None]
        return (min(steps), max(steps)) if steps else None

    def verdict_text(self) -> str:
        """"collapsed in 3 of 3 seeds; first seen at steps 100–200" (all agree) or "collapsed in
        2 of 3 seeds (first seen at step 200), healthy in 1 of 3" (majority first)."""
        order = sorted(self.counts, key=lambda v: (v != self.majority, SEVERITY.index(v)))
        parts = []
        for i, v in enumerate(order):
            what = "no verdict" if v == NO_VERDICT else VERDICT_LABEL[v]
            text = f"{what} in {self.counts[v]} of {_seeds(self.n) if i == 0 else self.n}"
            seen = self.first_seen(v) if v not in ("healthy", NO_VERDICT) else None
            if seen is not None:
                at = f"step {seen[0]}" if seen[0] == seen[1] else f"steps {seen[0]}–{seen[1]}"
                text += f"; first seen at {at}" if len(order) == 1 else f" (first seen at {at})"
            parts.append(text)
        return ", ".join(parts)

    def spread(self, key: str) -> Spread | None:
        """The seeds' last values of `key` (those that logged a finite one)."""
        values = [v for t in self.trials if (v := t.final(key)) is not None and math.isfinite(v)]
        return Spread(values) if values else None

    @property
    def speed(self) -> Spread | None:
        values = [v for t in self.trials if (v := steps_per_sec(t)) is not None]
        return Spread(values) if values else None

    @property
    def borderline(self) -> list[Trial]:
        return [t for t in self.trials if t.borderline]


def steps_per_sec(t: Trial) -> float | None:
    """Generator steps per second of training: step / train_sec at the last row (the seconds of the
    training steps alone, evaluations, sample grids and checkpoints left out); in records with a
    row written before rows had train_sec, step / elapsed_sec (evaluations included).
    Both count on over resumes (a checkpoint carries them); in records written before it did, a
    resumed run started again from 0, and then the speed is that of the last run, from the step of
    the row before the clock fell."""
    stepped = [r for r in t.rows if isinstance(r.get("step"), int)]
    key = "train_sec" if stepped and all("train_sec" in r for r in stepped) else "elapsed_sec"
    rows = [r for r in stepped if isinstance(r.get(key), (int, float))]
    if not rows or rows[-1][key] <= 0:
        return None
    start = 0
    for before, after in zip(rows, rows[1:]):
        if after[key] < before[key]:  # a new run (a resume) starts here
            start = before["step"]
    # speed = (steps of this run) / (seconds of this run)
    return (rows[-1]["step"] - start) / rows[-1][key]


def point_axes(trials: list[Trial]) -> list[str]:
    """The settings that tell the grid points apart: those that name a trial, but the seed."""
    return [a for a in name_axes(trials) if a != SEED_AXIS]


def grid_points(trials: list[Trial]) -> list[Point]:
    """The trials grouped by their settings without the seed, in trial order; a trial whose
    config could not be read is a point of its own (its settings are unknown)."""
    groups: dict[tuple, list[Trial]] = {}
    for t in trials:
        key = (tuple(sorted((k, repr(v)) for k, v in t.params.items() if k != SEED_AXIS)) if t.configured
               else ("trial", t.name))
        groups.setdefault(key, []).append(t)
    return [Point({k: v for k, v in g[0].params.items() if k != SEED_AXIS}, g) for g in groups.values()]


def point_label(p: Point, axes: list[str]) -> str:
    """"z_dim 2", "pack2 z_dim 2" ...; the trial's name for a trial of unknown settings."""
    if not p.trials[0].configured:
        return p.trials[0].name
    return describe(Trial(p.trials[0].name, "", p.params), axes) if axes else "the grid point"


def seeds_per_point(points: list[Point]) -> str:
    """"3 seeds per grid point", "2–3 seeds per grid point"."""
    lo, hi = min(p.n for p in points), max(p.n for p in points)
    return f"{_seeds(hi)} per grid point" if lo == hi else f"{lo}–{hi} seeds per grid point"


def agreement_text(exp: Experiment) -> str:
    """Which points are settled (all seeds agree) and which disagree; with one seed per point,
    that agreement cannot be judged."""
    points, axes = grid_points(exp.trials), point_axes(exp.trials)
    if all(p.n == 1 for p in points):
        return ("One seed per grid point: agreement across seeds cannot be judged, and one seed cannot tell a "
                f"settled verdict from luck ({SEEDS_HINT} runs three).")
    groups = {a: [p for p in points if p.agreement == a] for a in AGREEMENTS}
    head = f"Across seeds ({seeds_per_point(points)}): "
    parts = []
    if groups[SETTLED]:
        who = ", ".join(f"{point_label(p, axes)} {VERDICT_LABEL[p.majority]}" for p in groups[SETTLED])
        parts.append(f"{len(groups[SETTLED])} of {len(points)} points settled (all seeds agree): {who}")
    if groups[DISAGREE]:
        who = "; ".join(f"{point_label(p, axes)} — {p.verdict_text()}" for p in groups[DISAGREE])
        n = len(groups[DISAGREE])
        parts.append(f"{n}{f' of {len(points)}' if not parts else ''} "
                     f"{'disagrees' if n == 1 else 'disagree'}: {who}")
    if groups[OPEN]:
        who = ", ".join(point_label(p, axes) for p in groups[OPEN])
        parts.append(f"{len(groups[OPEN])} not yet settled (a seed without a verdict): {who}")
    if groups[ONE_SEED]:
        who = ", ".join(point_label(p, axes) for p in groups[ONE_SEED])
        parts.append(f"{len(groups[ONE_SEED])} with one seed only, whose agreement cannot be judged: {who}")
    return head + "; ".join(parts) + "."


def borderline_text(exp: Experiment) -> str:
    """The sentence naming the borderline verdicts; "" when there is none."""
    axes = name_axes(exp.trials)
    marked = [t for t in exp.trials if t.borderline]
    if not marked:
        return ""
    who = "; ".join(f"{describe(t, axes)} {t.status}{borderline_mark(t)}" for t in marked)
    return (f"{len(marked)} borderline (another draw of evaluation samples could give another verdict: at least "
            f"(1 - level)/2 of the bootstrap resamples do): {who}.")


# ---- points.csv and the table --------------------------------------------------------------

def point_rows(exp: Experiment) -> list[dict[str, Any]]:
    """One dict per grid point: its settings, seeds, verdict counts, agreement, and mean and sd
    of the key numbers over the seeds (the columns of points.csv)."""
    points, axes = grid_points(exp.trials), point_axes(exp.trials)
    metrics = key_metric_columns(exp)
    out = []
    for p in points:
        seen = p.first_seen(p.majority)
        row: dict[str, Any] = {"point": point_label(p, axes), **{a: p.params.get(a) for a in
                               ("z_dim", "lr_g", "lr_d", "family", "variant")},
                               "seeds": " ".join(str(t.params.get(SEED_AXIS, "")) for t in p.trials),
                               "n_seeds": p.n, "trials": " ".join(t.name for t in p.trials),
                               "agreement": p.agreement, "majority": p.majority, "verdicts": p.verdict_text()}
        row.update({f"n_{v.replace(' ', '_')}": p.counts.get(v, 0) for v in SEVERITY})
        row.update(first_seen_min=seen[0] if seen else None, first_seen_max=seen[1] if seen else None,
                   n_borderline=len(p.borderline))
        for m in [*metrics, "steps_per_sec"]:
            s = p.speed if m == "steps_per_sec" else p.spread(m)
            # the sd of one seed is no spread: left empty
            row[f"{m}_mean"], row[f"{m}_sd"] = (s.mean, s.sd if s.n > 1 else None) if s else (None, None)
        out.append(row)
    return out


def points_csv(exp: Experiment) -> str:
    """points.csv: one row per grid point (point_rows)."""
    return csv_text(point_rows(exp))


def trials_csv(exp: Experiment) -> str:
    """trials.csv: one row per trial (tables.table_rows), then its speed and its grid point's
    label, seed count, agreement and majority verdict (the point's own row is in points.csv)."""
    rows = table_rows(exp)
    axes = point_axes(exp.trials)
    of = {t.name: p for p in grid_points(exp.trials) for t in p.trials}
    for t, row in zip(exp.trials, rows, strict=True):
        p = of[t.name]
        notes = row.pop("notes")
        row.update(steps_per_sec=steps_per_sec(t), point=point_label(p, axes), point_seeds=p.n,
                   point_agreement=p.agreement, point_majority=p.majority, point_verdicts=p.verdict_text(),
                   notes=notes)
    return csv_text(rows)


def fmt_mean_sd(s: Spread | None) -> str:
    """"1.33 ± 0.58", "0.62" (one seed), "" (none)."""
    if s is None:
        return ""
    return f"{num(s.mean)} ± {num(s.sd)}" if s.n > 1 else num(s.mean)


def points_table(exp: Experiment) -> tuple[list[str], list[list[str]]]:
    """The report's "Grid points" table: header and rows of text."""
    points, axes = grid_points(exp.trials), point_axes(exp.trials)
    metrics = key_metric_columns(exp)
    head = ["grid point", "seeds", "verdicts", "agreement", "borderline",
            *(f"{m.replace('_', ' ')} (mean ± sd)" for m in metrics), "steps/s"]
    rows = [[point_label(p, axes), str(p.n), p.verdict_text(), p.agreement,
             f"{len(p.borderline)} of {p.n}" if p.borderline else "",
             *(fmt_mean_sd(p.spread(m)) for m in metrics), fmt_mean_sd(p.speed)] for p in points]
    return head, rows


# ---- remedies (sweep.variants) ---------------------------------------------------------------

def has_variants(exp: Experiment) -> bool:
    return any(t.params.get("variant") for t in exp.trials)


def remedies_table(exp: Experiment) -> tuple[list[str], list[list[str]]]:
    """Per variant (and per value of the other swept settings): in how many seeds it ended
    healthy, its other verdicts, the key numbers of its last evaluations, and its speed beside
    the baseline's ("baseline", else the first variant) at the same other settings."""
    points = grid_points(exp.trials)
    others = [a for a in point_axes(exp.trials) if a != "variant"]
    order = _variant_order(exp)

    def rest(p: Point) -> tuple:
        return tuple(repr(p.params.get(a)) for a in others)

    groups = list(dict.fromkeys(rest(p) for p in points))  # the other settings, in trial order
    points.sort(key=lambda p: (groups.index(rest(p)),
                               order.index(p.params.get("variant")) if p.params.get("variant") in order else len(order)))
    base = BASELINE if BASELINE in order else (order[0] if order else None)
    base_speed = {rest(p): p.speed for p in points if p.params.get("variant") == base}
    # the evidence beside the verdicts: a remedy that halves the near-copies without a healthy verdict
    # yet still shows here (the seeds' last evaluation, mean ± sd)
    evidence = key_metric_columns(exp) + [k for k in ("duplicate_share",) if any(t.final(k) is not None
                                                                                 for t in exp.trials)]
    head = ["variant", *(["setting"] if others else []), "healthy in", "other verdicts",
            *(f"{m.replace('_', ' ')} (mean ± sd)" for m in evidence), "steps/s (mean ± sd)", f"speed vs {base}"]
    rows = []
    for p in points:
        speed, ref = p.speed, base_speed.get(rest(p))
        # relative speed = mean steps/s of the variant ÷ mean steps/s of the baseline (1.00 = as fast)
        rel = f"{speed.mean / ref.mean:.2f}×" if speed and ref and ref.mean > 0 else ""
        bad = ", ".join(f"{c} {VERDICT_LABEL[v] if v != NO_VERDICT else 'no verdict'}"
                         for v, c in sorted(p.counts.items(), key=lambda x: SEVERITY.index(x[0])) if v != "healthy")
        rows.append([str(p.params.get("variant") or "(none)"),
                     *([" ".join(f"{a} {fmt_value(p.params.get(a))}" for a in others)] if others else []),
                     f"{p.counts.get('healthy', 0)} of {_seeds(p.n)}", bad or "—",
                     *(fmt_mean_sd(p.spread(m)) for m in evidence), fmt_mean_sd(speed), rel])
    return head, rows


def _variant_order(exp: Experiment) -> list[str]:
    """The variants in sweep.variants order (else as the trials come)."""
    names = [variant_name(v) for v in exp.config.sweep.variants] if exp.config is not None else []
    seen = [v for v in names if v]
    for t in exp.trials:
        v = t.params.get("variant")
        if v and v not in seen:
            seen.append(v)
    return seen
