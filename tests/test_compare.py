"""VAE vs GAN (issue 8): the report's comparison section on hand-built trial records with known
numbers (real tiny VAE checkpoints, real mnist5k held-out digits, real PNGs; reconstructions
made by ganray.regenerate, handed to the report), and the compare job
end to end (`python jobs/compare_vae_gan.py --smoke`) on a real local Ray writing to a real S3 server.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganray import regenerate, report, storage
from ganray.artifacts import layout
from ganray.config import ConfigError, load
from ganray.data import load_dataset
from ganray.families import get_family
from ganray.families.vae import reconstruct
from ganray.report import compare, compare_figures, model
from ganray.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 28, 28)
COMPARE_FIGURES = ("vae_vs_gan_metrics.png", "vae_vs_gan_samples.png", "vae_reconstructions.png")
# Final metrics per trial: the textbook trade-off (VAE: more recall, less precision).
KNOWN = {
    "vae-s0": {"classes_covered": 2.0, "kl_uniform": 0.01, "fcd": 40.0, "precision": 0.33, "recall": 0.60,
               "near_real_share": 0.50, "spread_ratio": 0.50},
    "vae-s1": {"classes_covered": 2.0, "kl_uniform": 0.03, "fcd": 44.0, "precision": 0.37, "recall": 0.64,
               "near_real_share": 0.50, "spread_ratio": 0.60},
    "gan-s0": {"classes_covered": 2.0, "kl_uniform": 0.20, "fcd": 30.0, "precision": 0.80, "recall": 0.40,
               "near_real_share": 0.40, "spread_ratio": 1.00},
    "gan-s1": {"classes_covered": 1.0, "kl_uniform": 0.60, "fcd": 36.0, "precision": 0.76, "recall": 0.42,
               "near_real_share": 0.40, "spread_ratio": 1.10},
}
TEXTBOOK = "VAE recall 0.62 ≥ GAN 0.41, VAE precision 0.35 < GAN 0.78: the VAE covers the modes but blurs"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def _cfg(root: Path, **over):
    return load(None, {"experiment.name": "cmp", "storage.uri": str(root), "data.dataset": "mnist5k",
                       "data.classes": [5, 7], "model.width": 0.125, "model.z_dim": 8, "train.steps": 40,
                       "sweep.z_dim": [], "sweep.family": ["gan", "vae"], "sweep.seeds": [0, 1],
                       "sweep.stopper": False, **over})


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _png(level: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (62, 62), level).save(buf, format="PNG")
    return buf.getvalue()


def _vae_state(cfg, step: int, seed: int = 123) -> dict:
    """A real checkpoint of a (seeded, untrained) VAE built by the vae family, in checkpoint.py's format."""
    torch.manual_seed(seed)
    m = get_family("vae").build(cfg, SHAPE)
    return {"config": cfg.to_dict(), "step": step, "G": m.G_module.state_dict(), "D": m.D_module.state_dict(),
            "G_ema": None, "opt_G": m.opt_G.state_dict(), "opt_D": None, "family_state": {}}


def build_experiment(root: Path, families: tuple[str, ...] = ("gan", "vae")) -> Path:
    """<root>/cmp: trials <family>-s<seed> with KNOWN final metrics, a sample grid each, and a
    real VAE checkpoint (Ray's layout) for the VAE trials."""
    base = _cfg(root)
    exp = root / "cmp"
    _write(exp / "config.yaml", base.to_yaml())
    for name, final in KNOWN.items():
        family, seed = name.split("-s")
        if family not in families:
            continue
        cfg = base.replace(**{"train.family": family, "experiment.seed": int(seed)})
        t = exp / "trials" / name
        _write(t / "config.yaml", cfg.to_yaml())
        rows = [{"step": 20, "loss": 5.0}, {"step": 40, **final}]
        _write(t / layout.metrics_segment(0), "".join(json.dumps(r) + "\n" for r in rows))
        _write(t / "verdict.json", json.dumps({"verdict": "healthy", "step": 40, "reasons": []}))
        _write(t / "samples" / "step_000040.png", _png(60 if family == "vae" else 200))
        if family == "vae":
            checkpoint.save(_vae_state(cfg, 40, seed=10 + int(seed)), t / "checkpoint_000040" / "checkpoint.pt")
    return exp


# ---- numbers and sentences ---------------------------------------------------------------


def test_spread_is_the_mean_and_sample_sd_over_seeds():
    s = compare.Spread([1.0, 3.0])
    assert (s.n, s.mean, s.sd) == (2, 2.0, pytest.approx(math.sqrt(2)))
    assert compare.Spread([0.5]).sd == 0.0
    assert compare.fmt_spread(compare.Spread([0.60, 0.64])) == "0.62 ± 0.03 (2 seeds)"
    assert compare.fmt_spread(compare.Spread([1400.0, 1440.0])) == "1420 ± 28.3 (2 seeds)"
    assert compare.fmt_spread(None) == "n/a"


