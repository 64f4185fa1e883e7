"""The sweep report on a hand-built trial record with known values: three trials (healthy,
collapsed and stopped early, no verdict yet with a corrupt checkpoint), real tiny checkpoints of
real generators, real PNG samples and GIFs, metrics in segments (one trial also with the legacy
metrics.jsonl) and the evaluation's class counts in verdict.json; the report written locally
and to the S3 server, histograms from the counts or regenerated from the checkpoints.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ganray import regenerate, report
from ganray import report_cli as cli
from ganray.artifacts import layout, reader
from ganray.config import load
from ganray.metrics.inputs import classify
from ganray.models import build_discriminator, build_generator
from ganray.report import figures, model, render, tables
from ganray.train import checkpoint

FIGURES = ("class_histograms.png", "verdict_heatmap.png", "coverage_fcd.png", "loss_curves.png")
COLLAPSE_REASON = "1 of 10 classes hold 97% of 2,000 samples; KL to uniform 2.20 nats"
HEALTHY_REASON = "10 of 10 classes covered; KL to uniform 0.03 nats; FCD 4.1"
LABELLER = "the mnist classifier (held-out accuracy 98.0%)"
COLLAPSED_COUNTS = [0, 0, 0, 1940, 20, 0, 40, 0, 0, 0]  # 97% in class 3
HEALTHY_COUNTS = [196, 210, 190, 205, 199, 201, 188, 212, 197, 202]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _base_cfg(root: Path, **over):
    overrides = {"experiment.name": "exp", "storage.uri": str(root), "data.cache_dir": str(root / "cache"),
                 "model.width": 0.125, "train.steps": 400, "sweep.z_dim": [1, 10, 50], **over}
    return load(None, overrides)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _png(colour: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (56, 56), colour).save(buf, format="PNG")
    return buf.getvalue()


def _gif(colours: tuple[int, ...]) -> bytes:
    frames = [Image.new("L", (56, 56), c) for c in colours]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return buf.getvalue()


def _checkpoint_state(cfg, shape, step: int, G: torch.nn.Module | None = None) -> dict:
    """A real one-file checkpoint of a real (untrained) G and D, in checkpoint.py's format."""
    torch.manual_seed(cfg.experiment.seed)
    G = G or build_generator(cfg.model, shape)
    D = build_discriminator(cfg.model, shape, cfg.train.family)
    return {"config": cfg.to_dict(), "step": step, "G": G.state_dict(), "D": D.state_dict(), "G_ema": None,
            "opt_G": {}, "opt_D": {}, "family_state": {}}


def _metrics_rows(steps, classes, kl, fcd, loss_d, loss_g) -> list[dict]:
    rows = []
    for i, step in enumerate(steps):
        rows.append({"step": step - 50, "time": 1000.0 + step, "loss_D": loss_d[i] + 0.05, "loss_G": loss_g[i] - 0.05,
                     "d_acc_real": 0.6, "d_acc_fake": 0.55})
        rows.append({"step": step, "time": 1001.0 + step, "loss_D": loss_d[i], "loss_G": loss_g[i],
                     "d_acc_real": 0.6, "d_acc_fake": 0.55, "classes_covered": classes[i], "kl_uniform": kl[i],
                     "fcd": fcd[i], "precision": 0.5 + 0.1 * i, "recall": 0.4 - 0.1 * i, "density": 0.9,
                     "coverage": 0.7, "fixed_z_flip_rate": 0.2})
    return rows


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _counts(counts: list[int], step: int) -> dict:
    """verdict.json's counts, as the evaluation writes them."""
    return {"of": "classes", "names": [str(k) for k in range(len(counts))], "counts": counts, "n": sum(counts),
            "labeller": LABELLER, "step": step}


