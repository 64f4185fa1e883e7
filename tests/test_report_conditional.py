"""The report's conditional (cgan, stackgan) and translation (cyclegan) sections on hand-written trial
records with known numbers: the per-condition table names the collapsed class, the CA on/off table
holds the trials' numbers and its sentence follows them, Stage-II trials are paired with the Stage-I
trials they continue (by config, not by name), and each translation direction quotes its verdict and
numbers. Grids are real image_grid PNGs whose rows have known grey levels, so crops can be checked."""
from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from ganray.artifacts import layout
from ganray.artifacts.images import image_grid, png_bytes
from ganray.config import load
from ganray.families import stackgan
from ganray.report import conditional, conditions, grids, model, translation, write_report
from ganray.train import sampling

COLLAPSED_CONDITIONS = {  # class 2 repeats one image (spread 0.04, 80% copies), class 3 is drawn as another digit
    "names": ["0", "1", "2", "3"], "n": [50, 50, 50, 50], "hits": [48, 49, 45, 15],
    "fidelity": [0.96, 0.98, 0.9, 0.3], "spread_ratio": [0.9, 1.02, 0.04, 0.95],
    "duplicates": [0, 0, 40, 1], "judged": [50, 50, 50, 50], "duplicate_share": [0.0, 0.0, 0.8, 0.02],
    "fcd": [3.1, 2.5, 40.0, 5.0], "coverage": [0.4, 0.42, 0.05, None], "expected_coverage": [0.41, 0.41, 0.41, None]}


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _grid(rows: int, cols: int, levels: list[int], side: int = 6) -> bytes:
    """A real sample grid (image_grid) of rows x cols cells of side² pixels, row r filled with grey levels[r]."""
    x = np.concatenate([np.full((cols, 1, side, side), lv / 127.5 - 1.0, np.float32) for lv in levels])
    return png_bytes(image_grid(x))


def _trial(exp: Path, name: str, cfg, rows: list[dict], verdict: dict | None = None, grid: bytes | None = None):
    t = exp / "trials" / name
    _write(t / "config.yaml", cfg.to_yaml())
    _write(t / layout.metrics_segment(0), "".join(json.dumps(r) + "\n" for r in rows))
    if verdict is not None:
        _write(t / layout.VERDICT, json.dumps(verdict))
    if grid is not None:
        _write(t / layout.sample_file(rows[-1]["step"]), grid)


def _cfg(root: Path, **over):
    return load(None, {"experiment.name": "exp", "storage.uri": str(root), "data.cache_dir": str(root / "cache"),
                       **over})


def _pixel(png: bytes, x: int, y: int) -> int:
    return Image.open(io.BytesIO(png)).convert("L").getpixel((x, y))


def test_grid_geometry_agrees_with_the_training_side():
    """The report's copies of the grid's layout: rows as sampling.grid_classes picks them, image_grid's pad."""
    assert conditions.GRID_ROWS == sampling.GRID_ROWS
    assert conditional.STAGE1_MATCH == stackgan.STAGE1_MATCH  # how Stage II finds its Stage-I trial in training
    assert grids.PAD == 2
    for k in (4, 10, 13, 200):
        data = SimpleNamespace(y=torch.arange(k))
        assert conditions.grid_row_classes(k) == sampling.grid_classes(data).tolist()
    assert conditions.grid_row_classes(200) == [0, 22, 44, 66, 88, 111, 133, 155, 177, 199]


