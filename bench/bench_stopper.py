"""Collapse stopper: trial-steps and wall time of a sweep with the stopper ÷ without it.

    python bench/bench_stopper.py [--config configs/zdim_mnist_local.yaml] [--set k=v ...]
                                  [--with-set k=v ...] [--without-json earlier.json]
                                  [--storage DIR] [--json out.json]

`--with-set` changes only the run with the stopper (for instance `sweep.asha=true` to measure
the collapse stopper together with ASHA); `--without-json` takes the run without the stopper
from an earlier `--json` file of the same config instead of running it again.

Runs `jobs/sweep_zdim.py` twice as a user would (a subprocess with its own local Ray,
`--no-report`), with `sweep.stopper=true` (and ASHA if the config turns it on) and with
`sweep.stopper=false sweep.asha=false`, the config otherwise the same, and reads every trial's
metrics stream and verdict.json from the storage:

  trial-steps  Σ over trials of the generator steps the trial ran (its last logged step)
  wall         the sweep subprocess' wall time (Ray start-up included, the same in both)
  best trial   the lowest final FCD among trials whose final verdict is not collapsed,
               diverged or garbage (on 2D data: the most modes covered, then the highest
               high-quality share); it must be the same trial in both runs
  false stops  trials that ran fewer steps with the stopper (collapse stopper or ASHA, which
               leaves no mark in verdict.json) and end healthy without it

Goal (issue 17, on configs/zdim_lr_grid_local.yaml): trial-steps ratio ≤ 0.5, the same best
trial, and no false stop (no trial stopped early whose run without the stopper ends healthy).
Results: docs/performance.md.

    python bench/bench_stopper.py --simulate DIR [--set eval.k=v ...] [--patience 1,2,3]
                                  [--grace 0,100,200,300] [--asha-grace 100,200,300]
                                  [--asha-rf 4] [--slots 2] [--json sim.json]

replays, without training anything, what the collapse stopper would have done with each
(patience, grace_steps) on a sweep run without it (DIR: the --storage of that run, or the
`no-stopper` folder of a bench run): every evaluation's verdict is judged again from its metrics
row (ganray.collapse.judge, with the run's thresholds and metrics, or those --set gives), and a
CollapseStopper is fed those verdicts in order; ASHA is replayed on the same trials
(replay_asha: one plausible order of arrival at its rungs, not necessarily a real run's). Training
is deterministic on the CPU, so a trial the stopper does not end runs exactly as it did without it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganray.artifacts import layout, reader  # noqa: E402
from ganray.artifacts.layout import BAD_VERDICTS  # noqa: E402
from ganray.config import Config, from_dict, is_2d, parse_overrides  # noqa: E402
from ganray.sweep import CollapseStopper  # noqa: E402

LOCAL_PRESET = "configs/zdim_mnist_local.yaml"


@dataclass
class TrialOutcome:
    trial: str
    steps: int            # generator steps run (last logged step)
    verdict: str          # final verdict
    verdict_step: int     # step of that verdict
    stopped_early: bool
    fcd: float | None     # final FCD (images)
    modes_covered: float | None  # final modes covered (2D mixtures)
    hq_share: float | None
    verdicts: list = field(default_factory=list)  # [[step, verdict]] at every evaluation, judged again from its row
    evals: list = field(default_factory=list)     # [[step, elapsed_sec, fcd, sweep.asha_metric]] at every evaluation


@dataclass
class SweepRun:
    stopper: bool
    wall_sec: float
    trial_steps: int
    trials: list[TrialOutcome]
    best: str | None          # lowest final FCD among trials not judged bad (None: every trial judged bad)
    best_by_fcd: str | None   # lowest final FCD whatever the verdict


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return f"{model}, {os.cpu_count()} cores"


def _last_with(rows: list[dict], key: str) -> float | None:
    for row in reversed(rows):
        if key in row:
            return float(row[key])
    return None


def read_trial(trial_dir: Path, judge_rows=None, asha_metric: str = "fcd") -> TrialOutcome:
    """One trial's outcome from its record; `judge_rows` (rows -> [(step, verdict)]) fills
    `verdicts`, and then `evals` holds each evaluation's time and the metrics replays need."""
    rows = reader.read_rows(str(trial_dir))
    verdict = json.loads((trial_dir / "verdict.json").read_text())
    judged = [list(v) for v in judge_rows(rows)] if judge_rows is not None else []
    by_step = {int(r["step"]): r for r in rows}
    evals = [[s, by_step[s].get("elapsed_sec"), by_step[s].get("fcd"), by_step[s].get(asha_metric)] for s, _ in judged]
    return TrialOutcome(
        trial=trial_dir.name, steps=int(rows[-1]["step"]) if rows else 0, verdict=verdict["verdict"],
        verdict_step=int(verdict["step"]), stopped_early=bool(verdict.get("stopped_early", False)),
        fcd=_last_with(rows, "fcd"), modes_covered=_last_with(rows, "modes_covered"),
        hq_share=_last_with(rows, "hq_share"),
        verdicts=judged, evals=evals)


