"""Ray Tune sweeps over z_dim, lr_g, lr_d, family and seed, one TorchTrainer per trial.

    python jobs/sweep_zdim.py [--config C] [--storage URI] [--set k=v] [--smoke]
    ganray sweep [--config C] ...

Each trial is a Tune function trainable that builds and fits a TorchTrainer (the Ray 2.60
pattern); the trainer's reports reach Tune through TuneReportCallback. A trial's own loop
stops it once its verdict is collapsed/diverged/garbage for `sweep.patience` evaluations
in a row (the collapse stopper), so it ends cleanly with its last checkpoint, artifacts and
verdict. Re-running the same experiment restores the Tune run: finished trials are kept,
unfinished ones resume from their checkpoints.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import time
from typing import Any

from ganray import storage
from ganray.config import Config, ConfigError, from_dict

log = logging.getLogger(__name__)

BAD_VERDICTS = ("collapsed", "diverged", "garbage")
AXES = (  # sweep field -> config key it sets
    ("z_dim", "model.z_dim"),
    ("lr_g", "train.lr_g"),
    ("lr_d", "train.lr_d"),
    ("family", "train.family"),
    ("seeds", "experiment.seed"),
)
SHORT = {"model.z_dim": "z", "train.lr_g": "lrg", "train.lr_d": "lrd", "train.family": "", "experiment.seed": "s"}


class CollapseStopper:
    """should_stop for the loop: True once the verdict is bad for `patience` evaluations in a
    row, counting only evaluations after `grace_steps` (every GAN starts out as garbage)."""

    def __init__(self, patience: int, grace_steps: int = 0):
        self.patience = patience
        self.grace_steps = grace_steps
        self.bad_in_a_row = 0

    def __call__(self, step: int, metrics: dict) -> bool:
        verdict = metrics.get("verdict")
        if verdict is None or step < self.grace_steps:
            return False
        self.bad_in_a_row = self.bad_in_a_row + 1 if verdict in BAD_VERDICTS else 0
        return self.bad_in_a_row >= self.patience


def make_should_stop(cfg: Config):
    """The trial's stopper (module-level so Ray can pickle it)."""
    if cfg.sweep.stopper:
        return CollapseStopper(cfg.sweep.patience, cfg.sweep.grace_steps)
    return lambda step, metrics: False


def grid(cfg: Config) -> list[dict[str, Any]]:
    """Every trial's overrides: the product of the non-empty sweep axes."""
    if not any(getattr(cfg.sweep, f) for f in ("z_dim", "lr_g", "lr_d", "family")) and len(cfg.sweep.seeds) < 2:
        raise ConfigError("sweep: empty grid; give values for at least one of sweep.z_dim, sweep.lr_g, "
                          "sweep.lr_d, sweep.family (or two or more sweep.seeds)")
    axes = []
    for field, key in AXES:
        values = getattr(cfg.sweep, field)
        if values:
            axes.append([(key, v) for v in values])
    points = [dict(p) for p in itertools.product(*axes)] if axes else [{}]
    for p in points:  # fail now, not in a worker: every point must make a valid config
        cfg.replace(**p)
    return points


def trial_name(overrides: dict[str, Any]) -> str:
    parts = []
    for _field, key in AXES:
        if key in overrides:
            v = overrides[key]
            parts.append(f"{SHORT[key]}{v:g}" if isinstance(v, float) else f"{SHORT[key]}{v}")
    return "-".join(parts) or "default"


def sweep_trial(params: dict, base: dict) -> None:
    """The Tune function trainable: one trial = one TorchTrainer fit."""
    from ray.tune.integration.ray_train import TuneReportCallback  # Ray: Train reports -> Tune

    from ganray.distributed import make_trainer

    point = params["point"]
    cfg = from_dict(base).replace(**point["overrides"])
    trainer = make_trainer(cfg, point["trial"], callbacks=[TuneReportCallback()], make_should_stop=make_should_stop)
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def _progress_callback(cfg: Config):
    from ray.tune import Callback

    cols = ("step", "classes_covered", "modes_covered", "fcd", "loss_D", "loss_G")

    class ProgressTable(Callback):
        """A live console table: one line per trial, printed when a trial reports (at most every 5 s)."""

        def __init__(self):
            self.last: dict[str, dict] = {}
            self.printed = 0.0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.last[_trial_label(trial)] = result
            if time.time() - self.printed > 5:
                self.print_table()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.print_table()

        def print_table(self):
            self.printed = time.time()
            header = f"{'trial':<28}" + "".join(f"{c:>16}" for c in cols) + f"  {'verdict'}"
            lines = [header]
            for name, r in sorted(self.last.items()):
                vals = "".join(f"{_fmt(r.get(c)):>16}" for c in cols)
                lines.append(f"{name:<28}{vals}  {r.get('verdict', '-')}")
            print("\n".join(lines), flush=True)

    return ProgressTable()


