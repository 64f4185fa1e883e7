"""MLflow: Ray Tune's MLflowLoggerCallback (the driver logs; trials need no MLflow), fed from the
trial record instead of Tune's results:

- run: named after the trial, tagged with the trial's record URI and its Tune trial id (a resumed
  sweep finds its runs again by that id and goes on where they stopped, tag `sent_step`);
- params: the sweep parameters under short names and every config key as section.key (Ray's own
  would log the trial's Config object as one unreadable blob);
- metrics: every metrics row of the record at its own step, with its wall time (Ray logs each
  reported result at Tune's iteration count, and Ray Train reports only evaluations and
  checkpoints); `verdict_code` at each evaluation;
- tags: `verdict` (live, then verdict.json's), its step, reasons, `stopped_early`, the legend
  of the codes, and one `sample_grid/step_<s>` tag per sample grid with the grid's URI.

A tracker that fails during the sweep never fails it: a warning is logged, and what was not
delivered is sent with the next result (the record is the source, so nothing is lost).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from ganray.args import redact_text, redact_uri
from ganray.artifacts import layout
from ganray.artifacts.reader import brief
from ganray.tracking.follow import (
    VERDICT_METRIC,
    Final,
    Records,
    TrialFollower,
    TuneEnds,
    flat_params,
    result_token,
    trial_point,
)

log = logging.getLogger(__name__)

# Set in the driver unless the user set them: a server that stops answering mid-sweep costs a
# result about a minute, not MLflow's default of 7 retries with back-off and 120 s timeouts.
RUN_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
MAX_METRICS, MAX_TAGS, MAX_PARAMS = 1000, 100, 100  # per log_batch request, metrics and tags together (MLflow's limits)
MAX_TAG = 5000  # characters of a tag value MLflow stores everywhere


class GanrayMLflowCallback(TuneEnds, MLflowLoggerCallback):
    """`records`: the trial readers shared with the W&B callback (ganray.tracking.callbacks)."""

    def __init__(self, tracking_uri: str, experiment_name: str, records: Records | None = None):
        super().__init__(tracking_uri, experiment_name=experiment_name)
        self._records = records if records is not None else Records()
        self._followers: dict[Any, TrialFollower] = {}

    # -- Tune's events ------------------------------------------------------------------------

    def setup(self, *args, **kwargs):
        for k, v in RUN_ENV.items():
            os.environ.setdefault(k, v)
        for f in getattr(self, "_followers", {}).values():
            f.close()
        self.tags, self._trial_runs, self._followers = {}, {}, {}
        with self._guard("open the experiment"):
            super().setup(*args, **kwargs)

    def log_trial_start(self, trial):
        if trial in self._trial_runs:
            return  # a trial restarted by Tune keeps its run
        with self._guard(f"start the run of trial {trial}"):
            if self.mlflow_util.experiment_id is None:  # setup failed: try again
                super().setup()
            cfg, name = trial_point(trial)
            f = self._followers.get(trial)
            if f is None:
                f = self._followers[trial] = TrialFollower(cfg, name, self._records)
            client = self.mlflow_util._get_client()
            run_id = self._resumed_run(client, trial, f)
            if run_id is None:
                tags = {"trial_name": name, "ray_trial_id": trial.trial_id, "trial_uri": f.uri,
                        "samples_uri": f.samples_uri, "verdict_legend": layout.VERDICT_LEGEND}
                run_id = self.mlflow_util.start_run(run_name=name, tags=tags).info.run_id
                _log_params(client, run_id, flat_params(cfg, name))
            self._trial_runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial, result: dict):
        if trial not in self._trial_runs:
            self.log_trial_start(trial)
        f = self._followers.get(trial)
        if trial not in self._trial_runs or f is None:
            return
        f.note_verdict(result.get("step"), result.get("verdict"))
        live = {"verdict": result["verdict"]} if isinstance(result.get("verdict"), str) else {}
        with self._guard(f"log the results of trial {trial}"):
            self._send(trial, f, upto=result.get("step"), tags=live, evaluated=bool(live),
                       token=result_token(iteration, result))

    def log_trial_end(self, trial, failed: bool = False):
        self.end_trial(trial, failed, token=self._end_token)

    def end_trial(self, trial, failed: bool = False, token: Any = None) -> None:
        """log_trial_end, with the token of the end (TuneEnds) shared with the other tracker."""
        f = self._followers.pop(trial, None)
        run_id = self._trial_runs.get(trial)
        try:
            if run_id is None or f is None:
                return
            with self._guard(f"log the end of trial {trial}"):
                self._send(trial, f, final=True, token=token)
            with self._guard(f"close the run of trial {trial}"):
                self.mlflow_util._get_client().set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        finally:
            self._trial_runs.pop(trial, None)
            if f is not None:
                f.close()

    # -- sending -----------------------------------------------------------------------------

    def _send(self, trial, f: TrialFollower, *, upto: Any = None, final: bool = False, evaluated: bool = False,
              tags: dict[str, str] | None = None, token: Any = None) -> None:
        """The record's new rows and sample grids (all of them when `final`, with the verdict)."""
        from mlflow.entities import Metric, RunTag

        client = self.mlflow_util._get_client()
        run_id = self._trial_runs[trial]
        rows = f.take(upto, final=final, evaluated=evaluated, token=token)
        samples = f.new_samples()
        # sent_step first: it goes in one request with the last metrics (both land, or neither)
        all_tags = {"sent_step": str(rows[-1].step)} if rows else {}
        all_tags.update(tags or {})
        all_tags.update({f"sample_grid/step_{s:06d}": uri for s, uri in samples})
        if final:
            end = f.final()
            all_tags.update({k: _text(v) for k, v in end.summary().items() if v is not None and k != VERDICT_METRIC})
            all_tags["mlflow.note.content"] = _note(f, end)
        elif samples:
            all_tags["last_sample_grid"] = samples[-1][1]
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, int(r.time * 1000) if r.time is not None else now, r.step)
                   for r in rows for k, v in r.metrics.items()]
        tag_list = [RunTag(k, v[:MAX_TAG]) for k, v in all_tags.items()]
        chunks = [metrics[i:i + MAX_METRICS - MAX_TAGS] for i in range(0, len(metrics), MAX_METRICS - MAX_TAGS)]
        tag_chunks = [tag_list[i:i + MAX_TAGS] for i in range(0, len(tag_list), MAX_TAGS)]
        for chunk in chunks[:-1]:
            client.log_batch(run_id, metrics=chunk)
        if chunks or tag_chunks:
            client.log_batch(run_id, metrics=chunks[-1] if chunks else [], tags=tag_chunks[0] if tag_chunks else [])
        for chunk in tag_chunks[1:]:
            client.log_batch(run_id, tags=chunk)
        f.sent(rows, samples)

    def _resumed_run(self, client, trial, f: TrialFollower) -> str | None:
        """The run this trial had before the sweep was stopped and resumed (same Tune trial id), with
        the follower moved past what it had been sent; None for a new trial."""
        runs = client.search_runs([self.mlflow_util.experiment_id], max_results=1,
                                  filter_string=f"tags.ray_trial_id = '{trial.trial_id}'")
        if not runs:
            return None
        run = runs[0]
        f.sent_step = int(run.data.tags.get("sent_step", -1))
        client.update_run(run.info.run_id, status="RUNNING")
        log.info("MLflow: trial %s resumes its run %s after step %d", trial, run.info.run_id, f.sent_step)
        return run.info.run_id

    @contextlib.contextmanager
    def _guard(self, what: str):
        """A tracker's failure is logged, never raised into Tune (it would fail the sweep)."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 — any client or server error; the record keeps everything
            log.warning("MLflow (%s): could not %s: %s", redact_uri(self.tracking_uri), what, redact_text(brief(e, 300)))


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS):
        client.log_batch(run_id, params=items[i:i + MAX_PARAMS])


def _text(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _note(f: TrialFollower, end: Final) -> str:
    """The run's description (markdown, shown on its page): the verdict, its reasons, the links."""
    v = end.verdict
    lines = [f"ganray trial `{f.trial}`; record: {f.uri}", ""]
    if v is None:
        lines.append("No verdict: the trial wrote no verdict.json (see the sweep's log).")
    else:
        first = v.get("first_seen_step")
        since = f" (since step {first})" if first not in (None, v.get("step")) else ""
        early = ", stopped early by the collapse stopper" if v.get("stopped_early") else ""
        lines.append(f"**{v['verdict']}** at step {v.get('step')}{since}{early}")
        lines += [f"- {r}" for r in v.get("reasons") or []]
    if end.samples:
        lines += ["", "Sample grids:"] + [f"- [step {s}]({uri})" for s, uri in end.samples]
    return "\n".join(lines)