def build_experiment(root: Path) -> Path:
    """<root>/exp with trials z1-s0 (collapsed at 200, stopped early at 300; metrics in two
    segments), z10-s0 (healthy, 400 steps; the legacy metrics.jsonl, then a segment) and z50-s0
    (still running: no verdict, no config, a cut-off metrics line, a corrupt checkpoint)."""
    cfg = _base_cfg(root)
    exp = root / "exp"
    _write(exp / "config.yaml", cfg.to_yaml())
    shape = (1, 28, 28)

    # z1-s0: collapsed; Ray's checkpoint layout checkpoint_<step>/checkpoint.pt
    c1 = cfg.replace(**{"model.z_dim": 1})
    t1 = exp / "trials" / "z1-s0"
    _write(t1 / "config.yaml", c1.to_yaml())
    rows = _metrics_rows([100, 200, 300], [6, 2, 1], [0.4, 1.8, 2.2], [30.0, 80.0, 120.0], [0.6, 0.3, 0.1],
                         [1.2, 2.5, 3.9])
    _write(t1 / layout.metrics_segment(0), _jsonl(rows[:3]))
    _write(t1 / layout.metrics_segment(1), _jsonl(rows[3:]))
    _write(t1 / "verdict.json", json.dumps({"verdict": "collapsed", "step": 300, "first_seen_step": 200,
                                            "reasons": [COLLAPSE_REASON], "stopped_early": True,
                                            "counts": _counts(COLLAPSED_COUNTS, 300), "evaluator": None,
                                            "stopper": {"bad_in_a_row": 2}}))
    checkpoint.save(_checkpoint_state(c1, shape, 300), t1 / "checkpoint_000300" / "checkpoint.pt")
    for step in (100, 200, 300):
        _write(t1 / "samples" / f"step_{step:06d}.png", _png(step // 2))
    _write(t1 / "fixed_z.gif", _gif((10, 200, 90)))

    # z10-s0: healthy; an older record resumed by this ganray: metrics.jsonl first, then a segment
    c10 = cfg.replace(**{"model.z_dim": 10})
    t10 = exp / "trials" / "z10-s0"
    _write(t10 / "config.yaml", c10.to_yaml())
    rows = _metrics_rows([100, 200, 300, 400], [7, 9, 10, 10], [0.5, 0.2, 0.05, 0.03], [40.0, 12.0, 6.0, 4.1],
                         [0.7, 0.65, 0.6, 0.6], [1.1, 1.0, 0.95, 0.9])
    _write(t10 / "metrics.jsonl", _jsonl(rows[:4]))
    _write(t10 / layout.metrics_segment(0), _jsonl(rows[4:]))
    _write(t10 / "verdict.json", json.dumps({"verdict": "healthy", "step": 400, "first_seen_step": 100,
                                             "reasons": [HEALTHY_REASON], "counts": _counts(HEALTHY_COUNTS, 400)}))
    checkpoint.save(_checkpoint_state(c10, shape, 200), t10 / "checkpoint_000200" / "checkpoint.pt")
    checkpoint.save(_checkpoint_state(c10, shape, 400), t10 / "checkpoint_000400" / "checkpoint.pt")
    _write(t10 / "samples" / "step_000400.png", _png(128))
    _write(t10 / "fixed_z.gif", _gif((30, 60)))

    # z50-s0: no verdict yet; the last metrics line is cut off mid-write; a corrupt checkpoint
    t50 = exp / "trials" / "z50-s0"
    _write(t50 / layout.metrics_segment(0),
           _jsonl(_metrics_rows([100], [8], [0.3], [25.0], [0.7], [1.0])) + '{"step": 1')
    _write(t50 / "checkpoint_000100" / "checkpoint.pt", b"not a checkpoint")
    return exp


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, str]:
    """The experiment and its report, written once for the tests that only read it."""
    exp = build_experiment(tmp_path_factory.mktemp("report"))
    return exp, report.write_report(str(exp))  # histograms from the evaluation's counts


def _csv_rows(exp: Path) -> dict[str, dict[str, str]]:
    return {r["trial"]: r for r in csv.DictReader(io.StringIO((exp / "trials.csv").read_text()))}


def test_report_files_are_written_next_to_the_trials(written):
    exp, html_uri = written
    assert html_uri == str(exp / "report.html")
    for name in ("report.md", "report.html", "trials.csv", *(f"figures/{f}" for f in FIGURES)):
        assert (exp / name).is_file() and (exp / name).stat().st_size > 0, name


def test_figures_are_valid_pngs_of_a_readable_size(written):
    exp, _ = written
    for name in FIGURES:
        with Image.open(exp / "figures" / name) as im:
            assert im.format == "PNG", name
            w, h = im.size
            assert 400 <= w <= 3000 and 200 <= h <= 3000, (name, im.size)
            im.verify()


def test_trials_csv_carries_the_known_values(written):
    exp, _ = written
    rows = _csv_rows(exp)
    assert list(rows) == ["z1-s0", "z10-s0", "z50-s0"]  # ordered by z_dim (unknown last)
    z1, z10, z50 = rows["z1-s0"], rows["z10-s0"], rows["z50-s0"]
    assert (z1["z_dim"], z1["seed"], z1["family"]) == ("1", "0", "gan")
    assert (float(z1["lr_g"]), float(z1["lr_d"])) == (2e-4, 2e-4)
    assert (z1["verdict"], z1["status"], z1["verdict_step"]) == ("collapsed", "collapsed at step 200", "200")
    assert (z1["steps"], z1["total_steps"], z1["stopped_early"]) == ("300", "400", "True")
    assert z1["reasons"] == COLLAPSE_REASON
    # final metrics = the last evaluation's values
    assert float(z1["classes_covered"]) == 1 and float(z1["kl_uniform"]) == 2.2 and float(z1["fcd"]) == 120.0
    assert float(z1["precision"]) == pytest.approx(0.7) and float(z1["recall"]) == pytest.approx(0.2)
    assert (z10["verdict"], z10["status"], z10["steps"], z10["stopped_early"]) == ("healthy", "healthy", "400", "False")
    assert float(z10["classes_covered"]) == 10 and float(z10["fcd"]) == 4.1
    # no verdict, no config: what the sweep config fixes (seed: one value, lr: no grid); z_dim, swept, unknown
    assert (z50["z_dim"], z50["seed"], z50["verdict"]) == ("", "0", "no verdict")
    assert (float(z50["lr_g"]), z50["family"]) == (2e-4, "gan")
    assert z50["status"] == "no verdict (still running or failed)"
    assert z50["steps"] == "100" and float(z50["classes_covered"]) == 8
    notes = z50["notes"].splitlines()  # one note per line
    assert notes == ["config.yaml missing", "metrics/000000.jsonl: 1 unreadable line(s) skipped"]


def test_markdown_has_the_summary_and_one_row_per_trial_with_verdict_and_reasons(written):
    exp, _ = written
    md = (exp / "report.md").read_text()
    assert ("1 of 3 trials collapsed: z_dim 1 at step 200; 1 healthy: z_dim 10; "
            "1 without a verdict yet (still running or failed): z50-s0.") in md  # its z_dim is unknown: its name
    assert "1 stopped early by the collapse stopper (z_dim 1 at step 300)." in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if re.match(r"^\| z\d+-s0 ", line)}
    assert set(rows) == {"z1-s0", "z10-s0", "z50-s0"}
    assert "| collapsed at step 200 |" in rows["z1-s0"] and COLLAPSE_REASON in rows["z1-s0"]
    assert "| 300 / 400 | yes |" in rows["z1-s0"]
    assert "| healthy |" in rows["z10-s0"] and HEALTHY_REASON in rows["z10-s0"]
    assert "no verdict (still running or failed)" in rows["z50-s0"]
    for name in FIGURES:
        assert f"(figures/{name})" in md
    assert "(trials/z1-s0/fixed_z.gif)" in md and "(trials/z1-s0/samples/step_000300.png)" in md


