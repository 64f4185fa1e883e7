"""What a sweep shows on the console: the live trial table (a Tune callback) and the summary
lines of the finished trials, read from their records."""
from __future__ import annotations

import math
from collections import Counter

import yaml

from ganray import console, storage
from ganray.artifacts import layout, reader
from ganray.config import Config, ConfigError, is_2d


def _progress_callback(cfg: Config, names: list[str]):
    """The live trial table (ganray.console): a Tune callback, created here so that Ray is
    imported only when a sweep runs."""
    from ray.tune import Callback  # Ray:

    two_d = table_kind(cfg)
    steps = cfg.train.steps

    class ProgressTable(Callback):
        """One row per trial: its state, last reported step, evidence and verdict. It holds no
        file handle (Tune pickles callbacks with the run); the console is looked up per call."""

        def __init__(self):
            self.last: dict[str, dict] = {}
            self.verdicts: dict[str, str] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            name = _trial_label(trial)
            self.last[name] = {**self.last.get(name, {}), **result}
            verdict = result.get("verdict")
            changed = verdict is not None and verdict != self.verdicts.get(name)
            if verdict is not None:
                self.verdicts[name] = verdict
            self.show(trials, changed)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.show(trials, True)

        def on_trial_error(self, iteration, trials, trial, **info):
            con = console.current()
            if con is not None:
                first = str(getattr(trial, "error_msg", None) or "see the log").strip().splitlines()
                con.line(f"trial {_trial_label(trial)} failed: {first[-1] if first else 'see the log'}")
            self.show(trials, True)

        def on_experiment_end(self, trials, **info):
            self.show(trials, True, final=True)

        def show(self, trials, changed: bool, final: bool = False) -> None:
            con = console.current()
            if con is not None:
                con.table(self.lines(trials, con.elapsed()), changed=changed, final=final)

        def lines(self, trials, elapsed: str) -> list[str]:
            status = {_trial_label(t): t.status for t in trials}
            return progress_lines([(n, status.get(n, "PENDING"), self.last.get(n, {})) for n in names],
                                  steps, two_d, elapsed)

    return ProgressTable()


# (header, result key, width, format); columns are two spaces apart
TABLE_COLS = (("step", "step", 5, "d"), ("classes", "classes_covered", 7, "d"), ("KL", "kl_uniform", 6, ".3f"),
              ("FCD", "fcd", 7, ".1f"), ("loss_D", "loss_D", 6, ".3f"), ("loss_G", "loss_G", 6, ".3f"))
TABLE_COLS_2D = (("step", "step", 5, "d"), ("modes", "modes_covered", 5, "d"), ("rev.KL", "reverse_kl", 6, ".3f"),
                 ("HQ", "hq_share", 5, ".2f"), ("loss_D", "loss_D", 6, ".3f"), ("loss_G", "loss_G", 6, ".3f"))
# translation runs (cyclegan): each direction's content kept, and the cycle's reconstruction error
TABLE_COLS_TRANSLATION = (("step", "step", 5, "d"), ("A→B kept", "content_kept_ab", 8, ".2f"),
                          ("B→A kept", "content_kept_ba", 8, ".2f"), ("cycle A", "cycle_l1_a", 7, ".3f"),
                          ("loss_D", "loss_D", 6, ".3f"), ("loss_G", "loss_G", 6, ".3f"))
# conditional runs (cgan, stackgan): classes and FCD, and whether each sample is of the class asked for
TABLE_COLS_CONDITIONAL = (("step", "step", 5, "d"), ("classes", "classes_covered", 7, "d"), ("FCD", "fcd", 7, ".1f"),
                          ("fidelity", "condition_fidelity", 8, ".2f"), ("loss_D", "loss_D", 6, ".3f"),
                          ("loss_G", "loss_G", 6, ".3f"))
TABLE_KINDS = {False: TABLE_COLS, True: TABLE_COLS_2D, "2d": TABLE_COLS_2D, "image": TABLE_COLS,
               "translation": TABLE_COLS_TRANSLATION, "conditional": TABLE_COLS_CONDITIONAL}


def table_kind(cfg) -> str:
    """Which columns the live table shows for `cfg`'s trials (TABLE_KINDS)."""
    if cfg.train.family == "cyclegan":
        return "translation"
    if cfg.train.family in ("cgan", "stackgan"):
        return "conditional"
    return "2d" if is_2d(cfg.data.dataset) else "image"


_STATE = {"PENDING": "pending", "RUNNING": "running", "TERMINATED": "done", "ERROR": "FAILED", "PAUSED": "paused"}


