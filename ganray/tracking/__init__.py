"""Experiment trackers a sweep logs every trial to (docs/tracking.md): MLflow (`tracking.mlflow_uri`)
and Weights & Biases (`tracking.wandb_project`), through Ray Tune's own MLflowLoggerCallback and
WandbLoggerCallback, subclassed so that what they send comes from the trial record.

Each trial becomes a run named after the trial, with the sweep parameters (z_dim, lr_g, lr_d,
family, seed) and every config key as parameters, every metrics row of the record at the step it
was logged (not only the steps Ray Train reports), `verdict_code` (layout.VERDICT_CODES) at each
evaluation, and at its end verdict.json's verdict, reasons and the URIs of its sample grids.

`ganray train` runs are tracked too, once they have finished (track_finished_run).

The config's keys are checked where configs are loaded (ganray.args.tracking_errors: the packages,
the MLflow URI's scheme, no credentials in it); `preflight` checks, before Ray starts, that the
tracker can be reached and that W&B's settings are ones Ray's callback takes (exit 2 when not).
A tracking URI is shown and logged only through ganray.args.redact_uri / redact_text. Nothing here imports Ray, MLflow or W&B until a sweep asks for them.
"""
from __future__ import annotations

import contextlib
import logging
import netrc
import os

from ganray import storage
from ganray.args import redact_text, redact_uri
from ganray.artifacts import layout
from ganray.artifacts.reader import brief
from ganray.config import Config
from ganray.exits import BadInput

log = logging.getLogger(__name__)

# A check of the tracking server before the sweep: one try, at most this long, not MLflow's
# default of 7 retries with back-off (minutes before "unreachable").
PREFLIGHT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
# The WANDB_MODE values Ray's WandbLoggerCallback takes without an API key, exactly as it compares
# them (ray.air.integrations.wandb._set_api_key: case and spelling matter; wandb's "dryrun" needs a key there)
OFFLINE_WANDB_MODES = ("offline", "disabled")
# The modes wandb takes (its Settings.mode), when wandb cannot say (wandb_modes)
WANDB_MODES = ("online", "offline", "shared", "disabled", "dryrun", "run")


class TrackerUnavailable(BadInput):
    """A configured tracker cannot be reached, or has no credentials, before the sweep starts (exit 2)."""


def mlflow_experiment(cfg: Config) -> str:
    return cfg.tracking.mlflow_experiment or cfg.experiment.name


def wandb_group(cfg: Config) -> str:
    return cfg.tracking.wandb_group or cfg.experiment.name


def enabled(cfg: Config) -> list[str]:
    """The trackers `cfg` turns on, by name."""
    return [name for name, on in (("mlflow", cfg.tracking.mlflow_uri), ("wandb", cfg.tracking.wandb_project)) if on]


def describe(cfg: Config) -> str | None:
    """A line for the run's header: where the trials are tracked; None when nowhere."""
    parts = []
    if cfg.tracking.mlflow_uri:
        parts.append(f"MLflow {redact_uri(cfg.tracking.mlflow_uri)} (experiment {mlflow_experiment(cfg)})")
    if cfg.tracking.wandb_project:
        mode = os.environ.get("WANDB_MODE", "")
        parts.append(f"W&B project {cfg.tracking.wandb_project} (group {wandb_group(cfg)}"
                     f"{', ' + mode if mode else ''})")
    return "; ".join(parts) or None


def callbacks(cfg: Config) -> list:
    """The Tune callbacks of the trackers `cfg` turns on (imported here: Ray, MLflow and W&B load
    only when a sweep tracks). Both read each trial's record through one reader (follow.Records):
    one read per Tune event, whichever trackers are on."""
    from ganray.tracking.follow import Records

    records, out = Records(), []
    if cfg.tracking.mlflow_uri:
        from ganray.tracking.mlflow_callback import GanrayMLflowCallback

        out.append(GanrayMLflowCallback(cfg.tracking.mlflow_uri, mlflow_experiment(cfg), records))
    if cfg.tracking.wandb_project:
        from ganray.tracking.wandb_callback import GanrayWandbCallback

        out.append(GanrayWandbCallback(cfg.tracking.wandb_project, wandb_group(cfg), records))
    return out


