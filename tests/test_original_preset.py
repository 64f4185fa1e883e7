"""The original z_dim experiment as a preset (configs/zdim_mnist_original.yaml): what it sets, its
smoke twin's recipe, the settings it needs (checked against the config and the checkpoints), and
the smoke twin run end to end as a user runs it: `python jobs/sweep_zdim.py --config ...` with the
default relative storage.

(The fake-then-real D step itself: tests/test_families.py; the BatchNorm and LeakyReLU settings
reaching the layers: tests/test_models.py.)
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_sweep import SWEEP_ENV, tail

from ganray import cli
from ganray.collapse import VERDICTS
from ganray.config import Config, ConfigError, load
from ganray.sweep import grid, trial_name
from ganray.train.checkpoint import CheckpointError, check_compatible

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = ROOT / "configs" / "zdim_mnist_original.yaml"
SMOKE = ROOT / "configs" / "zdim_mnist_original_smoke.yaml"
# the recipe: what the smoke twin must share with the original preset
RECIPE = ("model.arch", "model.bn_momentum", "model.bn_eps", "model.leaky_slope", "train.family", "train.d_updates",
          "train.lr_g", "train.lr_d", "train.beta1", "train.beta2", "train.n_critic", "sweep.stopper")


def value(cfg: Config, dotted: str):
    sec, key = dotted.split(".")
    return getattr(getattr(cfg, sec), key)


def test_original_preset_is_the_keras_dcgan_recipe_with_three_seeds_per_z_dim():
    cfg = load(ORIGINAL)
    m, t = cfg.model, cfg.train
    assert (m.arch, m.width, cfg.data.dataset) == ("dcgan", 1.0, "mnist")
    assert (m.bn_momentum, m.bn_eps, m.leaky_slope) == (0.2, 1e-3, 0.3)  # Keras momentum 0.8 = PyTorch 0.2
    assert (t.family, t.d_updates, t.n_critic) == ("gan", "fake_then_real", 1)
    assert (t.lr_g, t.lr_d, t.beta1, t.beta2) == (1e-4, 1e-4, 0.9, 0.999)
    assert 50_000 <= t.steps <= 99_000
    # evaluations at 50,000 (the original's shortest run) and at the last step
    assert 50_000 % t.eval_every == 0 and t.steps % t.eval_every == 0
    assert cfg.eval.n == 10_000 and "fixed_z_flip_rate" in cfg.eval.metrics
    assert cfg.sweep.stopper is False and cfg.sweep.asha is False
    seeds = Counter(p["model.z_dim"] for p in grid(cfg))
    assert seeds == {z: 3 for z in (1, 2, 10, 50, 100)}, seeds
    assert cfg.scaling.use_gpu and cfg.scaling.num_workers == 1


@pytest.mark.parametrize("path", [ORIGINAL, SMOKE], ids=lambda p: p.name)
def test_presets_name_the_schema_and_the_original_states_its_rule(path):
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=ganray.schema.json"
    if path == ORIGINAL:
        comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
        for part in ("R1  z_dim 1 and z_dim 2", "R2  z_dim 10 and z_dim 100", "R3  z_dim 50",
                     "Reproduced if R1, R2 and R3 all hold"):
            assert part in comments, part


def test_smoke_twin_runs_the_same_recipe_on_the_cpu():
    original, smoke = load(ORIGINAL), load(SMOKE)
    assert {k: value(smoke, k) for k in RECIPE} == {k: value(original, k) for k in RECIPE}
    assert smoke.data.dataset == "mnist5k" and not smoke.scaling.use_gpu  # offline, CPU
    assert smoke.experiment.name != original.experiment.name  # never resumes, or is taken for, the real one
    assert len(grid(smoke)) == 2


@pytest.mark.parametrize("overrides,family", [
    ({"train.family": "wgan-gp"}, "wgan-gp"),
    ({"train.family": "began"}, "began"),
    ({"train.family": "vae"}, "vae"),
    ({"sweep.family": ["gan", "wgan-gp"]}, "wgan-gp"),  # a family grid: checked before any trial starts
])
def test_fake_then_real_is_refused_for_families_without_a_bce_discriminator(overrides, family):
    with pytest.raises(ConfigError, match=f"train.d_updates: fake_then_real is for the gan family only.*{family}"):
        load(None, {"train.d_updates": "fake_then_real", **overrides})
    load(None, {"train.d_updates": "joint", **overrides})  # the default is fine for every family


def test_dcgan_settings_are_refused_on_2d_data_and_validate_exits_2(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"model.leaky_slope: applies to the dcgan arch; data.dataset 'ring8'"):
        load(ROOT / "configs" / "ring8.yaml", {"model.leaky_slope": 0.3})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"family": "wgan-gp", "d_updates": "fake_then_real"}}))
    assert cli.main(["validate", str(bad)]) == 2
    assert "train.d_updates" in capsys.readouterr().err


def test_checkpoints_keep_the_slope_and_eps_but_not_the_momentum_or_the_d_updates():
    """A resume (or evaluation) with another LeakyReLU slope or BatchNorm eps would continue another
    function of the saved weights: refused, naming the key. BatchNorm momentum and the D update
    scheme are training settings, like the learning rates. A checkpoint of an older ganray (its
    config without these keys) had the defaults."""
    defaults = Config()

    def state(cfg: Config, drop: tuple[str, ...] = ()) -> dict:
        d = cfg.to_dict()
        for key in drop:
            del d["model"][key]
        return {"config": d}

    with pytest.raises(CheckpointError, match=r"model.leaky_slope: checkpoint has 0.3, config has 0.2") as e:
        check_compatible(state(defaults.replace(**{"model.leaky_slope": 0.3})), defaults)
    assert "bn_eps" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"model.bn_eps: checkpoint has 0.001, config has 1e-05"):
        check_compatible(state(defaults.replace(**{"model.bn_eps": 1e-3})), defaults)
    check_compatible(state(defaults.replace(**{"model.bn_momentum": 0.2, "train.d_updates": "fake_then_real"})),
                     defaults)
    old = state(defaults, drop=("bn_momentum", "bn_eps", "leaky_slope"))
    check_compatible(old, defaults)
    with pytest.raises(CheckpointError, match=r"model.leaky_slope: checkpoint has 0.2, config has 0.3"):
        check_compatible(old, defaults.replace(**{"model.leaky_slope": 0.3}))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_smoke_twin_runs_end_to_end_with_the_default_storage(tmp_path):
    """The user's command, from a folder of their own, no --storage: results in ./ganray_results
    there, every trial with a verdict (verdict.json, trials.csv, the report), run with the recipe."""
    env = {k: v for k, v in os.environ.items() if k != "GANRAY_STORAGE"}
    r = subprocess.run([sys.executable, str(ROOT / "jobs" / "sweep_zdim.py"), "--config", str(SMOKE)],
                       capture_output=True, text=True, timeout=540, cwd=tmp_path, env={**env, **SWEEP_ENV})
    assert r.returncode == 0, tail(r)
    cfg = load(SMOKE)
    exp = tmp_path / "ganray_results" / cfg.experiment.name
    trials = sorted(trial_name(p) for p in grid(cfg))
    assert trials == ["z1-s0", "z50-s0"]
    with open(exp / "trials.csv", newline="") as f:
        rows = {row["trial"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == trials
    for t in trials:
        verdict = json.loads((exp / "trials" / t / "verdict.json").read_text())
        assert verdict["verdict"] in VERDICTS and verdict["reasons"], (t, verdict)
        assert verdict["step"] == cfg.train.steps and not verdict.get("stopped_early"), (t, verdict)
        assert rows[t]["verdict"] == verdict["verdict"], (t, rows[t])
        ran = yaml.safe_load((exp / "trials" / t / "config.yaml").read_text())
        assert {k: ran[k.split(".")[0]][k.split(".")[1]] for k in RECIPE} == {k: value(cfg, k) for k in RECIPE}
    assert (exp / "report.html").is_file()
    assert f"report: {exp}/report.html" in r.stdout, tail(r)
    # the trials' own lines (each logged step, forwarded by Ray from the trial's process) are in the log file
    (log,) = (exp / "logs").glob("sweep-*.log")
    stepped = re.findall(r"^\(\w+ pid=\d+(?:, ip=[^)]*)?\) step (\d+): loss_D=", log.read_text(), re.M)
    # (Ray folds lines alike across processes into "[repeated Nx across cluster]": not every step shows)
    assert len(stepped) >= 2 and all(0 < int(step) <= cfg.train.steps for step in stepped), log.read_text()[-3000:]