def test_per_condition_table_names_the_collapsed_class_and_shows_its_row(tmp_path):
    cfg = _cfg(tmp_path, **{"train.family": "cgan", "sweep.z_dim": [10]})
    exp = tmp_path / "exp"
    _write(exp / "config.yaml", cfg.to_yaml())
    verdict = {"verdict": "collapsed_per_condition", "step": 300, "first_seen_step": 200,
               "reasons": ["class 2: spread ratio 0.04 (real 1.0)"], "conditions": COLLAPSED_CONDITIONS}
    levels = [0, 80, 160, 240]
    _trial(exp, "z10-s0", cfg, [{"step": 300, "condition_fidelity": 0.785}], verdict, _grid(4, 4, levels))
    e = model.load_experiment(str(exp))
    model.attach_media(e)
    (t,) = e.trials
    assert conditions.collapsed_text(t) == (
        "Classes that collapsed (G ignores z): 2. Conditions ignored (fidelity below 50%): 3. "
        "Worst per-class FCD: class 2 (40). Worst per-class coverage: class 2 (0.05).")
    rows = conditions.per_class_rows(t)
    assert rows[2] == ["2", "3", "50", "90% (45 of 50)", "0.04", "80%", "40", "0.05 (0.41)",
                       "collapsed (G ignores z): spread ratio 0.04 < 0.25, 80% near-copies ≥ 50%"]
    assert rows[3][3] == "30% (15 of 50)" and rows[3][7] == ""  # coverage left out: empty, not 0
    assert rows[3][8] == "ignores the condition: fidelity 30% < 50%"
    assert rows[0][8] == rows[1][8] == ""
    # each condition's row of the grid, cut out: a strip of 1 cell height in that row's grey
    crops = conditional._row_crops(t, 4)
    assert sorted(crops) == [0, 1, 2, 3]
    for r, lv in enumerate(levels):
        img = Image.open(io.BytesIO(crops[r]))
        assert img.size == (4 * 8 + 2, 8 + 2)
        assert _pixel(crops[r], 3, 3) == lv and _pixel(crops[r], 0, 0) == 128  # a cell, the gray border

    html_uri = write_report(str(exp))
    md = (exp / "report.md").read_text()
    assert "| 2 | 3 | 50 | 90% (45 of 50) | 0.04 | 80% | 40 | 0.05 (0.41) | collapsed (G ignores z): spread ratio " \
           "0.04 < 0.25, 80% near-copies ≥ 50% |" in md
    assert "#### z10-s0 (collapsed per condition at step 200)" in md
    assert "| verdict | classes covered | fcd | condition fidelity | condition spread ratio min |" in md  # trials table
    page = Path(html_uri).read_text()
    assert "Classes that collapsed (G ignores z): 2." in page and page.count('alt="z10-s0: row ') == 4
    assert Image.open(exp / "figures" / "condition_fcd_coverage.png").size[0] > 400
    assert "![Per-class FCD and coverage at the last evaluation](figures/condition_fcd_coverage.png)" in md


def _ca_experiment(root: Path, spreads: dict[tuple[int, bool, int], float], copies_on: float = 0.1,
                   copies_off: float = 0.3) -> model.Experiment:
    """StackGAN trials (z_dim, CA on?, seed) -> condition_spread_ratio at the last evaluation."""
    seeds = sorted({s for _, _, s in spreads})
    cfg = _cfg(root, **{"train.family": "stackgan", "data.dataset": "captioned-mnist", "sweep.z_dim": [10, 100],
                        "sweep.variants": ["ca-on", "ca-off: model.cond_augment=false"], "sweep.seeds": seeds})
    exp = root / "exp"
    _write(exp / "config.yaml", cfg.to_yaml())
    for (z, ca, seed), s in spreads.items():
        name = f"ca-{'on' if ca else 'off'}-z{z}-s{seed}"
        c = cfg.replace(**{"model.z_dim": z, "model.cond_augment": ca, "experiment.seed": seed,
                           "experiment.variant": "ca-on" if ca else "ca-off"})
        row = {"step": 600, "condition_spread_ratio": s, "condition_spread_ratio_min": s / 2,
               "condition_duplicate_share_max": copies_on if ca else copies_off, "condition_fidelity": 0.8,
               "fcd": 12.0 + z,
               "condition_fcd": 20.0}
        verdict = {"verdict": "healthy" if s > 0.25 else "collapsed_per_condition", "step": 600}
        _trial(exp, name, c, [row], verdict)
    return model.load_experiment(str(exp))


