"""The report's figures, drawn from the trials' records: class histograms, the verdict
heatmap, coverage and FCD over training, and the loss curves. Each is PNG bytes, or None when
no trial has what it shows."""
from __future__ import annotations

import io
import math
import textwrap
from collections import Counter
from typing import Any, Callable

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from ganray.report.model import (
    COVERAGE_KEYS,
    NO_VERDICT,
    PARAM_AXES,
    SEVERITY,
    VERDICT_COLOUR,
    VERDICT_LABEL,
    Experiment,
    Trial,
)
from ganray.report.points import DISAGREE, Point
from ganray.report.tables import describe, fmt_metric, fmt_value, name_axes


def new_figure(w_in: float, h_in: float):
    # The object-oriented API with the Agg canvas: no pyplot global state, safe in any thread.

    fig = Figure(figsize=(w_in, h_in), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def short_label(t: Trial, axes: list[str]) -> str:
    return describe(t, axes) if axes else t.name


def _grid_positions(trials: list[Trial]) -> tuple[list[Any], list[tuple], dict[str, tuple[int, int]]]:
    """Columns = z_dim values, rows = the other parameter combinations: {trial: (row, col)}."""
    cols = sorted({t.params.get("z_dim") for t in trials}, key=lambda v: (v is None, v if v is not None else 0))
    others = [p for p, *_ in PARAM_AXES if p != "z_dim"]

    def rest(t: Trial) -> tuple:
        return tuple(repr(t.params.get(p)) for p in others)

    rows = sorted({rest(t) for t in trials})
    pos = {t.name: (rows.index(rest(t)), cols.index(t.params.get("z_dim"))) for t in trials}
    return cols, rows, pos


def figure_class_histograms(exp: Experiment) -> bytes | None:
    """Class histogram of generated samples, one panel per trial: z_dim across, other settings down."""
    trials = [t for t in exp.trials if t.histogram is not None]
    if not trials:
        return None
    other_axes = [a for a in name_axes(exp.trials) if a != "z_dim"]
    cols, rows, pos = _grid_positions(trials)
    k_max = max(len(t.histogram.shares) for t in trials)
    panel_w = 2.7 if k_max <= 12 else (3.6 if k_max <= 30 else 4.0)
    width_in = max(5.5, panel_w * len(cols))
    fig = new_figure(width_in, 1.2 + 2.4 * len(rows))
    grid = fig.subplots(len(rows), len(cols), squeeze=False, sharey=True)
    for ax in grid.flat:
        ax.set_visible(False)
    y_top = max(max(t.histogram.shares) for t in trials)
    for t in trials:
        r, c = pos[t.name]
        ax = grid[r][c]
        ax.set_visible(True)
        h = t.histogram
        k = len(h.shares)
        pct = [100 * s for s in h.shares]
        if k <= 30:
            ax.bar(range(k), pct, color=VERDICT_COLOUR[t.verdict_name], edgecolor="black", linewidth=0.4)
            ax.set_xticks(range(k), h.class_names, fontsize=7 if k > 12 else 8)
        else:  # 1000 stacked-MNIST modes: shares sorted from the largest down
            ax.plot(range(k), sorted(pct, reverse=True), color=VERDICT_COLOUR[t.verdict_name])
            ax.set_xlabel("modes, by share", fontsize=8)
        n_real = k - 1 if h.class_names[-1] == "off" else k
        # the share every class would hold if G covered them uniformly: 100% / K
        ax.axhline(100 / n_real, color="0.3", linestyle="--", linewidth=0.8)
        # a class counts as covered when it holds ≥ 10% of its uniform share (as class_coverage)
        covered = sum(1 for s in h.shares[:n_real] if s >= 0.1 / n_real)
        head = f"z_dim {fmt_value(t.params.get('z_dim'))}" + (f" · {describe(t, other_axes)}" if other_axes else "")
        ax.set_title(f"{head}\n{t.status}\n{covered}/{n_real} classes covered (step {h.step})", fontsize=8,
                     color=text_colour(t.verdict_name))
        ax.set_ylim(0, min(100.0, 1.15 * 100 * y_top + 2))
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for row in grid:
        row[0].set_ylabel("% of samples", fontsize=8)
    how = {(t.histogram.n, t.histogram.labeller, t.histogram.origin) for t in trials}
    if len(how) == 1:
        n, labeller, origin = how.pop()
        where = "its newest checkpoint" if origin == "checkpoint" else "its last evaluation"
        note = f"{f'{n:,} samples' if n else 'samples'} per trial from {where}, labelled by {labeller}"
    else:
        note = "samples per trial as captioned in the report"
    note = textwrap.fill(note, width=int(width_in * 12))  # ~12 characters of 9-pt text per inch
    fig.suptitle(f"Class histogram of generated samples (dashed: the uniform share)\n{note}", fontsize=9)
    return to_png(fig)


def text_colour(verdict: str) -> str:
    return "#666666" if verdict == NO_VERDICT else VERDICT_COLOUR[verdict]


LINE_STYLES = ("-", "--", ":", "-.")
PER_TRIAL_LEGEND_MAX = 12  # above this many trials the legend names z_dim colours and line styles instead


def _line_styles(trials: list[Trial]) -> tuple[dict[str, tuple[Any, str]], list[tuple[str, Any, str]]]:
    """{trial: (colour, line style)} and the legend entries (label, colour, style).

    Colour = z_dim on a sequential scale (kept apart from the categorical verdict colours, so a
    line's colour never reads as a verdict); style = the other swept settings."""

    z_values = sorted({t.params.get("z_dim") for t in trials}, key=lambda v: (v is None, v or 0))
    others = [a for a in name_axes(trials) if a != "z_dim"]
    combos = sorted({describe(t, others) for t in trials}) if others else [""]
    cmap = colormaps["viridis"]

    def colour(z: Any) -> Any:
        return cmap(0.9 * z_values.index(z) / max(len(z_values) - 1, 1))

    styles = {t.name: (colour(t.params.get("z_dim")),
                       LINE_STYLES[combos.index(describe(t, others) if others else "") % len(LINE_STYLES)])
              for t in trials}
    if len(trials) <= PER_TRIAL_LEGEND_MAX:
        axes = name_axes(trials)
        legend = [(f"{short_label(t, axes)} ({t.status})", *styles[t.name]) for t in trials]
    else:
        legend = [(f"z_dim {fmt_value(z)}", colour(z), "-") for z in z_values]
        legend += [(c, "black", LINE_STYLES[i % len(LINE_STYLES)]) for i, c in enumerate(combos) if c]
    return styles, legend


def figure_coverage_fcd(exp: Experiment) -> bytes | None:
    """Classes (or modes) covered and FCD over steps, one line per trial; X where a trial stopped early."""
    trials = [t for t in exp.trials if any(t.series(k)[0] for k in (*COVERAGE_KEYS, "fcd"))]
    if not trials:
        return None
    styles, legend = _line_styles(trials)
    cov_key = Counter(t.coverage_key for t in trials).most_common(1)[0][0]
    fig = new_figure(11.0, 4.4)
    ax_cov, ax_fcd = fig.subplots(1, 2)
    for t in trials:
        colour, style = styles[t.name]
        for ax, key in ((ax_cov, t.coverage_key), (ax_fcd, "fcd")):
            steps, values = t.series(key)
            if not steps:
                continue
            ax.plot(steps, values, linestyle=style, marker="o", markersize=3, color=colour, linewidth=1.4)
            if t.stopped_early:
                ax.plot(steps[-1], values[-1], marker="X", markersize=10, color=colour, markeredgecolor="black")
    stopped = " (X: stopped early)" if any(t.stopped_early for t in trials) else ""
    ax_cov.set_title(f"{cov_key.replace('_', ' ')}{stopped}", fontsize=10)
    ax_cov.set_ylabel(cov_key.replace("_", " "))
    ax_cov.set_ylim(0, max([v for t in trials for v in t.series(t.coverage_key)[1]] + [1]) + 0.5)
    ax_cov.yaxis.get_major_locator().set_params(integer=True)
    ax_fcd.set_title("Fréchet distance in classifier features (lower is better)", fontsize=10)
    ax_fcd.set_ylabel("FCD")
    fcd_values = [v for t in trials for v in t.series("fcd")[1]]
    if fcd_values and all(v > 0 for v in fcd_values) and max(fcd_values) / min(fcd_values) > 20:
        ax_fcd.set_yscale("log")
    for ax in (ax_cov, ax_fcd):
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, linestyle=s, marker="o", markersize=3, label=label) for label, c, s in legend]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    return to_png(fig)


