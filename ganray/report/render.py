"""report.md and report.html: the summary, the trials table, the VAE-vs-GAN section when
there is one, the figures and each trial's samples. The HTML is self-contained (images as
base64 data URIs)."""
from __future__ import annotations

import base64
import html
from collections import Counter

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
from ganray.report.model import NO_COUNTS_TEXT, NO_VERDICT, VERDICT_COLOUR, VERDICT_LABEL, Experiment, Trial
from ganray.report.tables import COLUMNS, cell, fmt_metric, md_escape, metric_columns, summary, table_rows


def report_markdown(exp: Experiment, figures: dict[str, tuple[str, bytes]],
                    comparison: Comparison | None = None) -> str:
    rows, metrics = table_rows(exp), metric_columns(exp)
    head = [label for _, label in COLUMNS] + [m.replace("_", " ") for m in metrics] + ["reasons"]
    lines = [f"# Sweep report: {exp.name}", "", f"Experiment: `{exp.uri}`", "", "## Summary", "", summary(exp), ""]
    lines += ["## Trials", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, r in zip(exp.trials, rows, strict=True):
        cells = [cell(r, k) for k, _ in COLUMNS] + [fmt_metric(r[m]) for m in metrics]
        reasons = "<br>".join(md_escape(x) for x in [*t.reasons, *(f"note: {n}" for n in t.notes)])
        lines.append("| " + " | ".join([*(md_escape(c) for c in cells), reasons]) + " |")
    lines += ["", "All values per trial are in `trials.csv`. How to read this report: docs/report.md.", ""]
    if comparison is not None:
        lines += vae_vs_gan_markdown(comparison)
    lines += ["## Figures", ""]
    explain = {name: text for name, _, text, _ in FIGURES}
    for name, (caption, _) in figures.items():
        lines += [f"### {caption}", "", explain.get(name, ""), "", f"![{caption}](figures/{name})", ""]
    lines += ["## Samples per trial", ""]
    for t in exp.trials:
        links = []
        folder = f"{layout.TRIALS_DIR}/{t.name}"
        if t.samples:
            step = t.samples[-1][0]
            links.append(f"[final sample grid, step {step}]({folder}/{layout.sample_file(step)})")
        if t.gif_uri:
            links.append(f"[fixed-z GIF]({folder}/{layout.GIF})")
        histogram = f"class histogram: {t.histogram.source}" if t.histogram is not None else NO_COUNTS_TEXT
        lines.append(f"- **{t.name}**, {t.status}: {', '.join(links) or 'no samples yet'}, {histogram}")
    if exp.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in exp.notes]
    return "\n".join(lines) + "\n"


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1300px;
     padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} .uri{color:#666;font-family:monospace}
.summary{font-size:1.1em;background:#f5f5f5;border-left:4px solid #444;padding:.8em 1em;margin:1em 0}
table{border-collapse:collapse;font-size:.88em;width:100%} th,td{border:1px solid #ddd;padding:4px 6px;
     vertical-align:top} th{background:#fafafa;position:sticky;top:0} td.num{text-align:right;
     font-variant-numeric:tabular-nums}
.pill{display:inline-block;border-radius:10px;padding:1px 8px;color:#fff;white-space:nowrap;font-weight:600}
.pill.light{color:#222} ul.reasons{margin:0;padding-left:1.1em} .note{color:#999;font-size:.9em}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee}
.trials{display:grid;grid-template-columns:repeat(auto-fill,minmax(470px,1fr));gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em} .card img{width:220px;margin:6px 4px 0 0;
     border:1px solid #eee} .card h3{margin:.1em 0 .4em;font-size:1em} .explain{color:#555;margin:.2em 0}
"""


def _pill(t: Trial) -> str:
    v = t.verdict_name
    light = " light" if v in ("partial_collapse", NO_VERDICT, "garbage") else ""
    return f'<span class="pill{light}" style="background:{VERDICT_COLOUR[v]}">{html.escape(t.status)}</span>'


def report_html(exp: Experiment, figures: dict[str, tuple[str, bytes]], comparison: Comparison | None = None) -> str:
    e = html.escape
    rows, metrics = table_rows(exp), metric_columns(exp)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>ganray report: {e(exp.name)}</title><style>{_CSS}</style></head><body>",
           f"<h1>Sweep report: {e(exp.name)}</h1>", f'<div class="uri">{e(exp.uri)}</div>',
           f'<p class="summary">{e(summary(exp))}</p>', "<h2>Trials</h2><table><thead><tr>"]
    out += [f"<th>{e(label)}</th>" for _, label in COLUMNS]
    out += [f"<th>{e(m.replace('_', ' '))}</th>" for m in metrics] + ["<th>reasons</th></tr></thead><tbody>"]
    for t, r in zip(exp.trials, rows, strict=True):
        cells = []
        for key, _ in COLUMNS:
            if key == "status":
                cells.append(f"<td>{_pill(t)}</td>")
            else:
                cls = ' class="num"' if key in ("z_dim", "lr_g", "lr_d", "seed", "steps") else ""
                cells.append(f"<td{cls}>{e(cell(r, key))}</td>")
        cells += [f'<td class="num">{e(fmt_metric(r[m]))}</td>' for m in metrics]
        reasons = "".join(f"<li>{e(x)}</li>" for x in t.reasons)
        notes = "".join(f'<li class="note">{e(n)}</li>' for n in t.notes)
        cells.append(f'<td><ul class="reasons">{reasons}{notes}</ul></td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table><p class=\"note\">Every value per trial is in trials.csv next to this page.</p>")
    if comparison is not None:
        out += vae_vs_gan_html(comparison)
    out.append("<h2>Figures</h2>")
    explain = {name: text for name, _, text, _ in FIGURES}
    for name, (caption, png) in figures.items():
        out.append(f'<figure id="{e(name)}"><figcaption><b>{e(caption)}</b><p class="explain">'
                   f'{e(explain.get(name, ""))}</p></figcaption>'
                   f'<img alt="{e(caption)}" src="{data_uri(png, "image/png")}"></figure>')
    out.append("<h2>Samples per trial</h2><p>Left: the last sample grid. Right: the fixed-z GIF — the same z "
               "at every sample step; cells that keep changing class are the flicker of an unstable G.</p>"
               '<div class="trials">')
    for t in exp.trials:
        out.append(f'<div class="card"><h3>{e(t.name)}</h3>{_pill(t)}<div>')
        png, gif = t.last_samples_png, t.fixed_z_gif
        if png:
            out.append(f'<img alt="samples at step {t.samples[-1][0]}" title="step {t.samples[-1][0]}" '
                       f'src="{data_uri(png, "image/png")}">')
        if gif:
            out.append(f'<img alt="fixed-z GIF" title="fixed z over training" src="{data_uri(gif, "image/gif")}">')
        if not png and not gif:
            out.append('<p class="note">no samples yet</p>')
        histogram = f"class histogram: {t.histogram.source}" if t.histogram is not None else NO_COUNTS_TEXT
        out.append(f'<p class="note">{e(histogram)}</p>')
        out.append("</div></div>")
    out.append("</div>")
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