def test_html_is_self_contained_and_embeds_figures_samples_and_gifs(written):
    exp, _ = written
    page = (exp / "report.html").read_text()
    assert "1 of 3 trials collapsed: z_dim 1 at step 200" in page
    assert re.findall(r'<img [^>]*src="([^"]*)"', page)  # there are images ...
    assert all(src.startswith("data:image/") for src in re.findall(r'<img [^>]*src="([^"]*)"', page))  # ... all inline
    for name in FIGURES:
        assert base64.b64encode((exp / "figures" / name).read_bytes()).decode() in page, name
    for trial in ("z1-s0", "z10-s0"):
        gif = (exp / "trials" / trial / "fixed_z.gif").read_bytes()
        assert "data:image/gif;base64," + base64.b64encode(gif).decode() in page
    last_png = (exp / "trials" / "z1-s0" / "samples" / "step_000300.png").read_bytes()
    assert "data:image/png;base64," + base64.b64encode(last_png).decode() in page
    assert COLLAPSE_REASON.replace("&", "&amp;") in page and "no verdict (still running or failed)" in page


def _html_rows(page: str) -> dict[str, str]:
    """{trial: its <tr>} of report.html's trials table."""
    table = page.split('<table class="trials-table">', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)
    return {re.search(r'<td class="trial"[^>]*>([^<]*)</td>', r).group(1): r for r in rows if 'class="trial"' in r}