def _family(name: str, recall: list[float], precision: list[float], verdicts=None) -> compare.FamilyNumbers:
    return compare.FamilyNumbers(name, [f"{name}-s{i}" for i in range(len(recall))],
                                {"recall": compare.Spread(recall), "precision": compare.Spread(precision)},
                                verdicts or ["healthy"] * len(recall))


def test_trade_off_sentence_reads_the_textbook_case():
    vae = _family("vae", [0.60, 0.64], [0.33, 0.37])
    gan = _family("gan", [0.40, 0.42], [0.80, 0.76])
    assert compare.trade_off_sentence(vae, gan) == TEXTBOOK + "; the GAN is sharper but covers less."


@pytest.mark.parametrize("vae_r,vae_p,gan_r,gan_p,expected", [
    # the GAN ahead on both
    ([0.30, 0.32], [0.30, 0.34], [0.50, 0.52], [0.80, 0.78],
     "VAE recall 0.31 < WGAN-GP 0.51, VAE precision 0.32 < WGAN-GP 0.79: the WGAN-GP is ahead on both"),
    # the reverse of the usual trade-off
    ([0.20, 0.22], [0.80, 0.82], [0.50, 0.52], [0.40, 0.42],
     "VAE recall 0.21 < WGAN-GP 0.51, VAE precision 0.81 ≥ WGAN-GP 0.41: the reverse of the textbook trade-off"),
    # recall gap inside the seeds' spread: level on recall, the VAE blurs
    ([0.50, 0.60], [0.30, 0.32], [0.45, 0.55], [0.80, 0.82],
     "VAE recall 0.55 ≥ WGAN-GP 0.50, VAE precision 0.31 < WGAN-GP 0.81: the VAE covers the data as well as the "
     "WGAN-GP but blurs; the WGAN-GP is sharper (the recall gap is within the seeds' spread)."),
])
def test_trade_off_sentence_says_what_the_numbers_say_when_it_is_not_the_textbook(vae_r, vae_p, gan_r, gan_p,
                                                                                  expected):
    s = compare.trade_off_sentence(_family("vae", vae_r, vae_p), _family("wgan-gp", gan_r, gan_p))
    assert s.startswith(expected), s


def test_trade_off_sentence_names_collapsed_gan_trials_and_near_zero_recall():
    vae = _family("vae", [0.60, 0.62], [0.50, 0.52])
    gan = _family("gan", [0.10, 0.12], [0.30, 0.32], verdicts=["collapsed", "healthy"])
    s = compare.trade_off_sentence(vae, gan)
    assert "the VAE is ahead on both" in s and "(1 of 2 GAN trials collapsed)" in s
    untrained = compare.trade_off_sentence(_family("vae", [0.0, 0.01], [0.9, 0.8]), _family("gan", [0.0, 0.0], [0.7, 0.7]))
    assert "recall is near 0 for both" in untrained and "train longer" in untrained
    no_prdc = compare.FamilyNumbers("gan", ["gan-s0"], {"fcd": compare.Spread([3.0])})
    assert "add prdc to eval.metrics" in compare.trade_off_sentence(vae, no_prdc)


def test_precision_caveat_when_precision_far_exceeds_the_near_real_share():
    f = _family("vae", [0.06, 0.07], [0.98, 0.99])
    assert compare.precision_caveat(f) is None  # no near-real share logged: nothing to compare with
    f.metrics["near_real_share"] = compare.Spread([0.43, 0.43])
    assert compare.precision_caveat(f).startswith("VAE precision 0.98 but near-real share 0.43:")
    f.metrics["near_real_share"] = compare.Spread([0.80, 0.80])
    assert compare.precision_caveat(f) is None  # 0.18 apart: they agree well enough


def test_relation_treats_tiny_gaps_and_gaps_within_the_spread_as_level():
    S = compare.Spread
    assert compare.relation(S([0.5]), S([0.495])) == "≈"  # below LEVEL_GAP
    assert compare.relation(S([0.5, 0.7]), S([0.5, 0.6])) == "≈"  # gap 0.05 ≤ sd 0.14 + 0.07
    assert compare.relation(S([0.7, 0.72]), S([0.5, 0.52])) == ">"
    assert compare.relation(S([0.3]), S([0.5])) == "<"  # one seed each: no spread to hide behind


