"""Ray Train adapter: a TorchTrainer whose per-worker function rebuilds the config and
wraps the Ray-free loop. The Ray-specific steps are few and marked `# Ray:`.

DDP choices (docs/distributed.md):
- G and D are each wrapped in DistributedDataParallel with broadcast_buffers=False. D is
  called on real and on fake before one backward; with buffer broadcasting on, the second
  forward would overwrite buffers the first one's graph still needs (and G's BatchNorm
  stats would be re-broadcast at every forward). Each rank keeps its own BN running stats;
  scaling.sync_batchnorm=true converts BatchNorm to SyncBatchNorm instead.
- G's step runs the unwrapped D (families pass m.D_module with requires_grad off), so G's
  backward never all-reduces D's gradients.
- The batch size in the config is per worker: the global batch is batch_size * num_workers.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Callable

import torch

from ganray import storage
from ganray.artifacts import layout, reader
from ganray.artifacts.recorder import TrialRecorder, scalar_metrics
from ganray.config import Config
from ganray.train import TrainResult, checkpoint, train
from ganray.train.threads import pin_threads

log = logging.getLogger(__name__)

def ray_report_step(cfg: Config, step: int, verdict: dict | None) -> bool:
    """Whether `step` goes to `ray.train.report`: evaluations, checkpoints, the last step and a
    divergence. Log-only steps reach TensorBoard and the metrics rows through rank 0's recorder
    alone, because each Ray Train V2 report waits for the controller to take the previous
    one (a queue of one, drained every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by Ray's default, 0.2 s
    as ganray sets it: REPORT_POLL_SEC):
    reporting every `log_every` steps held a fast loop to `log_every` steps per 2 s (7% of its
    speed in docs/performance.md). The rule depends on the step and on the divergence flag,
    which the loop all-reduces across ranks, so every rank agrees."""
    tc = cfg.train
    return (step % tc.eval_every == 0 or step % tc.checkpoint_every == 0 or step == tc.steps
            or (verdict or {}).get("verdict") == "diverged")


def train_worker(loop_config: dict) -> None:
    """The per-worker function: the loop, rank 0's recorder, and the Ray bridge (marked `Ray:`)."""
    import ray.train  # Ray: per-worker context, checkpoints and reports
    import ray.train.torch

    cfg: Config = loop_config["config"]  # the frozen config itself, resolved where the run started
    paths: layout.TrialPaths = loop_config["paths"]
    make_should_stop: Callable | None = loop_config.get("make_should_stop")
    ctx = ray.train.get_context()  # Ray:
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()  # Ray: this worker's GPU, or cpu
    pin_threads(cfg, say=rank == 0)  # the count of a sweep trial or `ganray train --local`, not Ray's OMP_NUM_THREADS

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        if world_size > 1 and cfg.scaling.sync_batchnorm:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        # Ray: moves to device and wraps in DDP when world_size > 1
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": False})

    resume = None
    ray_ckpt = ray.train.get_checkpoint()  # Ray: set after a worker failure or on a re-run
    if ray_ckpt is not None:
        with ray_ckpt.as_directory() as d:
            resume = checkpoint.load(os.path.join(d, layout.CHECKPOINT_FILE))
        log.info("rank %d: resuming from step %d", rank, resume["step"])
    elif loop_config.get("resume_uri"):  # Ray's snapshot was cut off and set aside (make_trainer)
        resume = checkpoint.load(loop_config["resume_uri"])
        log.info("rank %d: resuming from step %d (%s)", rank, resume["step"], loop_config["resume_uri"])
    stopper = make_should_stop(cfg) if (make_should_stop is not None and rank == 0) else None
    if stopper is not None and resume is not None:
        stopper.load_state_dict(resume.get("stopper") or {})
    # resume_step is the first step the resumed run writes; the checkpoint's own step was logged before it
    rec = (TrialRecorder(paths, config_yaml=cfg.to_yaml(), resume_step=resume["step"] + 1 if resume else None,
                         stopper=stopper) if rank == 0 else None)

    def report(step: int, metrics: dict, *, samples=None, verdict=None) -> None:
        state = rec.report(step, metrics, samples=samples, verdict=verdict) if rec is not None else None
        scalars: dict[str, Any] = scalar_metrics(metrics)
        if verdict is not None:
            scalars.update(verdict=verdict["verdict"], reasons="; ".join(verdict.get("reasons", [])))
        if state is None:
            if ray_report_step(cfg, step, verdict):
                ray.train.report(scalars)  # Ray: a barrier; every rank calls it at the same steps
            return
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, layout.CHECKPOINT_FILE), "wb") as f:
                f.write(checkpoint.to_bytes(state))
            # Ray: registers <storage>/<experiment>/trials/<trial>/checkpoint_<step> once upload() returns
            ray.train.report(scalars, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=layout.checkpoint_dir(step), checkpoint_upload_fn=upload)

    def upload(local: "ray.train.Checkpoint", dir_name: str) -> "ray.train.Checkpoint":
        """Ray's upload hook: one object put with ganray's retries (a storage outage of up to
        GANRAY_STORAGE_RETRY_SEC is ridden out; a checkpoint is whole or absent, never half)."""
        step = int(dir_name.rsplit("_", 1)[-1])
        fs, fs_path = storage.filesystem(rec.upload_checkpoint(os.path.join(local.path, layout.CHECKPOINT_FILE), step))
        return ray.train.Checkpoint(path=fs_path, filesystem=fs)

    def should_stop(step: int, metrics: dict) -> bool:
        decision = [bool(stopper(step, metrics)) if stopper is not None else False]
        if world_size > 1:
            torch.distributed.broadcast_object_list(decision, src=0)  # every rank stops together
        return decision[0]

    def save_checkpoint(step: int, state: dict, metrics: dict) -> None:
        if rec is not None:
            rec.stage_checkpoint(step, state, metrics)

    try:
        train(cfg, report=report, save_checkpoint=save_checkpoint, should_stop=should_stop,
              resume_from=resume, rank=rank, world_size=world_size, wrap=wrap, device=device)
    except BaseException:
        if rec is not None:  # the training error is the one to raise; a failed final upload is logged
            try:
                rec.close()
            except storage.StorageError as e:
                log.error("rank 0: the record's final upload failed too: %s", e)
        raise
    if rec is not None:
        rec.close()


