"""The report's tables: the summary paragraph, the per-trial rows of report.md/report.html
and trials.csv, and how their values are written."""
from __future__ import annotations

import csv
import io
import math
from typing import Any

from ganray.config import is_2d
from ganray.report.model import NO_VERDICT, PARAM_AXES, SEVERITY, SUMMARY_LABEL, Experiment, Trial

# Final-value columns of the table and of trials.csv (names from ganray/metrics).
TABLE_METRICS = ("classes_covered", "kl_uniform", "fcd", "precision", "recall")
TABLE_METRICS_2D = ("modes_covered", "hq_share", "reverse_kl")
# FID, KID, IS in Inception features: the final evaluation's, with eval.inception (columns only when present).
INCEPTION_METRICS = ("fid", "kid_inception", "inception_score")
CSV_METRICS = ("classes_covered", "kl_uniform", "fcd", "kid", "precision", "recall", "density", "coverage",
               "fixed_z_flip_rate", "max_class_share", "mean_confidence", "modes_covered", "hq_share", "reverse_kl",
               *INCEPTION_METRICS)
# Conditional (cgan, stackgan) and translation (cyclegan) runs: their table columns, and the further
# trials.csv columns (there only when a trial has them: ganray.metrics.conditional, .translation)
CONDITIONAL_FAMILIES = ("cgan", "stackgan")
TRANSLATION_FAMILIES = ("cyclegan",)
TABLE_METRICS_CONDITIONAL = ("classes_covered", "fcd", "condition_fidelity", "condition_spread_ratio_min",
                             "condition_duplicate_share_max")
TABLE_METRICS_TRANSLATION = ("content_kept_ab", "content_kept_ba", "translation_spread_ratio_ab",
                             "translation_spread_ratio_ba", "fcd_ab", "fcd_ba")
EXTRA_CSV_METRICS = ("condition_fidelity", "condition_fidelity_min", "condition_spread_ratio",
                     "condition_spread_ratio_min", "condition_duplicate_share", "condition_duplicate_share_max",
                     "condition_fcd", "condition_fcd_max", "condition_coverage", "condition_coverage_min",
                     *TABLE_METRICS_TRANSLATION, "translation_duplicate_share_ab", "translation_duplicate_share_ba",
                     "cycle_l1_a", "cycle_l1_b")


def varying_axes(trials: list[Trial]) -> list[str]:
    """The sweep parameters that take more than one value among the trials."""
    return [p for p, *_ in PARAM_AXES if len({repr(t.params.get(p)) for t in trials}) > 1]


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "" if v is None else str(v)


def name_axes(trials: list[Trial]) -> list[str]:
    """The settings that name a trial: the varying ones, but those a variant sets (a setting
    with one value per variant, e.g. the lr_d of a "ttur" variant, is named by the variant)."""
    axes = varying_axes(trials)
    if "variant" not in axes:
        return axes
    values: dict[tuple[str, Any], set[str]] = {}  # (axis, variant) -> the axis's values in that variant
    for t in trials:
        for a in axes:
            values.setdefault((a, t.params.get("variant")), set()).add(repr(t.params.get(a)))
    return [a for a in axes if a == "variant" or any(len(v) > 1 for (b, _), v in values.items() if b == a)]


def describe(t: Trial, axes: list[str]) -> str:
    """"z_dim 1" when only z_dim varies, "z_dim 1 lr_g 0.0002" when lr_g varies too; a variant
    by its name, first ("pack2 z_dim 1 seed 0")."""
    axes = sorted(axes, key=lambda a: a != "variant")
    parts = [str(t.params[p]) if p == "variant" else f"{p} {fmt_value(t.params[p])}"
             for p in axes if p in t.params and (p != "variant" or t.params[p])]
    return " ".join(parts) or t.name


def summary(exp: Experiment) -> str:
    """One paragraph: "2 of 5 trials collapsed: z_dim 1 at step 200, z_dim 2 at step 300; ..."."""
    trials, axes = exp.trials, name_axes(exp.trials)
    n = len(trials)
    by: dict[str, list[Trial]] = {}
    for t in trials:
        by.setdefault(t.verdict_name, []).append(t)
    sentences = []
    for v in SEVERITY:
        group = by.get(v, [])
        if not group:
            continue
        if v in ("healthy", NO_VERDICT):
            who = ", ".join(describe(t, axes) for t in group)
        else:
            who = ", ".join(describe(t, axes) + (f" at step {t.verdict_step}" if t.verdict_step is not None else "")
                            for t in group)
        head = f"{len(group)} of {n} trials" if not sentences else f"{len(group)}"
        sentences.append(f"{head} {SUMMARY_LABEL[v]}: {who}")
    text = "; ".join(sentences) + "."
    stopped = [t for t in trials if t.stopped_early]
    if stopped:
        text += (f" {len(stopped)} stopped early by the collapse stopper "
                 f"({', '.join(f'{describe(t, axes)} at step {t.steps_run}' for t in stopped)}).")
    return text


def fmt_metric(v: float | None) -> str:
    if v is None:
        return ""
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}" if abs(v) >= 1e-3 else f"{v:.2e}"


