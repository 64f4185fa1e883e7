"""The sweep report: one page that says, for every trial of an experiment, whether and when
training collapsed, with the numbers and the pictures behind each verdict.

    ganray report <storage>/<experiment> [--samples 2000]
    write_report("s3://bucket/ganray/zdim-mnist", regenerate=ganray.regenerate)   # ganray/sweep.py

It reads the trial record only (ganray.artifacts.reader; the files are in
ganray/artifacts/layout.py): each trial's config.yaml (its parameters), its metrics stream, its
verdict.json (the verdict and the class counts of the last evaluation), its sample grids and
fixed-z GIF. It writes next to the trials:

    <exp>/report.md, report.html (self-contained: images as base64 data URIs), trials.csv,
    points.csv (one row per grid point: the seeds together, points.py),
    figures/class_histograms.png, coverage_fcd.png, verdict_heatmap.png, loss_curves.png
    and, when the trials span the vae family and a GAN family (jobs/compare_vae_gan.py), a
    "VAE vs GAN" section with figures/vae_vs_gan_metrics.png, vae_vs_gan_samples.png and
    vae_reconstructions.png (docs/compare.md); for conditional families (cgan, stackgan) a
    "Conditions" section (conditional.py: per condition, Stage I beside Stage II, CA on vs off;
    figures/stages_<trial>.png) and for cyclegan a "Translation" section per direction
    (translation.py; figures/translation_<ab|ba>.png, translation_grids_<ab|ba>.png)

New samples from a checkpoint (the histogram of `--samples N` regenerated samples, a VAE's
reconstructions) come from the `regenerate` object it is handed (ganray.regenerate): the
report itself imports no torch. A trial with missing or unreadable files shows "no verdict
(still running or failed)" and a note; it never stops the report. An experiment without trials
is bad input (exit 2). docs/report.md explains how to read the report.

Modules: model (the experiment as read), tables, points (grid points: seeds together,
agreement, the remedies table), figures, compare and compare_figures (VAE vs
GAN), conditional and translation (their sections), grids (rows cut out of sample grids),
render (report.md, report.html), cli (`ganray report`).
"""
from __future__ import annotations

import logging

from ganray import storage
from ganray.report.compare_figures import vae_vs_gan
from ganray.report.conditional import conditional_section
from ganray.report.figures import make_figures
from ganray.report.model import Regenerate, attach_histograms, attach_media, load_experiment
from ganray.report.points import points_csv, trials_csv
from ganray.report.render import report_html, report_markdown
from ganray.report.translation import translation_section

log = logging.getLogger(__name__)

FIGURES_DIR = "figures"


def write_report(experiment_uri: str, *, samples: int | None = None, regenerate: Regenerate | None = None) -> str:
    """Write report.md, report.html, trials.csv and figures/*.png next to the trials of
    `experiment_uri` (a local path, s3:// or gs:// URI); returns the URI of report.html.
    Class histograms come from the evaluation's counts or, with `samples`, from that many
    samples `regenerate` makes from each trial's newest checkpoint."""
    exp_uri = experiment_uri.rstrip("/")
    exp = load_experiment(exp_uri)
    log.info("report for %s: %d trials", exp_uri, len(exp.trials))
    attach_histograms(exp, samples, regenerate)
    attach_media(exp)
    figures = make_figures(exp)
    comparison = vae_vs_gan(exp, regenerate)  # None unless the trials span the vae family and a GAN family
    # conditional families (per condition, Stage I beside II, CA on/off) and translation (per direction)
    sections = [s for s in (conditional_section(exp), translation_section(exp)) if s is not None]
    extra = [item for s in sections for item in s.figures.items()]
    for name, (_, png) in [*figures.items(), *(comparison.figures.items() if comparison else ()), *extra]:
        storage.put_bytes(storage.join(exp_uri, FIGURES_DIR, name), png)
    storage.put_bytes(storage.join(exp_uri, "trials.csv"), trials_csv(exp).encode())
    storage.put_bytes(storage.join(exp_uri, "points.csv"), points_csv(exp).encode())
    storage.put_bytes(storage.join(exp_uri, "report.md"), report_markdown(exp, figures, comparison, sections).encode())
    html_uri = storage.join(exp_uri, "report.html")
    # last: its presence means a complete report
    storage.put_bytes(html_uri, report_html(exp, figures, comparison, sections).encode())
    return html_uri