def test_each_trials_row_shows_its_last_sample_grid_inline(written):
    """report.html: the trial's last grid inside its row (embedded, with width, height and alt
    text, linking to the trial's card with the GIF); report.md: the same grid by its path
    relative to report.md. tests/test_report_browser.py looks at both in Chromium."""
    exp, _ = written
    page, md = (exp / "report.html").read_text(), (exp / "report.md").read_text()
    rows = _html_rows(page)
    assert list(rows) == ["z1-s0", "z10-s0", "z50-s0"]
    for trial, step in (("z1-s0", 300), ("z10-s0", 400)):
        grid = (exp / "trials" / trial / "samples" / f"step_{step:06d}.png").read_bytes()
        img = re.search(r'<td class="samples"[^>]*><a href="#samples-([^"]+)"[^>]*><img ([^>]*)>', rows[trial])
        assert img and img.group(1) == trial, rows[trial]
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', img.group(2)))
        assert attrs["src"] == "data:image/png;base64," + base64.b64encode(grid).decode()
        assert (attrs["width"], attrs["height"]) == ("56", "56")  # small grids keep their size
        assert attrs["alt"] == f"sample grid of {trial} at step {step}"
        assert f'id="samples-{trial}"' in page  # the card the thumbnail links to
        md_row = next(line for line in md.splitlines() if line.startswith(f"| {trial} |"))
        src = f"trials/{trial}/samples/step_{step:06d}.png"
        assert f'<img src="{src}" width="56" height="56" alt="sample grid of {trial} at step {step}">' in md_row
        assert (exp / src).is_file()  # the relative path works from report.md
    assert "no samples yet" in rows["z50-s0"] and "<img" not in rows["z50-s0"]
    assert next(line for line in md.splitlines() if line.startswith("| z50-s0 |")).endswith("| no samples yet |")


def test_html_table_names_the_shared_settings_once_and_keeps_the_varying_ones():
    """Only z_dim varies: lr_g, lr_d, family and seed go into one line above the table, not a column each."""
    exp = model.Experiment("/x/exp", None, [model.Trial("z1-s0", "/x/exp/trials/z1-s0", {"z_dim": z, "lr_g": 2e-4,
                                                   "lr_d": 2e-4, "family": "gan", "seed": 0}) for z in (1, 10)])
    page = render.report_html(exp, {})
    assert '<p class="shared">Every trial: lr_g 0.0002, lr_d 0.0002, family gan, seed 0.</p>' in page
    head = re.search(r'<table class="trials-table"><thead><tr>(.*?)</tr>', page).group(1)
    assert re.findall(r"<th>([^<]*)</th>", head)[:4] == ["trial", "z_dim", "steps", "stopped early"]
    assert "<th>lr_g</th>" not in head and "<th>samples</th>" in head and "<th>reasons</th>" in head


def test_thumbnail_sizes_come_from_the_image_header():
    png = _png(0)  # 56 x 56
    assert render.image_size(png) == (56, 56) and render.thumbnail_size(png) == (56, 56)
    buf = io.BytesIO()
    Image.new("L", (482, 242)).save(buf, format="PNG")
    assert render.thumbnail_size(buf.getvalue()) == (160, 80)  # shrunk to THUMB_PX, the aspect kept
    assert render.image_size(_gif((1, 2))) == (56, 56)
    assert render.image_size(b"not an image") is None and render.thumbnail_size(None) is None