def make_trainer(cfg: Config, trial: str, *, callbacks: list | None = None,
                 make_should_stop: Callable[[Config], Callable] | None = None):
    """A TorchTrainer for one run of `cfg`, storing under <storage>/<experiment>/trials/<trial>."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig  # Ray:
    from ray.train.torch import TorchTrainer

    cfg = storage.resolve_config(cfg)
    paths = layout.trial_paths(storage.experiment_uri(cfg), trial)
    fs, exp_path = storage.filesystem(paths.experiment)
    resume_uri = _set_aside_a_cut_snapshot(paths)
    sc = cfg.scaling
    resources = {"CPU": sc.cpus_per_worker}
    if sc.use_gpu:
        resources["GPU"] = sc.gpus_per_worker
    return TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg, "paths": paths, "make_should_stop": make_should_stop,
                           "resume_uri": resume_uri},
        scaling_config=ScalingConfig(num_workers=sc.num_workers, use_gpu=sc.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=trial,
            storage_path=exp_path + "/trials",
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=3),
            callbacks=callbacks,
            logging_config=LoggingConfig(log_level="WARNING"),  # ganray logs its own progress
        ),
    )


def _set_aside_a_cut_snapshot(paths: layout.TrialPaths) -> str | None:
    """Ray Train rewrites its list of a run's checkpoints (layout.RAY_SNAPSHOT) in place, so a
    driver killed during that write leaves the file cut off, and Ray then fails every re-run of
    the trial while parsing it. Such a file is renamed to *.cut, with a warning, and the run
    resumes from the newest checkpoint in the trial folder instead (ganray writes each
    checkpoint whole or not at all). Returns that checkpoint's URI; None when the snapshot is
    absent or whole (Ray resumes from it as usual) or no checkpoint is left."""
    uri = storage.join(paths.trial, layout.RAY_SNAPSHOT)
    try:
        json.loads(storage.read_bytes(uri))
        return None
    except storage.StorageNotFoundError:
        return None
    except ValueError:  # not JSON (a UnicodeDecodeError is a ValueError too): the write was cut off
        pass
    fs, path = storage.filesystem(uri)
    fs.move(path, path + ".cut")
    newest = reader.latest_checkpoint(paths.trial)
    log.warning("%s was cut off (its run was killed while Ray rewrote it); set aside as %s.cut; resuming from %s",
                uri, layout.RAY_SNAPSHOT, newest or "the start (no checkpoint left)")
    return newest


# Endpoint settings (never credentials) that workers need to reach the same storage as the
# driver; forwarded when joining a cluster whose processes were started without them.
FORWARD_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT", "AWS_REGION", "AWS_DEFAULT_REGION",
               "STORAGE_EMULATOR_HOST", "GANRAY_CACHE")

# Ray: each ray.train.report waits until Ray Train's controller has taken the previous one, and
# the controller (an actor that trainer.fit starts: in the driver for `ganray train`, in each
# trial's actor in a sweep) takes reports when it polls its workers, every
# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (read once in the controller's process; 2 s by default).
# 0.2 s: reports further apart than that (evaluation and checkpoint steps) never wait, and the
# controller's 5 polls a second (one small actor call per worker) cost little: an idle 1-worker
# run's controller used 1.1-1.3% of a core at 0.2 s, 0.5-0.9% at 2 s (docs/distributed.md).
REPORT_POLL_ENV, REPORT_POLL_SEC = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"


def ray_env() -> dict[str, str]:
    """The env_vars of the job's runtime_env: FORWARD_ENV as set here, and the controller's
    polling interval (REPORT_POLL_SEC unless the user set it). Sets the interval in this
    process's environment too (a local Ray's processes inherit it, and Ray Train passes it
    from the process calling trainer.fit to its controller). Under `ray job submit` a key
    that the job's own runtime_env sets is left to it."""
    os.environ.setdefault(REPORT_POLL_ENV, REPORT_POLL_SEC)
    env = {k: os.environ[k] for k in (*FORWARD_ENV, REPORT_POLL_ENV) if os.environ.get(k)}
    job = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")  # under `ray job submit`: the job's own env wins
    if job:
        job_env = (json.loads(job).get("runtime_env") or {}).get("env_vars") or {}
        env = {k: v for k, v in env.items() if k not in job_env}
    return env


