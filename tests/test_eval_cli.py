"""`ganray eval`: sample files and checkpoints in, metrics and a verdict out; bad input -> exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ganray.cli import main as cli_main
from ganray.config import DataConfig, load
from ganray.data import load_dataset
from ganray.data.mixtures import sample_mixture
from ganray.evaluate import main
from ganray.train import checkpoint, train

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def held_out():
    return load_dataset(DataConfig(dataset="mnist5k"), "test")


def run_json(argv, capsys) -> dict:
    rc = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_samples_file_of_real_digits_is_healthy(tmp_path, held_out, capsys):
    path = tmp_path / "real.npy"
    np.save(path, held_out.x.numpy())
    payload = run_json([str(path), "--dataset", "mnist5k"], capsys)
    assert set(payload) == {"dataset", "n", "metrics", "verdict", "reasons", "margin"}
    assert payload["dataset"] == "mnist5k" and payload["n"] == 500 and payload["verdict"] == "healthy"
    assert payload["metrics"]["classes_covered"] == 10 and payload["metrics"]["kl_uniform"] < 0.05
    assert {"fcd", "precision", "recall", "density", "coverage", "near_real_share"} <= set(payload["metrics"])


def test_samples_file_text_output_and_noise(tmp_path, capsys):
    path = tmp_path / "noise.npy"
    np.save(path, np.random.default_rng(0).uniform(-1, 1, (300, 1, 28, 28)).astype(np.float32))
    assert main([str(path), "--dataset", "mnist5k"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mnist5k: 300 samples -> garbage\n  - only 0% of samples")
    assert "near_real_share" in out


def test_2d_samples_file(tmp_path, capsys):
    x, _ = sample_mixture("ring8", 2500, torch.Generator().manual_seed(0))
    path = tmp_path / "ring.npy"
    np.save(path, x.numpy().astype(np.float64))  # any float dtype
    payload = run_json([str(path), "--dataset", "ring8"], capsys)
    assert payload["verdict"] == "healthy" and payload["metrics"]["modes_covered"] == 8
    np.save(path, np.random.default_rng(0).uniform(-3, 3, (2500, 2)))  # a square of noise around the ring
    assert run_json([str(path), "--dataset", "ring8"], capsys)["verdict"] == "garbage"


def test_overrides_change_thresholds(tmp_path, held_out, capsys):
    path = tmp_path / "nine.npy"
    np.save(path, held_out.x[held_out.y != 5].numpy())
    assert run_json([str(path), "--dataset", "mnist5k"], capsys)["verdict"] == "partial_collapse"
    strict = run_json([str(path), "--dataset", "mnist5k", "--set", "eval.coverage_collapsed=0.95"], capsys)
    assert strict["verdict"] == "collapsed"


def _bad(tmp_path, name, arr=None, raw=None):
    p = tmp_path / name
    if arr is not None:
        np.save(p, arr)
    if raw is not None:
        p.write_bytes(raw)
    return str(p)


@pytest.mark.parametrize("make,args,message", [
    (lambda t: str(t / "missing.npy"), ["--dataset", "mnist5k"], "missing.npy: file not found"),
    (lambda t: _bad(t, "text.npy", raw=b"hello"), ["--dataset", "mnist5k"], "not a .npy file"),
    (lambda t: _bad(t, "cut.npy", raw=b"\x93NUMPY\x01\x00v\x00{'descr'"), ["--dataset", "mnist5k"], "not a readable .npy"),
    (lambda t: _bad(t, "u8.npy", np.zeros((20, 1, 28, 28), np.uint8)), ["--dataset", "mnist5k"], "dtype uint8"),
    (lambda t: _bad(t, "shape.npy", np.zeros((20, 1, 32, 32), np.float32)), ["--dataset", "mnist5k"],
     "shape (20, 1, 32, 32) does not fit mnist5k: expected N x 1 x 28 x 28"),
    (lambda t: _bad(t, "flat.npy", np.zeros((20, 784), np.float32)), ["--dataset", "mnist5k"], "does not fit mnist5k"),
    (lambda t: _bad(t, "img2d.npy", np.zeros((20, 1, 28, 28), np.float32)), ["--dataset", "ring8"], "expected N x 2"),
    (lambda t: _bad(t, "range.npy", np.full((20, 1, 28, 28), 255.0, np.float32)), ["--dataset", "mnist5k"],
     "values span [255, 255]; images must be in [-1, 1]"),
    (lambda t: _bad(t, "nan.npy", np.full((20, 1, 28, 28), np.nan, np.float32)), ["--dataset", "mnist5k"],
     "15,680 values are NaN or inf"),
    (lambda t: _bad(t, "few.npy", np.zeros((3, 1, 28, 28), np.float32)), ["--dataset", "mnist5k"], "need at least 10"),
    (lambda t: _bad(t, "ok.npy", np.zeros((20, 1, 28, 28), np.float32)), ["--dataset", "mnist6k"],
     "unknown dataset 'mnist6k'"),
    (lambda t: _bad(t, "ok.npy", np.zeros((20, 1, 28, 28), np.float32)), [], "--dataset is required"),
    (lambda t: _bad(t, "ok.npy", np.zeros((20, 1, 28, 28), np.float32)), ["--dataset", "mnist5k", "--set", "eval.nope=1"],
     "eval.nope: unknown key"),
    (lambda t: _bad(t, "ckpt.pt", raw=b"not a checkpoint"), [], "not a readable ganray checkpoint"),
    (lambda t: str(t / "nowhere.pt"), [], "checkpoint not found"),
])
def test_bad_input_exits_2_with_a_clear_message(tmp_path, capsys, make, args, message):
    assert main([make(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


# ---- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt_state():
    """A real checkpoint: 2 steps of a tiny DCGAN on mnist5k, with G_ema."""
    cfg = load(None, ["model.width=0.125", "model.g_ema=true", "train.batch_size=8", "train.steps=2",
                      "train.checkpoint_every=2", "eval.metrics=[]", "data.n_train=200"])
    states: dict[int, dict] = {}
    train(cfg, report=lambda *a, **k: None, save_checkpoint=lambda s, st, m: states.__setitem__(s, st),
          should_stop=lambda s, m: False)
    return states[2]


def _zero_last_layer(G: dict) -> dict:
    G = dict(G)
    last = [k for k in G if k.endswith("weight")][-1]
    G[last] = torch.zeros_like(G[last])
    return G


def test_checkpoint_is_evaluated_with_G_ema(tmp_path, ckpt_state, capsys):
    path = checkpoint.save(ckpt_state, tmp_path / "step_2.pt")
    payload = run_json([path, "--n", "300"], capsys)
    assert payload["dataset"] == "mnist5k" and payload["n"] == 300
    assert payload["verdict"] == "garbage"  # 2 steps of training: noise-like samples
    # G_ema constant, G untouched: the verdict follows G_ema
    const_ema = {**ckpt_state, "G_ema": _zero_last_layer(ckpt_state["G_ema"])}
    p2 = checkpoint.save(const_ema, tmp_path / "const_ema.pt")
    payload2 = run_json([p2, "--n", "300"], capsys)
    assert payload2["verdict"] == "collapsed" and payload2["metrics"]["duplicate_share"] == 1.0
    # without G_ema, G is used
    const_g = {**ckpt_state, "G": _zero_last_layer(ckpt_state["G"]), "G_ema": None}
    p3 = checkpoint.save(const_g, tmp_path / "const_g.pt")
    assert run_json([p3, "--n", "300"], capsys)["verdict"] == "collapsed"
    # a folder holding checkpoint.pt works too, and --dataset must agree with the checkpoint
    checkpoint.save(const_g, tmp_path / "run" / "checkpoint.pt")
    assert run_json([str(tmp_path / "run"), "--n", "300", "--dataset", "mnist5k"], capsys)["n"] == 300
    assert main([str(tmp_path / "run"), "--dataset", "ring8"]) == 2
    assert "the checkpoint was trained on mnist5k" in capsys.readouterr().err
    # a trial folder: its newest checkpoint, as the record's reader finds it (step 9 is G constant)
    trial = tmp_path / "exp" / "trials" / "t"
    checkpoint.save(ckpt_state, trial / "checkpoint_000002" / "checkpoint.pt")
    checkpoint.save({**const_g, "step": 9}, trial / "checkpoint_000009" / "checkpoint.pt")
    assert run_json([str(trial), "--n", "300"], capsys)["verdict"] == "collapsed"
    assert main([str(tmp_path / "exp" / "trials" / "empty")]) == 2  # no checkpoint in it: bad input
    assert "checkpoint not found" in capsys.readouterr().err


def test_checkpoint_whose_weights_do_not_fit_its_config(tmp_path, ckpt_state, capsys):
    bad = {**ckpt_state, "G_ema": None, "G": {"nonsense": torch.zeros(1)}}
    path = checkpoint.save(bad, tmp_path / "bad.pt")
    assert main([path, "--n", "50"]) == 2
    assert "generator weights do not fit" in capsys.readouterr().err


def test_through_the_ganray_cli_and_as_a_module(tmp_path, held_out, capsys):
    path = tmp_path / "real.npy"
    np.save(path, held_out.x[:200].numpy())
    assert cli_main(["eval", str(path), "--dataset", "mnist5k", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 200
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ganray.evaluate", str(path), "--dataset", "mnist5k", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dataset"] == "mnist5k"
    bad = subprocess.run([sys.executable, "-m", "ganray.evaluate", str(tmp_path / "nope.npy"), "--dataset", "mnist5k"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "nope.npy: file not found" in bad.stderr