def test_histograms_come_from_the_evaluations_counts(written):
    """By default a trial's histogram is verdict.json's counts, normalised; a trial without counts has none."""
    exp, _ = written
    ex = model.load_experiment(str(exp))
    model.attach_histograms(ex)
    h = {t.name: t.histogram for t in ex.trials}
    assert h["z1-s0"].shares == pytest.approx([c / 2000 for c in COLLAPSED_COUNTS])
    z1 = h["z1-s0"]
    assert (z1.step, z1.n, z1.origin, z1.labeller) == (300, 2000, "evaluation", LABELLER)
    assert z1.class_names == [str(k) for k in range(10)]
    assert h["z10-s0"].shares == pytest.approx([c / 2000 for c in HEALTHY_COUNTS]) and h["z50-s0"] is None
    md = (exp / "report.md").read_text()
    assert f"class histogram: 2,000 samples of the step-300 evaluation, labelled by {LABELLER}" in md
    assert f"- **z50-s0**, no verdict (still running or failed): no samples yet, {model.NO_COUNTS_TEXT}" in md
    assert model.class_count(ex) == 10  # the counts' length


class FakeRegenerator:
    """A regenerator that says what it was asked: the report uses what it is handed, nothing else."""

    def __init__(self):
        self.asked: list[tuple[str, int]] = []

    def class_counts(self, checkpoint_uri: str, n: int) -> dict:
        self.asked.append((checkpoint_uri, n))
        if "z50" in checkpoint_uri:
            raise checkpoint.CheckpointError(f"{checkpoint_uri}: not a readable checkpoint")
        return {**_counts([n, 0], 7), "generator": "G_ema"}

    def reconstruct(self, checkpoint_uri: str, trial: str):
        raise AssertionError("no VAE trial here")


def test_samples_regenerate_the_histograms_with_the_injected_regenerator(written):
    """--samples N: each trial's newest checkpoint through the regenerator; its failure becomes a note."""
    exp, _ = written
    ex = model.load_experiment(str(exp))
    fake = FakeRegenerator()
    model.attach_histograms(ex, 300, fake)
    assert [(uri.rsplit("/trials/", 1)[1], n) for uri, n in fake.asked] == [
        ("z1-s0/checkpoint_000300/checkpoint.pt", 300), ("z10-s0/checkpoint_000400/checkpoint.pt", 300),
        ("z50-s0/checkpoint_000100/checkpoint.pt", 300)]
    z1, z10, z50 = ex.trials
    assert (z1.histogram.shares, z1.histogram.origin, z1.histogram.generator) == ([1.0, 0.0], "checkpoint", "G_ema")
    assert z1.histogram.source == f"300 samples of G_ema at the step-7 checkpoint, labelled by {LABELLER}"
    assert z50.histogram is None and z50.notes[-1].startswith("class histogram unavailable (CheckpointError")
    with pytest.raises(ValueError, match="without a regenerator"):
        model.attach_histograms(ex, 300)


def test_class_counts_of_an_image_checkpoint_are_the_classifier_histogram_of_G(written):
    """The regenerated counts equal labelling the same G's samples with the reference classifier."""
    exp, _ = written
    uri = str(exp / "trials" / "z1-s0" / "checkpoint_000300" / "checkpoint.pt")
    c = regenerate.class_counts(uri, 400)
    assert c["n"] == 400 and len(c["counts"]) == 10 and sum(c["counts"]) == 400
    assert (c["step"], c["generator"], c["of"], c["names"]) == (300, "G", "classes", [str(k) for k in range(10)])
    assert c["labeller"].startswith("the mnist classifier (held-out accuracy")

    from ganray.metrics.classifier.store import load_shipped
    from ganray.train.sampling import generate

    state = checkpoint.load(uri)
    cfg = checkpoint.config_of(state)
    G = build_generator(cfg.model, (1, 28, 28))
    G.load_state_dict(state["G"])
    x = generate(G, 400, 1, torch.device("cpu"), seed=cfg.experiment.seed * 7919 + 1)
    labels = classify(load_shipped("mnist")[0], x, "image").labels
    assert c["counts"] == torch.bincount(labels, minlength=10).tolist()