def table_rows(exp: Experiment) -> list[dict[str, Any]]:
    """One dict per trial: the columns of trials.csv (raw values) and of the report tables."""
    rows = []
    shown = _base_columns(exp)  # the table's columns are in every row, with a value or not
    extra = [m for m in EXTRA_CSV_METRICS if m in shown or any(t.final(m) is not None for t in exp.trials)]
    for t in exp.trials:
        p = t.params
        row: dict[str, Any] = {
            "trial": t.name,
            "z_dim": p.get("z_dim"), "lr_g": p.get("lr_g"), "lr_d": p.get("lr_d"),
            "family": p.get("family"), "variant": p.get("variant"), "seed": p.get("seed"),
            "steps": t.steps_run, "total_steps": t.total_steps,
            "stopped_early": t.stopped_early,
            "verdict": t.verdict_name, "status": t.status, "verdict_step": t.verdict_step,
            "reasons": "\n".join(t.reasons),  # one reason per line (reasons contain "; " themselves)
            "borderline": t.borderline if t.margin is not None else None,
            **{f"margin_{k}": (t.margin or {}).get(k) for k in MARGIN_KEYS},
        }
        for m in [*CSV_METRICS, *extra]:
            row[m] = t.final(m)
        row["notes"] = "\n".join(t.notes)
        rows.append(row)
    return rows


def csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV of dicts with the same keys (None as an empty cell)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


# ---- figures -------------------------------------------------------------------------------

COLUMNS = (("trial", "trial"), ("z_dim", "z_dim"), ("lr_g", "lr_g"), ("lr_d", "lr_d"), ("family", "family"),
            ("variant", "variant"), ("seed", "seed"), ("steps", "steps"), ("stopped_early", "stopped early"),
            ("status", "verdict"))


def cell(row: dict[str, Any], key: str) -> str:
    v = row[key]
    if key == "steps":
        return "" if v is None else (f"{v} / {row['total_steps']}" if row["total_steps"] else str(v))
    if key == "stopped_early":
        return "yes" if v else "no"
    if isinstance(v, float):
        return fmt_metric(v) if key in CSV_METRICS else fmt_value(v)
    return "" if v is None else str(v)


def metric_columns(exp: Experiment) -> list[str]:
    """The table's metric columns: the image ones or the 2D-mixture ones, by the sweep's dataset
    (without a sweep config: the 2D ones when only those were logged); then FID, KID and IS
    when a trial has them."""
    return _base_columns(exp) + [m for m in INCEPTION_METRICS if any(t.final(m) is not None for t in exp.trials)]


KEY_METRICS = ("classes_covered", "kl_uniform", "fcd", "modes_covered", "hq_share", "reverse_kl",
               "condition_fidelity", "condition_spread_ratio_min", *TABLE_METRICS_TRANSLATION[:4])


def key_metric_columns(exp: Experiment) -> list[str]:
    """The numbers summarised over seeds: classes covered, KL, FCD (2D: modes covered, HQ share, reverse KL)."""
    return [m for m in _base_columns(exp) if m in KEY_METRICS]


def family_kind(exp: Experiment) -> str:
    """"conditional" or "translation" when every trial (else the sweep config) is of such a family; else ""."""
    fams = {t.params.get("family") for t in exp.trials} - {None}
    if not fams and exp.config is not None:
        fams = {exp.config.train.family}
    if fams and fams <= set(CONDITIONAL_FAMILIES):
        return "conditional"
    return "translation" if fams and fams <= set(TRANSLATION_FAMILIES) else ""


def _base_columns(exp: Experiment) -> list[str]:
    kind = family_kind(exp)
    if kind:
        return list(TABLE_METRICS_CONDITIONAL if kind == "conditional" else TABLE_METRICS_TRANSLATION)
    if exp.config is not None:
        return list(TABLE_METRICS_2D if is_2d(exp.config.data.dataset) else TABLE_METRICS)
    two_d = any(t.final("modes_covered") is not None for t in exp.trials) and not any(
        t.final("classes_covered") is not None for t in exp.trials)
    return list(TABLE_METRICS_2D if two_d else TABLE_METRICS)


# verdict.json's "margin" (ganray/collapse.py): the keys trials.csv gets as margin_<key>
MARGIN_KEYS = ("statistic", "value", "threshold", "low", "high", "level", "method")
# Short names of the statistics a verdict's margin names.
STAT_LABEL = {"kl_uniform": "KL", "classes_covered": "classes covered", "duplicate_share": "duplicate share",
              "near_real_share": "near-real share", "hq_share": "HQ share", "modes_covered": "modes covered",
              "reverse_kl": "reverse KL", "max_class_share": "largest class share",
              "mean_confidence": "classifier confidence"}


def margin_text(t: Trial) -> str | None:
    """"KL 0.103, 95% 0.09–0.12 vs 0.1": the deciding statistic, its interval and its threshold."""
    m = t.margin
    if not m or not all(isinstance(m.get(k), (int, float)) for k in ("value", "low", "high", "threshold")):
        return None
    stat = str(m.get("statistic", "statistic"))
    level = m.get("level")
    pct = f"{100 * level:g}% " if isinstance(level, (int, float)) else ""
    return (f"{STAT_LABEL.get(stat, stat.replace('_', ' '))} {fmt_metric(m['value'])}, "
            f"{pct}{fmt_metric(m['low'])}–{fmt_metric(m['high'])} vs {fmt_metric(m['threshold'])}")


def borderline_mark(t: Trial) -> str:
    """" (borderline: KL 0.103, 95% 0.09–0.12 vs 0.1)" after a borderline verdict, else ""."""
    if not t.borderline:
        return ""
    text = margin_text(t)
    return f" (borderline: {text})" if text else " (borderline)"


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
