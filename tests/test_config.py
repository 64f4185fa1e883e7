"""Config loading: presets are valid; bad configs exit 2 naming the dotted path; nothing is written."""
from __future__ import annotations

import json
import os
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


def test_validate_loads_neither_torch_nor_pyarrow():
    """`ganray validate configs/*.yaml` stays light: the config floor, the storage facade and the
    metrics registry import nothing heavy (docs/performance.md has its wall time)."""
    code = ("import json, sys\nfrom ganray.cli import main\nrc = main(['validate', *sys.argv[1:]])\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\nsys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *map(str, PRESETS)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert "ganray" in loaded and not loaded & {"torch", "pyarrow", "numpy", "ray", "boto3", "google"}, loaded


def test_a_missing_config_file_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "nope.yaml")
    assert cli.main(["validate", missing]) == 2
    assert cli.main(["train", "--local", missing]) == 2
    assert "nope.yaml: config file not found" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_failure_during_the_run_exits_1(tmp_path, monkeypatch, capsys):
    """A FileNotFoundError during a run (a file the run itself wrote is gone) is a failure of the
    run: exit 1 with its reason, not 2 (bad input) as before."""
    from ganray import local

    def run_local(cfg, progress=True):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "out" / "gone.jsonl"))

    monkeypatch.setattr(local, "run_local", run_local)
    assert cli.main(["train", "--local", str(ROOT / "configs" / "ring8.yaml"), "--storage", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "error: run failed: [Errno 2] No such file or directory" in err and "gone.jsonl" in err, err


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
    # non-finite and oversized numbers (YAML's .nan / .inf, and 1e30 read as a string or a float)
    ("train: {lr_g: .nan}", "train.lr_g", "finite"),
    ("train: {lr_g: .inf}", "train.lr_g", "finite"),
    ("model: {width: .nan}", "model.width", "finite"),
    ("train: {lr_d: .inf}", "train.lr_d", "finite"),
    ("train: {lr_d: -.inf}", "train.lr_d", "finite"),
    ("train: {steps: 1e30}", "train.steps", "<= 100000000"),
    ("train: {steps: 1.0e+30}", "train.steps", "<= 100000000"),
    ("eval: {n: 123456789012345}", "eval.n", "<= 2147483647"),
    ("eval: {kl_partial: .nan}", "eval.kl_partial", "finite"),
    ("sweep: {lr_g: [1.0e-4, .nan]}", "sweep.lr_g", "finite"),
    ("train: {beta2: 1.0e+400}", "train.beta2", "finite"),
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


def test_binary_config_file_exits_2_naming_the_file_and_writes_nothing(tmp_path, monkeypatch, capsys):
    cfg_file = tmp_path / "weights.yaml"
    cfg_file.write_bytes(bytes(range(256)) * 8)  # not UTF-8 text (a checkpoint given by mistake)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert str(cfg_file) in err and "not a YAML text file" in err and "Traceback" not in err, err
    assert cli.main(["train", "--local", str(cfg_file)]) == 2
    assert "not a YAML text file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.yaml"]


def test_nan_set_override_exits_2_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--local", str(ROOT / "configs" / "ring8.yaml"), "--set", "train.lr_g=.nan"]) == 2
    assert "train.lr_g: must be a finite number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- a family's own settings apply whenever the config leaves them unset ----------------------


def test_wgan_gp_gets_its_paper_settings_when_unset_and_the_users_when_set():
    cfg = load(None, ["train.family=wgan-gp"])
    tc = cfg.train
    assert (tc.n_critic, tc.beta1, tc.beta2, tc.lr_g, tc.lr_d) == (5, 0.5, 0.9, 1e-4, 1e-4)
    saved = yaml.safe_load(cfg.to_yaml())["train"]  # the resolved config saved with a trial
    assert (saved["n_critic"], saved["beta2"], saved["lr_g"]) == (5, 0.9, 1e-4)
    mine = load(None, ["train.family=wgan-gp", "train.n_critic=2", "train.beta2=0.99", "train.lr_g=3e-4"]).train
    assert (mine.n_critic, mine.beta1, mine.beta2, mine.lr_g, mine.lr_d) == (2, 0.5, 0.99, 3e-4, 1e-4)
    assert (Config().train.n_critic, Config().train.beta2, Config().train.lr_g) == (1, 0.999, 2e-4)
    began = load(None, ["train.family=began"]).train
    assert (began.lr_g, began.lr_d, began.beta1, began.beta2) == (1e-4, 1e-4, 0.5, 0.999)
    # an explicit null is "unset" too
    assert load(None, {"train.family": "wgan-gp", "train.n_critic": None}).train.n_critic == 5


def test_a_change_of_family_brings_that_familys_settings_through_replace_pickle_and_the_sweep_grid():
    import pickle

    from ganray.sweep import grid

    base = load(None, ["sweep.family=[gan, wgan-gp]", "sweep.z_dim=[]", "train.beta1=0.0"])
    for shipped in (base, pickle.loads(pickle.dumps(base))):  # Tune hands trials a pickled config
        by_family = {p["train.family"]: shipped.replace(**p).train for p in grid(shipped)}
        assert (by_family["wgan-gp"].n_critic, by_family["wgan-gp"].beta2, by_family["wgan-gp"].lr_d) == (5, 0.9, 1e-4)
        assert (by_family["gan"].n_critic, by_family["gan"].beta2, by_family["gan"].lr_d) == (1, 0.999, 2e-4)
        assert by_family["wgan-gp"].beta1 == by_family["gan"].beta1 == 0.0  # the user's value wins everywhere
    # a config read back from a saved trial is explicit: what ran, whatever the family
    ran = load(None, ["train.family=wgan-gp"])
    from ganray.config import from_dict

    assert from_dict(ran.to_dict()).replace(**{"train.family": "gan"}).train.n_critic == 5


def test_local_wgan_gp_run_on_default_storage_runs_five_critic_steps(tmp_path):
    """The user's path: `ganray train --local CONFIG --set train.family=wgan-gp` with the default
    (relative) storage; the saved config shows n_critic 5 and D's Adam really stepped 5x per G step."""
    import torch

    env = {k: v for k, v in os.environ.items() if k not in ("GANRAY_STORAGE",)}
    steps = 7
    r = subprocess.run([sys.executable, "-m", "ganray.cli", "train", "--local", str(ROOT / "configs" / "zdim_mnist_local.yaml"),
                        "--quiet", "--set", "train.family=wgan-gp", "--set", f"train.steps={steps}",
                        "--set", "model.width=0.125", "--set", "train.batch_size=8", "--set", "eval.metrics=[]",
                        "--set", "data.n_train=200"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    trial = tmp_path / "ganray_results" / "zdim-mnist-local" / "trials" / "train"
    saved = yaml.safe_load((trial / "config.yaml").read_text())["train"]
    assert (saved["n_critic"], saved["beta1"], saved["beta2"], saved["lr_d"]) == (5, 0.5, 0.9, 1e-4)
    state = torch.load(trial / f"checkpoint_{steps:06d}" / "checkpoint.pt", weights_only=True)
    d_steps = {int(s["step"]) for s in state["opt_D"]["state"].values()}
    g_steps = {int(s["step"]) for s in state["opt_G"]["state"].values()}
    assert d_steps == {5 * steps} and g_steps == {steps}
    assert state["opt_D"]["param_groups"][0]["betas"] == (0.5, 0.9)


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
    from ganray.config import TEXT_DATASETS, TWO_D_DATASETS, UNPAIRED_DATASETS, is_2d
    from ganray.data import TEXT_EMBED_DIMS, dataset_names
    from ganray.data.mixtures import MIXTURES
    from ganray.data.unpaired import unpaired_names
    from ganray.families import family_names

    assert set(dataset_names()) | set(unpaired_names()) == set(DATASETS)
    assert set(unpaired_names()) == set(UNPAIRED_DATASETS) and set(TEXT_EMBED_DIMS) == set(TEXT_DATASETS)
    assert set(MIXTURES) == set(TWO_D_DATASETS) and all(is_2d(d) for d in MIXTURES)  # the one list of 2-D data
    assert set(family_names()) == set(FAMILIES)


# ---- DDP on fractional GPUs (issue 17, hazard 2) ----------------------------------------------


@pytest.mark.parametrize("workers,gpus,use_gpu,ok", [
    (2, 0.5, True, False),   # two NCCL ranks on one GPU: "Duplicate GPU detected"
    (3, 1.5, True, False),   # ranks would share a GPU again
    (2, 1.0, True, True),    # whole GPUs per worker
    (2, 2.0, True, True),
    (1, 0.5, True, True),    # one worker: fractions pack trials, as in the GPU presets
    (2, 0.5, False, True),   # CPU workers: the GPU fraction is not used
])
def test_multi_worker_ddp_on_fractional_gpus_is_refused_naming_both_keys(workers, gpus, use_gpu, ok):
    overrides = [f"scaling.num_workers={workers}", f"scaling.gpus_per_worker={gpus}", f"scaling.use_gpu={use_gpu}"]
    if ok:
        load(None, overrides)
        return
    with pytest.raises(ConfigError) as e:
        load(None, overrides)
    (msg,) = e.value.errors
    assert msg.startswith("scaling.gpus_per_worker:") and "scaling.num_workers" in msg, msg
    assert "whole GPUs" in msg and "num_workers: 1" in msg, msg


def test_gpu_presets_keep_validating_and_two_workers_on_them_exit_2(tmp_path, monkeypatch, capsys):
    """Every single-worker GPU preset packs its trials at a fraction of a GPU, every multi-worker one
    (StackGAN's CUB DDP run) gives each worker whole GPUs; asking a packed preset for two DDP
    workers is bad input (exit 2) before anything is written."""
    gpu = [load(p).scaling for p in PRESETS if load(p).scaling.use_gpu]
    assert gpu and all(s.gpus_per_worker < 1 for s in gpu if s.num_workers == 1)
    assert any(s.num_workers > 1 for s in gpu) and all(s.gpus_per_worker == 1 for s in gpu if s.num_workers > 1)
    two = yaml.safe_load((ROOT / "configs" / "wgan_gp_mnist.yaml").read_text())
    two["scaling"]["num_workers"] = 2
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(two))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["validate", "two.yaml"]) == 2
    assert "scaling.gpus_per_worker: 0.5 with scaling.num_workers 2" in capsys.readouterr().err
    assert cli.main(["train", "--local", str(ROOT / "configs" / "ring8.yaml"), "--set", "train.steps=1",
                     "--set", "scaling.use_gpu=true", "--set", "scaling.gpus_per_worker=0.25",
                     "--set", "scaling.num_workers=2"]) == 2
    assert "scaling.gpus_per_worker: 0.25 with scaling.num_workers 2" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.yaml"]
