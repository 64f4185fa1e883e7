"""Ray Tune sweeps over z_dim, lr_g, lr_d, family and seed.

    python jobs/sweep_zdim.py [--config C] [--storage URI] [--set k=v] [--smoke]
    ganray sweep [--config C] ...

Each trial is a Tune function trainable. A single-worker trial runs ganray's loop in its own
Tune actor (ganray.local.run_trial), which requests the worker's resources, and reports to Tune
with ray.tune.report; a multi-worker trial builds and fits a TorchTrainer (the Ray 2.60 pattern),
whose reports reach Tune through TuneReportCallback (docs/distributed.md, "Sweeps"). A trial's own loop
stops it once its verdict is collapsed/diverged/garbage for `sweep.patience` evaluations
in a row (the collapse stopper), so it ends cleanly with its last checkpoint, artifacts and
verdict. Re-running the same experiment restores the Tune run: finished trials are kept,
unfinished ones resume from their checkpoints (single-worker trials: the newest in the trial folder).
"""
from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from typing import Any

import yaml

from ganray import console, storage, tracking
from ganray.args import RUN_FAILURES, SWEEP_AXES, add_config_args, job_config
from ganray.artifacts import layout, reader
from ganray.artifacts.layout import BAD_VERDICTS
from ganray.config import Config, ConfigError, config_of, parse_variant
from ganray.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput
from ganray.storage import StorageError
from ganray.sweep.table import _progress_callback, _trial_label, progress_lines, trial_summaries  # noqa: F401

log = logging.getLogger(__name__)

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

    def state_dict(self) -> dict:
        """Saved in every checkpoint: a resumed trial keeps its count of bad evaluations."""
        return {"bad_in_a_row": self.bad_in_a_row}

    def load_state_dict(self, d: dict) -> None:
        self.bad_in_a_row = int(d.get("bad_in_a_row", 0))


def make_should_stop(cfg: Config) -> "CollapseStopper | None":
    """The trial's stopper, or None when sweep.stopper is off (module-level so Ray can pickle it)."""
    return CollapseStopper(cfg.sweep.patience, cfg.sweep.grace_steps) if cfg.sweep.stopper else None


def grid(cfg: Config) -> list[dict[str, Any]]:
    """Every trial's overrides: the product of the non-empty sweep axes."""
    if not any(getattr(cfg.sweep, f) for f in ("z_dim", "lr_g", "lr_d", "family", "variants")) \
            and len(cfg.sweep.seeds) < 2:
        raise ConfigError("sweep: empty grid; give values for at least one of sweep.z_dim, sweep.lr_g, "
                          "sweep.lr_d, sweep.family, sweep.variants (or two or more sweep.seeds)")
    axes = []
    if cfg.sweep.variants:  # first, so that trial names start with the variant
        axes.append([((VARIANT,), parse_variant(text)) for text in cfg.sweep.variants])
    for field, key in SWEEP_AXES:
        values = getattr(cfg.sweep, field)
        if values:
            axes.append([(key, v) for v in values])
    points = [_point(p) for p in itertools.product(*axes)] if axes else [{}]
    for p in points:  # fail now, not in a worker: every point must make a valid config
        cfg.replace(**overrides_of(p))
    return points


VARIANT = "variant"  # a point's key for its sweep.variants name (its overrides are the point's other keys)
VARIANT_KEYS = "variant_keys"  # ... and the keys the variant set (not part of the trial's name)


def _point(items: tuple) -> dict[str, Any]:
    """One grid point's overrides from the product of the axes; a variant adds its name and its keys."""
    point: dict[str, Any] = {}
    for key, value in items:
        if key == (VARIANT,):
            name, over = value
            point[VARIANT], point[VARIANT_KEYS] = name, tuple(over)
            point.update(over)
        else:
            point[key] = value
    return point


def overrides_of(point: dict[str, Any]) -> dict[str, Any]:
    """The config keys a grid point sets (its variant's name is not one)."""
    return {k: v for k, v in point.items() if k not in (VARIANT, VARIANT_KEYS)}


def trial_configs(cfg: Config, points: list[dict[str, Any]]) -> list[Config]:
    """Each point's config, built (and so validated) here in the driver; Tune hands the objects
    themselves (they pickle) to the trials. Keys left to the family stay unset in `replace`, so a
    sweep.family point gets that family's settings."""
    return [cfg.replace(**overrides_of(p), **({"experiment.variant": p[VARIANT]} if VARIANT in p else {}))
            for p in points]


def trial_names(points: list[dict[str, Any]]) -> list[str]:
    names = [trial_name(p) for p in points]
    if len(set(names)) != len(names):
        raise ConfigError("sweep: two grid points give the same trial name; remove duplicate values")
    return names