def _is_loss(key: str) -> bool:
    return key.startswith("loss_") or key in ("loss", "kl", "mse")


def figure_loss_curves(exp: Experiment) -> bytes | None:
    """loss_D and loss_G (and any other loss_*; the VAE's loss, kl and mse) over steps, one panel
    per trial; a dotted line at the step the trial's bad verdict was first seen."""
    trials = [t for t in exp.trials if any(_is_loss(k) for r in t.rows for k in r)]
    if not trials:
        return None
    axes_names = name_axes(exp.trials)
    n_cols = min(len(trials), 5)
    n_rows = math.ceil(len(trials) / n_cols)
    fig = new_figure(3.0 * n_cols + 0.6, 0.9 + 2.4 * n_rows)
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in grid.flat[len(trials):]:
        ax.set_visible(False)
    keys_all: list[str] = []
    for ax, t in zip(grid.flat, trials):
        keys = sorted({k for r in t.rows for k in r if _is_loss(k)})
        for key in keys:
            steps, values = t.series(key)
            ax.plot(steps, values, label=key, linewidth=1.2, color=f"C{_loss_index(key, keys_all)}")
        if t.verdict_name not in ("healthy", NO_VERDICT) and t.verdict_step is not None:
            ax.axvline(t.verdict_step, color=VERDICT_COLOUR[t.verdict_name], linestyle=":", linewidth=1.5)
        ax.set_title(f"{short_label(t, axes_names)}\n{t.status}", fontsize=8, color=text_colour(t.verdict_name))
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel("loss", fontsize=8)
    for ax in grid[-1]:
        ax.set_xlabel("generator step", fontsize=8)
    handles = [Line2D([], [], color=f"C{i}", label=k) for i, k in enumerate(keys_all)]
    handles.append(Line2D([], [], color="0.4", linestyle=":", label="bad verdict first seen"))
    # below the panels: above them it would run into the title when there are only one or two
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Training losses", fontsize=10)
    return to_png(fig)


