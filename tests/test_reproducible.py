"""Issue 16, point 1: the same config and seed give the same metrics and verdict in fresh processes
on one machine (CPU), whether the trial runs alone under `ganray train --local`, beside another
trial in a sweep, or in a sweep's reused actor after another trial (docs/distributed.md,
"Reproducibility").

What made them differ: torch's thread count. `ganray train --local` took OMP_NUM_THREADS from the
shell, or else one thread per core (2 on the project's machine), while a sweep trial's Tune actor
gets OMP_NUM_THREADS = its CPUs (1) from Ray; 1 and 2 threads add a convolution's sums in another
order: this test's trial in the sweep differed from the one alone from its row of step 7 on
(d_real), and every evaluation after it. train.threads (0 = scaling.cpus_per_worker) now pins
the count in every training process (ganray.train.threads).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ganray.artifacts import reader
from ganray.config import load
from ganray.sweep import grid, trial_name
from ganray.train.loop import CLOCK_FIELDS

ROOT = Path(__file__).resolve().parents[1]

# One short trial on the 5,000 offline MNIST digits: cadences that do not divide each other (rows
# at 4 7 8 9 10 12 14 16 18 20 21 23: logs every 4, sample grids every 7, checkpoints every 9,
# evaluations every 10, and the last step 23). The sweep's grid gives its trial z2-s3 exactly
# this config: model.z_dim from sweep.z_dim, experiment.seed from sweep.seeds. The collapse
# stopper is off: its count of bad evaluations is the sweep's state, kept in verdict.json
# ("stopper"), where `ganray train --local`, which has no stopper, writes null.
CONFIG = """\
experiment: {name: repro, seed: 3}
data: {dataset: mnist5k, n_train: 400}
model: {z_dim: 2, width: 0.125}
train: {steps: 23, batch_size: 16, log_every: 4, sample_every: 7, checkpoint_every: 9, eval_every: 10}
scaling: {num_workers: 1, cpus_per_worker: 1}
eval: {n: 200, n_fixed_z: 16}
sweep: {z_dim: [3, 2], seeds: [3], stopper: false}
"""
ROW_STEPS = [4, 7, 8, 9, 10, 12, 14, 16, 18, 20, 21, 23]
# The only fields left out of the comparison: wall-clock ones, measured in seconds. `time` is when
# the row was written (Unix seconds), `elapsed_sec` the seconds since the run started and `train_sec`
# those of its training steps; all three depend on the machine's load. verdict.json holds none; every other field of every row is compared exactly.
WALL_CLOCK = ("time", *CLOCK_FIELDS)


def user_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell gives: none of the thread, storage or Ray settings of the
    test process, plus `extra`."""
    drop = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GANRAY_STORAGE", "RAY_ADDRESS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONUNBUFFERED": "1", **extra}