def test_ca_table_holds_the_trials_numbers_and_its_sentence_follows_them(tmp_path):
    e = _ca_experiment(tmp_path / "a", {(10, True, 0): 0.62, (10, False, 0): 0.41,
                                        (100, True, 0): 0.2, (100, False, 0): 0.5})
    head, rows, sentences = conditional.ca_table(e)
    assert head[:5] == ["z_dim", "CA", "seeds", "spread ratio within a condition, mean over conditions",
                        "spread ratio, worst condition"]
    assert rows[0] == ["10", "on", "0", "0.62", "0.31", "0.1", "0.8", "22", "20", "1 healthy"]
    assert rows[1] == ["10", "off", "0", "0.41", "0.205", "0.3", "0.8", "22", "20", "1 healthy"]
    assert rows[2][:2] == ["100", "on"] and rows[2][-1] == "1 collapsed per condition"
    assert sentences == [
        "z_dim 10: CA added diversity for a fixed text: a higher within-condition spread (spread ratio 0.62 on vs "
        "0.41 off, mean over conditions) and no more near-copies (10% on vs 30% off, worst condition).",
        "z_dim 100: mixed: CA on had fewer near-copies within a condition (10% on vs 30% off, worst condition) but a "
        "lower spread (spread ratio 0.2 on vs 0.5 off, mean over conditions).",
        "Across z_dims: CA added diversity for a fixed text (a higher within-condition spread and no more "
        "near-copies) at 1 of 2 z_dims (10)."]
    # the numbers flipped: the sentence flips with them
    e = _ca_experiment(tmp_path / "b", {(10, True, 0): 0.41, (10, False, 0): 0.62,
                                        (100, True, 0): 0.2, (100, False, 0): 0.5}, copies_on=0.3, copies_off=0.1)
    assert conditional.ca_table(e)[2] == [
        "z_dim 10: CA did not add diversity for a fixed text here: a lower or equal within-condition spread (spread "
        "ratio 0.41 on vs 0.62 off, mean over conditions) and no fewer near-copies (30% on vs 10% off, worst "
        "condition).",
        "z_dim 100: CA did not add diversity for a fixed text here: a lower or equal within-condition spread (spread "
        "ratio 0.2 on vs 0.5 off, mean over conditions) and no fewer near-copies (30% on vs 10% off, worst "
        "condition).",
        "Across z_dims: CA added diversity for a fixed text (a higher within-condition spread and no more "
        "near-copies) at 0 of 2 z_dims: at this scale it did not, on both counts."]
    e = _ca_experiment(tmp_path / "c", {(10, True, 0): 0.62, (10, False, 0): 0.41}, copies_on=0.3, copies_off=0.1)
    assert conditional.ca_table(e)[2] == [
        "z_dim 10: mixed: CA on had the higher within-condition spread (spread ratio 0.62 on vs 0.41 off, mean over "
        "conditions) but more near-copies (30% on vs 10% off, worst condition)."]


def test_ca_sentence_over_seeds_counts_the_seeds_where_ca_was_higher(tmp_path):
    e = _ca_experiment(tmp_path, {(10, True, 0): 0.7, (10, True, 1): 0.3, (10, False, 0): 0.4, (10, False, 1): 0.5})
    _, rows, sentences = conditional.ca_table(e)
    assert rows[0][:5] == ["10", "on", "0, 1", "0.5 ± 0.283", "0.25 ± 0.141"]
    assert sentences == ["z_dim 10: CA added diversity for a fixed text: a higher within-condition spread (spread "
                         "ratio 0.5 on vs 0.45 off, mean over conditions and seeds; CA on higher in 1 of 2 seeds) "
                         "and no more near-copies (10% on vs 30% off, worst condition)."]