def _loss_index(key: str, seen: list[str]) -> int:
    """The same colour for the same loss in every panel."""
    if key not in seen:
        seen.append(key)
    return seen.index(key)


def _lr_key(t: Trial, lr_axes: list[str]) -> tuple:
    return tuple(t.params.get(p) for p in lr_axes)


def _heatmap_text(group: list[Trial]) -> str:
    """One trial: its verdict, when, and its numbers; several (seeds): "2/3 collapsed" per
    verdict, majority first, and the range of steps the majority verdict was first seen."""
    if len(group) == 1:
        t = group[0]
        text = t.status.replace(" (still running or failed)", "").replace(" at step ", "\nat step ")
        if t.stopped_early:
            text += f"\nstopped at step {t.steps_run}"
        numbers = [f"{label} {fmt_metric(t.final(key))}" for key, label in
                   ((t.coverage_key, "classes" if t.coverage_key == "classes_covered" else "modes"),
                    ("fcd", "FCD")) if t.final(key) is not None]
        if numbers:
            text += "\n" + " · ".join(numbers)
        return text + ("\nborderline" if t.borderline else "")
    p = Point({}, group)
    order = sorted(p.counts, key=lambda v: (v != p.majority, SEVERITY.index(v)))
    lines = [f"{p.counts[v]}/{p.n} {VERDICT_LABEL[v]}" for v in order]
    seen = p.first_seen(p.majority) if p.majority not in ("healthy", NO_VERDICT) else None
    if seen is not None:
        lines.insert(1, f"first seen at {seen[0]}" + (f"–{seen[1]}" if seen[1] != seen[0] else ""))
    if p.borderline:
        lines.append(f"{len(p.borderline)}/{p.n} borderline")
    return "\n".join(lines)


