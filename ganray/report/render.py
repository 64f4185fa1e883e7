"""report.md and report.html: the summary, the trials table, the VAE-vs-GAN section when
there is one, the figures and each trial's samples. The HTML is self-contained (images as
base64 data URIs)."""
from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from ganray.artifacts import layout
from ganray.report.compare import (
    COMPARE_METRICS,
    PRECISION_RECALL_TEXT,
    SUPPORT_METRICS,
    VAE_FAMILY,
    Comparison,
    fmt_spread,
)
from ganray.report.compare_figures import COMPARE_FIGURES
from ganray.report.figures import FIGURES
from ganray.report.model import (
    NO_COUNTS_TEXT,
    NO_VERDICT,
    PARAM_AXES,
    VERDICT_COLOUR,
    VERDICT_LABEL,
    Experiment,
    Trial,
)
from ganray.report.points import (
    agreement_text,
    borderline_text,
    grid_points,
    has_variants,
    points_table,
    remedies_table,
)
from ganray.report.tables import (
    COLUMNS,
    borderline_mark,
    cell,
    fmt_metric,
    md_escape,
    metric_columns,
    summary,
    table_rows,
    varying_axes,
)


class Section(Protocol):
    """A section of the report after the tables (ganray.report.conditional, .translation): its
    Markdown and HTML lines; its figures are written by write_report."""

    def markdown(self) -> list[str]: ...

    def html(self) -> list[str]: ...


THUMB_PX = 160  # the largest side of a sample grid in the trials table, CSS pixels


def report_markdown(exp: Experiment, figures: dict[str, tuple[str, bytes]],
                    comparison: Comparison | None = None, sections: Sequence[Section] = ()) -> str:
    rows, metrics = table_rows(exp), metric_columns(exp)
    columns = _md_columns(exp)
    head = [label for _, label in columns] + [m.replace("_", " ") for m in metrics] + ["reasons", "samples"]
    lines = [f"# Sweep report: {exp.name}", "", f"Experiment: `{exp.uri}`", "", "## Summary", ""]
    lines += [x for text in summary_paragraphs(exp) for x in (text, "")]
    lines += ["## Trials", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, r in zip(exp.trials, rows, strict=True):
        cells = [cell(r, k) + (borderline_mark(t) if k == "status" else "") for k, _ in columns]
        cells += [fmt_metric(r[m]) for m in metrics]
        reasons = "<br>".join(md_escape(x) for x in [*t.reasons, *(f"note: {n}" for n in t.notes)])
        lines.append("| " + " | ".join([*(md_escape(c) for c in cells), reasons, _md_thumbnail(t)]) + " |")
    lines += ["", "All values per trial are in `trials.csv`. How to read this report: docs/report.md.", ""]
    for title, explain, (head, body) in seed_tables(exp):
        lines += [f"## {title}", "", explain, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(md_escape(x) for x in r) + " |" for r in body] + [""]
    if comparison is not None:
        lines += vae_vs_gan_markdown(comparison)
    lines += [x for s in sections for x in s.markdown()]
    lines += ["## Figures", ""]
    explain = {name: text for name, _, text, _ in FIGURES}
    for name, (caption, _) in figures.items():
        lines += [f"### {caption}", "", explain.get(name, ""), "", f"![{caption}](figures/{name})", ""]
    lines += ["## Samples per trial", ""]
    for t in exp.trials:
        links = []
        if t.samples:
            links.append(f"[final sample grid, step {t.samples[-1][0]}]({last_grid_path(t)})")
        if t.gif_uri:
            links.append(f"[fixed-z GIF]({layout.TRIALS_DIR}/{t.name}/{layout.GIF})")
        histogram = f"class histogram: {t.histogram.source}" if t.histogram is not None else NO_COUNTS_TEXT
        lines.append(f"- **{t.name}**, {t.status}: {', '.join(links) or 'no samples yet'}, {histogram}")
    if exp.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in exp.notes]
    return "\n".join(lines) + "\n"


def summary_paragraphs(exp: Experiment) -> list[str]:
    """The summary: the verdicts per trial, then the agreement across seeds, then the borderline verdicts."""
    return [x for x in (summary(exp), agreement_text(exp), borderline_text(exp)) if x]


POINTS_EXPLAIN = ("The trials of one grid point differ only in their seed. Settled: every seed gave the same "
                  "verdict; seeds disagree: the verdict depends on the seed, so no single run of this point is "
                  "evidence. Numbers: mean ± sample standard deviation over the seeds at their last evaluation; "
                  "steps/s over each trial's training steps (evaluations, samples and checkpoints left out). One row per "
                  "point in `points.csv`.")