def trial_name(overrides: dict[str, Any]) -> str:
    parts = [overrides[VARIANT]] if VARIANT in overrides else []
    for _field, key in SWEEP_AXES:
        if key in overrides and key not in overrides.get(VARIANT_KEYS, ()):
            v = overrides[key]
            parts.append(f"{SHORT[key]}{v:g}" if isinstance(v, float) else f"{SHORT[key]}{v}")
    return "-".join(parts) or "default"


KEEP_CHECKPOINTS = 3  # ganray.distributed.make_trainer: CheckpointConfig(num_to_keep=3)


def in_process(cfg: Config) -> bool:
    """Whether the sweep's trials run the loop in their own Tune actor (one worker each) rather
    than fit a TorchTrainer, whose controller, worker group and placement group a single worker
    does not need (docs/distributed.md, "Sweeps")."""
    return cfg.scaling.num_workers == 1


def trial_resources(cfg: Config) -> dict[str, float]:
    """What each trial's Tune actor requests: one worker's resources when it trains in-process."""
    sc = cfg.scaling
    if not in_process(cfg):
        # The trial function only drives the TorchTrainer; its workers request the real resources.
        # Ray needs some resource in the trial's bundle: a token of memory keeps every CPU for workers
        # (0.01 CPU per trial would leave two 1-CPU trials unable to share a 2-CPU machine).
        return {"memory": 1 << 20}
    # the trial pins torch's threads to train.threads (0 = these CPUs), as a TorchTrainer's worker and
    # `ganray train --local` do (ganray.train.threads): the same arithmetic in all three
    return {"CPU": sc.cpus_per_worker, "GPU": sc.gpus_per_worker if sc.use_gpu else 0}


def sweep_trial(params: dict) -> None:
    """The Tune function trainable: one trial of the point's config. A single-worker trial runs
    ganray's loop here (ganray.local.run_trial: the record, checkpoints in the trial folder, a
    resume from the newest one); a multi-worker trial fits a TorchTrainer."""
    point = params["point"]
    cfg = config_of(point["config"])  # built and validated in the driver (trial_configs), handed over as YAML
    if in_process(cfg):
        _run_in_process(cfg, point["trial"])
        return
    from ray.tune.integration.ray_train import TuneReportCallback  # Ray: Train reports -> Tune

    from ganray.distributed import make_trainer

    trainer = make_trainer(cfg, point["trial"], callbacks=[TuneReportCallback()], make_should_stop=make_should_stop)
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def _run_in_process(cfg: Config, trial: str) -> None:
    """The loop in this Tune actor; Tune gets what a TorchTrainer's TuneReportCallback gave it:
    the scalars and verdict at evaluations, checkpoints, the last step and a divergence (with
    `checkpoint_path` at checkpoints). No checkpoint is reported to Tune: a retried or re-run
    trial resumes from the newest checkpoint in its folder."""
    from ray import tune  # Ray: the trial's reports

    from ganray.artifacts.recorder import scalar_metrics
    from ganray.distributed import ray_report_step  # the same steps as a Ray Train worker reports
    from ganray.local import run_trial, trial_log_lines

    trial_log_lines()

    def to_tune(step: int, metrics: dict, verdict: dict | None, checkpoint_uri: str | None) -> None:
        if checkpoint_uri is None and not ray_report_step(cfg, step, verdict):
            return
        scalars: dict[str, Any] = scalar_metrics(metrics)
        if verdict is not None:
            scalars.update(verdict=verdict["verdict"], reasons="; ".join(verdict.get("reasons", [])))
        if checkpoint_uri is not None:
            scalars["checkpoint_path"] = checkpoint_uri.rsplit("/", 1)[0]
        tune.report(scalars)  # Ray: waits until the driver took it (the progress table, ASHA, trackers)

    # the newest 3 checkpoints kept, as a TorchTrainer's CheckpointConfig(num_to_keep=3) keeps them
    run_trial(cfg, trial, stopper=make_should_stop(cfg), on_report=to_tune, keep_checkpoints=KEEP_CHECKPOINTS)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.4g}" if abs(v) < 100 else (f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}")
    return str(v)