def init_ray() -> str:
    """Join the cluster in RAY_ADDRESS or the one `ray start --head` started on this machine
    (also what `ray job submit` provides); with neither, start a local Ray. Returns a line for
    the console: where Ray runs, its resources and its dashboard."""
    import ray

    env = ray_env()
    if ray.is_initialized():
        return _describe_ray(None)
    token_file = _private_token_for_a_new_local_ray()
    ctx = ray.init(runtime_env={"env_vars": env} if env else None, log_to_driver=True)
    log.info("Ray: %s", ray.cluster_resources())
    line = _describe_ray(ctx)
    return line + (f" (token authentication; this run's token is in {token_file})" if token_file else "")


AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _private_token_for_a_new_local_ray() -> str | None:
    """A token of this run's own for the local Ray that `ray.init()` is about to start.

    Left to itself, a new local `ray.init()` turns token authentication on and writes the token
    to ~/.ray/auth_token; a later `ray start --head` finds that file and turns authentication on
    for the cluster, while `ray job submit` in the user's shell (RAY_AUTH_MODE unset) sends no
    token and is refused. Instead the local instance gets a token in a private file (0600) that
    is removed when this process exits: authenticated while it runs, nothing left behind. Not
    done when the user set any RAY_AUTH_* variable, already has ~/.ray/auth_token, or Ray is
    joining a running cluster (RAY_ADDRESS, `ray start`, `ray job submit`). Returns the file."""
    if any(os.environ.get(k) for k in AUTH_ENV) or os.path.exists(os.path.expanduser("~/.ray/auth_token")):
        return None
    try:
        from ray._private import services  # Ray: the same test ray.init() makes: start, or join?

        if services.canonicalize_bootstrap_address(None) is not None:
            return None
    except Exception:  # noqa: BLE001 — Ray's internals moved: leave Ray's own default
        return None
    import atexit
    import secrets

    fd, path = tempfile.mkstemp(prefix="ganray-ray-token-")  # mode 0600
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    atexit.register(_forget_private_token)  # also on a plain exit without shutdown_ray()
    _private_token["path"] = path
    os.environ["RAY_AUTH_TOKEN_PATH"] = path  # inherited by every process of the local instance
    try:
        from ray._private.authentication import authentication_token_setup as auth  # Ray:
        from ray._raylet import AuthenticationTokenLoader

        auth._enable_token_auth()  # RAY_AUTH_MODE=token, and this process's cached Ray config refreshed
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 — cannot switch this process: leave Ray's own default
        _forget_private_token()
        return None
    return path


