"""Arguments shared by the entry points: `ganray train`/`validate` (ganray.cli) and the sweep's
main (ganray.sweep, the jobs). Every config an entry point runs is loaded by `load_config`,
which checks what the config layer cannot see: storage URIs (the storage layer's grammar) and
metric names (the metrics registry). Nothing here imports torch, Ray or pyarrow.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import yaml

from ganray import metrics, storage
from ganray.config import SWEEP_AXES, Config, ConfigError, load, parse_overrides
from ganray.storage import StorageError

# Errors a run can fail with that are not bugs in ganray: the entry point prints
# "error: run failed: <reason>" and exits 1. Anything else is a bug and keeps its traceback.
RUN_FAILURES: tuple[type[BaseException], ...] = (OSError, RuntimeError, StorageError)

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
    """`cfg`, once its storage URIs, metric names and trackers are checked (ConfigError with every error)."""
    errors = storage.config_uri_errors(cfg) + metrics.config_metric_errors(cfg) + tracking_errors(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


# Tracking URI schemes MLflow's client takes (docs/tracking.md); a bare path is refused: say file:
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")
# MLflow's database stores: also as <db>+<driver> (postgresql+psycopg2://, mysql+pymysql://), as MLflow takes them
MLFLOW_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# a password given as a query parameter (?password=, or PWD= inside mssql+pyodbc's odbc_connect=)
_SECRET_PARAM = re.compile(r"(?i)((?:^|[;&?])\s*(?:password|passwd|pwd)\s*=)[^;&]*")


def mlflow_scheme(uri: str) -> str:
    """The scheme of an MLflow tracking URI, a database's driver dropped (mysql+pymysql -> mysql)."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    base = scheme.split("+", 1)[0]
    return base if base in MLFLOW_DB_SCHEMES and scheme.count("+") <= 1 else scheme


def redact_uri(value: Any) -> Any:
    """`value` as it may be shown or logged: a URI's user:password@ as ***@ and a password query
    parameter's value as ***; anything else as is. Every place that prints or logs a URI uses it."""
    if not isinstance(value, str) or "://" not in value:
        return value
    try:
        parts = urlsplit(value)
    except ValueError:  # not parseable (a bad IPv6 host): show nothing of what follows the scheme
        return value.split("://", 1)[0] + "://***"
    out = value  # edited in place: urlunsplit would turn sqlite:////abs/path into sqlite://abs/path
    if "@" in parts.netloc:  # the netloc follows the first "://"
        out = out.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1], 1)
    query = unquote_plus(parts.query)
    if _SECRET_PARAM.search(query):
        out = out.replace("?" + parts.query, "?" + _SECRET_PARAM.sub(r"\1***", query), 1)
    return out


# in free text (an error message): a URI's userinfo, a password parameter
_TEXT_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^\s/@'\"]*@")
_TEXT_SECRET = re.compile(r"(?i)(\b(?:password|passwd|pwd)\s*=)[^;&\s'\"]*")


def redact_text(text: str) -> str:
    """`text` (an exception's message, say, which may quote the URI) with every URI's user:password@
    as ***@ and every password=... as password=***."""
    return _TEXT_SECRET.sub(r"\1***", _TEXT_USERINFO.sub(r"\1***@", text))


def uri_credentials_error(uri: str, key: str = "tracking.mlflow_uri") -> str | None:
    """Why `uri` may not be given in a config, or None: it holds a password (user:password@, or a
    password query parameter), or, outside a database store, any user@ (a server's user or token).
    A config is copied into every trial's config.yaml, each checkpoint and Tune's own state
    (tuner.pkl), so a secret in it would be everywhere the results are."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None  # not a URI: the scheme check says so
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else None
    password = (userinfo is not None and ":" in userinfo) or bool(_SECRET_PARAM.search(unquote_plus(parts.query)))
    database = mlflow_scheme(uri) in MLFLOW_DB_SCHEMES
    if not password and (userinfo is None or database):
        return None
    shown = redact_uri(uri)
    what = "a password" if password else "a user name or token (user@)"
    if database:
        where = ("keep at most the user name in the URI (postgresql://user@host/db) and put the password in "
                 "the database's own password file: ~/.pgpass (or $PGPASSFILE) for PostgreSQL, an option file "
                 "for MySQL (mysql://user@host/db?read_default_file=/path/my.cnf)")
    else:
        where = ("give the credentials in the environment of the sweep's driver instead: MLFLOW_TRACKING_USERNAME / "
                 "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN (DATABRICKS_TOKEN for databricks)")
    return (f"{key}: holds credentials ({what}: {shown}); a config is copied into every trial's config.yaml, "
            f"its checkpoints and Tune's state, so none may hold a secret: {where}")


def tracking_errors(cfg: Config) -> list[str]:
    """The tracking section: each tracker's package is installed (the extras), the MLflow URI has a
    scheme MLflow takes and no credentials in it (uri_credentials_error), and a name is not given
    to a tracker that is off. (Whether the server answers is ganray.tracking.preflight's.)"""
    import importlib.util

    t, errs = cfg.tracking, []
    if t.mlflow_uri:
        scheme = mlflow_scheme(t.mlflow_uri)
        if scheme not in MLFLOW_SCHEMES:
            errs.append(f"tracking.mlflow_uri: {redact_uri(t.mlflow_uri)!r} is not an MLflow tracking URI "
                        f"(scheme {scheme!r}); use http(s)://host:port, sqlite:///path/mlflow.db, file:/path/mlruns "
                        "or databricks")
        if (secret := uri_credentials_error(t.mlflow_uri)) is not None:
            errs.append(secret)
        if importlib.util.find_spec("mlflow") is None:
            errs.append("tracking.mlflow_uri: the mlflow package is not installed: pip install -e '.[mlflow]' in the ganray checkout")
    elif t.mlflow_experiment:
        errs.append(f"tracking.mlflow_experiment: {t.mlflow_experiment!r} given, but tracking.mlflow_uri is '' "
                    "(MLflow off); set tracking.mlflow_uri too")
    if t.wandb_project:
        if importlib.util.find_spec("wandb") is None:
            errs.append("tracking.wandb_project: the wandb package is not installed: pip install -e '.[wandb]' in the ganray checkout")
    elif t.wandb_group:
        errs.append(f"tracking.wandb_group: {t.wandb_group!r} given, but tracking.wandb_project is '' (W&B off); "
                    "set tracking.wandb_project too")
    return errs


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
