"""The run console: header, trial table and summary on the console, everything else in the log file."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from ganray import console
from ganray.sweep import progress_lines, trial_summaries

ROOT = Path(__file__).resolve().parents[1]

NOISY_RUN = r"""
import logging, os, sys
from ganray import console
logging.basicConfig(level=logging.INFO)
with console.RunConsole("sweep", sys.argv[1]) as con:
    con.header(["ganray sweep demo", "  results   " + sys.argv[1]])
    print("Reporting training result 1: metrics={...}")        # Python-level stdout
    logging.getLogger("ray.train").error("an error-level line from Ray internals")
    os.write(2, b"fd 2 straight from C++\n")                   # below Python
    subprocess_out = os.system("echo a child process writes to fd 1")
    con.table(["[1s] 1 trials: 1 running", "  z1-s0 running"], changed=True)
    con.summary(["sweep finished", "report: somewhere/report.html"])
print("after the console: back on stdout")
"""


def test_console_shows_header_table_summary_and_the_log_holds_everything_else(tmp_path):
    exp = tmp_path / "store" / "demo"
    r = subprocess.run([sys.executable, "-c", NOISY_RUN, str(exp)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    logs = list((exp / "logs").glob("sweep-*.log"))
    assert len(logs) == 1
    assert r.stdout.splitlines() == [
        "ganray sweep demo",
        f"  results   {exp}",
        f"  log       {logs[0]}; --verbose shows it here",
        "[1s] 1 trials: 1 running",
        "  z1-s0 running",
        "sweep finished",
        "report: somewhere/report.html",
        "after the console: back on stdout",
    ]
    assert r.stderr == ""
    text = logs[0].read_text()
    for noise in ("Reporting training result 1", "an error-level line from Ray internals", "fd 2 straight from C++",
                  "a child process writes to fd 1"):
        assert noise in text, noise


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_pipe_tables_come_on_changes_at_most_every_30_s_and_as_a_heartbeat(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(console.time, "time", clock)
    out = io.StringIO()
    con = console.RunConsole("sweep", "/nowhere", stream=out)  # a stream: no redirection, a pipe
    shown = []
    for at, changed in [(0, True), (10, True), (29, False), (31, False), (40, True), (100, False),
                        (150, False), (200, False), (269, False), (271, False)]:
        clock.now = 1000.0 + at
        if con.table([f"t={at}", f"row {at}"], changed=changed):
            shown.append(at)
    # 0: a change; 10: too soon (kept pending) -> shown at 31; 40: too soon -> shown at 100;
    # then no change: a heartbeat 120 s after the last table (100 -> 220: at 269 is the first call after)
    assert shown == [0, 31, 100, 269]
    clock.now += 1
    assert con.table(["end", "last row"], changed=False, final=True)
    assert not con.table(["end again", "last row"], changed=True, final=True)  # the same rows: not again
    assert out.getvalue().splitlines() == ["t=0", "row 0", "t=31", "row 31", "t=100", "row 100", "t=269", "row 269",
                                           "end", "last row"]


def test_console_cuts_long_lines():
    out = io.StringIO()
    con = console.RunConsole("sweep", "/nowhere", stream=out)
    con.line("x" * 1000)
    (line,) = out.getvalue().splitlines()
    assert len(line) == console.MAX_LINE and line.endswith("…")


def test_progress_table_and_summary_read_exactly():
    rows = [("z1-s0", "TERMINATED", {"step": 300, "classes_covered": 1.0, "kl_uniform": 2.302585, "fcd": 726.04,
                                     "loss_D": 1.3781, "loss_G": 0.70251, "verdict": "collapsed"}),
            ("z10-s0", "RUNNING", {"step": 400, "classes_covered": 10.0, "kl_uniform": 0.0421, "fcd": 338.5,
                                   "loss_D": 1.331, "loss_G": 0.7555, "verdict": "healthy"}),
            ("z100-s0", "PENDING", {})]
    assert progress_lines(rows, 600, False, "2m05s") == [
        "[2m05s] 3 trials: 1 running, 1 pending, 1 stopped",
        "  trial    state     step  classes      KL      FCD  loss_D  loss_G  verdict",
        "  z1-s0    stopped    300        1   2.303    726.0   1.378   0.703  collapsed",
        "  z10-s0   running    400       10   0.042    338.5   1.331   0.755  healthy",
        "  z100-s0  pending      -        -       -        -       -       -  -",
    ]


def test_progress_table_of_translation_and_conditional_runs_shows_their_own_numbers():
    from ganray.config import load
    from ganray.sweep.table import table_kind

    rows = [("no-cycle-s0", "RUNNING", {"step": 200, "content_kept_ab": 0.5612, "content_kept_ba": 0.34,
                                        "cycle_l1_a": 0.41237, "loss_D": 0.412, "loss_G": 0.81, "verdict": "content_lost"})]
    assert progress_lines(rows, 400, "translation", "1m00s") == [
        "[1m00s] 1 trials: 1 running",
        "  trial        state     step  A→B kept  B→A kept  cycle A  loss_D  loss_G  verdict",
        "  no-cycle-s0  running    200      0.56      0.34    0.412   0.412   0.810  content_lost",
    ]
    rows = [("z2-s0", "RUNNING", {"step": 100, "classes_covered": 9.0, "fcd": 401.25, "condition_fidelity": 0.1,
                                  "loss_D": 1.0, "loss_G": 2.0, "verdict": "ignores_condition"})]
    assert progress_lines(rows, 600, "conditional", "9s")[2] == \
        "  z2-s0  running    100        9    401.2      0.10   1.000   2.000  ignores_condition"
    kinds = [table_kind(load(None, [f"train.family={f}", f"data.dataset={d}"]))
             for f, d in (("cyclegan", "digits2inverse"), ("cgan", "mnist5k"), ("gan", "ring8"), ("gan", "mnist5k"))]
    assert kinds == ["translation", "conditional", "2d", "image"]


def test_trial_summaries_come_from_the_verdict_files(tmp_path):
    exp = tmp_path / "exp"
    for name, v in {"z1-s0": {"verdict": "collapsed", "step": 300, "first_seen_step": 200, "stopped_early": True,
                              "reasons": ["100% of 1,000 samples are near-copies of another sample"]},
                    "z10-s0": {"verdict": "healthy", "step": 600, "first_seen_step": None,
                               "reasons": ["10 of 10 classes hold 100% of 2,000 samples"]}}.items():
        (exp / "trials" / name).mkdir(parents=True)
        (exp / "trials" / name / "verdict.json").write_text(json.dumps(v))
    assert trial_summaries(str(exp), ["z1-s0", "z10-s0", "z50-s0"]) == [
        "  z1-s0   collapsed        step 300 (since 200), stopped early: 100% of 1,000 samples are near-copies "
        "of another sample",
        "  z10-s0  healthy          step 600: 10 of 10 classes hold 100% of 2,000 samples",
        "  z50-s0  no verdict (the trial wrote none; see the log)",
        "  One seed per grid point: agreement across seeds cannot be judged, and one seed cannot tell a settled "
        "verdict from luck (--set sweep.seeds=[0,1,2] runs three).",
    ]
