"""Issue 17, hazard 6: the reference classifier of a dataset without a shipped one is made ready by
the driver before any worker starts (ganray.metrics.classifier.ready); workers only load it.

fashion-mnist here is an IDX folder of mnist5k digits under the official fashion-mnist file names
(data.source: nothing is downloaded), 300 train and 100 test images, so that the classifier's 30
epochs take seconds."""
from __future__ import annotations

import json
import re

import pytest
import torch
from test_metrics import _write_idx_folder

from _raytools import ray_local  # noqa: F401
from ganray.artifacts import reader
from ganray.config import DataConfig, load
from ganray.data import load_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> str:
    """An IDX source for fashion-mnist: 300 train / 100 test mnist5k digits (all 10 classes)."""
    splits = tuple(load_dataset(DataConfig(dataset="mnist5k"), split) for split in ("train", "test"))
    return _write_idx_folder(tmp_path_factory.mktemp("fashion") / "idx", splits, n_train=300, n_test=100)


def _cfg(tmp_path, source: str, *extra: str):
    return load(None, ["data.dataset=fashion-mnist", f"data.source={source}", f"data.cache_dir={tmp_path / 'cache'}",
                       f"storage.uri={tmp_path / 'store'}", *extra])


TINY = ["model.width=0.125", "train.batch_size=8", "train.steps=4", "train.log_every=1", "train.eval_every=4",
        "train.sample_every=4", "train.checkpoint_every=4", "eval.n=20", "eval.n_fixed_z=4",
        "eval.metrics=[class_coverage]"]


def test_a_local_run_trains_it_once_on_the_whole_split_before_its_loop_and_then_only_loads_it(tmp_path, fashion,
                                                                                               monkeypatch, capsys):
    """Before: the loop's evaluator trained it at the first evaluation, on the run's own class subset
    and data.n_train cap, and stored that as the dataset's classifier for every later run."""
    from ganray.collapse import Evaluator
    from ganray.local import run_local
    from ganray.metrics.classifier import store

    # `ganray train --local` on classes 0-1 of 120 images: trained before the loop, on the whole train split
    cfg = _cfg(tmp_path, fashion, *TINY, "data.classes=[0,1]", "data.n_train=120", "experiment.name=local")
    run_local(cfg, progress=True)
    stored = tmp_path / "store" / "classifiers" / "fashion-mnist.json"
    started = tmp_path / "store" / "local" / "trials" / "train" / "config.yaml"  # the recorder, before the loop
    assert stored.stat().st_mtime < started.stat().st_mtime
    info = json.loads(stored.read_text())
    assert info["n_train"] == 300 and info["held_out_accuracy"] > 0.3  # 30 epochs on 300 digits: above chance (0.1)
    for folder in (tmp_path / "store" / "classifiers", tmp_path / "cache" / "classifiers"):
        assert (folder / "fashion-mnist.pt").is_file() and (folder / "fashion-mnist.json").is_file()
    out = capsys.readouterr().out.splitlines()
    said = [line for line in out if line.startswith("  classifier")]
    assert len(said) == 2 and said[0].startswith("  classifier  none stored for fashion-mnist: training it"), out
    assert re.match(r"  classifier  fashion-mnist ready in \d+ s on cpu: held-out accuracy", said[1]), said[1]

    # from now on nothing trains: not prepare (silent), not the Evaluator a worker builds
    def no_training(*a, **k):
        raise AssertionError("trained a classifier again")

    from ganray.metrics.classifier import ready  # (after the run: a module of the change)

    monkeypatch.setattr(store, "train_classifier", no_training)
    said = []
    assert ready.prepare(cfg, say=said.append) is None and said == []
    ev = Evaluator(cfg, load_dataset(cfg.data, "train"))
    assert ev.labeller == f"the fashion-mnist classifier (held-out accuracy {info['held_out_accuracy']:.1%})"

    # a classifier in this machine's cache only (another storage): copied where every worker looks, quietly
    other = cfg.replace(**{"storage.uri": str(tmp_path / "store2")})
    assert ready.prepare(other, say=said.append) is None and said == []
    assert (tmp_path / "store2" / "classifiers" / "fashion-mnist.json").is_file()

    # nothing to do, nothing said: the shipped MNIST classifier, 2D data, no metric that needs one
    for extra in (["data.dataset=mnist5k"], ["data.dataset=ring8"], ["eval.metrics=[sample_diversity]"],
                  ["eval.metrics=[]"]):
        assert ready.prepare(_cfg(tmp_path / "none", fashion, *extra), say=said.append) is None
    assert said == [] and not (tmp_path / "none").exists()


@pytest.mark.slow
def test_ganray_train_on_ray_trains_the_classifier_before_its_workers_start(ray_local, tmp_path, fashion, capsys):
    """Before: rank 0 trained it inside the loop's evaluator, after the worker had started (its
    recorder had written the trial's config.yaml), and the console said nothing."""
    from ganray.distributed import run_train

    _, trial = run_train(_cfg(tmp_path, fashion, *TINY, "experiment.name=first"))
    stored = tmp_path / "store" / "classifiers" / "fashion-mnist.json"
    started = tmp_path / "store" / "first" / "trials" / "train" / "config.yaml"  # the worker's recorder, at its start
    assert stored.stat().st_mtime < started.stat().st_mtime  # trained before the worker started
    rows = reader.read_rows(trial)
    assert [r["classes_covered"] for r in rows if "classes_covered" in r]  # and the worker's evaluator used it
    out = capsys.readouterr().out
    assert out.count("  classifier  none stored for fashion-mnist: training it before the workers start") == 1, out
    assert "  classifier  fashion-mnist ready in" in out
    # a second run on the same storage says nothing and trains nothing: prepare's silence is tested above