REMEDIES_EXPLAIN = ("One row per sweep.variants entry (and per value of the other swept settings): in how many "
                    "seeds it ended healthy, its other verdicts, the key numbers of its seeds' last evaluations "
                    "(a remedy that helps without reaching healthy shows there), and its speed in generator "
                    "steps per second (of its training steps alone: evaluations, samples and checkpoints left out; "
                    "trials that ran side by side shared the cores), "
                    "as a multiple of the baseline's (below 1: slower).")


def seed_tables(exp: Experiment) -> list[tuple[str, str, tuple[list[str], list[list[str]]]]]:
    """(title, explanation, (header, rows)) of the "Grid points" table (when a point has two or
    more seeds) and the "Remedies" table (when the sweep has variants)."""
    out = []
    if any(p.n > 1 for p in grid_points(exp.trials)):
        out.append(("Grid points (seeds together)", POINTS_EXPLAIN, points_table(exp)))
    if has_variants(exp):
        out.append(("Remedies (sweep.variants)", REMEDIES_EXPLAIN, remedies_table(exp)))
    return out


def _md_columns(exp: Experiment) -> list[tuple[str, str]]:
    """The trials table's columns: a column for each setting (the variant only in a sweep with variants)."""
    return [(k, label) for k, label in COLUMNS if k != "variant" or has_variants(exp)]


def last_grid_path(t: Trial) -> str:
    """The trial's last sample grid relative to the experiment (where report.md is)."""
    return f"{layout.TRIALS_DIR}/{t.name}/{layout.sample_file(t.samples[-1][0])}"


def image_size(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) from a PNG's or GIF's header; None for anything else."""
    if data and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data and data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    return None


def thumbnail_size(data: bytes | None, largest: int = THUMB_PX) -> tuple[int, int] | None:
    """The size at which the trials table shows a grid: its own, shrunk to `largest` CSS pixels."""
    size = image_size(data)
    if size is None or min(size) < 1:
        return None
    scale = min(1.0, largest / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _size_attrs(size: tuple[int, int] | None) -> str:
    return f' width="{size[0]}" height="{size[1]}"' if size else ""


def _md_thumbnail(t: Trial) -> str:
    """report.md's samples cell: the last grid, inline (HTML in the table cell, as GitHub renders it)."""
    if not t.samples:
        return "no samples yet"
    step = t.samples[-1][0]
    alt = html.escape(f"sample grid of {t.name} at step {step}")
    return f'<img src="{last_grid_path(t)}"{_size_attrs(thumbnail_size(t.last_samples_png))} alt="{alt}">'


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# The page is read at a laptop's width and on a phone. The trials table shows only the settings
# that differ between trials (the shared ones in one line above it) and, where it still does not
# fit, turns into one card per trial: label: value pairs, the reasons and the sample grid full
# width. It is stacked below STACK_PX by CSS, and wherever it would overflow its column by the
# few lines of script after it, so nothing needs horizontal scrolling
# (tests/test_report_browser.py renders it in Chromium at 1,400 and 400 CSS pixels).
STACK_PX = 900
_CSS = """
*,*::before,*::after{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1300px;
     padding:0 1em;color:#222;line-height:1.45;overflow-wrap:break-word}
h1{margin-bottom:.2em} .uri{color:#666;font-family:monospace;overflow-wrap:anywhere}
.summary{font-size:1.1em;background:#f5f5f5;border-left:4px solid #444;padding:.8em 1em;margin:1em 0}
table{border-collapse:collapse;font-size:.88em;width:100%} th,td{border:1px solid #ddd;padding:4px 6px;
     vertical-align:top} th{background:#fafafa;position:sticky;top:0} td.num{text-align:right;
     font-variant-numeric:tabular-nums}
.trials-table td.trial{white-space:nowrap;font-weight:600} .trials-table td.num{white-space:nowrap}
.trials-table td.reasons{min-width:16em}
.trials-table td.samples,.trials-table td.verdict{width:1%}
.trials-table .when{display:inline-block;white-space:nowrap;margin-top:2px}
.trials-table .borderline{display:block;color:#8a4b00;font-size:.9em;margin-top:2px}
.trials-table td.samples a{display:block} .trials-table td.samples img{display:block;border:1px solid #ddd;
     background:#808080} .trials-table td.samples .note{white-space:nowrap} .shared{margin:.3em 0 .6em}
.pill{display:inline-block;border-radius:10px;padding:1px 8px;color:#fff;white-space:nowrap;font-weight:600}
.pill.light{color:#222} ul.reasons{margin:0;padding-left:1.1em} .note{color:#777;font-size:.9em}
figure{margin:1.5em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
.trials{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(470px,100%),1fr));gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em} .card img{width:220px;max-width:calc(50% - 8px);
     height:auto;margin:6px 4px 0 0;border:1px solid #eee} .card h3{margin:.1em 0 .4em;font-size:1em}
.card:target{outline:3px solid #0072b2} .explain{color:#555;margin:.2em 0}
@media (max-width:%(stack)dpx){body{margin:1em auto;padding:0 .7em} .pill{white-space:normal}}
"""
_STACKED = """
&,&>tbody,&>tbody>tr,&>tbody>tr>td{display:block}
&>thead{display:none}
&>tbody>tr{display:grid;grid-template-columns:repeat(auto-fill,minmax(10.5em,1fr));gap:0 1em;
  border:1px solid #ddd;border-radius:6px;padding:.5em .7em;margin:0 0 1em}
& td{border:0;padding:1px 0;text-align:left;min-width:0}
& td::before{content:attr(data-label) ": ";color:#666}
& td.trial,& td.verdict,& td.reasons,& td.samples{grid-column:1/-1}
& td.trial{order:-2} & td.verdict{order:-1}
& td.trial{font-size:1.1em;white-space:normal;overflow-wrap:anywhere}
& td.trial::before,& td.verdict::before{content:none}
& td.reasons::before,& td.samples::before{content:attr(data-label);display:block}
& td.reasons{min-width:0} & td.verdict{margin:.2em 0 .3em;width:auto} & td.samples{width:auto;margin-top:.3em}
& td.samples img{max-width:100%;height:auto} & .pill{white-space:normal}
"""
_CSS = (_CSS + "@media (max-width:%(stack)dpx){" + _STACKED.replace("&", "table.trials-table") + "}"
        + _STACKED.replace("&", "table.trials-table.stacked")).replace("%(stack)d", str(STACK_PX))
