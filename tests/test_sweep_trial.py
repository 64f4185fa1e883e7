"""A single-worker sweep trial runs ganray's loop in its own Tune actor (ganray.local.run_trial)
instead of a nested TorchTrainer: the same record, a resume from the newest checkpoint in the
trial folder with the collapse stopper's count, and reference statistics computed once per
experiment (issue 17, "Sweep efficiency"). The Tune retry of a killed trial is in test_sweep.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _raytools import ray_local  # noqa: F401
from ganray.artifacts import reader
from ganray.config import load
from ganray.local import run_trial
from ganray.sweep import CollapseStopper
from ganray.train.loop import CLOCK_FIELDS

# a trial built to collapse (z_dim 1: near-copies at every evaluation), evaluated every 4 steps,
# checkpointed every 6 (neither divides the other), logged every 2
TINY = ["model.width=0.125", "train.batch_size=16", "train.steps=18", "train.log_every=2", "train.eval_every=4",
        "train.sample_every=4", "train.checkpoint_every=6", "eval.n=200", "eval.n_fixed_z=16", "data.n_train=400",
        "model.z_dim=1", "eval.metrics=[class_coverage,fcd,prdc,sample_diversity]", "experiment.name=t"]
TIMES = ("time", *CLOCK_FIELDS)  # the only columns that differ between two runs of one config


def _rows(trial: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMES} for r in reader.read_rows(str(trial))]


def _files(trial: Path) -> set[str]:
    return {str(p.relative_to(trial)) for p in trial.rglob("*") if p.is_file()}


def _event_tags(tb: Path) -> list[tuple[int, str]]:
    """(step, tag) of every scalar and image of the trial's TensorBoard events, in order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    out = []
    for f in sorted(tb.glob("events.out.tfevents.*")):
        for ev in EventFileLoader(str(f)).Load():
            out += [(ev.step, v.tag) for v in ev.summary.value]
    return out


class CrashAfter(Exception):
    pass


def test_a_crashed_in_process_trial_resumes_from_its_newest_checkpoint_with_the_stoppers_count(tmp_path):
    """run_trial killed right after the checkpoint of step 12 (the stopper has counted bad
    evaluations at 4, 8 and 12; the last step, 18, is evaluated too), then run again: it resumes from step 12 with the stopper's count,
    and ends with the rows, verdict.json and stopper state of a straight run."""
    torch.set_num_threads(1)
    patience = 99  # counts but never stops: the count itself is compared
    straight = load(None, [*TINY, f"storage.uri={tmp_path / 'straight'}"])
    stopper = CollapseStopper(patience)
    run_trial(straight, "z1", stopper=stopper)
    assert stopper.bad_in_a_row == 5, "z_dim 1 must be judged bad at 4, 8, 12, 16, 18: the count is what resumes"

    cfg = load(None, [*TINY, f"storage.uri={tmp_path / 'crashed'}"])
    seen: list[int] = []

    def crash(step, metrics, verdict, checkpoint_uri):
        seen.append(step)
        if checkpoint_uri is not None and step == 12:
            raise CrashAfter(step)

    with pytest.raises(CrashAfter):
        run_trial(cfg, "z1", stopper=CollapseStopper(patience), on_report=crash)
    resumed_stopper, reports = CollapseStopper(patience), []
    run_trial(cfg, "z1", stopper=resumed_stopper, on_report=lambda step, m, v, c: reports.append((step, c)))
    assert reports[0][0] == 14, reports  # the first step after the checkpoint of step 12
    assert [s for s, c in reports if c is not None] == [18], "checkpoints after the resume: 18 only"
    assert resumed_stopper.bad_in_a_row == stopper.bad_in_a_row == 5  # 3 from the checkpoint, then 16 and 18

    a, b = tmp_path / "straight" / "t" / "trials" / "z1", tmp_path / "crashed" / "t" / "trials" / "z1"
    assert _rows(b) == _rows(a)
    va, vb = (json.loads((t / "verdict.json").read_text()) for t in (a, b))
    assert vb == va and vb["stopper"] == {"bad_in_a_row": 5}, (va, vb)