def start(cwd: Path, *argv: str, env: dict[str, str]) -> tuple[tuple[str, ...], subprocess.Popen]:
    return argv, subprocess.Popen([sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)


def finish(started: tuple[tuple[str, ...], subprocess.Popen]) -> None:
    argv, p = started
    try:
        out, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, f"{argv}: exit {p.returncode}\n{out[-3000:]}\n{err[-3000:]}"


def record(trial: Path) -> tuple[list[dict], dict, dict[str, bytes]]:
    """(metrics rows without the wall-clock fields, verdict.json, {sample grid: PNG bytes})."""
    rows = reader.read_rows(str(trial))
    timed = {k for r in rows for k in r if k.endswith(("_sec", "_s", "_seconds"))} - set(WALL_CLOCK)
    assert not timed, f"fields measured in seconds that the comparison does not leave out: {timed}"
    rows = [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in rows]
    verdict = json.loads((trial / "verdict.json").read_text())
    return rows, verdict, {p.name: p.read_bytes() for p in sorted((trial / "samples").glob("*.png"))}


@pytest.mark.slow  # about 60 s: two fresh processes and two sweeps with their Ray starts
def test_one_trial_alone_twice_in_a_two_trial_sweep_and_in_a_reused_actor_gives_identical_metrics_and_verdict(
        tmp_path):
    (tmp_path / "repro.yaml").write_text(CONFIG)
    cfg = load(str(tmp_path / "repro.yaml"))
    names = {trial_name(p): p for p in grid(cfg)}
    assert list(names) == ["z3-s3", "z2-s3"]  # the sweep's trial z2-s3 is the config's own point
    assert names["z2-s3"] == {"model.z_dim": 2, "experiment.seed": 3}

    # alone, twice, each a fresh `ganray train --local` from its own directory with the default
    # storage (./ganray_results, relative): once in a shell without OMP_NUM_THREADS (torch's own
    # default: one thread per core), once in one that sets 3; and inside a sweep: the two trials run
    # in their Tune actors, side by side where there are 2 CPUs. The four commands run at the same time
    # (the sweeps' Ray starts overlap the two runs alone):
    # each training process pins its own thread count, so running beside others changes no number.
    # A second sweep runs one trial at a time: its z2-s3 trains in the Tune actor that trained z3-s3
    # just before (reuse_actors: the same process, its torch threads, RNG and caches as z3-s3 left them).
    for name in ("alone", "alone-omp3", "sweep", "reused"):
        (tmp_path / name).mkdir()
    running = [start(tmp_path / name, str(ROOT / "jobs" / "sweep_zdim.py"), "--config", "../repro.yaml",
                     "--no-report", *extra, env=user_env(RAY_ADDRESS="local"))  # a Ray of its own each
               for name, extra in (("sweep", ()), ("reused", ("--set", "sweep.max_concurrent_trials=1")))]
    for name, extra in (("alone", {}), ("alone-omp3", {"OMP_NUM_THREADS": "3"})):
        running.append(start(tmp_path / name, "-m", "ganray.cli", "train", "--local", "../repro.yaml", "--quiet",
                             env=user_env(**extra)))
    try:
        for started in running:
            finish(started)
    finally:
        for _, p in running:
            if p.poll() is None:
                p.kill()
    alone = [record(tmp_path / name / "ganray_results" / "repro" / "trials" / "train") for name in ("alone", "alone-omp3")]
    trials = tmp_path / "sweep" / "ganray_results" / "repro" / "trials"
    ran = yaml.safe_load((trials / "z2-s3" / "config.yaml").read_text())
    assert (ran["model"]["z_dim"], ran["experiment"]["seed"]) == (2, 3)
    in_sweep = record(trials / "z2-s3")
    reused_trials = tmp_path / "reused" / "ganray_results" / "repro" / "trials"
    in_reused = record(reused_trials / "z2-s3")
    # the same process trained both trials of that sweep: their TensorBoard files
    # (events.out.tfevents.<start>.<host>.<pid>.<seq>) name its pid
    tb = tmp_path / "reused" / "ganray_results" / "repro" / "tensorboard"
    pids = {t: {p.name.split(".")[-2] for p in (tb / t).glob("events.out.tfevents.*")} for t in ("z3-s3", "z2-s3")}
    assert len(pids["z2-s3"]) == 1 and pids["z2-s3"] == pids["z3-s3"], pids

    rows, verdict, samples = alone[0]
    assert [r["step"] for r in rows] == ROW_STEPS and {r["seed"] for r in rows} == {3}
    assert [r["step"] for r in rows if "fcd" in r] == [10, 20, 23]
    assert verdict["step"] == 23 and verdict["verdict"] and verdict["reasons"], verdict
    assert sorted(samples) == ["step_000007.png", "step_000014.png", "step_000021.png", "step_000023.png"]
    for other, where in ((alone[1], "alone with OMP_NUM_THREADS=3"), (in_sweep, "in the sweep"),
                         (in_reused, "in a reused actor, after another trial")):
        for a, b in zip(rows, other[0]):  # the first row that differs, named
            assert a == b, f"{where}: step {a['step']} differs: " + ", ".join(
                f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        assert other[0] == rows, where
        assert other[1] == verdict, where
        assert other[2] == samples, where
    # the other trial of the sweep is another point: it is not the same numbers by accident
    assert record(trials / "z3-s3")[0] != rows


def test_train_threads_is_the_workers_cpus_rounded_down_at_least_one_and_is_pinned_and_said_once(caplog):
    from ganray.train import threads

    cases = {(0, 1.0): 1, (0, 2.5): 2, (0, 0.5): 1, (3, 1.0): 3, (1, 4.0): 1}
    for (n, cpus), want in cases.items():
        cfg = load(None, [f"train.threads={n}", f"scaling.cpus_per_worker={cpus}"])
        assert threads.train_threads(cfg) == want, (n, cpus)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        threads._said.clear()
        cfg = load(None, ["scaling.cpus_per_worker=2"])
        with caplog.at_level(logging.INFO, logger="ganray.train.threads"):
            assert threads.pin_threads(cfg) == 2 == torch.get_num_threads()
            threads.pin_threads(cfg)  # a reused actor's next trial: set again, not said again
            threads.pin_threads(load(None, ["train.threads=1"]))
        assert torch.get_num_threads() == 1
        assert caplog.messages == ["torch threads: 2 (scaling.cpus_per_worker 2; torch had 3)",
                                   "torch threads: 1 (train.threads; torch had 2)"]
    finally:
        torch.set_num_threads(before)
