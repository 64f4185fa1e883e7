"""Collapse stopper: trial-steps and wall time of a sweep with the stopper ÷ without it.

    python bench/bench_stopper.py [--config configs/zdim_mnist_local.yaml] [--set k=v ...]
                                  [--with-set k=v ...] [--without-json earlier.json]
                                  [--storage DIR] [--json out.json]

`--with-set` changes only the run with the stopper (for instance `sweep.asha=true` to measure
the collapse stopper together with ASHA); `--without-json` takes the run without the stopper
from an earlier `--json` file of the same config instead of running it again.

Runs `jobs/sweep_zdim.py` twice as a user would (a subprocess with its own local Ray,
`--no-report`), with `sweep.stopper=true` and with `sweep.stopper=false`, the config otherwise
the same, and reads every trial's metrics stream and verdict.json from the storage:

  trial-steps  Σ over trials of the generator steps the trial ran (its last logged step)
  wall         the sweep subprocess' wall time (Ray start-up included, the same in both)
  best trial   the lowest final FCD among trials whose final verdict is not collapsed,
               diverged or garbage (on 2D data: the most modes covered, then the highest
               high-quality share); it must be the same trial in both runs

Goal: trial-steps and wall ratios ≤ 0.5 with the same best trial. Results: docs/performance.md.
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
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ganray.artifacts import reader  # noqa: E402
from ganray.artifacts.layout import BAD_VERDICTS  # noqa: E402

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


def read_trial(trial_dir: Path) -> TrialOutcome:
    rows = reader.read_rows(str(trial_dir))
    verdict = json.loads((trial_dir / "verdict.json").read_text())
    return TrialOutcome(
        trial=trial_dir.name, steps=int(rows[-1]["step"]) if rows else 0, verdict=verdict["verdict"],
        verdict_step=int(verdict["step"]), stopped_early=bool(verdict.get("stopped_early", False)),
        fcd=_last_with(rows, "fcd"), modes_covered=_last_with(rows, "modes_covered"),
        hq_share=_last_with(rows, "hq_share"))


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
    for o in [*overrides, f"sweep.stopper={'true' if stopper else 'false'}"]:
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
    experiments = [p for p in storage_dir.iterdir() if (p / "trials").is_dir()]
    if len(experiments) != 1:
        raise SystemExit(f"expected one experiment under {storage_dir}, found {experiments}")
    trials = [read_trial(d) for d in sorted((experiments[0] / "trials").iterdir()) if d.is_dir()]
    with_fcd = [t for t in trials if t.fcd is not None]
    best_by_fcd = min(with_fcd, key=lambda t: t.fcd).trial if with_fcd else None
    return SweepRun(stopper, wall, sum(t.steps for t in trials), trials, best_trial(trials), best_by_fcd)


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
        stop = f" (stopped at {t.steps})" if t.stopped_early else ""
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
    a = p.parse_args()
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
        "with_stopper": asdict(on), "without_stopper": asdict(off),
    }
    print(markdown(on, off))
    print(f"machine: {result['machine']}; 1-min load average {load_before[0]:.1f} before, "
          f"{result['load_average_1min']['after']:.1f} after")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
