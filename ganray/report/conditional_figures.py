"""The conditional section's figure: per-class FCD and per-class coverage of every conditional trial
as two heatmaps (trials down, classes across), the classes that collapsed or were ignored outlined,
so which classes collapse in which trials reads at a glance."""
from __future__ import annotations

import math

from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patches import Rectangle

from ganray.report.conditions import COLLAPSED, IGNORES, class_finding, conditions_of, eval_thresholds, value_at
from ganray.report.figures import new_figure, short_label, to_png
from ganray.report.model import VERDICT_COLOUR, Experiment, Trial
from ganray.report.tables import fmt_metric, name_axes

ANNOTATE_MAX = 20  # classes: above this many the cells carry no numbers
PER_CLASS_FIGURE = "condition_fcd_coverage.png"
PER_CLASS_CAPTION = "Per-class FCD and coverage at the last evaluation"
PER_CLASS_FIGURE_EXPLAIN = (
    "One row per trial, one column per class. Left: FCD of the samples asked for the class against real images of "
    "it (lower is better; log colour scale when it spans more than 20×). Right: coverage of the real images of "
    "the class by its samples (higher is better; the colour scale ends at what identical distributions of these "
    "sizes give). Outlined: the classes whose samples collapsed (G ignores z; blue) or that G ignored (the "
    "samples are of another class; dark blue); blank: left out (too few samples).")


def _grid(trials: list[Trial], key: str) -> list[list[float | None]]:
    out = []
    for t in trials:
        per = conditions_of(t)
        out.append([value_at(per, key, k) for k in range(len(per["names"]))])
    return out


def figure_per_class(exp: Experiment, trials: list[Trial]) -> bytes | None:
    """The two heatmaps, or None when no trial has a per-class FCD or coverage."""
    trials = [t for t in trials if conditions_of(t) is not None]
    if not trials or not any(v is not None for key in ("fcd", "coverage") for r in _grid(trials, key) for v in r):
        return None
    names = max((conditions_of(t)["names"] for t in trials), key=len)
    k = len(names)
    axes_names = name_axes(exp.trials)
    fig = new_figure(min(18.0, 2.0 + 0.55 * k) * 2, 1.2 + 0.42 * len(trials))
    panels = fig.subplots(1, 2, squeeze=False)[0]
    expected = [v for t in trials for v in (conditions_of(t).get("expected_coverage") or []) if isinstance(v, (int, float))]
    for ax, key, title, cmap in ((panels[0], "fcd", "per-class FCD (lower is better)", "viridis_r"),
                                 (panels[1], "coverage", "per-class coverage (higher is better)", "viridis")):
        values = _grid(trials, key)
        flat = [v for r in values for v in r if v is not None and math.isfinite(v)]
        if key == "fcd":
            lo, hi = (min(flat), max(flat)) if flat else (1.0, 1.0)
            norm = LogNorm(max(lo, 1e-3), max(hi, lo * 1.01, 1e-3)) if flat and lo > 0 and hi / lo > 20 \
                else Normalize(min(flat, default=0.0), max(flat, default=1.0))
        else:
            norm = Normalize(0.0, max(expected, default=1.0))
        m = [[math.nan if v is None else v for v in r] + [math.nan] * (k - len(r)) for r in values]
        im = ax.imshow(m, cmap=colormaps[cmap], norm=norm, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8)
        for i, t in enumerate(trials):
            per, th = conditions_of(t), eval_thresholds(t)
            for j in range(len(per["names"])):
                f = class_finding(per, j, th)
                if f.startswith(COLLAPSED) or IGNORES in f:
                    colour = VERDICT_COLOUR["collapsed_per_condition" if f.startswith(COLLAPSED)
                                            else "ignores_condition"]
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=colour, linewidth=2))
                if k <= ANNOTATE_MAX and values[i][j] is not None:
                    text = f"{values[i][j]:.2f}" if key == "coverage" else fmt_metric(values[i][j])
                    ax.text(j, i, text, ha="center", va="center", fontsize=6, color="white",
                            bbox={"facecolor": "black", "alpha": 0.35, "pad": 0.5, "linewidth": 0})
        ax.set_title(title, fontsize=9)
        ax.set_yticks(range(len(trials)), [short_label(t, axes_names) for t in trials], fontsize=7)
        ax.set_xticks(range(k) if k <= ANNOTATE_MAX else [], [str(n) for n in names] if k <= ANNOTATE_MAX else [],
                      fontsize=7)
        ax.set_xlabel("class", fontsize=8)
    return to_png(fig)