# The grid-points and remedies tables: below STACK_PX one card per row, "label: value" lines.
_CSS += ("@media (max-width:%dpx){table.seeds-table,table.seeds-table>tbody,table.seeds-table>tbody>tr,"
         "table.seeds-table>tbody>tr>td{display:block}table.seeds-table>thead{display:none}"
         "table.seeds-table>tbody>tr{border:1px solid #ddd;border-radius:6px;padding:.5em .7em;margin:0 0 1em}"
         "table.seeds-table td{border:0;padding:1px 0}"
         "table.seeds-table td::before{content:attr(data-label) \": \";color:#666}}" % STACK_PX)
# Stack the table wherever it would not fit (more columns than a laptop's width holds); the
# page reads the same without script, stacked on phones by the CSS alone.
_FIT_SCRIPT = ("<script>(function(){var t=document.querySelector('table.trials-table');if(!t)return;"
               "function fit(){t.classList.remove('stacked');"
               "if(t.offsetWidth>t.parentElement.clientWidth+1)t.classList.add('stacked');}"  # the wrap: no padding
               "fit();window.addEventListener('resize',fit);})();</script>")


def _pill(t: Trial, text: str | None = None) -> str:
    v = t.verdict_name
    light = " light" if v in ("partial_collapse", NO_VERDICT, "garbage", "collapsed_per_condition",
                              "content_lost") else ""
    return f'<span class="pill{light}" style="background:{VERDICT_COLOUR[v]}">{html.escape(text or t.status)}</span>'


def _verdict_cell(t: Trial) -> str:
    """The verdict as a pill and, after it, when ("at step 200") or why there is none: two
    pieces that go on two lines in a narrow column."""
    label = VERDICT_LABEL[t.verdict_name]
    rest = t.status.removeprefix(label).strip()
    mark = borderline_mark(t).strip()
    return (_pill(t, label) + (f' <span class="when">{html.escape(rest)}</span>' if rest else "")
            + (f' <span class="borderline">{html.escape(mark)}</span>' if mark else ""))


def _card_id(t: Trial) -> str:
    return f"samples-{t.name}"


def _html_thumbnail(t: Trial) -> str:
    """The trials table's samples cell: the last grid, inline, linking to the trial's card (grid and GIF)."""
    e = html.escape
    png = t.last_samples_png
    if not png:
        return '<span class="note">no samples yet</span>'
    step = t.samples[-1][0]
    return (f'<a href="#{e(_card_id(t))}" title="step {step}: the last sample grid (below: with the fixed-z GIF)">'
            f'<img src="{data_uri(png, "image/png")}"{_size_attrs(thumbnail_size(png))} '
            f'alt="{e(f"sample grid of {t.name} at step {step}")}"></a><span class="note">step {step}</span>')