def test_stage2_trials_are_paired_with_their_stage1_trials_by_config(tmp_path):
    """Stage-I trials named a..d; each Stage-II trial finds the one with its z_dim, CA, seed and variant."""
    base = _cfg(tmp_path, **{"train.family": "stackgan", "data.dataset": "captioned-mnist", "sweep.z_dim": [10, 100],
                             "sweep.variants": ["ca-on", "ca-off: model.cond_augment=false"]})
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    _write(s1 / "config.yaml", base.to_yaml())
    combos = [(10, True), (10, False), (100, True), (100, False)]
    for i, (z, ca) in enumerate(combos):
        c = base.replace(**{"model.z_dim": z, "model.cond_augment": ca, "experiment.variant": "ca-on" if ca else "ca-off"})
        _trial(s1, "abcd"[i], c, [{"step": 600, "condition_fidelity": 0.1 * (i + 1)}],
               {"verdict": "healthy", "step": 600}, _grid(2, 2, [40 * i, 40 * i]))
        c2 = c.replace(**{"train.stage": 2, "train.stage1_checkpoint": str(s1)})
        _trial(s2, f"ca-{'on' if ca else 'off'}-z{z}-s0", c2, [{"step": 300, "condition_fidelity": 0.9}],
               {"verdict": "healthy", "step": 300}, _grid(2, 2, [200, 200]))
    _write(s2 / "config.yaml", base.replace(**{"train.stage": 2, "train.stage1_checkpoint": str(s1)}).to_yaml())
    e = model.load_experiment(str(s2))
    model.attach_media(e)
    pairs = {p.stage2.name: p for p in conditional.stage_pairs(e)}
    assert {n: p.stage1_name for n, p in pairs.items()} == {
        "ca-on-z10-s0": "a", "ca-off-z10-s0": "b", "ca-on-z100-s0": "c", "ca-off-z100-s0": "d"}
    p = pairs["ca-off-z100-s0"]
    assert p.stage1_numbers["condition_fidelity"] == 0.4 and p.stage1_step == 600
    assert _pixel(p.png, 3, 3) == 120 and _pixel(p.png, 18 + 8 + 3, 3) == 200  # Stage I left, Stage II right
    assert conditional._pair_numbers(p) == "Stage I → Stage II: fidelity 0.4 → 0.9"
    # a trial folder or its checkpoint names the Stage-I trial directly
    c = e.trials[0].config.replace(**{"train.stage1_checkpoint": str(s1 / "trials" / "b" / "checkpoint_000600" /
                                                                      "checkpoint.pt")})
    assert conditional._stage1_trial(c)[0].name == "b"
    write_report(str(s2))
    md = (s2 / "report.md").read_text()
    assert "**ca-off-z100-s0** (healthy; Stage I d: healthy). Stage I → Stage II: fidelity 0.4 → 0.9" in md
    assert (s2 / "figures" / "stages_ca-off-z100-s0.png").exists()


def _cyclegan_experiment(root: Path) -> Path:
    cfg = _cfg(root, **{"train.family": "cyclegan", "data.dataset": "digits2inverse", "sweep.z_dim": [],
                        "sweep.variants": ["reference", "no-cycle: train.lambda_cycle=0, train.lambda_identity=0"]})
    exp = root / "exp"
    _write(exp / "config.yaml", cfg.to_yaml())
    good = {"content_kept_ab": 0.92, "content_kept_ba": 0.97, "translation_spread_ratio_ab": 0.9,
            "translation_spread_ratio_ba": 0.95, "translation_duplicate_share_ab": 0.01,
            "translation_duplicate_share_ba": 0.0, "cycle_l1_a": 0.05, "cycle_l1_b": 0.04, "fcd_ab": 3.2, "fcd_ba": 2.1}
    bad = {**good, "content_kept_ab": 0.1, "translation_spread_ratio_ab": 0.05, "translation_duplicate_share_ab": 0.8,
           "cycle_l1_a": 0.9, "fcd_ab": 80.0}
    levels = [0, 50, 100, 150, 200, 250]
    for name, variant, m, verdict, reasons in (
            ("reference-s0", "reference", good, "healthy", ["A→B: 92% of the translated test images keep their "
                                                            "input's class"]),
            ("no-cycle-s0", "no-cycle", bad, "many_to_one", ["A→B: 80% of the translations are near-copies of "
                                                             "another (many inputs, one output)"])):
        rows = [{"step": 100, **{k: v * 0.5 for k, v in m.items()}}, {"step": 200, **m}]
        _trial(exp, name, cfg.replace(**{"experiment.variant": variant}), rows,
               {"verdict": verdict, "step": 200, "first_seen_step": 200, "reasons": reasons}, _grid(6, 6, levels))
    return exp


