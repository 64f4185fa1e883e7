"""Sweep building blocks without Ray: grids, trial names, the collapse stopper, bad specs."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from ganray import sweep
from ganray.args import job_config
from ganray.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[1]


def test_grid_is_the_product_of_the_axes():
    cfg = load(None, ["sweep.z_dim=[1, 10]", "sweep.lr_g=[1e-4, 2e-4]", "sweep.seeds=[0, 1, 2]"])
    points = sweep.grid(cfg)
    assert len(points) == 2 * 2 * 3
    assert {p["model.z_dim"] for p in points} == {1, 10}
    names = [sweep.trial_name(p) for p in points]
    assert len(set(names)) == len(names)
    assert "z10-lrg0.0002-s2" in names


def test_variants_are_one_axis_whose_values_set_several_keys():
    cfg = load(None, ["sweep.z_dim=[2]", "sweep.seeds=[0, 3]",
                      'sweep.variants=["baseline", "pack2: model.pack=2", "ttur: train.lr_d=4e-4, train.lr_g=1e-4"]'])
    points = sweep.grid(cfg)
    names = sweep.trial_names(points)
    assert names == ["baseline-z2-s0", "baseline-z2-s3", "pack2-z2-s0", "pack2-z2-s3", "ttur-z2-s0", "ttur-z2-s3"]
    configs = sweep.trial_configs(cfg, points)
    assert [c.model.pack for c in configs] == [1, 1, 2, 2, 1, 1]
    assert [(c.train.lr_d, c.train.lr_g) for c in configs][4] == (4e-4, 1e-4)
    assert configs[0].train.lr_d == 2e-4 and configs[3].experiment.seed == 3
    assert [c.experiment.variant for c in configs] == ["baseline"] * 2 + ["pack2"] * 2 + ["ttur"] * 2
    assert sweep.describe_grid(cfg) == "variants baseline, pack2, ttur; z_dim 2; seeds 0, 3"
    assert all(c.sweep.variants == cfg.sweep.variants for c in configs)  # the trials keep the sweep's own setting


@pytest.mark.parametrize("variants,message", [
    ('["pack3: model.pack=3"]', "sweep.variants[0] (pack3): model.pack: 3 does not divide train.batch_size 64"),
    ('["a: model.widht=1"]', "sweep.variants[0] (a): model.widht: unknown key (did you mean 'width'?)"),
    ('["a", "a: model.pack=2"]', "sweep.variants[1]: the name 'a' is given twice"),
    ('["z: model.z_dim=4"]', "sweep.variants[0] (z): sets model.z_dim, which the sweep itself sets"),
    ('["two words"]', "sweep.variants[0]: 'two words': a variant starts with its name"),
])
def test_bad_variants_name_the_entry_and_what_is_wrong(variants, message):
    with pytest.raises(ConfigError) as e:
        load(None, [f"sweep.variants={variants}"])
    assert any(message in x for x in e.value.errors), e.value.errors


def test_default_grid_is_the_zdim_experiment():
    points = sweep.grid(load(None))
    assert [p["model.z_dim"] for p in points] == [1, 2, 10, 50, 100]
    assert [sweep.trial_name(p) for p in points][0] == "z1-s0"


@pytest.mark.parametrize("overrides,message", [
    (["sweep.z_dim=[]", "sweep.seeds=[0]"], "empty grid"),
    (["sweep.z_dim=[1, 0]"], "sweep.z_dim[1]: must be >= 1"),
    (["sweep.asha=true", "sweep.asha_metric=fid"], "sweep.asha_metric: unknown metric 'fid'"),
    (["sweep.asha=true", "sweep.asha_reduction_factor=1"], "sweep.asha_reduction_factor: must be > 1"),
    (["sweep.lr_g=[0.0002, -1]"], "sweep.lr_g[1]: must be > 0"),
    (["sweep.family=[gan, vae2]"], "sweep.family[1]"),
])
def test_bad_sweep_specs_exit_2_before_ray_starts(tmp_path, monkeypatch, capsys, overrides, message):
    import ray

    monkeypatch.chdir(tmp_path)
    argv = [x for o in overrides for x in ("--set", o)]
    assert sweep.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()
    assert list(tmp_path.iterdir()) == []


def test_asha_metric_accepts_a_reported_metric():
    cfg = load(None, ["sweep.asha=true", "sweep.asha_metric=fcd"])
    assert cfg.sweep.asha_metric == "fcd"


def test_collapse_stopper_needs_patience_bad_evaluations_in_a_row():
    stop = sweep.CollapseStopper(patience=2)
    assert not stop(100, {"verdict": "collapsed"})
    assert not stop(200, {"verdict": "healthy"})  # a good evaluation resets the count
    assert not stop(300, {"verdict": "garbage"})
    assert not stop(350, {"loss_D": 0.1})  # no evaluation at this report: no change
    assert stop(400, {"verdict": "collapsed"})
    young = sweep.CollapseStopper(patience=1, grace_steps=300)
    assert not young(100, {"verdict": "garbage"}) and not young(200, {"verdict": "garbage"})
    assert young(300, {"verdict": "garbage"})
    assert sweep.make_should_stop(load(None, ["sweep.stopper=false"])) is None  # trials run to the end


def test_resuming_a_sweep_with_another_config_exits_2_and_leaves_the_experiment_alone(tmp_path, capsys):
    """`--smoke` first and then the full sweep in the same folder used to resume the smoke sweep and
    report its 6-step trials as the 600-step results. Smoke runs have an experiment of their own now,
    and a resume with another config is refused before anything is written."""
    import argparse

    import yaml

    from ganray import sweep
    from ganray.args import add_config_args, config_from_args

    p = argparse.ArgumentParser()
    add_config_args(p)
    smoke = config_from_args(p.parse_args(["--smoke", "--storage", str(tmp_path)]))
    full = config_from_args(p.parse_args(["--storage", str(tmp_path)]))
    assert (smoke.experiment.name, full.experiment.name) == ("zdim-mnist-local-smoke", "zdim-mnist-local")
    exp = tmp_path / "zdim-mnist-local"
    (exp / "tune" / "tune").mkdir(parents=True)
    (exp / "tune" / "tune" / "tuner.pkl").write_bytes(b"a sweep Tune can resume")
    (exp / "config.yaml").write_text(yaml.safe_dump(full.replace(**{"train.steps": 6}).to_dict()))
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert sweep.main(["--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds the sweep 'zdim-mnist-local' with another config (train.steps: 6 there, 600 now)" in err, err
    assert "--set experiment.name=NAME" in err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    # the same config again, and a changed concurrency, pass the check
    (exp / "config.yaml").write_text(yaml.safe_dump(full.to_dict()))
    sweep._check_same_sweep(full.replace(**{"sweep.max_concurrent_trials": 3}), str(exp))


def test_a_failure_during_the_sweep_exits_1(tmp_path, monkeypatch, capsys):
    def run_sweep(cfg, write_report=True):
        raise FileNotFoundError(2, "No such file or directory", "trials/z1-s0/verdict.json")

    monkeypatch.setattr(sweep, "run_sweep", run_sweep)
    monkeypatch.setattr(sweep, "_shutdown_ray", lambda: None)
    assert sweep.main(["--smoke", "--storage", str(tmp_path), "--verbose"]) == 1
    assert "error: run failed: [Errno 2] No such file or directory" in capsys.readouterr().err


def test_a_missing_sweep_config_is_bad_input(tmp_path, capsys):
    assert sweep.main(["--config", str(tmp_path / "nope.yaml"), "--storage", str(tmp_path)]) == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err


# ---- the jobs: which preset, which grid (no sweep runs) --------------------------------------------


def _job(name: str, monkeypatch) -> dict:
    """What jobs/<name> passes to ganray.sweep.main."""
    seen: dict = {}
    monkeypatch.setattr(sweep, "main", lambda argv=None, **kw: seen.update(kw) or 0)
    monkeypatch.setattr(sys, "argv", [name])
    with pytest.raises(SystemExit):
        runpy.run_path(str(ROOT / "jobs" / name), run_name="__main__")
    return seen


def _resolve(job: dict, argv: list[str]):
    return job_config(sweep.parser().parse_args(argv), job.get("preset"), job.get("keep_grid", False))


LR_GRID = (5e-5, 2e-4, 8e-4)


def test_sweep_lr_keeps_its_grid_over_a_config_that_sets_none(tmp_path, monkeypatch):
    job = _job("sweep_lr.py", monkeypatch)
    cfg, note = _resolve(job, ["--storage", str(tmp_path)])
    assert cfg.experiment.name == "lr-mnist-local" and note is None
    assert (cfg.sweep.lr_g, cfg.sweep.lr_d, cfg.sweep.z_dim, cfg.model.z_dim) == (LR_GRID, LR_GRID, (), 10)
    zdim = str(ROOT / "configs" / "zdim_mnist.yaml")  # a z_dim sweep: it sets no learning-rate grid
    cfg, note = _resolve(job, ["--config", zdim, "--storage", str(tmp_path)])
    assert cfg.experiment.name == "zdim-mnist" and cfg.data.dataset == "mnist" and cfg.model.z_dim == 100
    assert (cfg.sweep.lr_g, cfg.sweep.lr_d, cfg.sweep.z_dim) == (LR_GRID, LR_GRID, ())
    assert len(sweep.grid(cfg)) == 27  # 3 lr_g x 3 lr_d x the preset's 3 seeds
    assert note == (f"{zdim} sets no sweep.lr_g or sweep.lr_d: sweeping this job's grid "
                    "(sweep.lr_g 5e-05, 0.0002, 0.0008; sweep.lr_d 5e-05, 0.0002, 0.0008)")
    # a config (or --set) with a learning-rate grid of its own: that grid runs, and the line says why
    own = tmp_path / "own.yaml"
    own.write_text("sweep: {lr_g: [1.0e-4, 3.0e-4]}\n")
    cfg, note = _resolve(job, ["--config", str(own)])
    assert cfg.sweep.lr_g == (1e-4, 3e-4) and cfg.sweep.lr_d == () and cfg.sweep.z_dim == (1, 2, 10, 50, 100)
    assert note == f"{own} sets sweep.lr_g: its own grid is swept, not this job's"
    cfg, note = _resolve(job, ["--config", zdim, "--set", "sweep.lr_d=[1.0e-3]"])
    assert cfg.sweep.lr_d == (1e-3,) and cfg.sweep.lr_g == () and "sets sweep.lr_d: its own grid" in note


def test_the_other_jobs_run_their_presets(tmp_path, monkeypatch):
    embedded, _ = _resolve({}, ["--storage", str(tmp_path)])  # `ganray sweep`: the embedded defaults
    zdim, note = _resolve(_job("sweep_zdim.py", monkeypatch), ["--storage", str(tmp_path)])
    assert zdim == embedded and zdim.experiment.name == "zdim-mnist-local" and note is None
    cmp, _ = _resolve(_job("compare_vae_gan.py", monkeypatch), ["--storage", str(tmp_path)])
    assert cmp.experiment.name == "compare-vae-gan-local" and cmp.data.classes == (5, 7)
    assert (cmp.sweep.family, cmp.sweep.seeds, cmp.sweep.z_dim, cmp.sweep.stopper) == (("gan", "vae"), (0, 1), (), False)
    assert (cmp.model.z_dim, cmp.train.steps, cmp.eval.n) == (100, 400, 1000)
