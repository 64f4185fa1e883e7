"""Sweep building blocks without Ray: grids, trial names, the collapse stopper, bad specs."""
from __future__ import annotations

import pytest

from ganray import sweep
from ganray.config import ConfigError, load


def test_grid_is_the_product_of_the_axes():
    cfg = load(None, ["sweep.z_dim=[1, 10]", "sweep.lr_g=[1e-4, 2e-4]", "sweep.seeds=[0, 1, 2]"])
    points = sweep.grid(cfg)
    assert len(points) == 2 * 2 * 3
    assert {p["model.z_dim"] for p in points} == {1, 10}
    names = [sweep.trial_name(p) for p in points]
    assert len(set(names)) == len(names)
    assert "z10-lrg0.0002-s2" in names


def test_default_grid_is_the_zdim_experiment():
    points = sweep.grid(load(None))
    assert [p["model.z_dim"] for p in points] == [1, 2, 10, 50, 100]
    assert [sweep.trial_name(p) for p in points][0] == "z1-s0"


@pytest.mark.parametrize("overrides,message", [
    (["sweep.z_dim=[]", "sweep.seeds=[0]"], "empty grid"),
    (["sweep.z_dim=[1, 0]"], "sweep.z_dim[1]: must be >= 1"),
    (["sweep.asha=true", "sweep.asha_metric=fid"], "sweep.asha_metric: unknown metric 'fid'"),
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
    never = sweep.make_should_stop(load(None, ["sweep.stopper=false"]))
    assert not any(never(i, {"verdict": "collapsed"}) for i in range(10))


def test_resuming_a_sweep_with_another_config_exits_2_and_leaves_the_experiment_alone(tmp_path, capsys):
    """`--smoke` first and then the full sweep in the same folder used to resume the smoke sweep and
    report its 6-step trials as the 600-step results. Smoke runs have an experiment of their own now,
    and a resume with another config is refused before anything is written."""
    import yaml

    from ganray import sweep
    from ganray.cli import config_from_args, add_config_args
    import argparse

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
