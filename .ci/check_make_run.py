"""CI: what a newcomer's `make run` must have left and printed (issue: the README's commands work
as written on a fresh machine).

    python .ci/check_make_run.py CONSOLE.txt ganray_results/zdim-mnist-local

Checks: report.html exists; five trials, each with a verdict.json, none failed; the console
(a pipe, as in CI) has at most 150 lines, none over 300 characters, no ERROR line and no
traceback; the log file the header names exists and holds the full stream.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MAX_LINES, MAX_CHARS = 150, 300
VERDICTS = {"healthy", "partial_collapse", "collapsed", "garbage", "diverged"}
# a trial's logged step as Ray forwards it from the trial's process: "(sweep_trial pid=123) step 20: loss_D=…"
# (an in-process trial's Tune actor; a multi-worker trial's lines come from RayTrainWorker)
TRIAL_STREAM = re.compile(r"^\(\w+ pid=\d+(?:, ip=[^)]*)?\) step \d+: loss_D=", re.M)


def main(console_file: str, exp: str) -> int:
    text = Path(console_file).read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    # make's own echo of the command it runs is part of what the user sees
    problems = []
    longest = max((len(line) for line in lines), default=0)
    if len(lines) > MAX_LINES:
        problems.append(f"the console has {len(lines)} lines (at most {MAX_LINES})")
    if longest > MAX_CHARS:
        problems.append(f"a console line has {longest} characters (at most {MAX_CHARS})")
    bad = [line for line in lines if re.search(r"\bERROR\b|Traceback \(most recent call last\)", line)]
    if bad:
        problems.append(f"the console shows errors: {bad[:3]}")
    e = Path(exp)
    if not (e / "report.html").is_file():
        problems.append(f"{e / 'report.html'} is missing")
    trials = sorted(p for p in (e / "trials").iterdir() if p.is_dir()) if (e / "trials").is_dir() else []
    verdicts = {}
    for t in trials:
        v = t / "verdict.json"
        verdicts[t.name] = json.loads(v.read_text())["verdict"] if v.is_file() else None
    if len(trials) != 5 or any(v not in VERDICTS for v in verdicts.values()):
        problems.append(f"expected five trials with a verdict, found {verdicts}")
    if not re.search(r"sweep finished in .*: 5 trials, 0 failed", text):
        problems.append("the closing summary does not say '5 trials, 0 failed'")
    m = re.search(r"^\s*log\s+(\S+\.log)", text, re.M)
    log = Path(m.group(1)) if m else None
    if log is None or not log.is_file():
        problems.append(f"the log file named in the header is missing ({log})")
    elif not TRIAL_STREAM.search(log.read_text(errors="replace")):
        problems.append(f"the log file {log} does not hold the trials' stream (their logged steps)")
    print(f"make run console: {len(lines)} lines, longest {longest} characters; "
          f"trials {verdicts}; log {log} ({log.stat().st_size if log and log.is_file() else 0} bytes)")
    for p in problems:
        print(f"CI: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
