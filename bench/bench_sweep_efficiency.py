"""Sweep efficiency: how much of a sweep's wall time its trial slots spend training.

    python bench/bench_sweep_efficiency.py [--config configs/zdim_mnist_local.yaml] [--set k=v ...]
                                           [--ref GIT_REF ...] [--no-report] [--storage DIR]
                                           [--json out.json]

Runs `jobs/sweep_zdim.py` as a user would (a subprocess with its own local Ray, a temporary
storage, the report at the end unless --no-report: it is part of what a user waits for), then
reads every trial's metrics rows, Tune's results and the sweep's log:

  own rate    a trial's own training steps per second: (last logged step − first logged step) ÷
              (time of the last metrics row − time of the first). Evaluations, sample grids and
              checkpoints between them are inside it; start-up (the trial's processes, data,
              evaluator) is not.
  own time    Σ over trials of (steps the trial ran, its last logged step) ÷ (its own rate)
  efficiency  own time ÷ (sweep wall time × concurrent trial slots)      goal ≥ 0.8 (issue 17)

The slots are the trials the sweep runs at once (sweep.max_concurrent_trials, else what the
CPUs allow: the "up to N at a time" the sweep prints). The breakdown says where the rest of the
slot-seconds (wall × slots) go:

  before trials   slots × (first trial's start − the command's start): Python and Ray start-up,
                  the reference classifier made ready, Tune's set-up (ray_start_sec: to the
                  driver's "Ray: …" log line)
  trial start-up  Σ (the loop's start − the trial's start): the trial's processes (a nested
                  TorchTrainer's controller and worker group, when there is one), data, model,
                  the evaluator's reference statistics (evaluator_sec: the "evaluator … ready in"
                  lines, where the log has them)
  steps before the first row  Σ (first logged step ÷ own rate): training, but before the first row
  trial start     Tune's first result minus its time_total_s (which Tune counts from the
                  trainable's start); the loop's start = first row's time − its elapsed_sec
  end             slots × (command's end − the last trial's last row): the last trial's close,
                  Tune's wrap-up, the report (report_sec: from the driver's "sweep finished" log
                  line to the end), Ray's shutdown
  idle            the rest: slots waiting for a trial (the last trials running alone), trial
                  actors starting, trials closing (GIF, final upload) and Tune's bookkeeping

schedule_bound is the efficiency the grid allows with no overhead at all: the trials' own times
placed on the slots in the order they started, each slot taking the next trial when it is free.
Trials of unequal length (stopped early) leave a slot idle at the end whatever the sweep does.

`--ref GIT_REF` (repeatable) runs the same command, one after another in this sitting, on a
`git worktree` of that commit (HEAD = the last commit, without uncommitted changes); the
working tree itself is measured unless --no-working-tree. Results: docs/performance.md,
"Sweep efficiency".
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_stopper import machine  # noqa: E402  (the CPU model line, one for both benchmarks)

LOCAL_PRESET = "configs/zdim_mnist_local.yaml"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def read_rows(trial_dir: Path) -> list[dict]:
    """The trial's metrics rows, segments in name order (the record's reader, without importing it)."""
    rows = []
    for seg in sorted((trial_dir / "metrics").glob("*.jsonl")):
        rows += [json.loads(line) for line in seg.read_text().splitlines() if line.strip()]
    return rows


def tune_results(tune_trial_dir: Path) -> list[dict]:
    path = tune_trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _log_time(line: str) -> float | None:
    m = LOG_TIME.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if m else None


def read_log(exp: Path) -> dict:
    """From the sweep's log (<experiment>/logs/sweep-*.log): when Ray was up, when Tune's fit
    returned, and every evaluator set-up time the log holds."""
    out: dict = {"ray_up": None, "fit_done": None, "evaluator_sec": []}
    for log in sorted((exp / "logs").glob("sweep-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            t = _log_time(line)
            if t is not None and " ganray.distributed: Ray: " in line and out["ray_up"] is None:
                out["ray_up"] = t
            if t is not None and " ganray.sweep: sweep finished: " in line:
                out["fit_done"] = t
            if m := re.search(r"evaluator for \S+ ready in ([\d.]+) s", line):
                out["evaluator_sec"].append(float(m.group(1)))
    return out


def measure(tree: Path, label: str, config: str, overrides: list[str], storage: Path, report: bool) -> dict:
    """One sweep of `tree`'s jobs/sweep_zdim.py, as a user starts it; its efficiency and breakdown."""
    args = [sys.executable, "jobs/sweep_zdim.py", "--config", config, "--storage", str(storage)]
    args += [] if report else ["--no-report"]
    for o in overrides:
        args += ["--set", o]
    # its own local Ray (never a cluster started elsewhere on this machine); nothing else is set:
    # torch's threads are what Ray gives each worker (OMP_NUM_THREADS = its CPUs)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONPATH")}
    env.update(RAY_ADDRESS="local", PYTHONUNBUFFERED="1")
    storage.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    t0 = time.time()
    run = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True)
    t_end = time.time()
    if run.returncode != 0:
        sys.exit(f"{label}: the sweep failed (exit {run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    m = re.search(r"up to (\d+) at a time", run.stdout)
    slots = int(m.group(1)) if m else 1
    exps = [p.parent.parent for p in storage.glob("*/tune/tune")]
    if len(exps) != 1:
        sys.exit(f"{label}: expected one experiment under {storage}, found {exps}")
    exp = exps[0]
    log = read_log(exp)
    trials = []
    for trial_dir in sorted(p for p in (exp / "trials").iterdir() if (p / "metrics").is_dir()):
        rows = read_rows(trial_dir)
        first, last = rows[0], rows[-1]
        rate = (last["step"] - first["step"]) / (last["time"] - first["time"])
        results = tune_results(exp / "tune" / "tune" / trial_dir.name)
        by_step = {int(r["step"]): r for r in rows}
        start = None
        if results and int(results[0].get("step", -1)) in by_step:
            start = by_step[int(results[0]["step"])]["time"] - float(results[0]["time_total_s"])
        loop_start = first["time"] - first["elapsed_sec"]
        trials.append({
            "trial": trial_dir.name, "steps": int(last["step"]), "own_steps_per_sec": round(rate, 3),
            "own_sec": round(last["step"] / rate, 2), "start": start, "loop_start": loop_start,
            "first_row": first["time"], "last_row": last["time"],
            "startup_sec": round(loop_start - start, 2) if start is not None else None,
            "before_first_row_sec": round(first["step"] / rate, 2),
        })
    wall = t_end - t0
    own = sum(t["own_sec"] for t in trials)
    # the best this grid allows in the order the trials started: each trial's own time alone, no
    # start-up, a slot taking the next trial the moment it is free (list scheduling)
    free = [0.0] * slots
    for t in sorted(trials, key=lambda t: t["start"] if t["start"] is not None else 0.0):
        free[free.index(min(free))] += t["own_sec"]
    bound = own / (slots * max(free)) if trials else None
    starts = [t["start"] for t in trials if t["start"] is not None]
    before = (min(starts) - t0) if starts else None
    end = t_end - max(t["last_row"] for t in trials)
    startup = sum(t["startup_sec"] or 0.0 for t in trials)
    slot_sec = wall * slots
    accounted = own + startup + slots * ((before or 0.0) + end) - sum(t["before_first_row_sec"] for t in trials)
    for t in trials:
        for k in ("start", "loop_start", "first_row", "last_row"):
            t[k] = round(t[k] - t0, 2) if t[k] is not None else None  # seconds after the command started
    return {
        "label": label, "tree": str(tree), "commit": _commit(tree), "wall_sec": round(wall, 1), "slots": slots,
        "trials": len(trials), "trial_steps": sum(t["steps"] for t in trials), "own_sec": round(own, 1),
        "efficiency": round(own / slot_sec, 3),
        "schedule_bound": round(bound, 3) if bound is not None else None,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "breakdown_slot_sec": {
            "total (wall x slots)": round(slot_sec, 1),
            "training (own time)": round(own, 1),
            "before trials (x slots)": round(slots * before, 1) if before is not None else None,
            "trial start-up": round(startup, 1),
            "end (x slots)": round(slots * end, 1),
            "idle and the rest": round(slot_sec - accounted, 1),
        },
        "ray_start_sec": round(log["ray_up"] - t0, 1) if log["ray_up"] else None,
        "report_sec": round(t_end - log["fit_done"], 1) if (log["fit_done"] and report) else None,
        "after_fit_sec": round(t_end - log["fit_done"], 1) if log["fit_done"] else None,
        "evaluator_sec": log["evaluator_sec"],
        "per_trial": trials,
        "_rows": {t.name: [{k: v for k, v in r.items() if k not in ("time", "elapsed_sec", "train_sec")} for r in read_rows(t)]
                  for t in (exp / "trials").iterdir() if (t / "metrics").is_dir()},
    }


def _commit(tree: Path) -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=tree,
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + ("+uncommitted" if dirty else "")


def worktree(ref: str, parent: Path) -> Path:
    path = parent / f"ref-{re.sub(r'[^A-Za-z0-9._-]', '_', ref)}"
    subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True,
                   capture_output=True, text=True)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=LOCAL_PRESET, help=f"the sweep's config (default {LOCAL_PRESET})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="passed on to the sweep as --set")
    p.add_argument("--ref", action="append", default=[], metavar="GIT_REF",
                   help="also measure this commit (a git worktree), before the working tree; repeatable")
    p.add_argument("--no-working-tree", action="store_true", help="measure only the --ref commits")
    p.add_argument("--no-report", action="store_true", help="pass --no-report (the report is measured by default)")
    p.add_argument("--storage", help="keep the sweeps here (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ganray-bench-eff-") as tmp:
        base = Path(a.storage) if a.storage else Path(tmp)
        runs, trees = [], []
        try:
            for ref in a.ref:
                trees.append((f"ref {ref}", worktree(ref, Path(tmp))))
            if not a.no_working_tree:
                trees.append(("working tree", ROOT))
            for i, (label, tree) in enumerate(trees):
                print(f"[{time.strftime('%H:%M:%S')}] {label}: running the sweep", file=sys.stderr)
                r = measure(tree, label, a.config, a.overrides, base / f"run{i}", not a.no_report)
                print(f"[{time.strftime('%H:%M:%S')}] {label}: efficiency {r['efficiency']}, wall {r['wall_sec']} s",
                      file=sys.stderr)
                runs.append(r)
        finally:
            for _label, tree in trees:
                if tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
    for r in runs[1:]:  # the training arithmetic is the same: so are the rows (time columns aside)
        r["rows_identical_to_first_run"] = {t: rows == runs[0]["_rows"].get(t) for t, rows in sorted(r["_rows"].items())}
    for r in runs:
        del r["_rows"]
    out = {"machine": machine(), "config": a.config, "overrides": a.overrides, "report": not a.no_report,
           "goal": "efficiency >= 0.8", "runs": runs}
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