def test_family_numbers_and_classes_come_from_the_trials_final_metrics(tmp_path):
    exp = model.load_experiment(str(build_experiment(tmp_path)))
    assert compare.compares_vae_with_gan(exp)
    nums = compare.family_numbers(exp)
    assert list(nums) == ["vae", "gan"]  # the VAE first
    assert nums["vae"].trials == ["vae-s0", "vae-s1"] and nums["gan"].trials == ["gan-s0", "gan-s1"]
    assert nums["vae"].metrics["recall"].values == [0.60, 0.64]
    assert nums["gan"].metrics["classes_covered"].mean == 1.5
    assert nums["gan"].metrics["fcd"].sd == pytest.approx(math.sqrt(18))
    assert model.class_count(exp) == 2  # data.classes = (5, 7): a 2-class problem
    assert compare.coverage_sentence(nums, 2).startswith(
        "Classes covered: VAE 2.00 of 2 (KL to uniform 0.02 nats), GAN 1.50 of 2 (KL to uniform 0.40 nats); "
        "FCD (lower is closer to the real data): VAE 42.0 vs GAN 33.0.")


def test_gan_only_or_vae_only_experiments_have_no_comparison(tmp_path):
    for fams in (("gan",), ("vae",)):
        exp = model.load_experiment(str(build_experiment(tmp_path / fams[0], families=fams)))
        assert not compare.compares_vae_with_gan(exp) and compare_figures.vae_vs_gan(exp) is None


# ---- reconstructions -----------------------------------------------------------------------


def test_held_out_images_alternate_the_subset_classes_and_come_from_the_test_split(tmp_path):
    cfg = _cfg(tmp_path)
    x = regenerate.held_out_images(cfg, 8, seed=0)
    test, train = load_dataset(cfg.data, "test"), load_dataset(cfg.data, "train")
    assert x.shape == (8, *SHAPE)

    def rows_of(ds):
        return {bytes(r.numpy().tobytes()): int(y) for r, y in zip(ds.x, ds.y)}

    test_rows, train_rows = rows_of(test), rows_of(train)
    labels = [test_rows[bytes(r.numpy().tobytes())] for r in x]  # every image is a test image ...
    assert labels == [5, 7] * 4  # ... taken in turn from each class of the subset
    assert not any(bytes(r.numpy().tobytes()) in train_rows for r in x)  # and none is a training image


def test_reconstruct_trial_loads_encoder_and_decoder_from_the_checkpoint(tmp_path):
    exp = model.load_experiment(str(build_experiment(tmp_path)))
    t = next(t for t in exp.trials if t.name == "vae-s1")
    r = regenerate.reconstruct(t.checkpoints[-1][1], t.name, n_shown=6, n_mse=40)
    assert (r.trial, r.step, r.n_mse) == ("vae-s1", 40, 40)
    assert r.originals.shape == r.reconstructions.shape == (6, *SHAPE)

    # the same checkpoint loaded into freshly (differently) initialised models by hand
    state = checkpoint.load(t.checkpoints[-1][1])
    cfg = checkpoint.config_of(state)
    torch.manual_seed(999)
    m = get_family("vae").build(cfg, SHAPE)
    m.G_module.load_state_dict(state["G"])
    m.D_module.load_state_dict(state["D"])
    x = regenerate.held_out_images(cfg, 40, seed=cfg.experiment.seed)
    x_hat = reconstruct(m, x)
    assert torch.equal(r.originals, x[:6]) and torch.allclose(r.reconstructions, x_hat[:6])
    # MSE = mean over images of Σ_pixels (x − x̂)²
    assert r.mse == pytest.approx(float(((x - x_hat) ** 2).sum(dim=(1, 2, 3)).mean()), rel=1e-5)
    torch.manual_seed(999)
    untrained = get_family("vae").build(cfg, SHAPE)
    assert not torch.allclose(reconstruct(untrained, x[:6]), r.reconstructions)  # the weights were really loaded


def test_reconstruct_refuses_a_gan_checkpoint(tmp_path):
    cfg = _cfg(tmp_path, **{"train.family": "gan"})
    path = tmp_path / "gan-s0" / "checkpoint_000040" / "checkpoint.pt"
    checkpoint.save({**_vae_state(_cfg(tmp_path), 40), "config": cfg.to_dict()}, path)
    with pytest.raises(ConfigError, match="not 'vae'"):
        regenerate.reconstruct(str(path), "gan-s0")


def test_vae_trials_without_a_checkpoint_or_a_regenerator_get_a_note(tmp_path):
    exp = model.load_experiment(str(build_experiment(tmp_path)))
    nums = compare.family_numbers(exp)
    for t in exp.trials:
        t.checkpoints = [] if t.name == "vae-s0" else t.checkpoints
    notes: list[str] = []
    recons = compare_figures.attach_reconstructions(exp, nums, notes, regenerate)
    assert [r.trial for r in recons] == ["vae-s1"] and nums["vae"].recon_mse.values == [recons[0].mse]
    assert notes == ["vae-s0: reconstructions unavailable (no checkpoint to reconstruct with)"]
    notes = []
    assert compare_figures.attach_reconstructions(exp, compare.family_numbers(exp), notes, None) == []
    assert notes[0].startswith("no reconstructions: the report was written without a checkpoint regenerator")


