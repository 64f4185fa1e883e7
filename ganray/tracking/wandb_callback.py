"""Weights & Biases: Ray Tune's WandbLoggerCallback (one logging actor per trial on the driver's
node runs wandb.init), fed from the trial record instead of Tune's results:

- run: id = the Tune trial id (a resumed sweep resumes the run: resume="allow"), name = the
  trial, group = tracking.wandb_group (default experiment.name);
- config: the sweep parameters under short names, and every config section (W&B shows its keys
  as section.key);
- history: every metrics row of the record at its own step (`wandb.log(step=...)`; Ray's actor
  logs each result at Tune's iteration count), `verdict_code` at each evaluation;
- summary: `verdict` (live, then verdict.json's), `verdict_code`, its step, reasons,
  `stopped_early`, the legend, `trial_uri` and `sample_grids` (the grids' URIs).

The actor gets the driver's WANDB_* variables (Ray's forwards WANDB_API_KEY only): WANDB_MODE,
WANDB_DIR (made absolute; default the driver's working directory: the actor runs in Tune's
trial folder), WANDB_BASE_URL, WANDB_ENTITY, ...
"""
from __future__ import annotations

import logging
import os
import queue
from typing import Any

import ray
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor
from ray.air.util.node import _force_on_current_node

from ganray.artifacts.reader import brief
from ganray.tracking.follow import Records, TrialFollower, TuneEnds, nested_params, result_token, trial_point

log = logging.getLogger(__name__)


class GanrayWandbActor(_WandbLoggingActor):
    """Ray's logging actor, taking ganray's items: {"step": s, "metrics": {...}} is one history
    row at step s; {"summary": {...}} updates the run's summary."""

    def run(self):
        os.environ["WANDB_START_METHOD"] = "thread"  # as Ray's: a separate process already
        run = self._wandb.init(*self.args, **self.kwargs)
        while True:
            kind, item = self.queue.get()
            if kind == _QueueItem.END:
                break
            if kind != _QueueItem.RESULT or not isinstance(item, dict):
                continue
            try:
                if "summary" in item:
                    run.summary.update(item["summary"])
                else:
                    run.log(item["metrics"], step=item["step"])
            except Exception as e:  # noqa: BLE001 — a lost point, never a lost run (as Ray's actor)
                log.warning("W&B: could not log to run %s: %s", self._trial_name, brief(e, 300))
        run.finish()
        # finish() can return before wandb's service has written the run (offline: its .wandb file),
        # and Ray kills the actor as soon as run() returns: wait for the service to finish
        self._wandb.teardown()


class GanrayWandbCallback(TuneEnds, WandbLoggerCallback):
    """`records`: the trial readers shared with the MLflow callback (ganray.tracking.callbacks)."""

    _logger_actor_cls = GanrayWandbActor

    def __init__(self, project: str, group: str, records: Records | None = None):
        super().__init__(project=project, group=group)
        self._records = records if records is not None else Records()
        self._followers: dict[Any, TrialFollower] = {}

    def setup(self, *args, **kwargs):
        super().setup(*args, **kwargs)
        for f in self._followers.values():
            f.close()
        self._followers = {}
        env = actor_env()
        os.makedirs(env["WANDB_DIR"], exist_ok=True)
        # Ray's own, with the driver's W&B settings (its forwards the API key only)
        self._remote_logger_class = ray.remote(num_cpus=0, **_force_on_current_node(),
                                               runtime_env={"env_vars": env},
                                               max_restarts=-1, max_task_retries=-1)(self._logger_actor_cls)

    def log_trial_start(self, trial):
        if trial in self._trial_logging_futures:
            return  # a trial restarted by Tune keeps its actor
        try:
            self._start_logging_actor(trial, [], **self._init_kwargs(trial))
        except Exception as e:  # noqa: BLE001 — never into Tune (it would fail the sweep)
            log.warning("W&B: could not start the run of trial %s: %s", trial, brief(e, 300))

    def _init_kwargs(self, trial) -> dict:
        """wandb.init's arguments for `trial` (its follower made here)."""
        cfg, name = trial_point(trial)
        f = self._followers.get(trial)
        if f is None:
            f = self._followers[trial] = TrialFollower(cfg, name, self._records)
        init = dict(id=trial.trial_id, name=name, group=self.group, project=self.project, resume="allow",
                    config=nested_params(cfg, name), notes=f"ganray trial {name}; record: {f.uri}")
        return {**init, **self.kwargs}

    def log_in_process(self, trial, *, failed: bool = False, token: Any = None) -> None:
        """A finished run without Tune or Ray (`ganray train`): the actor's loop run here, on a
        plain queue holding the whole record, with the driver's W&B settings as they are."""
        try:
            init = self._init_kwargs(trial)
            q: queue.Queue = queue.Queue()
            self._trial_queues[trial] = q
            self._send(trial, self._followers[trial], final=True, summary={"failed": failed}, token=token)
            q.put((_QueueItem.END, None))
            self._logger_actor_cls(os.getcwd(), q, [], [], **init).run()
        except Exception as e:  # noqa: BLE001 — the run is done; its tracking is not worth failing it
            log.warning("W&B: could not log run %s: %s", trial, brief(e, 300))
        finally:
            self._trial_queues.pop(trial, None)
            if (f := self._followers.pop(trial, None)) is not None:
                f.close()

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_logging_actors:
            self.log_trial_start(trial)
        f = self._followers.get(trial)
        if f is None or trial not in self._trial_queues:
            return  # its actor could not start (logged)
        f.note_verdict(result.get("step"), result.get("verdict"))
        summary = {"verdict": result["verdict"]} if isinstance(result.get("verdict"), str) else None
        self._send(trial, f, upto=result.get("step"), summary=summary, evaluated=summary is not None,
                   token=result_token(iteration, result))

    def log_trial_end(self, trial, failed: bool = False):
        f = self._followers.pop(trial, None)
        try:
            if trial not in self._trial_queues:
                return  # its actor never started (Ray's would raise a KeyError into Tune)
            if f is not None:
                self._send(trial, f, final=True, summary={"failed": failed}, token=self._end_token)
        finally:
            if f is not None:
                f.close()
        super().log_trial_end(trial, failed)

    def _send(self, trial, f: TrialFollower, *, upto: Any = None, final: bool = False, evaluated: bool = False,
              summary: dict | None = None, token: Any = None) -> None:
        try:
            rows = f.take(upto, final=final, evaluated=evaluated, token=token)
            q = self._trial_queues[trial]
            for r in rows:
                q.put((_QueueItem.RESULT, {"step": r.step, "metrics": r.metrics}))
            samples = f.new_samples()
            out = dict(summary or {})
            if final:
                end = f.final()
                out.update({k: v for k, v in end.summary().items() if v is not None})
                out.update(trial_uri=f.uri, samples_uri=f.samples_uri, sample_grids=[u for _, u in end.samples])
            if out:
                q.put((_QueueItem.RESULT, {"summary": out}))
            f.sent(rows, samples)
        except Exception as e:  # noqa: BLE001 — never into Tune; the rows are taken again next time
            log.warning("W&B: could not log trial %s: %s", trial, brief(e, 300))


def actor_env() -> dict[str, str]:
    """The driver's WANDB_* variables for the logging actors, WANDB_DIR absolute (default: here)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    env["WANDB_DIR"] = os.path.abspath(os.path.expanduser(env.get("WANDB_DIR") or os.getcwd()))
    return env
