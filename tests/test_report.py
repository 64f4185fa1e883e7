"""The sweep report on a hand-built experiment folder with known values: three trials (healthy,
collapsed and stopped early, no verdict yet with a corrupt checkpoint), real tiny checkpoints of
real generators, real PNG samples and GIFs; the report written locally and to the S3 server.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from ganray import checkpoint, report
from ganray.config import load
from ganray.metrics.inputs import classify
from ganray.models import build_discriminator, build_generator

FIGURES = ("class_histograms.png", "verdict_heatmap.png", "coverage_fcd.png", "loss_curves.png")
COLLAPSE_REASON = "1 of 10 classes hold 97% of 2,000 samples; KL to uniform 2.20 nats"
HEALTHY_REASON = "10 of 10 classes covered; KL to uniform 0.03 nats; FCD 4.1"


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


def build_experiment(root: Path) -> Path:
    """<root>/exp with trials z1-s0 (collapsed at 200, stopped early at 300), z10-s0 (healthy, 400
    steps) and z50-s0 (still running: no verdict, no config, a cut-off metrics line, a corrupt checkpoint)."""
    cfg = _base_cfg(root)
    exp = root / "exp"
    _write(exp / "config.yaml", cfg.to_yaml())
    shape = (1, 28, 28)

    # z1-s0: collapsed; Ray's checkpoint layout checkpoint_<step>/checkpoint.pt
    c1 = cfg.replace(**{"model.z_dim": 1})
    t1 = exp / "trials" / "z1-s0"
    _write(t1 / "config.yaml", c1.to_yaml())
    _write(t1 / "metrics.jsonl", _jsonl(_metrics_rows([100, 200, 300], [6, 2, 1], [0.4, 1.8, 2.2],
                                                      [30.0, 80.0, 120.0], [0.6, 0.3, 0.1], [1.2, 2.5, 3.9])))
    _write(t1 / "verdict.json", json.dumps({"verdict": "collapsed", "step": 300, "first_seen_step": 200,
                                            "reasons": [COLLAPSE_REASON], "stopped_early": True}))
    checkpoint.save(_checkpoint_state(c1, shape, 300), t1 / "checkpoint_000300" / "checkpoint.pt")
    for step in (100, 200, 300):
        _write(t1 / "samples" / f"step_{step:06d}.png", _png(step // 2))
    _write(t1 / "fixed_z.gif", _gif((10, 200, 90)))

    # z10-s0: healthy
    c10 = cfg.replace(**{"model.z_dim": 10})
    t10 = exp / "trials" / "z10-s0"
    _write(t10 / "config.yaml", c10.to_yaml())
    _write(t10 / "metrics.jsonl", _jsonl(_metrics_rows([100, 200, 300, 400], [7, 9, 10, 10], [0.5, 0.2, 0.05, 0.03],
                                                       [40.0, 12.0, 6.0, 4.1], [0.7, 0.65, 0.6, 0.6],
                                                       [1.1, 1.0, 0.95, 0.9])))
    _write(t10 / "verdict.json", json.dumps({"verdict": "healthy", "step": 400, "first_seen_step": 100,
                                             "reasons": [HEALTHY_REASON]}))
    checkpoint.save(_checkpoint_state(c10, shape, 200), t10 / "checkpoint_000200" / "checkpoint.pt")
    checkpoint.save(_checkpoint_state(c10, shape, 400), t10 / "checkpoint_000400" / "checkpoint.pt")
    _write(t10 / "samples" / "step_000400.png", _png(128))
    _write(t10 / "fixed_z.gif", _gif((30, 60)))

    # z50-s0: no verdict yet; the last metrics line is cut off mid-write; a corrupt checkpoint
    t50 = exp / "trials" / "z50-s0"
    _write(t50 / "metrics.jsonl", _jsonl(_metrics_rows([100], [8], [0.3], [25.0], [0.7], [1.0])) + '{"step": 1')
    _write(t50 / "checkpoint_000100" / "checkpoint.pt", b"not a checkpoint")
    return exp


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, str]:
    """The experiment and its report, written once for the tests that only read it."""
    exp = build_experiment(tmp_path_factory.mktemp("report"))
    return exp, report.write_report(str(exp), n_samples=500)


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
    assert list(rows) == ["z1-s0", "z10-s0", "z50-s0"]  # ordered by z_dim
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
    # no verdict, no config: parameters from the trial name, the sweep's base values for the rest
    assert (z50["z_dim"], z50["seed"], z50["verdict"]) == ("50", "0", "no verdict")
    assert z50["status"] == "no verdict (still running or failed)"
    assert z50["steps"] == "100" and float(z50["classes_covered"]) == 8
    notes = z50["notes"].splitlines()  # one note per line
    assert notes[:2] == ["config.yaml missing", "metrics.jsonl: 1 unreadable line(s) skipped"]
    assert notes[2].startswith("class histogram unavailable (CheckpointError")


def test_markdown_has_the_summary_and_one_row_per_trial_with_verdict_and_reasons(written):
    exp, _ = written
    md = (exp / "report.md").read_text()
    assert ("1 of 3 trials collapsed: z_dim 1 at step 200; 1 healthy: z_dim 10; "
            "1 without a verdict yet (still running or failed): z_dim 50.") in md
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


def test_histogram_from_an_image_checkpoint_is_the_classifier_histogram_of_G(written):
    """The computed histogram equals labelling the same G's samples with the reference classifier."""
    exp, _ = written
    ex = report.load_experiment(str(exp))
    t = next(t for t in ex.trials if t.name == "z1-s0")
    h = report.histogram_from_checkpoint(t, 400)
    assert h.n == 400 and len(h.shares) == 10 and sum(h.shares) == pytest.approx(1.0)
    assert (h.step, h.origin, h.generator) == (300, "checkpoint", "G")
    assert h.labeller.startswith("the mnist classifier (held-out accuracy")

    from ganray.loop import generate
    from ganray.metrics.classifier import load_shipped

    state = checkpoint.load(t.checkpoints[-1][1])
    cfg = checkpoint.config_of(state)
    G = build_generator(cfg.model, (1, 28, 28))
    G.load_state_dict(state["G"])
    x = generate(G, 400, 1, torch.device("cpu"), seed=cfg.experiment.seed * 7919 + 1)
    labels = classify(load_shipped("mnist")[0], x, "image").labels
    expected = torch.bincount(labels, minlength=10).double() / 400
    assert h.shares == pytest.approx(expected.tolist())