def run_sweep(cfg: Config, *, write_report: bool = True) -> str:
    """Run (or resume) the sweep; returns the experiment URI. Progress and the closing summary
    go to the run's console (ganray.console) when there is one, else to stdout."""
    from ray import tune  # Ray:

    from ganray.distributed import init_ray, prepare_classifier

    t0 = time.time()
    cfg = storage.resolve_config(cfg)  # before Tune: each trial runs in a working directory of its own
    points = grid(cfg)
    names = trial_names(points)
    exp_uri = storage.experiment_uri(cfg)
    fs, exp_path = storage.filesystem(exp_uri)
    tune_path = exp_path + "/tune"
    restoring = tune.Tuner.can_restore(tune_path + "/tune", storage_filesystem=fs)
    if restoring:
        _check_same_sweep(cfg, exp_uri)
    layout.write_experiment_config(exp_uri, cfg.to_yaml())
    console.say(f"  Ray       {init_ray()}")
    prepare_classifier(cfg, say=console.say)  # once per experiment, before any trial: trials only load it
    trainable = tune.with_resources(sweep_trial, trial_resources(cfg))
    scheduler = None
    if cfg.sweep.asha:
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="step", metric=cfg.sweep.asha_metric, mode=cfg.sweep.asha_mode,
            max_t=cfg.train.steps, grace_period=cfg.sweep.asha_grace_steps or max(cfg.train.eval_every, 1),
            reduction_factor=cfg.sweep.asha_reduction_factor)
    max_conc = cfg.sweep.max_concurrent_trials or _concurrency(cfg, len(points))
    restore_uri = storage.join(exp_uri, "tune", "tune")
    if restoring:
        log.info("resuming the sweep stored at %s: finished trials are kept", restore_uri)
        console.say(f"  resuming  the sweep stored at {restore_uri}: finished trials are kept")
        tuner = tune.Tuner.restore(tune_path + "/tune", trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=fs)
    else:
        console.say(f"  running   {len(points)} trials, up to {max_conc} at a time")
        tuner = tune.Tuner(
            trainable,
            # each trial's config as its YAML text: a Tune run restored after an interruption hands its
            # never-started trials their params from the saved search state, where a Config object
            # came back as a tuple of its sections (a re-run then failed every such trial)
            param_space={"point": tune.grid_search([{"config": c.to_yaml(), "trial": n}
                                                    for c, n in zip(trial_configs(cfg, points), names)])},
            # in-process trials: an actor that ended a trial takes the next one (no new process, torch
            # imported once), and Tune retries a failed trial (a TorchTrainer retries its own workers)
            tune_config=tune.TuneConfig(max_concurrent_trials=max_conc, scheduler=scheduler,
                                        reuse_actors=in_process(cfg),
                                        trial_name_creator=_trial_label, trial_dirname_creator=_trial_label),
            run_config=tune.RunConfig(name="tune", storage_path=tune_path, storage_filesystem=fs,
                                      callbacks=[_progress_callback(cfg, names), *tracking.callbacks(cfg)],
                                      failure_config=tune.FailureConfig(
                                          max_failures=cfg.scaling.max_failures if in_process(cfg) else 0),
                                      verbose=0),
        )
    results = tuner.fit()
    _finish(exp_uri, names, results, t0, write_report)
    return exp_uri


def _finish(exp_uri: str, names: list[str], results, t0: float, write_report: bool) -> None:
    """The summary of a fitted sweep (each trial's verdict, the grid points), its report, and a
    RuntimeError (exit 1) when trials failed or never started (an interrupted sweep)."""
    errors = [r.error for r in results if r.error is not None]
    log.info("sweep finished: %d trials, %d failed; experiment at %s", len(results), len(errors), exp_uri)
    lines = trial_summaries(exp_uri, names)
    stopped = sum(" stopped early" in line for line in lines)
    summary = [f"sweep finished in {console.elapsed_since(t0)}: {len(results)} trials, "
               f"{len(errors)} failed, {stopped} stopped early by the collapse stopper", *lines]
    not_run = len(names) - len(results)  # Tune ended before starting them: Ctrl-C (SIGINT), or a stop
    if not_run:
        summary[0] = (f"sweep interrupted after {console.elapsed_since(t0)}: {not_run} of {len(names)} trials "
                      f"did not start; {len(results)} started, {len(errors)} failed, {stopped} stopped early by "
                      "the collapse stopper")
    for e in errors:  # said before the report, which must not hide them
        log.error("trial failed: %s", e)
    if write_report:
        from ganray import regenerate
        from ganray.report import write_report

        try:
            where = write_report(exp_uri, regenerate=regenerate)  # regenerate: the VAE-vs-GAN reconstructions
            summary.append(f"report: {where}")
        except reader.ExperimentNotFound as e:  # no trial wrote a record: a failure of the run, not bad input
            if not errors:
                raise RuntimeError(f"no trial wrote a record, so there is no report ({e})") from e
            summary.append(f"report: none, no trial wrote a record ({e})")
    summary.append(f"  results   {exp_uri}")
    console.say_summary(summary)
    if errors:
        raise RuntimeError(f"{len(errors)} trial(s) failed; first error: {errors[0]}")
    if not_run:
        raise RuntimeError(f"the sweep was interrupted before {not_run} of its {len(names)} trials started; run "
                           "the same command again to resume it (finished trials are kept, the others start or "
                           "continue from their newest checkpoints)")


# Keys a resumed sweep may change: where it runs and how many trials run at once.
RESUME_MAY_CHANGE = ("storage.uri", "sweep.max_concurrent_trials")