# -- replaying the stopper on a run without it ---------------------------------------------------

def verdict_judge(cfg: Config):
    """rows -> [(step, verdict)] at every evaluation, judged as the trial's Evaluator judged it:
    ganray.collapse.judge on the row's metrics, with cfg.eval's thresholds, counting only the
    signals of the metrics in cfg.eval.metrics (so a metric set without near_real can be replayed
    on a run that computed it)."""
    from ganray.collapse import Setting, judge  # noqa: PLC0415 (torch: only when replaying)
    from ganray.data import load_dataset  # noqa: PLC0415
    from ganray.metrics import SPECS, data_kind  # noqa: PLC0415

    kind = data_kind(cfg.data.dataset)
    if is_2d(cfg.data.dataset):
        num_modes = int(load_dataset(cfg.data).extra["means"].shape[0])
    else:
        num_modes = len(cfg.data.classes) or load_dataset(cfg.data).num_classes
    setting = Setting(cfg.data.dataset, kind, num_modes, cfg.eval.n)
    keys = {k for name in cfg.eval.metrics if name in SPECS for k in SPECS[name].signals}
    evaluated = keys - set(SPECS["training_signals"].signals)  # present only in evaluation rows

    def judge_rows(rows: list[dict]) -> list[tuple[int, str]]:
        out = []
        for row in rows:
            if not evaluated & row.keys():
                continue
            m = {k: float(v) for k, v in row.items() if k in keys and isinstance(v, (int, float))}
            out.append((int(row["step"]), judge(m, setting, cfg.eval)[0]))
        return out

    return judge_rows


def replay_stopper(verdicts: list, steps: int, patience: int, grace_steps: int) -> int:
    """The steps a trial would have run with the collapse stopper, given the verdicts
    [(step, verdict)] of its run without it: the step of the evaluation at which a
    CollapseStopper(patience, grace_steps) says stop (before the last step), else `steps`."""
    stopper = CollapseStopper(patience, grace_steps)
    for step, verdict in verdicts:
        if step < steps and stopper(step, {"verdict": verdict}):
            return step
    return steps