def _trial_label(trial) -> str:
    return trial.config["point"]["trial"]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def run_sweep(cfg: Config, *, write_report: bool = True) -> str:
    """Run (or resume) the sweep; returns the experiment URI."""
    from ray import tune  # Ray:

    from ganray.distributed import init_ray, run_paths

    points = grid(cfg)
    names = [trial_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ConfigError("sweep: two grid points give the same trial name; remove duplicate values")
    exp_uri = run_paths(cfg, "x").experiment
    storage.put_bytes(storage.join(exp_uri, "config.yaml"), cfg.to_yaml().encode())
    init_ray()

    fs, exp_path = storage.filesystem(exp_uri)
    tune_path = exp_path + "/tune"
    trainable = tune.with_parameters(sweep_trial, base=cfg.to_dict())
    # The trial function only drives the TorchTrainer; its workers request the real resources.
    # Ray needs some resource in the trial's bundle: a token of memory keeps every CPU for workers
    # (0.01 CPU per trial would leave two 1-CPU trials unable to share a 2-CPU machine).
    trainable = tune.with_resources(trainable, {"memory": 1 << 20})
    scheduler = None
    if cfg.sweep.asha:
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="step", metric=cfg.sweep.asha_metric, mode=cfg.sweep.asha_mode,
            max_t=cfg.train.steps, grace_period=max(cfg.train.eval_every, 1))
    max_conc = cfg.sweep.max_concurrent_trials or _concurrency(cfg, len(points))
    restore_uri = storage.join(exp_uri, "tune", "tune")
    if tune.Tuner.can_restore(tune_path + "/tune", storage_filesystem=fs):
        log.info("resuming the sweep stored at %s: finished trials are kept", restore_uri)
        tuner = tune.Tuner.restore(tune_path + "/tune", trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search([{"overrides": p, "trial": n} for p, n in zip(points, names)])},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_conc, scheduler=scheduler,
                                        trial_name_creator=_trial_label, trial_dirname_creator=_trial_label),
            run_config=tune.RunConfig(name="tune", storage_path=tune_path, storage_filesystem=fs,
                                      callbacks=[_progress_callback(cfg)], verbose=0),
        )
    results = tuner.fit()
    errors = [r.error for r in results if r.error is not None]
    print(f"sweep finished: {len(results)} trials, {len(errors)} failed; experiment at {exp_uri}")
    if write_report:
        from ganray.report import write_report

        where = write_report(exp_uri)
        print(f"report: {where}")
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed; first error: {errors[0]}")
    return exp_uri


def _concurrency(cfg: Config, n_trials: int) -> int:
    """Trials that fit the cluster's resources now. A GPU cluster that autoscales from zero
    shows no GPUs (or only its CPU head) at the start: then every trial is let in and the
    autoscaler adds nodes for the pending ones."""
    import ray

    res = ray.cluster_resources()
    sc = cfg.scaling
    if sc.use_gpu and not res.get("GPU"):
        return n_trials
    by_cpu = int(res.get("CPU", 0) // (sc.cpus_per_worker * sc.num_workers))
    if sc.use_gpu:
        by_cpu = min(by_cpu or n_trials, int(res["GPU"] // (sc.gpus_per_worker * sc.num_workers)))
    return max(1, min(by_cpu, n_trials))


def main(argv: list[str] | None = None, *, description: str = "Ray Tune sweep", defaults: dict | None = None) -> int:
    from ganray.cli import EXIT_BAD_INPUT, EXIT_FAILED, add_config_args, bad_input_errors, config_from_args

    p = argparse.ArgumentParser(description=description)
    add_config_args(p)
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args, defaults=defaults)
        grid(cfg)
        from ganray.storage import check_storage

        check_storage(cfg.storage.uri)
    except bad_input_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        run_sweep(cfg, write_report=not args.no_report)
    except bad_input_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001
        log.exception("sweep failed")
        print(f"error: sweep failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
