"""The report's section for translation runs (cyclegan): one part per direction, A→B and B→A, with
each trial's verdict, what this direction's numbers say against the verdict's thresholds, the
direction's numbers at the last evaluation, a figure of content kept and spread ratio over training,
and the direction's three rows of each trial's last fixed grid.

From the record: the metrics rows' per-direction values (ganray.metrics.translation: content_kept_<d>,
translation_spread_ratio_<d>, translation_duplicate_share_<d>, fcd_<d>, cycle_l1_<a|b>; any may be
absent), verdict.json's verdict and reasons (a reason about one direction starts with its name,
"A→B: ..."), and the grid: 6 rows, a | G_AB(a) | G_BA(G_AB(a)) | b | G_BA(b) | G_AB(G_BA(b))
(ganray.train.sampling.translation_grid): the top three rows are A→B, the bottom three B→A.
"""
from __future__ import annotations

import html
import io
from dataclasses import dataclass, field

from PIL import Image

from ganray.config import EvalConfig
from ganray.report.figures import new_figure, short_label, text_colour, to_png
from ganray.report.grids import crop_rows
from ganray.report.model import Experiment, Trial
from ganray.report.render import data_uri, image_size
from ganray.report.tables import TRANSLATION_FAMILIES, fmt_metric, md_escape, name_axes

# direction -> (its name, the cycle_l1 key's domain, its rows of the 6-row grid, source and target domain)
DIRECTIONS = {"ab": ("A→B", "a", (0, 3), "A", "B"), "ba": ("B→A", "b", (3, 6), "B", "A")}
GRID_ROWS = 6  # ganray.train.sampling.translation_grid: 3 rows each way
HEAD = ["trial", "verdict", "this direction", "content kept", "spread ratio", "near-copies", "cycle L1", "FCD",
        "reasons about this direction"]
EXPLAIN = ("Content kept: the share of translated test images whose class, after undoing the domain "
           "transformation, is the input's (chance 1/K). Spread ratio: how far apart the translations lie "
           "against their inputs (classifier features; near 0: one output whatever the input, many-to-one). "
           "Near-copies: the share of translations that nearly copy another. Cycle L1: mean |G_back(G(x)) − x| "
           "on [-1, 1]. FCD: translations vs real test images of the target domain. \"This direction\": the "
           "thresholds this direction's numbers crossed (eval.* of the trial's config); the verdict is the "
           "trial's, over both directions. Grids: input, translated, reconstructed, one test image per column.")


def is_translation(t: Trial) -> bool:
    return t.params.get("family") in TRANSLATION_FAMILIES or any(
        k.startswith("content_kept_") or k.startswith("translation_spread_ratio_") for r in t.rows[-3:] for k in r)


def keys(d: str) -> dict[str, str]:
    """The metric keys of direction d ("ab" or "ba")."""
    return {"content": f"content_kept_{d}", "spread": f"translation_spread_ratio_{d}",
            "copies": f"translation_duplicate_share_{d}", "cycle": f"cycle_l1_{DIRECTIONS[d][1]}",
            "fcd": f"fcd_{d}"}


def direction_finding(t: Trial, d: str) -> str:
    """What direction d's last numbers say against the trial's thresholds: "many-to-one: spread ratio 0.05
    < 0.25", "lost the content: 12% kept < 50%", both, or "kept its content" (or "no numbers yet")."""
    th = t.config.eval if t.config is not None else EvalConfig()
    k = keys(d)
    content, spread, copies = t.final(k["content"]), t.final(k["spread"]), t.final(k["copies"])
    if content is None and spread is None and copies is None:
        return "no numbers yet"
    many = []
    if spread is not None and spread < th.translation_spread_collapsed:
        many.append(f"spread ratio {fmt_metric(spread)} < {th.translation_spread_collapsed:g}")
    if copies is not None and copies >= th.duplicate_collapsed:
        many.append(f"{copies:.0%} near-copies ≥ {th.duplicate_collapsed:.0%}")
    out = [f"many-to-one: {', '.join(many)}"] if many else []
    if content is not None and content < th.content_kept_lost:
        out.append(f"lost the content: {content:.0%} kept < {th.content_kept_lost:.0%}")
    if out:
        return "; ".join(out)
    return f"kept its content ({content:.0%})" if content is not None else "no collapse in its numbers"


def direction_reasons(t: Trial, d: str) -> list[str]:
    """The trial's verdict reasons about direction d (they start with its name)."""
    name = DIRECTIONS[d][0]
    return [r for r in t.reasons if r.startswith(f"{name}:")]


def direction_rows(exp: Experiment, trials: list[Trial], d: str) -> list[list[str]]:
    axes = name_axes(exp.trials)
    k = keys(d)
    pct = [k["content"], k["copies"]]
    return [[short_label(t, axes), t.status, direction_finding(t, d),
             *(_pct(t.final(k[x])) if k[x] in pct else fmt_metric(t.final(k[x]))
               for x in ("content", "spread", "copies", "cycle", "fcd")),
             "\n".join(direction_reasons(t, d))] for t in trials]  # one reason per line


def _pct(v: float | None) -> str:
    return "" if v is None else f"{v:.1%}"


def direction_sentence(trials: list[Trial], d: str) -> str:
    """"A→B: 3 of 4 trials kept the content (reference, no-identity, cycle1); 1 many-to-one (no-cycle)."."""
    name = DIRECTIONS[d][0]
    groups: dict[str, list[str]] = {}
    for t in trials:
        f = direction_finding(t, d)
        head = ("many-to-one and lost the content" if "many-to-one" in f and "lost the content" in f
                else "many-to-one" if "many-to-one" in f else "lost the content" if "lost the content" in f
                else "no numbers yet" if f == "no numbers yet" else "kept the content")
        groups.setdefault(head, []).append(t.name)
    order = ("many-to-one and lost the content", "many-to-one", "lost the content", "kept the content",
             "no numbers yet")
    present = [h for h in order if h in groups]
    parts = [f"{len(groups[h])}{f' of {len(trials)} trials' if i == 0 else ''} {h} ({', '.join(groups[h])})"
             for i, h in enumerate(present)]
    return f"{name}: " + "; ".join(parts) + "."