def figure_verdict_heatmap(exp: Experiment) -> bytes:
    """z_dim (rows) × learning rates, families and variants (columns); a cell with several
    trials (seeds) takes the colour of the majority verdict, lists the count of each, and is
    hatched when the seeds disagree."""

    trials = exp.trials
    lr_axes = [p for p in ("lr_g", "lr_d", "family", "variant") if p in name_axes(trials)] or ["lr_g", "lr_d"]
    z_values = sorted({t.params.get("z_dim") for t in trials}, key=lambda v: (v is None, v or 0))
    lr_values = list(dict.fromkeys(_lr_key(t, lr_axes) for t in trials))  # in trial order (variants: the sweep's)
    cells: dict[tuple[int, int], list[Trial]] = {}
    for t in trials:
        cells.setdefault((z_values.index(t.params.get("z_dim")), lr_values.index(_lr_key(t, lr_axes))), []).append(t)
    codes = [[math.nan] * len(lr_values) for _ in z_values]
    fig = new_figure(max(5.5, 2.3 * len(lr_values) + 2.8), max(2.6, 0.9 * len(z_values) + 1.6))
    ax = fig.subplots()
    disagree = False
    for (r, c), group in cells.items():
        point = Point({}, group)
        codes[r][c] = SEVERITY.index(point.majority)
        hatched = point.agreement == DISAGREE  # the verdict depends on the seed
        if hatched:
            disagree = True
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, hatch="///", linewidth=0,
                                   edgecolor="white" if point.majority in ("diverged", "collapsed") else "0.25"))
        ax.text(c, r, _heatmap_text(group), ha="center", va="center", fontsize=8,
                color="white" if point.majority in ("diverged", "collapsed") else "black",
                bbox=dict(facecolor=VERDICT_COLOUR[point.majority], edgecolor="none", pad=1.5) if hatched else None)
    cmap = ListedColormap([VERDICT_COLOUR[v] for v in SEVERITY]).with_extremes(bad="white")
    ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(SEVERITY) - 0.5, aspect="auto")
    ax.set_yticks(range(len(z_values)), [fmt_value(z) for z in z_values])
    ax.set_ylabel("z_dim")
    col_labels = ["\n".join(f"{p} {fmt_value(v)}" if p != "variant" else str(v) for p, v in zip(lr_axes, key,
                                                                                              strict=True))
                  for key in lr_values]
    ax.set_xticks(range(len(lr_values)), col_labels, fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, len(lr_values))], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, len(z_values))], minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    present = [v for v in SEVERITY if any(t.verdict_name == v for t in trials)]
    handles = [Patch(color=VERDICT_COLOUR[v], label=VERDICT_LABEL[v]) for v in present]
    if disagree:
        handles.append(Patch(facecolor="white", edgecolor="0.25", hatch="///", label="seeds disagree"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    seeds = any(len(g) > 1 for g in cells.values())
    fig.suptitle(f"Verdict per z_dim × {' / '.join(lr_axes)}"
                 + ("\n(colour: the verdict most seeds gave; hatched: the seeds disagree)" if seeds else ""), fontsize=10)
    return to_png(fig)


FIGURES: tuple[tuple[str, str, str, Callable[[Experiment], bytes | None]], ...] = (
    ("class_histograms.png", "Class histogram of generated samples per z_dim",
     ("Each panel: the share of generated samples the reference classifier puts in each class. A healthy G "
      "fills every bar near the dashed uniform share; a collapsed one piles its samples into a few classes."),
     figure_class_histograms),
    ("verdict_heatmap.png", "Verdicts over z_dim × learning rates",
     ("One cell per grid point, coloured by its verdict; with several seeds, by the verdict most seeds gave, "
      "with the count of each (\"2/3 collapsed\") and hatching where the seeds disagree."),
     figure_verdict_heatmap),
    ("coverage_fcd.png", "Classes covered and FCD over training",
     ("Classes covered should rise to all of them and stay; FCD should fall. A coverage drop with a rising FCD "
      "is collapse as it happens. X marks a trial the collapse stopper ended."),
     figure_coverage_fcd),
    ("loss_curves.png", "Loss curves",
     ("loss_D falling towards 0 while loss_G climbs: D wins, G's gradients fade. The dotted line is where the "
      "bad verdict was first seen."),
     figure_loss_curves),
)


def make_figures(exp: Experiment) -> dict[str, tuple[str, bytes]]:
    """{file name: (caption, PNG bytes)}; a figure with nothing to show is left out."""
    out = {}
    for name, caption, _explain, fn in FIGURES:
        png = fn(exp)
        if png is not None:
            out[name] = (caption, png)
    return out


