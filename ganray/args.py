"""Arguments shared by the entry points: `ganray train`/`validate` (ganray.cli) and the sweep's
main (ganray.sweep, the jobs). Every config an entry point runs is loaded by `load_config`,
which checks what the config layer cannot see: storage URIs (the storage layer's grammar) and
metric names (the metrics registry). Nothing here imports torch, Ray or pyarrow.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from ganray import metrics, storage
from ganray.config import Config, ConfigError, load, parse_overrides
from ganray.storage import StorageError

# Errors a run can fail with that are not bugs in ganray: the entry point prints
# "error: run failed: <reason>" and exits 1. Anything else is a bug and keeps its traceback.
RUN_FAILURES: tuple[type[BaseException], ...] = (OSError, RuntimeError, StorageError)

SWEEP_AXES = (  # sweep field -> the config key each value of its grid sets
    ("z_dim", "model.z_dim"),
    ("lr_g", "train.lr_g"),
    ("lr_d", "train.lr_d"),
    ("family", "train.family"),
    ("seeds", "experiment.seed"),
)

SMOKE = {
    "train.steps": 6,
    "train.log_every": 3,
    "train.eval_every": 3,
    "train.sample_every": 3,
    "train.checkpoint_every": 3,
    "train.batch_size": 16,
    "model.width": 0.125,
    "eval.n": 200,
    "eval.n_fixed_z": 16,
    "data.n_train": 2000,
}


def add_config_args(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    if config_required:
        p.add_argument("config", help="experiment YAML (configs/*.yaml)")
    else:
        p.add_argument("--config", default=None, help="experiment YAML; default: the command's preset")
    p.add_argument("--storage", default=None, help="local path, s3://bucket/prefix or gs://bucket/prefix")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set train.lr_g=2e-4 (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny steps, widths and evaluation sizes (a run takes seconds), as experiment <name>-smoke")
    # SUPPRESS: `ganray -v train ...` (the top-level flag) is not reset by the subcommand's default
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                   help="sweeps: the full stream (ganray's, Ray's and the workers' logs) on the console instead of "
                        "a log file; ganray train: debug logging")


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """`config.load`, then the storage URIs and the metric names: a ConfigError with every error."""
    return check_config(load(path, overrides))


def check_config(cfg: Config) -> Config:
    """`cfg`, once its storage URIs and metric names are checked (ConfigError with every error)."""
    errors = storage.config_uri_errors(cfg) + metrics.config_metric_errors(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def config_from_args(args: argparse.Namespace, preset: str | Path | None = None,
                     grid: dict[str, Any] | None = None) -> Config:
    """Config from --config (else the command's `preset`, else the embedded defaults), then a
    job's `grid` (job_grid), --smoke, --storage and --set; later ones win."""
    path = getattr(args, "config", None) or preset
    overrides: dict = dict(grid or {})
    if getattr(args, "smoke", False):
        overrides.update(SMOKE)
    if getattr(args, "storage", None):
        overrides["storage.uri"] = args.storage
    overrides.update(parse_overrides(getattr(args, "overrides", [])))
    cfg = load_config(path, overrides)
    if getattr(args, "smoke", False):  # a smoke run never resumes, or is taken for, the real experiment
        cfg = cfg.replace(**{"experiment.name": f"{cfg.experiment.name}-smoke"})
    # once, here: trials and workers get the absolute URI (Tune gives each trial its own cwd)
    return storage.resolve_config(cfg)


def job_config(args: argparse.Namespace, preset: str | Path | None = None,
               keep_grid: bool = False) -> tuple[Config, str | None]:
    """The config a job runs (config_from_args with its `preset`) and, with `keep_grid`, the
    job's grid over a --config that sweeps none of the preset's axes (job_grid); the line to
    show says which grid runs."""
    extra, note = job_grid(args, preset) if keep_grid and preset is not None else ({}, None)
    return config_from_args(args, preset=preset, grid=extra), note


def job_grid(args: argparse.Namespace, preset: str | Path) -> tuple[dict[str, Any], str | None]:
    """A job's own grid for `--config X`: the preset's sweep axes, when X (with --set) sets none of
    the axes the preset sweeps; else nothing. Returns (overrides, a line saying which grid runs)."""
    if getattr(args, "config", None) is None:
        return {}, None  # the preset itself runs, grid and all
    load(args.config)  # X itself is valid (a missing or broken file: ConfigError, exit 2)
    job = load_config(preset)
    swept = [f"sweep.{f}" for f, _ in SWEEP_AXES if f != "seeds" and getattr(job.sweep, f)]
    given = _keys_set(args.config) | set(parse_overrides(getattr(args, "overrides", [])))
    own = [k for k in swept if k in given]
    if own:
        return {}, f"{args.config} sets {', '.join(own)}: its own grid is swept, not this job's"
    grid = {f"sweep.{f}": list(getattr(job.sweep, f)) for f, _ in SWEEP_AXES if f != "seeds"}
    shown = "; ".join(f"{k} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vals)}"
                      for k, vals in grid.items() if vals)
    return grid, f"{args.config} sets no {' or '.join(swept)}: sweeping this job's grid ({shown})"


def _keys_set(path: str | Path) -> set[str]:
    """The dotted keys a config file sets (config.load has read it: it parses)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return {f"{sec}.{key}" for sec, keys in raw.items() if isinstance(keys, dict) for key in keys}
