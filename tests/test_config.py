"""Config loading: presets are valid; bad configs exit 2 naming the dotted path; nothing is written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ganray import cli
from ganray.config import DATASETS, FAMILIES, Config, ConfigError, load, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def test_presets_validate_with_the_cli():
    assert len(PRESETS) >= 6
    r = subprocess.run([sys.executable, "-m", "ganray.cli", "validate", *map(str, PRESETS)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": OK") == len(PRESETS)


def test_local_preset_equals_embedded_defaults():
    assert load(ROOT / "configs" / "zdim_mnist_local.yaml") == Config()


# (yaml text, dotted path that must be named, a word of what is allowed)
BAD = [
    ("model: {z_dim: 0}", "model.z_dim", ">= 1"),
    ("model: {z_dim: -3}", "model.z_dim", ">= 1"),
    ("train: {lr_g: 0}", "train.lr_g", "> 0"),
    ("train: {lr_d: -1e-4}", "train.lr_d", "> 0"),
    ("train: {batch_size: 0}", "train.batch_size", ">= 1"),
    ("train: {n_critic: 0}", "train.n_critic", ">= 1"),
    ("train: {family: wgan}", "train.family", "wgan-gp"),
    ("data: {dataset: mnits}", "data.dataset", "mnist"),
    ("storage: {uri: 's3:/x'}", "storage.uri", "s3://bucket/prefix"),
    ("storage: {uri: 'gs://'}", "storage.uri", "gs://bucket/prefix"),
    ("storage: {uri: 'http://example.com/x'}", "storage.uri", "s3://bucket/prefix"),
    ("train: {lr_gg: 1.0e-4}", "train.lr_gg", "did you mean 'lr_g'"),
    ("trian: {steps: 3}", "trian", "did you mean 'train'"),
    ("train: {steps: many}", "train.steps", "integer"),
    ("train: {steps: 2.5}", "train.steps", "integer"),
    ("model: {width: fat}", "model.width", "number"),
    ("model: {g_ema: maybe}", "model.g_ema", "true or false"),
    ("sweep: {z_dim: [1, 0, 10]}", "sweep.z_dim[1]", ">= 1"),
    ("sweep: {seeds: []}", "sweep.seeds", "at least one"),
    ("sweep: {family: [gan, dcgan]}", "sweep.family[1]", "allowed"),
    ("model: {arch: dcgan}\ndata: {dataset: ring8}", "model.arch", "2D"),
    ("model: [1, 2]", "model", "mapping"),
    ("experiment: {name: 'a b/c'}", "experiment.name", "letters"),
    ("model: {ema_decay: 1.5}", "model.ema_decay", "<= 1"),
    ("data: {dataset: ring8}\neval: {metrics: [fcd]}", "eval.metrics", "applies to"),
    ("eval: {metrics: [fid]}", "eval.metrics[0]", "unknown metric"),
]


@pytest.mark.parametrize("text,path,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_config_exits_2_names_the_path_and_writes_nothing(tmp_path, monkeypatch, capsys, text, path, allowed):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text(text)
    monkeypatch.chdir(tmp_path)  # the default storage (./ganray_results) would land here
    assert cli.main(["validate", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert path in err and allowed in err, err
    # the same config given to a run: exit 2 before anything is created
    assert cli.main(["train", "--local", str(cfg_file)]) == 2
    assert path in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_set_overrides_convert_types():
    cfg = load(None, ["train.lr_g=2e-4", "model.z_dim=7", "sweep.z_dim=[1,2]", "model.g_ema=true",
                      "data.classes=5,7"])
    assert cfg.train.lr_g == 2e-4 and isinstance(cfg.train.lr_g, float)
    assert cfg.model.z_dim == 7
    assert cfg.sweep.z_dim == (1, 2)
    assert cfg.model.g_ema is True
    assert cfg.data.classes == (5, 7)


def test_set_override_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.z_dim: must be >= 1"):
        load(None, ["model.z_dim=0"])
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["train.lr_g"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load(None, ["lr_g=1"])


def test_config_round_trips_through_yaml():
    cfg = load(None, ["model.z_dim=3", "sweep.lr_g=[1e-4, 2e-4]"])
    from ganray.config import from_dict

    again = from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert cfg.replace(**{"model.z_dim": 5}).model.z_dim == 5
    with pytest.raises(ConfigError):
        cfg.replace(**{"model.z_dim": 0})


def test_all_errors_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load(None, ["model.z_dim=0", "train.lr_g=-1"])
    assert len(e.value.errors) == 2


def test_name_lists_agree_with_registries():
    from ganray.data import dataset_names
    from ganray.families import family_names

    assert set(dataset_names()) == set(DATASETS)
    assert set(family_names()) == set(FAMILIES)