@pytest.mark.slow
def test_an_in_process_trial_writes_the_record_of_a_one_worker_torch_trainer(ray_local, tmp_path):
    """The same config through a 1-worker TorchTrainer (the sweep's trial before) and through
    run_trial (a sweep trial now): the same files in the trial folder (Ray Train's own snapshot
    aside), the same metrics rows to the last digit, verdict.json, sample grids and TensorBoard
    scalars and images; one torch thread on both sides (Ray gives its 1-CPU worker one)."""
    from ganray.distributed import make_trainer

    torch.set_num_threads(1)
    before = load(None, [*TINY, f"storage.uri={tmp_path / 'ray'}"])
    assert make_trainer(before, "z1").fit().error is None
    now = load(None, [*TINY, f"storage.uri={tmp_path / 'local'}"])
    run_trial(now, "z1", stopper=CollapseStopper(99), keep_checkpoints=3)

    a, b = tmp_path / "ray" / "t", tmp_path / "local" / "t"
    ta, tb = a / "trials" / "z1", b / "trials" / "z1"
    ray_own = {"checkpoint_manager_snapshot.json", ".validate_storage_marker"}  # Ray Train's, not the record
    assert _files(tb) == _files(ta) - ray_own, (_files(ta) ^ _files(tb))
    assert {"verdict.json", "fixed_z.gif", "config.yaml", "samples/step_000016.png"} <= _files(tb)
    assert sorted(p.name for p in tb.glob("checkpoint_0*")) == ["checkpoint_000006", "checkpoint_000012",
                                                                "checkpoint_000018"]
    assert _rows(tb) == _rows(ta)
    va, vb = (json.loads((t / "verdict.json").read_text()) for t in (ta, tb))
    assert va == {**vb, "stopper": None}  # the TorchTrainer here ran without the sweep's stopper
    for png in sorted(ta.glob("samples/*.png")):
        assert (tb / "samples" / png.name).read_bytes() == png.read_bytes(), png.name
    assert _event_tags(b / "tensorboard" / "z1") == _event_tags(a / "tensorboard" / "z1")


def test_the_reference_statistics_are_computed_once_per_experiment(tmp_path, monkeypatch):
    """Two trials' evaluators on one node (the same data, classifier and seed): the first computes
    the real features and k-NN distances and keeps them in the cache, the second loads them; the
    statistics are identical to computing them afresh."""
    from ganray import collapse
    from ganray.data import load_dataset
    from ganray.metrics import inputs

    calls = []
    real_knn = inputs.knn_distances
    monkeypatch.setattr(inputs, "knn_distances", lambda *a, **k: calls.append(1) or real_knn(*a, **k))
    cfg = load(None, [*TINY, f"data.cache_dir={tmp_path / 'cache'}", f"storage.uri={tmp_path / 's'}"])
    data = load_dataset(cfg.data)
    first = collapse.Evaluator(cfg, data)
    assert len(calls) == 1 and len(list((tmp_path / "cache" / "reference").glob("*.pt"))) == 1
    second = collapse.Evaluator(cfg.replace(**{"model.z_dim": 10}), data)  # another trial of the sweep
    assert len(calls) == 1, "the second trial computed the reference statistics again"
    monkeypatch.setattr(collapse, "cache_root", lambda _d: None)  # no cache: computed afresh
    fresh = collapse.Evaluator(cfg, data)
    assert len(calls) == 2
    for name in ("real_features", "mu_real", "sigma_real", "real_radii", "real_nn"):
        for ev in (first, second):
            assert torch.equal(getattr(ev.ref, name), getattr(fresh.ref, name)), name
    other_seed = collapse.Evaluator(cfg.replace(**{"experiment.seed": 1}), data)  # another subset: not the same key
    assert len(calls) == 3 and not torch.equal(other_seed.ref.real_features, fresh.ref.real_features)