def test_translation_section_quotes_each_directions_verdict_and_numbers(tmp_path):
    exp = _cyclegan_experiment(tmp_path)
    e = model.load_experiment(str(exp))
    model.attach_media(e)
    sec = translation.translation_section(e)
    assert [t.name for t in sec.trials] == ["reference-s0", "no-cycle-s0"]
    ab = translation.direction_rows(e, sec.trials, "ab")
    assert ab[1] == ["no-cycle", "many-to-one at step 200",
                     "many-to-one: spread ratio 0.05 < 0.25, 80% near-copies ≥ 50%; lost the content: 10% kept < 50%",
                     "10.0%", "0.05", "80.0%", "0.9", "80",
                     "A→B: 80% of the translations are near-copies of another (many inputs, one output)"]
    assert ab[0][:4] == ["reference", "healthy", "kept its content (92%)", "92.0%"]
    ba = translation.direction_rows(e, sec.trials, "ba")
    assert ba[1] == ["no-cycle", "many-to-one at step 200", "kept its content (97%)", "97.0%", "0.95", "0.0%",
                     "0.04", "2.1", ""]
    assert translation.direction_sentence(sec.trials, "ab") == (
        "A→B: 1 of 2 trials many-to-one and lost the content (no-cycle-s0); 1 kept the content (reference-s0).")
    assert translation.direction_sentence(sec.trials, "ba") == (
        "B→A: 2 of 2 trials kept the content (reference-s0, no-cycle-s0).")
    assert sorted(sec.figures) == ["translation_ab.png", "translation_ba.png", "translation_grids_ab.png",
                                   "translation_grids_ba.png"]
    # A→B is the grid's top three rows, B→A the bottom three
    (t,) = [t for t in sec.trials if t.name == "no-cycle-s0"]
    top, bottom = (grids.crop_rows(t.last_samples_png, 6, *r) for r in ((0, 3), (3, 6)))
    assert Image.open(io.BytesIO(top)).size == (6 * 8 + 2, 3 * 8 + 2)
    assert [_pixel(top, 3, 3 + 8 * r) for r in range(3)] == [0, 50, 100]
    assert [_pixel(bottom, 3, 3 + 8 * r) for r in range(3)] == [150, 200, 250]
    assert grids.crop_rows(t.last_samples_png, 7, 0, 3) is None  # not a 7-row grid
    write_report(str(exp))
    md = (exp / "report.md").read_text()
    assert "### A→B" in md and "### B→A" in md and "![A→B: input, translated, reconstructed]" in md
    assert ("| no-cycle | many-to-one at step 200 | many-to-one: spread ratio 0.05 < 0.25, 80% near-copies ≥ 50%; "
            "lost the content: 10% kept < 50% | 10.0% | 0.05 | 80.0% | 0.9 | 80 |") in md
    assert all((exp / "figures" / f).exists() for f in sec.figures)


def test_per_class_table_of_many_classes_lists_the_grid_rows_and_the_findings_with_their_captions():
    """30 classes: the table keeps the 10 grid classes and the collapsed class 5; a grid row names its caption."""
    k = 30
    per = {"names": [str(i) for i in range(k)], "n": [20] * k, "fidelity": [0.9] * k,
           "spread_ratio": [0.9] * 5 + [0.1] + [0.9] * (k - 6), "duplicate_share": [0.0] * k,
           "grid_captions": ["a thin, upright zero", "a thick three"]}
    t = model.Trial("t", "/x/trials/t", verdict={"verdict": "collapsed_per_condition", "conditions": per})
    rows = conditions.per_class_rows(t)
    assert [r[0] for r in rows] == ["0", "3", "5", "6", "10", "13", "16", "19", "23", "26", "29"]
    assert [r[1] for r in rows[:4]] == ["1 “a thin, upright zero”", "2 “a thick three”", "", "3"]
    assert rows[2][8] == "collapsed (G ignores z): spread ratio 0.1 < 0.25"