def figure_direction(trials: list[Trial], d: str, exp: Experiment) -> bytes | None:
    """Content kept and spread ratio of direction d over training, one line per trial, the thresholds dashed."""
    k = keys(d)
    shown = [t for t in trials if t.series(k["content"])[0] or t.series(k["spread"])[0]]
    if not shown:
        return None
    th = shown[0].config.eval if shown[0].config is not None else EvalConfig()
    axes = name_axes(exp.trials)
    fig = new_figure(9.0, 3.2)
    panels = fig.subplots(1, 2, squeeze=False)[0]
    for ax, key, label, cut in ((panels[0], k["content"], "content kept", th.content_kept_lost),
                                (panels[1], k["spread"], "spread ratio (outputs over inputs)",
                                 th.translation_spread_collapsed)):
        for i, t in enumerate(shown):
            steps, values = t.series(key)
            ax.plot(steps, values, marker="o", markersize=3, linewidth=1.2, color=f"C{i}",
                    label=short_label(t, axes))
        ax.axhline(cut, color="0.4", linestyle="--", linewidth=1, label="verdict threshold (eval.*)")
        ax.set_title(f"{DIRECTIONS[d][0]}: {label}", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("generator step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = panels[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    return to_png(fig)


def figure_grids(trials: list[Trial], d: str, exp: Experiment) -> bytes | None:
    """Direction d's three rows (input, translated, reconstructed) of each trial's last grid, a panel each."""
    first, stop = DIRECTIONS[d][2]
    crops = [(t, crop_rows(t.last_samples_png, GRID_ROWS, first, stop)) for t in trials]
    crops = [(t, c) for t, c in crops if c is not None]
    if not crops:
        return None
    axes = name_axes(exp.trials)
    n_cols = min(len(crops), 4)
    n_rows = -(-len(crops) // n_cols)
    fig = new_figure(2.6 * n_cols + 0.4, 0.6 + 1.9 * n_rows)
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in grid.flat:
        ax.set_axis_off()
    for ax, (t, png) in zip(grid.flat, crops):
        img = Image.open(io.BytesIO(png))
        ax.imshow(img, cmap="gray" if img.mode == "L" else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{short_label(t, axes)}\n{t.status}, step {t.samples[-1][0]}", fontsize=8,
                     color=text_colour(t.verdict_name))
    _, _, _, src, dst = DIRECTIONS[d]
    fig.suptitle(f"{DIRECTIONS[d][0]}: rows {src} input | translated to {dst} | reconstructed {src}", fontsize=9)
    return to_png(fig)


@dataclass
class TranslationSection:
    exp: Experiment
    trials: list[Trial]
    figures: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def markdown(self) -> list[str]:
        lines = ["## Translation, per direction", "", EXPLAIN, ""]
        for d, (name, *_) in DIRECTIONS.items():
            lines += [f"### {name}", "", direction_sentence(self.trials, d), "",
                      "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
            lines += ["| " + " | ".join("<br>".join(md_escape(p) for p in x.split("\n")) for x in r) + " |"
                      for r in direction_rows(self.exp, self.trials, d)] + [""]
            for fig in (f"translation_{d}.png", f"translation_grids_{d}.png"):
                if fig in self.figures:
                    lines += [f"![{self.figures[fig][0]}](figures/{fig})", ""]
        return lines

    def html(self) -> list[str]:
        e = html.escape
        out = ['<h2 id="translation">Translation, per direction</h2>', f'<p class="explain">{e(EXPLAIN)}</p>']
        for d, (name, *_) in DIRECTIONS.items():
            out += [f'<h3 id="translation-{d}">{e(name)}</h3>',
                    f'<p class="summary">{e(direction_sentence(self.trials, d))}</p>',
                    '<table class="seeds-table"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in HEAD)
                    + "</tr></thead><tbody>"
                    + "".join("<tr>" + "".join(f'<td data-label="{e(h)}">{e(x).replace(chr(10), "<br>")}</td>'
                                      for h, x in zip(HEAD, r))
                              + "</tr>" for r in direction_rows(self.exp, self.trials, d)) + "</tbody></table>"]
            for fig in (f"translation_{d}.png", f"translation_grids_{d}.png"):
                if fig in self.figures:
                    caption, png = self.figures[fig]
                    size = image_size(png)
                    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
                    out.append(f'<figure><figcaption><b>{e(caption)}</b></figcaption><img alt="{e(caption)}"'
                               f'{dims} src="{data_uri(png, "image/png")}"></figure>')
        return out


def translation_section(exp: Experiment) -> TranslationSection | None:
    """The section, or None when no trial is a translation run. Call after attach_media."""
    trials = [t for t in exp.trials if is_translation(t)]
    if not trials:
        return None
    sec = TranslationSection(exp, trials)
    for d, (name, *_) in DIRECTIONS.items():
        for fig, caption, png in ((f"translation_{d}.png", f"{name}: content kept and spread ratio over training",
                                   figure_direction(trials, d, exp)),
                                  (f"translation_grids_{d}.png", f"{name}: input, translated, reconstructed",
                                   figure_grids(trials, d, exp))):
            if png is not None:
                sec.figures[fig] = (caption, png)
    return sec