_private_token: dict[str, str] = {}


def _forget_private_token() -> None:
    """Remove the private token file and the variables that named it (after Ray has stopped)."""
    path = _private_token.pop("path", None)
    if path is None:
        return
    if os.environ.get("RAY_AUTH_TOKEN_PATH") == path:
        del os.environ["RAY_AUTH_TOKEN_PATH"]
        os.environ.pop("RAY_AUTH_MODE", None)
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def shutdown_ray() -> None:
    """ray.shutdown(), then forget this run's private token (a later ray.init() in this process,
    or a child process, must not inherit token mode and a deleted token file)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _forget_private_token()


def _describe_ray(ctx) -> str:
    import ray

    res = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    line = f"{nodes} node{'s' if nodes != 1 else ''}, {res.get('CPU', 0):g} CPUs"
    if res.get("GPU"):
        line += f", {res['GPU']:g} GPUs"
    url = str(getattr(ctx, "dashboard_url", "") or "")
    if url:
        line += f"; dashboard {url if '://' in url else 'http://' + url}"
    return line


def prepare_classifier(cfg: Config, say: Callable[[str], None] = print) -> None:
    """The reference classifier of `cfg` made ready in <storage>/classifiers before any worker starts
    (ganray.metrics.classifier.ready), trained, when none is stored, by one Ray task with one worker's
    resources: on a worker's device (a GPU when the workers have one) and not on the driver, which
    may be a small head node. Called once per run or sweep, after init_ray."""
    from ganray.metrics.classifier.ready import prepare  # noqa: PLC0415

    def in_a_worker_sized_task(fn: Callable[[Config], dict], c: Config) -> dict:
        import ray  # Ray: one task, placed as a worker of the run would be

        sc = c.scaling
        task = ray.remote(num_cpus=sc.cpus_per_worker, num_gpus=sc.gpus_per_worker if sc.use_gpu else 0)(_pinned)
        return ray.get(task.remote(fn, c))

    prepare(cfg, say=say, run=in_a_worker_sized_task)


def _pinned(fn: Callable[[Config], Any], cfg: Config) -> Any:
    """fn(cfg) with the torch threads of a training process (a classifier trained in a Ray task
    gets the weights `ganray train --local` would train); module-level, so that it pickles."""
    pin_threads(cfg, say=False)
    return fn(cfg)


def run_train(cfg: Config, trial: str = "train") -> tuple[TrainResult, str]:
    """Fit one TorchTrainer; returns a TrainResult summary (from the trial's record) and the trial URI."""
    cfg = storage.resolve_config(cfg)  # workers must not resolve a relative path in their own cwd
    init_ray()
    paths = layout.trial_paths(storage.experiment_uri(cfg), trial)
    layout.write_experiment_config(paths.experiment, cfg.to_yaml())
    prepare_classifier(cfg)  # before the workers: they only load it
    result = make_trainer(cfg, trial).fit()
    if result.error is not None:  # Ray's TrainingFailedError: a failure of the run (exit 1), its cause kept
        raise RuntimeError(f"training failed: {result.error}") from result.error
    # Ray's Result carries the metrics of the latest checkpoint; the run's last word is the record's.
    record = reader.read_trial(paths, paths.name)
    last = record.rows[-1] if record.rows else {}
    verdict = record.verdict
    out = TrainResult(step=int(last.get("step", 0)), diverged=(verdict or {}).get("verdict") == "diverged",
                      stopped_early=bool((verdict or {}).get("stopped_early")), verdict=verdict,
                      last_metrics=scalar_metrics(last))
    return out, paths.trial