def replay_asha(trials: list[TrialOutcome], steps: int, until: dict[str, int], *, grace_period: int, slots: int,
                reduction_factor: float = 4, mode: str = "min", setup_sec: float = 15.0) -> dict[str, int]:
    """Where Ray's ASHAScheduler (one bracket, time_attr step, as ganray.sweep builds it) would
    end each trial that would otherwise run until[trial] steps: trials start in `trials` order
    as `slots` free up, take setup_sec plus their own elapsed_sec to reach a step (as in the run
    without the stopper), and at each rung (grace_period × reduction_factor^k < steps) a trial
    stops unless its value is at least the (1 − 1/reduction_factor) quantile of the values
    recorded at that rung before it (the first to arrive always continues). The order in which
    trials reach a rung decides, as in Tune; this replays one plausible order, not the run's."""
    import heapq  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    rungs = [grace_period * reduction_factor ** k for k in range(int(np.log(steps / grace_period) /
                                                                     np.log(reduction_factor)) + 1)]
    sign = -1.0 if mode == "min" else 1.0
    recorded: dict[float, list[float]] = {r: [] for r in rungs}
    ends = dict(until)
    queue, events, free, seq = list(trials), [], slots, 0

    def start(now: float) -> None:
        nonlocal free, seq
        while free and queue:
            t = queue.pop(0)
            free -= 1
            at = {int(e[0]): (e[1] or 0.0, e[3]) for e in t.evals}
            end_elapsed = at.get(ends[t.trial], (max((v for v, _ in at.values()), default=0.0), None))[0]
            for r in rungs:
                if r <= ends[t.trial] and int(r) in at:
                    heapq.heappush(events, (now + setup_sec + at[int(r)][0], seq, "rung", t.trial, int(r), at[int(r)][1]))
                    seq += 1
            heapq.heappush(events, (now + setup_sec + end_elapsed, seq, "end", t.trial, ends[t.trial], None))
            seq += 1

    done: set[str] = set()
    start(0.0)
    while events:
        now, _, kind, name, step, value = heapq.heappop(events)
        if name in done:
            continue
        if kind == "rung" and value is not None and step < ends[name]:
            rec = recorded[step]
            cutoff = np.nanpercentile(rec, (1 - 1 / reduction_factor) * 100) if rec else None
            rec.append(sign * float(value))
            if cutoff is not None and sign * float(value) < cutoff:
                ends[name] = step
                kind = "end"
        if kind == "end":
            done.add(name)
            free += 1
            start(now)
    return ends


@dataclass
class Replay:
    patience: int
    grace_steps: int
    asha: int | None          # ASHA's grace period (first rung); None: no ASHA
    asha_rf: float | None     # ASHA's reduction factor
    trial_steps: int
    trial_steps_ratio: float
    stopped: dict             # trial -> step it would stop at
    false_stops: list         # stopped, and the run without the stopper ends healthy
    stopped_not_bad: list     # stopped, and that run ends in a verdict that is not bad (healthy included)
    best: str | None          # best trial (best_trial) with the stopper
    best_without: str | None


def replay(trials: list[TrialOutcome], steps: int, patience: int, grace_steps: int,
           asha: dict | None = None) -> Replay:
    """What the stopper (and, with `asha` = replay_asha's keyword arguments, ASHA) would have
    done to the sweep `trials` (run without it, `verdicts` and `evals` filled): a trial stopped
    at step s ends with its verdict and FCD of step s; the others end exactly as they did."""
    at = {t.trial: replay_stopper(t.verdicts, steps, patience, grace_steps) for t in trials}
    if asha is not None:
        at = replay_asha(trials, steps, at, **asha)
    final = {t.trial: t.verdicts[-1][1] if t.verdicts else t.verdict for t in trials}
    stopped = {n: s for n, s in at.items() if s < steps}

    def ended(t: TrialOutcome) -> TrialOutcome:
        if t.trial not in stopped:
            return replace(t, verdict=final[t.trial])
        fcd = {int(e[0]): e[2] for e in t.evals}.get(at[t.trial], t.fcd)
        return replace(t, steps=at[t.trial], verdict=dict(map(tuple, t.verdicts))[at[t.trial]], fcd=fcd,
                       stopped_early=True)

    without = [replace(t, verdict=final[t.trial]) for t in trials]
    total, full = sum(at.values()), sum(t.steps for t in trials)
    return Replay(patience, grace_steps, asha["grace_period"] if asha else None,
                  asha.get("reduction_factor", 4) if asha else None, total, total / full if full else float("nan"), stopped,
                  [n for n in stopped if final[n] == "healthy"],
                  [n for n in stopped if final[n] not in BAD_VERDICTS],
                  best_trial([ended(t) for t in trials]), best_trial(without))


