"""What a conditional trial's record says condition by condition: verdict.json's "conditions"
(ganray.metrics.conditional: names, n, hits, fidelity, spread_ratio, duplicate_share, fcd, coverage,
expected_coverage per class, None where left out) read against the trial's thresholds (eval.*), and
which row of the fixed grid shows each class. Used by the conditional section and its figure."""
from __future__ import annotations

from typing import Any

import numpy as np

from ganray.config import EvalConfig
from ganray.report.model import Trial
from ganray.report.tables import CONDITIONAL_FAMILIES, fmt_metric

GRID_ROWS = 10  # ganray.train.sampling.GRID_ROWS (torch there): conditions in the fixed grid, at most
TABLE_CLASSES = 20  # the per-class table lists every class up to this many (above: grid rows and findings)
PER_CLASS_HEAD = ["class", "grid row", "samples", "fidelity", "spread ratio", "near-copies", "FCD", "coverage",
                  "finding"]
PER_CLASS_EXPLAIN = (
    "One row per condition (class) at the trial's last evaluation. Fidelity: the share of its samples the "
    "reference classifier puts in the class asked for. Spread ratio: how far apart its samples lie against real "
    "images of the class (classifier features; ≈ 1 like the data, near 0: G ignores z). Near-copies: the share "
    "of its samples that nearly copy another of its samples. FCD and coverage against real images of the class "
    "(coverage in brackets: what identical distributions of these sizes give). Finding: the thresholds it "
    "crossed (eval.* in its config). Grid row: its row of the sample grid (and the caption it was drawn for, "
    "where the record names it), the same fixed z in every column. Above 20 classes the table lists the grid's "
    "classes and those with a finding; verdict.json holds every class.")


def is_conditional(t: Trial) -> bool:
    return t.params.get("family") in CONDITIONAL_FAMILIES or isinstance((t.verdict or {}).get("conditions"), dict)


def conditions_of(t: Trial) -> dict[str, Any] | None:
    c = (t.verdict or {}).get("conditions")
    return c if isinstance(c, dict) and isinstance(c.get("names"), list) else None


def value_at(per: dict[str, Any], key: str, k: int) -> float | None:
    v = per.get(key)
    x = v[k] if isinstance(v, list) and k < len(v) else None
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def grid_row_classes(n_classes: int) -> list[int]:
    """The class index of each fixed-grid row: up to GRID_ROWS of the classes, evenly spaced
    (ganray.train.sampling.grid_classes: linspace(0, K − 1, R), rounded half to even)."""
    return [int(x) for x in np.round(np.linspace(0, n_classes - 1, min(GRID_ROWS, n_classes)))]


def eval_thresholds(t: Trial) -> EvalConfig:
    return t.config.eval if t.config is not None else EvalConfig()


COLLAPSED, IGNORES = "collapsed (G ignores z)", "ignores the condition"  # the two findings of a class


def class_finding(per: dict[str, Any], k: int, th: EvalConfig) -> str:
    """What class k's numbers say against the verdict's thresholds: "collapsed: spread ratio 0.04 <
    0.25; ignores the condition: fidelity 10% < 50%", or "" when they cross none."""
    out, why = [], []
    s, d, f = (value_at(per, key, k) for key in ("spread_ratio", "duplicate_share", "fidelity"))
    if s is not None and s < th.condition_spread_collapsed:
        why.append(f"spread ratio {fmt_metric(s)} < {th.condition_spread_collapsed:g}")
    if d is not None and d >= th.duplicate_collapsed:
        why.append(f"{d:.0%} near-copies ≥ {th.duplicate_collapsed:.0%}")
    if why:
        out.append(f"{COLLAPSED}: " + ", ".join(why))
    if f is not None and f < th.fidelity_ignores:
        out.append(f"{IGNORES}: fidelity {f:.0%} < {th.fidelity_ignores:.0%}")
    return "; ".join(out)


def per_class_rows(t: Trial) -> list[list[str]]:
    """The per-class table of trial t: PER_CLASS_HEAD's columns, one row per class of its conditions record."""
    per = conditions_of(t)
    if per is None:
        return []
    names, th = [str(x) for x in per["names"]], eval_thresholds(t)
    rows_of = {k: r for r, k in enumerate(grid_row_classes(len(names)))}
    captions = per.get("grid_captions") if isinstance(per.get("grid_captions"), list) else []
    out = []
    for k in shown_classes(per, th):
        name, r = names[k], rows_of.get(k)
        row = "" if r is None else str(r + 1) + (f" “{captions[r]}”" if r < len(captions) and captions[r] else "")
        n, hits = value_at(per, "n", k), value_at(per, "hits", k)
        cov, exp = value_at(per, "coverage", k), value_at(per, "expected_coverage", k)
        fid = value_at(per, "fidelity", k)
        out.append([name, row, fmt_metric(n),
                    (f"{fid:.0%}" + (f" ({hits:.0f} of {n:.0f})" if hits is not None and n else "")) if fid is not None
                    else "", fmt_metric(value_at(per, "spread_ratio", k)), _pct(value_at(per, "duplicate_share", k)),
                    fmt_metric(value_at(per, "fcd", k)),
                    (fmt_metric(cov) + (f" ({fmt_metric(exp)})" if exp is not None else "")) if cov is not None else "",
                    class_finding(per, k, th)])
    return out


def shown_classes(per: dict[str, Any], th: EvalConfig) -> list[int]:
    """The classes of the per-class table: every one up to TABLE_CLASSES, else those in the grid's rows
    and those with a finding (verdict.json keeps them all)."""
    k = len(per["names"])
    if k <= TABLE_CLASSES:
        return list(range(k))
    grid = set(grid_row_classes(k))
    return [j for j in range(k) if j in grid or class_finding(per, j, th)]


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.0%}"


def collapsed_text(t: Trial) -> str:
    """"Classes that collapsed (G ignores z): 3, 7. Conditions ignored: 5. Worst per-class FCD: class 3
    (2369); worst coverage: class 1 (0.00)." — from the conditions record."""
    per = conditions_of(t)
    if per is None:
        return ""
    names, th = [str(x) for x in per["names"]], eval_thresholds(t)
    found = [(k, class_finding(per, k, th)) for k in range(len(names))]
    collapsed = [names[k] for k, f in found if f.startswith(COLLAPSED)]
    ignored = [names[k] for k, f in found if IGNORES in f]
    parts = [f"Classes that collapsed (G ignores z): {', '.join(collapsed)}." if collapsed
             else "No class collapsed (every spread ratio and near-copy share within the thresholds)."]
    if ignored:
        parts.append(f"Conditions ignored (fidelity below {th.fidelity_ignores:.0%}): {', '.join(ignored)}.")
    for key, label, worst in (("fcd", "per-class FCD", max), ("coverage", "per-class coverage", min)):
        vals = [(v, k) for k in range(len(names)) if (v := value_at(per, key, k)) is not None]
        if vals:
            v, k = worst(vals)
            parts.append(f"Worst {label}: class {names[k]} ({fmt_metric(v)}).")
    return " ".join(parts)