def _trials_table_html(exp: Experiment) -> list[str]:
    """The shared settings in one line, then one row per trial: the settings that differ, steps,
    verdict, the last evaluation's values, the reasons and the last sample grid."""
    e = html.escape
    rows, metrics = table_rows(exp), metric_columns(exp)
    varying = set(varying_axes(exp.trials))
    settings = {p for p, *_ in PARAM_AXES}
    columns = [(k, label) for k, label in COLUMNS if k not in settings or k in varying]
    shared = [f"{k} {cell(rows[0], k)}" for k, _ in COLUMNS if k in settings - varying and cell(rows[0], k)]
    out = [f'<p class="shared">Every trial: {e(", ".join(shared))}.</p>'] if shared else []
    labels = [label for _, label in columns] + [m.replace("_", " ") for m in metrics] + ["reasons", "samples"]
    out.append('<div class="trials-wrap"><table class="trials-table"><thead><tr>'
               + "".join(f"<th>{e(x)}</th>" for x in labels)
               + "</tr></thead><tbody>")
    for t, r in zip(exp.trials, rows, strict=True):
        cells = []
        for key, label in columns:
            if key == "status":
                cells.append(f'<td class="verdict" data-label="{e(label)}">{_verdict_cell(t)}</td>')
            else:
                cls = "num" if key in ("z_dim", "lr_g", "lr_d", "seed", "steps") else key.replace("_", "-")
                cells.append(f'<td class="{cls}" data-label="{e(label)}">{e(cell(r, key))}</td>')
        cells += [f'<td class="num" data-label="{e(m.replace("_", " "))}">{e(fmt_metric(r[m]))}</td>'
                  for m in metrics]
        reasons = "".join(f"<li>{e(x)}</li>" for x in t.reasons)
        notes = "".join(f'<li class="note">{e(n)}</li>' for n in t.notes)
        cells.append(f'<td class="reasons" data-label="reasons"><ul class="reasons">{reasons}{notes}</ul></td>')
        cells.append(f'<td class="samples" data-label="samples">{_html_thumbnail(t)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out += ["</tbody></table></div>", _FIT_SCRIPT]
    return out


def _samples_cards_html(exp: Experiment) -> list[str]:
    e = html.escape
    out = ["<h2>Samples per trial</h2><p>Left: the last sample grid. Right: the fixed-z GIF — the same z "
           "at every sample step; cells that keep changing class are the flicker of an unstable G.</p>"
           '<div class="trials">']
    for t in exp.trials:
        out.append(f'<div class="card" id="{e(_card_id(t))}"><h3>{e(t.name)}</h3>{_pill(t)}<div>')
        png, gif = t.last_samples_png, t.fixed_z_gif
        if png:
            out.append(f'<img alt="{e(f"sample grid of {t.name} at step {t.samples[-1][0]}")}" '
                       f'title="step {t.samples[-1][0]}"{_size_attrs(image_size(png))} '
                       f'src="{data_uri(png, "image/png")}">')
        if gif:
            out.append(f'<img alt="{e(f"fixed-z GIF of {t.name}")}" title="fixed z over training"'
                       f'{_size_attrs(image_size(gif))} src="{data_uri(gif, "image/gif")}">')
        if not png and not gif:
            out.append('<p class="note">no samples yet</p>')
        histogram = f"class histogram: {t.histogram.source}" if t.histogram is not None else NO_COUNTS_TEXT
        out.append(f'<p class="note">{e(histogram)}</p>')
        out.append("</div></div>")
    out.append("</div>")
    return out


def report_html(exp: Experiment, figures: dict[str, tuple[str, bytes]], comparison: Comparison | None = None,
                sections: Sequence[Section] = ()) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>ganray report: {e(exp.name)}</title><style>{_CSS}</style></head><body>",
           f"<h1>Sweep report: {e(exp.name)}</h1>", f'<div class="uri">{e(exp.uri)}</div>',
           *(f'<p class="summary">{e(text)}</p>' for text in summary_paragraphs(exp)), "<h2>Trials</h2>"]
    out += _trials_table_html(exp)
    out.append("<p class=\"note\">Every value per trial is in trials.csv next to this page.</p>")
    for title, explain, (head, body) in seed_tables(exp):  # one card per row on a phone (_SEEDS_CSS)
        out.append(f'<h2>{e(title)}</h2><p class="explain">{e(explain)}</p><table class="seeds-table"><thead><tr>'
                   + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>"
                   + "".join("<tr>" + "".join(f'<td data-label="{e(h)}">{e(x)}</td>' for h, x in zip(head, r))
                             + "</tr>" for r in body) + "</tbody></table>")
    if comparison is not None:
        out += vae_vs_gan_html(comparison)
    out += [x for s in sections for x in s.html()]
    out.append("<h2>Figures</h2>")
    explain = {name: text for name, _, text, _ in FIGURES}
    for name, (caption, png) in figures.items():
        out.append(f'<figure id="{e(name)}"><figcaption><b>{e(caption)}</b><p class="explain">'
                   f'{e(explain.get(name, ""))}</p></figcaption>'
                   f'<img alt="{e(caption)}"{_size_attrs(image_size(png))} src="{data_uri(png, "image/png")}"></figure>')
    out += _samples_cards_html(exp)
    if exp.notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in exp.notes) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out)