def replay_table(replays: list[Replay]) -> str:
    lines = ["| patience | grace_steps | ASHA grace, rf | trial-steps ratio | stopped | false stops | stopped, ending not bad | "
             "best trial with / without |", "|---:|---:|---|---:|---:|---|---|---|"]
    for r in replays:
        asha = f"{r.asha}, {r.asha_rf:g}" if r.asha else "no"
        lines.append(f"| {r.patience} | {r.grace_steps} | {asha} | {r.trial_steps_ratio:.2f} | "
                     f"{len(r.stopped)} | "
                     f"{', '.join(r.false_stops) or 'none'} | {', '.join(r.stopped_not_bad) or 'none'} | "
                     f"{r.best or 'none'} / {r.best_without or 'none'} |")
    return "\n".join(lines)


def simulate(run_dir: Path, overrides: list[str], patiences: list[int], graces: list[int], slots: int = 2,
             asha_graces: tuple[int, ...] = (), asha_factors: tuple[float, ...] = (4,)) -> dict:
    """Replay every (patience, grace_steps), without ASHA and with it at each of `asha_graces`
    and reduction factor in `asha_factors` (the grace period is the first rung; sweep.asha_metric,
    `slots` trials at a time), on the sweep
    stored under run_dir (run without the stopper). --set eval.* overrides judge the rows with other thresholds or metrics."""
    from ganray.sweep import grid, trial_names  # noqa: PLC0415

    exp = _one_experiment(run_dir)
    raw = yaml_load((exp / layout.CONFIG).read_text())
    for key, value in parse_overrides(overrides).items():
        section, _, name = key.partition(".")
        raw.setdefault(section, {})[name] = value
    cfg = from_dict(raw)
    judge_rows = verdict_judge(cfg)
    order = trial_names(grid(cfg))  # Tune starts the trials in grid order
    dirs = [exp / "trials" / n for n in order]
    missing = [d.name for d in dirs if not (d / layout.VERDICT).is_file()]
    if missing:
        raise SystemExit(f"{run_dir}: no {layout.VERDICT} in {', '.join(missing)} (still running?)")
    trials = [read_trial(d, judge_rows, cfg.sweep.asha_metric) for d in dirs]
    short = [t.trial for t in trials if t.stopped_early or t.steps < cfg.train.steps]
    if short:
        raise SystemExit(f"{run_dir}: {', '.join(short)} ended early; replay needs a run without the stopper")
    if not overrides:  # the thresholds of the run itself: the judged final verdict must be the one it wrote
        wrong = [f"{t.trial} ({t.verdicts[-1][1]} here, {t.verdict} in verdict.json)" for t in trials
                 if t.verdicts and t.verdicts[-1][1] != t.verdict]
        if wrong:
            raise SystemExit(f"judging the rows again does not give the run's verdicts: {', '.join(wrong)}")
    ashas = [None, *({"grace_period": r, "reduction_factor": f, "slots": slots, "mode": cfg.sweep.asha_mode}
                     for r in asha_graces for f in asha_factors)]
    replays = [replay(trials, cfg.train.steps, p, g, a) for a in ashas for p in patiences for g in graces]
    return {"run": str(run_dir), "overrides": overrides, "steps": cfg.train.steps,
            "trials": [asdict(t) for t in trials], "replays": [asdict(r) for r in replays],
            "table": replay_table(replays)}


def yaml_load(text: str) -> dict:
    import yaml  # noqa: PLC0415

    return yaml.safe_load(text) or {}


def _one_experiment(storage_dir: Path) -> Path:
    experiments = [p for p in storage_dir.iterdir() if (p / "trials").is_dir()]
    if len(experiments) != 1:
        raise SystemExit(f"expected one experiment under {storage_dir}, found {experiments}")
    return experiments[0]