def track_finished_run(cfg: Config, trial: str, *, failed: bool = False) -> None:
    """`ganray train` (no Tune): the finished run's record sent to the trackers `cfg` turns on, by
    the sweep's callbacks driven by hand (start, then end: every row at its step, the verdict). A
    tracker that fails is logged; the run's result stands."""
    from ganray.tracking.follow import FinishedRun, Records

    run, records = FinishedRun(cfg, trial), Records()
    end = ("end", run.trial_id)  # one read of the record for both trackers
    with records.holding(layout.trial_paths(storage.experiment_uri(cfg), trial)):
        if cfg.tracking.mlflow_uri:
            from ganray.tracking.mlflow_callback import GanrayMLflowCallback

            cb = GanrayMLflowCallback(cfg.tracking.mlflow_uri, mlflow_experiment(cfg), records)
            cb.setup()
            cb.log_trial_start(run)
            cb.end_trial(run, failed=failed, token=end)
        if cfg.tracking.wandb_project:
            from ganray.tracking.wandb_callback import GanrayWandbCallback

            GanrayWandbCallback(cfg.tracking.wandb_project, wandb_group(cfg), records).log_in_process(
                run, failed=failed, token=end)


def preflight(cfg: Config) -> None:
    """Before the sweep: the MLflow server answers (one request, 10 s at most) and W&B has
    credentials or runs offline. TrackerUnavailable (exit 2) otherwise."""
    if cfg.tracking.mlflow_uri:
        _check_mlflow(cfg.tracking.mlflow_uri)
    if cfg.tracking.wandb_project:
        _check_wandb()


@contextlib.contextmanager
def _env(values: dict[str, str]):
    """`values` in os.environ for the block, where the user has not set them."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _check_mlflow(uri: str) -> None:
    from mlflow import MlflowClient  # the extra: ganray.args.tracking_errors found it installed

    with _env(PREFLIGHT_ENV):
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 — refused, timed out, denied, not an MLflow server: all say why
            raise TrackerUnavailable(f"tracking.mlflow_uri: the MLflow tracking server at {redact_uri(uri)} cannot be "
                                     f"used ({redact_text(brief(e, 300))}); start it, fix the URI, or set MLFLOW_TRACKING_TOKEN "
                                     "(or MLFLOW_TRACKING_USERNAME/PASSWORD) for a server that needs them") from None


def _check_wandb() -> None:
    """What Ray's WandbLoggerCallback.setup and wandb.init will ask of the environment, asked first:
    a WANDB_MODE wandb takes; then WANDB_MODE exactly offline or disabled, or a key (WANDB_API_KEY,
    `wandb login`'s ~/.netrc, Ray's WANDB_SETUP_API_KEY_HOOK)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is not None and mode not in (modes := wandb_modes()):
        raise TrackerUnavailable(f"tracking.wandb_project: WANDB_MODE={mode!r} is not a W&B mode (wandb takes "
                                 f"{', '.join(modes)}, in lower case); set WANDB_MODE=offline to write the runs "
                                 "to files only, or unset it")
    if mode in OFFLINE_WANDB_MODES:
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_SETUP_API_KEY_HOOK") or _wandb_netrc_key():
        return
    if mode == "dryrun":
        raise TrackerUnavailable("tracking.wandb_project: WANDB_MODE=dryrun without W&B credentials: Ray's W&B "
                                 "callback needs a key in every mode but WANDB_MODE=offline or disabled; set "
                                 "WANDB_MODE=offline (what dryrun means to wandb), or WANDB_API_KEY")
    raise TrackerUnavailable("tracking.wandb_project: no W&B credentials: set WANDB_API_KEY (or run `wandb login`), "
                             "or set WANDB_MODE=offline to write the runs to files only (WANDB_DIR)")


def wandb_modes() -> tuple[str, ...]:
    """The values wandb takes for WANDB_MODE (its Settings.mode), from wandb itself where it says."""
    try:
        import typing

        import wandb

        return tuple(typing.get_args(wandb.Settings.model_fields["mode"].annotation)) or WANDB_MODES
    except Exception:  # noqa: BLE001 — wandb's settings moved: the modes of wandb 0.31
        return WANDB_MODES


def _wandb_netrc_key() -> bool:
    """True when `wandb login` left a key for the W&B host in ~/.netrc (or $NETRC)."""
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or _wandb_default_host()).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC") or None).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _wandb_default_host() -> str:
    try:
        import wandb

        return str(wandb.Settings().base_url)
    except Exception:  # noqa: BLE001 — wandb's settings moved: the public default
        return "https://api.wandb.ai"