# ---- VAE vs GAN ----------------------------------------------------------------------------
# When the trials span the vae family and at least one GAN family (jobs/compare_vae_gan.py),
# the report adds a section that puts the families side by side: mean ± spread over seeds of
def _compare_table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per metric, one column per family."""
    fams = list(c.families.values())
    head = ["metric"] + [f"{f.label} ({len(f.trials)} trial{'s' if len(f.trials) != 1 else ''})" for f in fams]
    rows = []
    for key, label, better in COMPARE_METRICS + SUPPORT_METRICS:
        if any(key in f.metrics for f in fams):
            of = f" of {c.n_classes}" if key == "classes_covered" and c.n_classes else ""
            rows.append([f"{label}{of}, {better} is better"] + [fmt_spread(f.metrics.get(key)) for f in fams])
    vae = c.families.get(VAE_FAMILY)
    if vae is not None and vae.recon_mse is not None:
        rows.append(["held-out reconstruction MSE (Σ over pixels, per image)"]
                    + [fmt_spread(vae.recon_mse) if f.family == VAE_FAMILY else "—" for f in fams])
    rows.append(["verdicts"] + [", ".join(f"{n} {VERDICT_LABEL[v]}" for v, n in Counter(f.verdicts).most_common())
                                for f in fams])
    return head, rows


def vae_vs_gan_markdown(c: Comparison) -> list[str]:
    """The "VAE vs GAN" section of report.md (figures linked from figures/)."""
    head, rows = _compare_table(c)
    lines = ["## VAE vs GAN", ""] + [x for s in c.sentences for x in (s, "")] + [
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_escape(x) for x in r) + " |" for r in rows]
    lines += ["", "Mean ± sample standard deviation over seeds, at each trial's last evaluation. "
              + PRECISION_RECALL_TEXT, ""]
    explain = {name: text for name, _, text in COMPARE_FIGURES}
    for name, (caption, _) in c.figures.items():
        lines += [f"### {caption}", "", explain[name], "", f"![{caption}](figures/{name})", ""]
    lines += [f"- note: {n}" for n in c.notes]
    return lines + ([""] if c.notes else [])


def vae_vs_gan_html(c: Comparison) -> list[str]:
    """The "VAE vs GAN" section of report.html (figures inline)."""
    e = html.escape
    head, rows = _compare_table(c)
    out = ['<h2 id="vae-vs-gan">VAE vs GAN</h2>']
    out += [f'<p class="summary">{e(s)}</p>' for s in c.sentences]
    out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead><tbody>")
    for r in rows:
        out.append("<tr>" + f"<td>{e(r[0])}</td>" + "".join(f'<td class="num">{e(x)}</td>' for x in r[1:]) + "</tr>")
    out.append(f'</tbody></table><p class="explain">Mean ± sample standard deviation over seeds, at each trial\'s '
               f"last evaluation. {e(PRECISION_RECALL_TEXT)}</p>")
    explain = {name: text for name, _, text in COMPARE_FIGURES}
    for name, (caption, png) in c.figures.items():
        out.append(f'<figure id="{e(name)}"><figcaption><b>{e(caption)}</b><p class="explain">{e(explain[name])}'
                   f'</p></figcaption><img alt="{e(caption)}" src="{data_uri(png, "image/png")}"></figure>')
    if c.notes:
        out.append("<ul>" + "".join(f'<li class="note">{e(n)}</li>' for n in c.notes) + "</ul>")
    return out


# ---- writing -------------------------------------------------------------------------------