def test_histogram_from_a_2d_checkpoint_with_every_sample_on_one_mode(tmp_path):
    """ring8 G whose last layer outputs mode 3's mean for every z: 100% in mode 3, nothing off-mode."""
    from ganray.data.mixtures import mixture_spec

    cfg = _base_cfg(tmp_path, **{"data.dataset": "ring8", "model.z_dim": 1})
    G = build_generator(cfg.model, (2,))
    last = [m for m in G.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(mixture_spec("ring8")[0][3])  # G(z) = μ_3 for every z
    trial = tmp_path / "exp" / "trials" / "z1-s0"
    checkpoint.save(_checkpoint_state(cfg, (2,), 50, G=G), trial / "checkpoint_000050" / "checkpoint.pt")
    t = report.Trial("z1-s0", str(trial), checkpoints=[(50, str(trial / "checkpoint_000050" / "checkpoint.pt"))])
    h = report.histogram_from_checkpoint(t, 300)
    assert h.class_names == [*map(str, range(8)), "off"]
    assert h.shares == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_histogram_from_metrics_prefers_logged_class_shares():
    t = report.Trial("z2-s0", "unused", history=[
        {"step": 100, "class_share_0": 0.5, "class_share_1": 0.5},
        {"step": 200, "loss_D": 0.3},  # a training row after the last evaluation
        {"step": 150, "class_share_0": 0.25, "class_share_2": 0.75},
    ])
    t.history.sort(key=lambda r: r["step"])
    h = report.histogram_from_metrics(t)
    assert h is not None and h.shares == [0.25, 0.0, 0.75] and (h.step, h.origin) == (150, "metrics.jsonl")
    assert report.histogram_from_metrics(report.Trial("x", "unused", history=[{"step": 1, "loss_D": 1.0}])) is None


@pytest.mark.parametrize("dataset", ["mnist5k", "stacked-mnist", "ring8", "grid25"])
def test_example_shapes_agree_with_the_datasets(dataset):
    """The report rebuilds G without loading data: its shape table must match the real loaders."""
    from ganray.config import DataConfig
    from ganray.data import load_dataset

    assert report.EXAMPLE_SHAPE[dataset] == load_dataset(DataConfig(dataset=dataset, n_train=64), "test").shape


@pytest.mark.parametrize("name,expected", [
    ("z10-s0", {"z_dim": 10, "seed": 0}),
    ("z10-lrg0.0002-lrd5e-05-s3", {"z_dim": 10, "lr_g": 2e-4, "lr_d": 5e-5, "seed": 3}),
    ("z1-wgan-gp-s2", {"z_dim": 1, "family": "wgan-gp", "seed": 2}),
    ("z2-began-s0", {"z_dim": 2, "family": "began", "seed": 0}),
    ("default", {}),
])
def test_params_from_trial_names(name, expected):
    assert report.params_from_name(name) == expected


def test_summary_and_heatmap_for_seeds_and_learning_rates(tmp_path):
    """Two lr pairs × two seeds at one z_dim: the heatmap cell lists counts; the summary names the lrs."""
    trials = []
    for lr_g, verdicts in ((1e-4, ("healthy", "healthy")), (1e-3, ("collapsed", "healthy"))):
        for seed, v in enumerate(verdicts):
            name = f"z2-lrg{lr_g:g}-s{seed}"
            trials.append(report.Trial(name, name, params={"z_dim": 2, "lr_g": lr_g, "lr_d": 2e-4, "family": "gan",
                                                           "seed": seed},
                                       verdict={"verdict": v, "step": 300, "first_seen_step": 250, "reasons": []}))
    exp = report.Experiment(str(tmp_path), None, trials)
    assert report.summary(exp) == ("1 of 4 trials collapsed: lr_g 0.001 seed 0 at step 250; "
                                   "3 healthy: lr_g 0.0001 seed 0, lr_g 0.0001 seed 1, lr_g 0.001 seed 1.")
    png = report.figure_verdict_heatmap(exp)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and im.size[0] > 400


def test_cli_missing_or_empty_experiment_exits_2(tmp_path, capsys):
    from ganray.cli import main as ganray_main

    assert report.main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty" / "config.yaml", _base_cfg(tmp_path).to_yaml())
    assert ganray_main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "has no trials" in err and "trials/<trial>/" in err
    assert report.main(["s3://"]) == 2  # malformed URI
    assert "malformed storage URI" in capsys.readouterr().err


def test_cli_writes_the_report_and_prints_where(tmp_path, capsys):
    exp = build_experiment(tmp_path)
    (exp / "trials" / "z1-s0" / "checkpoint_000300" / "checkpoint.pt").unlink()  # faster: one histogram to compute
    assert report.main([str(exp), "--samples", "200"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {exp / 'report.html'}"
    assert (exp / "report.html").is_file() and len(_csv_rows(exp)) == 3


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
    html_uri = report.write_report(exp_uri, n_samples=200)
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
    assert report.main([f"{s3_bucket}-missing/ganray/exp"]) == 2
    err = capsys.readouterr().err
    assert "-missing" in err and "bucket does not exist" in err.lower()