def best_trial(trials: list[TrialOutcome]) -> str | None:
    """Lowest final FCD among the trials not judged bad (2D: most modes, then highest hq share)."""
    good = [t for t in trials if t.verdict not in BAD_VERDICTS]
    if not good:
        return None
    if all(t.fcd is not None for t in good):
        return min(good, key=lambda t: t.fcd).trial
    return max(good, key=lambda t: (t.modes_covered or 0.0, t.hq_share or 0.0)).trial


def run_sweep(config: str | None, overrides: list[str], storage_dir: Path, stopper: bool) -> SweepRun:
    args = [sys.executable, "jobs/sweep_zdim.py", "--storage", str(storage_dir), "--no-report"]
    if config:
        args += ["--config", config]
    # without: neither the collapse stopper nor ASHA (a config may turn ASHA on)
    for o in [*overrides, f"sweep.stopper={'true' if stopper else 'false'}", *([] if stopper else ["sweep.asha=false"])]:
        args += ["--set", o]
    env = {**os.environ, "RAY_ADDRESS": "local", "OMP_NUM_THREADS": "1",
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")}
    log_path = storage_dir / f"sweep-stopper-{stopper}.log"
    storage_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        rc = subprocess.run(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    if rc != 0:
        raise SystemExit(f"sweep (stopper={stopper}) exited {rc}; see {log_path}")
    exp = _one_experiment(storage_dir)
    judge_rows = verdict_judge(from_dict(yaml_load((exp / layout.CONFIG).read_text())))
    trials = [read_trial(d, judge_rows) for d in sorted((exp / "trials").iterdir()) if d.is_dir()]
    with_fcd = [t for t in trials if t.fcd is not None]
    best_by_fcd = min(with_fcd, key=lambda t: t.fcd).trial if with_fcd else None
    return SweepRun(stopper, wall, sum(t.steps for t in trials), trials, best_trial(trials), best_by_fcd)


def false_stops(on: SweepRun, off: SweepRun) -> list[str]:
    """Trials ended early (by the collapse stopper or by ASHA, which leaves no mark in
    verdict.json: fewer steps than without) whose run without the stopper ends healthy."""
    full = {t.trial: t for t in off.trials}
    return [t.trial for t in on.trials
            if t.trial in full and t.steps < full[t.trial].steps and full[t.trial].verdict == "healthy"]


def markdown(on: SweepRun, off: SweepRun) -> str:
    lines = ["| | with stopper | without | ratio |", "|---|---:|---:|---:|",
             f"| trial-steps | {on.trial_steps:,} | {off.trial_steps:,} | **{on.trial_steps / off.trial_steps:.2f}** |",
             f"| wall time (s) | {on.wall_sec:.0f} | {off.wall_sec:.0f} | **{on.wall_sec / off.wall_sec:.2f}** |",
             f"| best trial (not judged bad) | {on.best or 'none'} | {off.best or 'none'} | {_same(on.best, off.best)} |",
             f"| lowest final FCD, any verdict | {on.best_by_fcd} | {off.best_by_fcd} | "
             f"{_same(on.best_by_fcd, off.best_by_fcd)} |",
             "", "| trial | steps with / without | verdict with stopper | verdict without | final FCD with / without |",
             "|---|---:|---|---|---:|"]
    by_name = {t.trial: t for t in off.trials}
    for t in on.trials:
        o = by_name.get(t.trial)
        stop = f" (stopped at {t.steps})" if t.stopped_early else (
            f" (ended at {t.steps} by ASHA)" if o and t.steps < o.steps else "")
        fcd = f"{_f(t.fcd)} / {_f(o.fcd) if o else '-'}"
        lines.append(f"| {t.trial} | {t.steps} / {o.steps if o else '-'} | {t.verdict}{stop} | "
                     f"{o.verdict if o else '-'} | {fcd} |")
    return "\n".join(lines)


def _same(a: str | None, b: str | None) -> str:
    if a is None and b is None:
        return "no trial qualifies"
    return "same" if a == b else "DIFFERENT"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=LOCAL_PRESET, help="sweep config; '' = the embedded defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--with-set", dest="with_overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override for the run with the stopper only")
    p.add_argument("--without-json", default=None, help="reuse the run without the stopper from this --json file")
    p.add_argument("--storage", default=None, help="keep both sweeps here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--simulate", default=None, metavar="DIR",
                   help="replay the stopper on the run without it stored under DIR (trains nothing); "
                        "--set eval.* changes the thresholds or metrics judged")
    p.add_argument("--patience", default="1,2,3", help="--simulate: patience values, comma-separated")
    p.add_argument("--grace", default="0,100,200,300", help="--simulate: grace_steps values, comma-separated")
    p.add_argument("--asha-grace", default="100,200,300",
                   help="--simulate: ASHA grace periods (its first rung) to replay, comma-separated; '' = no ASHA")
    p.add_argument("--asha-rf", default="4", help="--simulate: ASHA reduction factors to replay, comma-separated")
    p.add_argument("--slots", type=int, default=2, help="--simulate: trials at a time, for the ASHA replay")
    a = p.parse_args()
    if a.simulate:
        try:
            patiences, graces, asha_graces = ([int(v) for v in x.split(",") if v]
                                              for x in (a.patience, a.grace, a.asha_grace))
        except ValueError:
            p.error("--patience and --grace take comma-separated integers")
        sim = simulate(Path(a.simulate), a.overrides, patiences, graces, a.slots, asha_graces,
                       [float(f) for f in a.asha_rf.split(",")])
        for t in sim["trials"]:
            print(f"{t['trial']}: " + " ".join(f"{s}:{v}" for s, v in t["verdicts"]) + f"  (final FCD {_f(t['fcd'])})")
        print(sim["table"])
        if a.json:
            Path(a.json).write_text(json.dumps(sim, indent=2))
        return
    off = None
    if a.without_json:  # checked before the long run, not after it
        try:
            earlier = json.loads(Path(a.without_json).read_text())
            w = earlier["without_stopper"]
            off = SweepRun(**{**w, "trials": [TrialOutcome(**t) for t in w["trials"]]})
        except (OSError, ValueError, KeyError, TypeError) as e:
            p.error(f"--without-json {a.without_json}: not a bench_stopper --json result ({e})")  # exit 2
        if (earlier.get("config"), earlier.get("overrides")) != (a.config or "embedded defaults", a.overrides):
            p.error(f"--without-json {a.without_json} was measured with another config or --set overrides")
        print(f"note: the run without the stopper is taken from {a.without_json}; the wall ratio "
              "compares runs taken at different times", file=sys.stderr)
    base = Path(a.storage) if a.storage else Path(tempfile.mkdtemp(prefix="bench-stopper-"))
    load_before = os.getloadavg()
    on = run_sweep(a.config or None, [*a.overrides, *a.with_overrides], base / "stopper", stopper=True)
    print(json.dumps(asdict(on)), flush=True)
    if off is None:
        off = run_sweep(a.config or None, a.overrides, base / "no-stopper", stopper=False)
    print(json.dumps(asdict(off)), flush=True)
    result = {
        "machine": machine(),
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "config": a.config or "embedded defaults", "overrides": a.overrides,
        "with_stopper_overrides": a.with_overrides, "without_from": a.without_json,
        "trial_steps_ratio": on.trial_steps / off.trial_steps, "wall_ratio": on.wall_sec / off.wall_sec,
        "same_best_trial": on.best == off.best and on.best is not None,
        "false_stops": false_stops(on, off),
        "with_stopper": asdict(on), "without_stopper": asdict(off),
    }
    print(markdown(on, off))
    print(f"false stops (stopped early, ending healthy without the stopper): {', '.join(result['false_stops']) or 'none'}")
    print(f"machine: {result['machine']}; 1-min load average {load_before[0]:.1f} before, "
          f"{result['load_average_1min']['after']:.1f} after")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