def test_class_counts_of_a_2d_checkpoint_with_every_sample_on_one_mode(tmp_path):
    """ring8 G whose last layer outputs mode 3's mean for every z: 100% in mode 3, nothing off-mode."""
    from ganray.data.mixtures import mixture_spec

    cfg = _base_cfg(tmp_path, **{"data.dataset": "ring8", "model.z_dim": 1})
    G = build_generator(cfg.model, (2,))
    last = [m for m in G.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(mixture_spec("ring8")[0][3])  # G(z) = μ_3 for every z
    path = tmp_path / "exp" / "trials" / "z1-s0" / "checkpoint_000050" / "checkpoint.pt"
    checkpoint.save(_checkpoint_state(cfg, (2,), 50, G=G), path)
    c = regenerate.class_counts(str(path), 300)
    assert (c["of"], c["names"]) == ("modes", [*map(str, range(8)), "off"])
    assert c["counts"] == [0, 0, 0, 300, 0, 0, 0, 0, 0]
    h = model.ClassHistogram.from_counts(c, "checkpoint")
    assert h.shares == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("dataset", ["mnist5k", "stacked-mnist", "ring8", "grid25", "captioned-mnist"])
def test_example_shapes_agree_with_the_datasets(dataset):
    """G is rebuilt without loading data: the shape table must match the real loaders."""
    from ganray.config import DataConfig
    from ganray.data import example_shape, load_dataset

    assert example_shape(dataset) == load_dataset(DataConfig(dataset=dataset, n_train=64), "test").shape


def test_parameters_come_from_the_trials_config_not_its_name(tmp_path):
    """A trial named like z10 whose config.yaml says z_dim 3 and lr_g 1e-3 is reported as what it ran."""
    cfg = _base_cfg(tmp_path)
    exp = tmp_path / "exp"
    _write(exp / "config.yaml", cfg.to_yaml())
    t = exp / "trials" / "z10-lrg0.0002-s0"
    _write(t / "config.yaml", cfg.replace(**{"model.z_dim": 3, "train.lr_g": 1e-3, "experiment.seed": 4}).to_yaml())
    _write(t / layout.metrics_segment(0), _jsonl([{"step": 10, "time": 1.0, "loss_D": 0.5}]))
    (trial,) = model.load_experiment(str(exp)).trials
    assert trial.params == {"z_dim": 3, "lr_g": 1e-3, "lr_d": 2e-4, "family": "gan", "variant": "", "seed": 4}
    assert trial.total_steps == 400


def test_summary_and_heatmap_for_seeds_and_learning_rates(tmp_path):
    """Two lr pairs × two seeds at one z_dim: the heatmap cell lists counts; the summary names the lrs."""
    trials = []
    for lr_g, verdicts in ((1e-4, ("healthy", "healthy")), (1e-3, ("collapsed", "healthy"))):
        for seed, v in enumerate(verdicts):
            name = f"z2-lrg{lr_g:g}-s{seed}"
            trials.append(model.Trial(name, name, params={"z_dim": 2, "lr_g": lr_g, "lr_d": 2e-4, "family": "gan",
                                                           "seed": seed},
                                       verdict={"verdict": v, "step": 300, "first_seen_step": 250, "reasons": []}))
    exp = model.Experiment(str(tmp_path), None, trials)
    assert tables.summary(exp) == ("1 of 4 trials collapsed: lr_g 0.001 seed 0 at step 250; "
                                   "3 healthy: lr_g 0.0001 seed 0, lr_g 0.0001 seed 1, lr_g 0.001 seed 1.")
    png = figures.figure_verdict_heatmap(exp)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size[0] > 400


def test_cli_missing_or_empty_experiment_exits_2(tmp_path, capsys):
    from ganray.cli import main as ganray_main

    assert cli.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty" / "config.yaml", _base_cfg(tmp_path).to_yaml())
    assert ganray_main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "has no trials" in err and "trials/<trial>/" in err
    assert cli.main(["s3://"]) == 2  # malformed URI
    assert "malformed storage URI" in capsys.readouterr().err


def test_cli_writes_the_report_and_prints_where(tmp_path, capsys):
    """`ganray report EXP --samples N` regenerates the histograms from the checkpoints with ganray.regenerate."""
    exp = build_experiment(tmp_path)
    (exp / "trials" / "z1-s0" / "checkpoint_000300" / "checkpoint.pt").unlink()  # faster: one histogram to compute
    assert cli.main([str(exp), "--samples", "200"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {exp / 'report.html'}"
    assert (exp / "report.html").is_file()
    rows = _csv_rows(exp)
    assert len(rows) == 3
    assert rows["z50-s0"]["notes"].splitlines()[2].startswith("class histogram unavailable (CheckpointError")
    md = (exp / "report.md").read_text()
    assert "class histogram: 200 samples of G at the step-400 checkpoint, labelled by the mnist classifier" in md
    assert f"class histogram: 2,000 samples of the step-300 evaluation, labelled by {LABELLER}" in md  # no checkpoint
    assert cli.main([str(exp), "--samples", "0"]) == 2
    assert "--samples: must be >= 1" in capsys.readouterr().err


def test_cli_help_says_what_samples_does(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "regenerate N samples from each trial's newest checkpoint" in text and "default: the counts" in text


def test_writing_the_report_of_a_finished_sweep_leaves_torch_unimported(written, tmp_path):
    """The report reads the record only: write_report in a fresh interpreter never imports torch."""
    exp, _ = written
    code = ("import sys; from ganray.report import write_report; "
            f"write_report({str(exp)!r}); "
            "bad = sorted(m for m in ('torch', 'ganray.train', 'ganray.models', 'ganray.families', 'ganray.data', "
            "'ganray.regenerate') if m in sys.modules); print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    # nor does the `ganray report` command, unless --samples asks for regenerated samples
    code = ("import sys; from ganray.report_cli import main; "
            f"rc = main([{str(exp)!r}]); print(rc, 'torch' in sys.modules, 'ganray.regenerate' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "0 False False", r.stdout + r.stderr


def test_report_of_an_old_record_without_counts(tmp_path):
    """A record of an older ganray (metrics.jsonl only, steps as floats, no counts) reads the same,
    and the report says how to get its histograms."""
    exp = tmp_path / "old"
    cfg = _base_cfg(tmp_path)
    _write(exp / "config.yaml", cfg.to_yaml())
    t = exp / "trials" / "z1-s0"
    _write(t / "config.yaml", cfg.replace(**{"model.z_dim": 1}).to_yaml())
    _write(t / "metrics.jsonl", '{"step": 50.0, "loss_D": NaN}\n{"step": 100.0, "loss_D": 0.4, "fcd": 9.5}\n')
    _write(t / "verdict.json", json.dumps({"verdict": "garbage", "step": 100, "first_seen_step": 50,
                                           "reasons": ["FCD 9.5"]}))
    report.write_report(str(exp))
    md = (exp / "report.md").read_text()
    assert "| z1-s0 | 1 |" in md and "produced garbage" in md and "garbage at step 50" in md
    assert model.NO_COUNTS_TEXT in md and not (exp / "figures" / "class_histograms.png").exists()
    assert _csv_rows(exp)["z1-s0"]["steps"] == "100" and _csv_rows(exp)["z1-s0"]["notes"] == ""


# ---- the record reader ---------------------------------------------------------------------


def test_reader_reads_segments_in_order_after_the_legacy_file(written):
    exp, _ = written
    rec = reader.read_trial(str(exp), "z10-s0")
    assert [r["step"] for r in rec.rows] == [50, 100, 150, 200, 250, 300, 350, 400]
    assert rec.rows[0]["loss_D"] == pytest.approx(0.75) and rec.notes == []
    assert rec.counts == _counts(HEALTHY_COUNTS, 400)
    assert [s for s, _ in rec.checkpoints] == [200, 400] and rec.gif_uri.endswith("/fixed_z.gif")
    assert reader.latest_checkpoint(rec.uri).endswith("checkpoint_000400/checkpoint.pt")
    assert reader.last_row(rec.uri)["step"] == 400 and reader.read_rows(rec.uri) == rec.rows
    assert reader.read_verdict(rec.uri)["verdict"] == "healthy"
    z50 = reader.read_trial(layout.trial_paths(str(exp), "z50-s0"), "z50-s0")
    assert (z50.config, z50.verdict, reader.read_verdict(z50.uri)) == (None, None, None)
    assert z50.notes == ["config.yaml missing", "metrics/000000.jsonl: 1 unreadable line(s) skipped"]


def test_reader_turns_non_finite_strings_into_floats_and_notes_bad_files(tmp_path):
    t = tmp_path / "exp" / "trials" / "a"
    _write(t / layout.metrics_segment(0),
           '{"step": 1, "fcd": "nan", "kl": "inf", "x": "-inf", "s": "text"}\n[1]\n')
    _write(t / layout.metrics_segment(1), '{"step": 2, "fcd": 1.5}\n')
    bad_counts = {"names": ["0"], "counts": [-1]}
    _write(t / "verdict.json", json.dumps({"verdict": "healthy", "step": 2, "counts": bad_counts}))
    _write(t / "config.yaml", "model: {z_dim: -3}\n")
    rec = reader.read_trial(str(tmp_path / "exp"), "a")
    row = rec.rows[0]
    assert math.isnan(row["fcd"]) and row["kl"] == math.inf and row["x"] == -math.inf and row["s"] == "text"
    assert [r["step"] for r in rec.rows] == [1, 2]
    assert rec.verdict["verdict"] == "healthy" and rec.counts is None and rec.config is None
    assert rec.notes[0].startswith("config.yaml unreadable (ConfigError")
    assert rec.notes[1:] == ["metrics/000000.jsonl: 1 unreadable line(s) skipped",
                             "verdict.json: counts malformed, ignored"]
    _write(t / "verdict.json", '{"verdict": "fine"')
    notes = reader.read_trial(str(tmp_path / "exp"), "a").notes
    assert notes[-1].startswith("verdict.json unreadable (JSONDecodeError")
    with pytest.raises(reader.ExperimentNotFound, match="does not exist"):
        reader.read_experiment(str(tmp_path / "nope"))


@pytest.mark.parametrize("bucket_fixture,server_fixture", [("s3_bucket", "s3_server"), ("gcs_bucket", "gcs_server")])
def test_report_on_a_bucket(bucket_fixture, server_fixture, request, tmp_path):
    """The whole report read from and written to a real S3 (moto) / GCS (emulator) server."""
    from ganray import storage

    bucket_uri = request.getfixturevalue(bucket_fixture)
    server = request.getfixturevalue(server_fixture)
    exp = build_experiment(tmp_path)
    exp_uri = f"{bucket_uri}/ganray/exp"
    for f in sorted(exp.rglob("*")):
        if f.is_file():
            storage.upload_file(str(f), storage.join(exp_uri, f.relative_to(exp).as_posix()))
    html_uri = report.write_report(exp_uri, samples=200, regenerate=regenerate)
    assert html_uri == f"{exp_uri}/report.html"

    keys = server.objects(bucket_uri.split("://", 1)[1], prefix="ganray/exp/")  # listed by the server's own client
    for name in ("report.md", "report.html", "trials.csv", *(f"figures/{f}" for f in FIGURES)):
        assert keys.get(f"ganray/exp/{name}", 0) > 0, name
    rows = {r["trial"]: r for r in csv.DictReader(io.StringIO(storage.read_bytes(f"{exp_uri}/trials.csv").decode()))}
    assert rows["z1-s0"]["status"] == "collapsed at step 200" and rows["z50-s0"]["verdict"] == "no verdict"
    page = storage.read_bytes(html_uri).decode()
    gif = (exp / "trials" / "z1-s0" / "fixed_z.gif").read_bytes()
    assert base64.b64encode(gif).decode() in page
    assert "class histogram: 200 samples of G at the step-300 checkpoint" in page  # the checkpoint came from the bucket


def test_missing_bucket_exits_2(s3_bucket, capsys):
    assert cli.main([f"{s3_bucket}-missing/ganray/exp"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"bucket '[^']*-missing' does not exist", err), err  # found by the storage preflight