def test_image_rows_puts_originals_above_reconstructions():
    top, bottom = -torch.ones(3, 1, 4, 5), torch.ones(3, 1, 4, 5)  # black above, white below
    img = compare_figures.image_rows([top, bottom], pad=2)
    assert img.shape == (2 * (4 + 2) + 2, 3 * (5 + 2) + 2, 1) and img.dtype == np.uint8
    assert (img[2:6, 2:7] == 0).all() and (img[8:12, 2:7] == 255).all()
    assert (img[0:2] == 128).all() and (img[6:8] == 128).all()  # gray padding between the rows


# ---- the report section --------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    exp = build_experiment(tmp_path_factory.mktemp("compare"))
    report.write_report(str(exp), regenerate=regenerate)
    return exp


def test_report_has_the_vae_vs_gan_section_with_both_families_numbers(written):
    md = (written / "report.md").read_text()
    section = md[md.index("## VAE vs GAN"):md.index("## Figures")]
    assert TEXTBOOK in section
    assert "| metric | VAE (2 trials) | GAN (2 trials) |" in section
    assert "| recall (coverage), higher is better | 0.62 ± 0.03 (2 seeds) | 0.41 ± 0.01 (2 seeds) |" in section
    assert "| precision (sharpness/realism), higher is better | 0.35 ± 0.03 (2 seeds) | 0.78 ± 0.03 (2 seeds) |" in section
    assert "| classes covered of 2, higher is better | 2.00 ± 0.00 (2 seeds) | 1.50 ± 0.71 (2 seeds) |" in section
    assert "held-out reconstruction MSE" in section and "sharpness/realism" in section and "coverage" in section
    assert ("Supporting numbers (VAE vs GAN): near-real share VAE 0.50 vs GAN 0.40; "
            "pixel spread ratio VAE 0.55 vs GAN 1.05.") in section
    assert "| near-real share (realism with one global radius), higher is better | 0.50 ± 0.00 (2 seeds) |" in section
    assert "PRDC coverage" not in section  # not logged: no row
    for name in COMPARE_FIGURES:
        assert f"(figures/{name})" in section


def test_comparison_figures_are_written_and_embedded(written):
    page = (written / "report.html").read_text()
    assert '<h2 id="vae-vs-gan">VAE vs GAN</h2>' in page and html.escape(TEXTBOOK) in page
    assert page.index("VAE vs GAN</h2>") < page.index("<h2>Figures</h2>")
    for name in COMPARE_FIGURES:
        png = (written / "figures" / name).read_bytes()
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 200, (name, im.size)
        assert base64.b64encode(png).decode() in page, name


def test_samples_figure_shows_each_trials_last_grid(written):
    """The VAE grids are dark (level 60), the GAN grids light (200): the figure holds both."""
    with Image.open(written / "figures" / "vae_vs_gan_samples.png") as im:
        levels = set(np.asarray(im.convert("L")).flatten().tolist())
    assert {60, 200} <= levels


# ---- the job end to end --------------------------------------------------------------------


@pytest.mark.slow
def test_compare_job_smoke_writes_the_comparison_report_to_s3(s3_bucket, s3_server):
    """`python jobs/compare_vae_gan.py --smoke --storage s3://...` on a real local Ray: exit 0 and a
    report in the bucket with the VAE vs GAN section, both families' numbers and the reconstructions."""
    env = {**os.environ, "RAY_ADDRESS": "local", "OMP_NUM_THREADS": "1"}
    storage_uri = f"{s3_bucket}/ganray"
    r = subprocess.run([sys.executable, "jobs/compare_vae_gan.py", "--smoke", "--storage", storage_uri],
                       capture_output=True, text=True, timeout=900, cwd=ROOT, env=env)
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-6000:]}"
    exp = f"{storage_uri}/compare-vae-gan-local-smoke"
    keys = s3_server.objects(s3_bucket.removeprefix("s3://"), prefix="ganray/compare-vae-gan-local-smoke/")
    for name in ("report.md", "report.html", *(f"figures/{f}" for f in COMPARE_FIGURES)):
        assert keys.get(f"ganray/compare-vae-gan-local-smoke/{name}", 0) > 0, name
    md = storage.read_bytes(f"{exp}/report.md").decode()
    section = md[md.index("## VAE vs GAN"):md.index("## Figures")]
    assert "| metric | VAE (2 trials) | GAN (2 trials) |" in section
    for label in ("classes covered of 2", "FCD", "precision (sharpness/realism)", "recall (coverage)"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {label}"))
        assert row.count("(2 seeds)") == 2, row  # a number for each family
    assert "VAE recall " in section and "held-out reconstruction MSE" in section
    assert "(figures/vae_reconstructions.png)" in section