def _cell(v, fmt: str) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-" if v is None else str(v)
    if not math.isfinite(v):
        return str(v)  # nan, inf: a callback must never raise (it would fail the sweep)
    return f"{int(v):d}" if fmt == "d" else format(v, fmt)


def progress_lines(rows: list[tuple[str, str, dict]], steps: int, kind: bool | str, elapsed: str) -> list[str]:
    """The trial table: a status line, a header, one line per (trial, Tune status, last result);
    `kind` picks the columns (TABLE_KINDS: True / "2d" for the 2-D mixtures, "translation", ...)."""
    cols = TABLE_KINDS[kind]
    states = [_STATE.get(status, status.lower()) for _, status, _ in rows]
    for i, (_, _, r) in enumerate(rows):
        step = r.get("step", steps)
        if states[i] == "done" and isinstance(step, (int, float)) and math.isfinite(step) and step < steps:
            states[i] = "stopped"  # before train.steps: by the collapse stopper (or ASHA)
    counts = ", ".join(f"{states.count(k)} {k}" for k in ("running", "pending", "done", "stopped", "FAILED")
                       if states.count(k))
    width = max([len("trial")] + [len(n) for n, _, _ in rows])
    out = [f"[{elapsed}] {len(rows)} trials: {counts}",
           f"  {'trial':<{width}}  {'state':<7}" + "".join(f"  {h:>{w}}" for h, _, w, _ in cols) + "  verdict"]
    for (name, _, r), state in zip(rows, states):
        vals = "".join(f"  {_cell(r.get(k), f):>{w}}" for _, k, w, f in cols)
        out.append(f"  {name:<{width}}  {state:<7}{vals}  {r.get('verdict', '-')}")
    return out


def _trial_label(trial) -> str:
    return trial.config["point"]["trial"]


def trial_summaries(exp_uri: str, names: list[str]) -> list[str]:
    """One line per trial from its verdict.json (the run's last word): verdict, step, first
    reason; then the grid points (the trials that differ only in their seed): whether their
    seeds agree, and how many gave each verdict."""
    width = max(len(n) for n in names)
    out, trials = [], []
    for name in names:
        uri = layout.trial_paths(exp_uri, name).trial
        v = reader.read_verdict(uri)
        trials.append(_summary_trial(name, uri, v))
        if v is None:
            out.append(f"  {name:<{width}}  no verdict (the trial wrote none; see the log)")
            continue
        step, first = v.get("step"), v.get("first_seen_step")
        when = f"step {step}" + (f" (since {first})" if first not in (None, step) else "")
        early = ", stopped early" if v.get("stopped_early") else ""  # the collapse stopper's own mark
        early += ", borderline" if trials[-1].borderline else ""  # its margin straddles the threshold
        reasons = v.get("reasons") or []
        line = f"  {name:<{width}}  {v['verdict']:<16} {when}{early}"
        out.append(f"{line}: {reasons[0]}" if reasons else line)
    return out + point_summaries(trials)


def _summary_trial(name: str, uri: str, verdict: dict | None):
    """What the grid-point lines need of a trial: its settings (config.yaml) and its verdict."""
    from ganray.report.model import Trial, params_of  # the report's grouping (imported here: it loads matplotlib)

    try:
        cfg = reader.read_config(storage.join(uri, layout.CONFIG))
    except (*reader.READ_ERRORS, ConfigError, yaml.YAMLError):
        cfg = None
    return Trial(name, uri, params_of(cfg) if cfg is not None else {}, verdict=verdict, configured=cfg is not None)


def point_summaries(trials: list) -> list[str]:
    """One line per grid point: its agreement (settled, seeds disagree, ...) and its verdicts
    over the seeds; with one seed per point, the one line that says agreement cannot be judged."""
    from ganray.report.model import Experiment
    from ganray.report.points import AGREEMENTS, agreement_text, grid_points, point_axes, point_label, seeds_per_point

    trials = [t for t in trials if t.configured or t.verdict is not None]  # never started (no record): no evidence
    if not trials:
        return []
    points = grid_points(trials)
    if all(p.n == 1 for p in points):
        return [f"  {agreement_text(Experiment('', None, trials))}"]
    axes = point_axes(trials)
    labels = [point_label(p, axes) for p in points]
    tally = Counter(p.agreement for p in points)
    width = max(len(x) for x in labels)
    out = [f"  grid points: {len(points)}, {seeds_per_point(points)}: "
           + ", ".join(f"{tally[a]} {a}" for a in AGREEMENTS if tally[a])]
    out += [f"  {label:<{width}}  {p.agreement:<15}  {p.verdict_text()}" for label, p in zip(labels, points)]
    return out