def _check_same_sweep(cfg: Config, exp_uri: str) -> None:
    """A sweep resumes only with the config it started with: Tune keeps the finished trials,
    and they would be reported as results of the new settings."""
    path = storage.join(exp_uri, layout.CONFIG)
    try:
        old = yaml.safe_load(storage.read_bytes(path)) or {}
    except (OSError, ValueError, yaml.YAMLError):  # absent (StorageNotFoundError) or unreadable
        return  # no record of the old config: Tune's own state decides (an outage, a StorageError, raises)
    new = cfg.to_dict()
    diffs = [f"{sec}.{key}: {old.get(sec, {}).get(key)!r} there, {value!r} now"
             for sec, values in new.items() for key, value in values.items()
             if f"{sec}.{key}" not in RESUME_MAY_CHANGE and old.get(sec, {}).get(key) != value]
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise ConfigError(f"experiment.name: {exp_uri} already holds the sweep {cfg.experiment.name!r} with another "
                          f"config ({shown}); re-running it would resume that sweep and keep its finished trials. "
                          "Give another name (--set experiment.name=NAME), another --storage, or delete the folder")


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


def parser(description: str = "Ray Tune sweep") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_config_args(p)
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    return p


def main(argv: list[str] | None = None, *, description: str = "Ray Tune sweep", preset: str | None = None,
         keep_grid: bool = False) -> int:
    """A sweep from the command line: `preset` is the config used without --config (None: the
    embedded defaults); with `keep_grid`, a --config that sweeps none of the preset's axes gets
    the preset's grid (ganray.args.job_config)."""
    args = parser(description).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # before the run: every error here is the user's input, the storage preflight included
        cfg, note = job_config(args, preset, keep_grid)
        points = grid(cfg)
        trial_names(points)
        storage.check_storage(cfg.storage.uri)
        tracking.preflight(cfg)  # the tracking server answers, W&B has credentials
        if cfg.eval.inception:  # torch-fidelity imports, the Inception weights are there and right
            from ganray.metrics.inception import InceptionUnavailable, preflight  # noqa: PLC0415 (torch: when asked)

            try:
                preflight(cfg)
            except InceptionUnavailable as e:  # their download server or bucket kept failing: exit 1, Ray not started
                print(f"error: run failed: {e}", file=sys.stderr)
                return EXIT_FAILED
        exp_uri = storage.experiment_uri(cfg)
        if storage.exists(storage.join(exp_uri, "tune", "tune", "tuner.pkl")):  # a sweep to resume: the same one?
            _check_same_sweep(cfg, exp_uri)
    except (BadInput, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from ray.tune.error import TuneError  # noqa: PLC0415 (Ray: imported once the sweep runs)

    with console.RunConsole("sweep", exp_uri, verbose=getattr(args, "verbose", False)) as con:
        con.header([f"ganray sweep {cfg.experiment.name}: {len(points)} trials ({describe_grid(cfg)}), "
                    f"{cfg.train.steps} steps each, {cfg.data.dataset}, family {cfg.train.family}"
                    + (" (unless a variant sets them)" if cfg.sweep.variants else ""),
                    *([f"  grid      {note}"] if note else []),
                    *([f"  tracking  {tracking.describe(cfg)}"] if tracking.describe(cfg) else []),
                    f"  results   {exp_uri}"])
        try:
            run_sweep(cfg, write_report=not args.no_report)
        except BadInput as e:
            log.error("%s", e)
            con.error(f"error: {e}")
            return EXIT_BAD_INPUT
        except (*RUN_FAILURES, TuneError) as e:  # during the run: a failure (exit 1); a bug keeps its traceback
            log.exception("sweep failed")
            con.error(f"error: run failed: {e}")
            if con.log_path and not con.verbose:
                con.error(f"  the full log: {con.log_path}")
            return EXIT_FAILED
        finally:
            _shutdown_ray()  # inside the console: Ray's shutdown lines go to the log too
    return EXIT_OK


def describe_grid(cfg: Config) -> str:
    parts = [f"variants {', '.join(parse_variant(v)[0] for v in cfg.sweep.variants)}"] if cfg.sweep.variants else []
    parts += [f"{field} {', '.join(_fmt(v) for v in getattr(cfg.sweep, field))}"
              for field, _ in SWEEP_AXES if field != "seeds" and getattr(cfg.sweep, field)]
    if len(cfg.sweep.seeds) > 1:
        parts.append(f"seeds {', '.join(map(str, cfg.sweep.seeds))}")
    return "; ".join(parts) or "one point"


def _shutdown_ray() -> None:
    from ganray.distributed import shutdown_ray  # noqa: PLC0415

    shutdown_ray()


if __name__ == "__main__":
    sys.exit(main())
