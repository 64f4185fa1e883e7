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


def varying_axes(trials: list[Trial]) -> list[str]:
    """The sweep parameters that take more than one value among the trials."""
    return [p for p, *_ in PARAM_AXES if len({repr(t.params.get(p)) for t in trials}) > 1]


def fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "" if v is None else str(v)


def describe(t: Trial, axes: list[str]) -> str:
    """"z_dim 1" when only z_dim varies, "z_dim 1 lr_g 0.0002" when lr_g varies too."""
    parts = [f"{p} {fmt_value(t.params[p])}" for p in axes if p in t.params]
    return " ".join(parts) or t.name


def summary(exp: Experiment) -> str:
    """One paragraph: "2 of 5 trials collapsed: z_dim 1 at step 200, z_dim 2 at step 300; ..."."""
    trials, axes = exp.trials, varying_axes(exp.trials)
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
    for t in exp.trials:
        p = t.params
        row: dict[str, Any] = {
            "trial": t.name,
            "z_dim": p.get("z_dim"), "lr_g": p.get("lr_g"), "lr_d": p.get("lr_d"),
            "family": p.get("family"), "seed": p.get("seed"),
            "steps": t.steps_run, "total_steps": t.total_steps,
            "stopped_early": t.stopped_early,
            "verdict": t.verdict_name, "status": t.status, "verdict_step": t.verdict_step,
            "reasons": "\n".join(t.reasons),  # one reason per line (reasons contain "; " themselves)
        }
        for m in CSV_METRICS:
            row[m] = t.final(m)
        row["notes"] = "\n".join(t.notes)
        rows.append(row)
    return rows


def trials_csv(exp: Experiment) -> str:
    rows = table_rows(exp)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


# ---- figures -------------------------------------------------------------------------------

COLUMNS = (("trial", "trial"), ("z_dim", "z_dim"), ("lr_g", "lr_g"), ("lr_d", "lr_d"), ("family", "family"),
            ("seed", "seed"), ("steps", "steps"), ("stopped_early", "stopped early"), ("status", "verdict"))


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


def _base_columns(exp: Experiment) -> list[str]:
    if exp.config is not None:
        return list(TABLE_METRICS_2D if is_2d(exp.config.data.dataset) else TABLE_METRICS)
    two_d = any(t.final("modes_covered") is not None for t in exp.trials) and not any(
        t.final("classes_covered") is not None for t in exp.trials)
    return list(TABLE_METRICS_2D if two_d else TABLE_METRICS)


def md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
