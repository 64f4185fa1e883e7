"""What a person reads of a long run: a short header, a live trial table, a closing summary.

Everything else — ganray's own log lines, Ray's (Train's per-report lines, Tune's, the
workers' output that `log_to_driver` forwards) and anything written to the process's stdout
or stderr, down to the file descriptors that Ray's C++ core writes to — goes to a log file
under the experiment, whose path the header prints. `--verbose` leaves the full stream on
the console instead (the header, table and summary are printed all the same).

    with RunConsole("sweep", exp_uri, verbose=args.verbose) as con:
        con.header(["5 trials ..."])
        ...                                   # con.table(rows, changed=...) from a Tune callback
        con.summary(["report: ..."])

On a terminal the table is redrawn in place; on a pipe (CI, `ray job submit`, `| tee`) a new
table is printed when a verdict changes or a trial ends, at most every PIPE_MIN_SEC seconds,
and otherwise every PIPE_HEARTBEAT_SEC while steps advance. Console lines are cut to
MAX_LINE characters.
"""
from __future__ import annotations

import datetime
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import IO, Sequence

log = logging.getLogger(__name__)

PIPE_MIN_SEC = 30.0        # pipe: no two tables closer than this
PIPE_HEARTBEAT_SEC = 120.0  # pipe: a table this often while steps advance, even with no verdict change
TTY_MIN_SEC = 1.0          # terminal: redraws at most this often
MAX_LINE = 200             # console lines are cut here
PATH_LINES = ("report:", "results", "log ")  # closing lines that name a path: never cut

_current: "RunConsole | None" = None


def current() -> "RunConsole | None":
    """The console of the run in progress in this process (Tune callbacks look it up here, so
    that they hold no file handle when Tune pickles them)."""
    return _current


def say(text: str) -> None:
    """A line for the person running the command: the run's console, or stdout without one."""
    con = current()
    if con is not None:
        con.line(text)
    else:
        print(text, flush=True)


def elapsed_since(t0: float) -> str:
    """The run's time so far: the console's clock (the one its tables show) when there is one."""
    con = current()
    return con.elapsed() if con is not None else fmt_duration(time.time() - t0)


def say_summary(lines: Sequence[str]) -> None:
    con = current()
    if con is not None:
        con.summary(lines)
    else:
        print("\n".join(lines), flush=True)


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


class RunConsole:
    def __init__(self, kind: str, exp_uri: str, *, verbose: bool = False, stream: IO[str] | None = None):
        self.kind, self.exp_uri, self.verbose = kind, exp_uri, verbose
        self._stream_arg = stream
        self.log_path: str | None = None
        self.log_upload: str | None = None  # bucket storage: where the log is copied at the end
        self._saved_fds: tuple[int, int] | None = None
        self.out: IO[str] = stream or sys.stdout
        self.err: IO[str] = stream or sys.stderr
        self.tty = False
        self._last_table = 0.0
        self._drawn = 0  # lines of the table on screen (terminal redraw)
        self._pending = False  # pipe: a change not shown yet (it came too soon after the last table)
        self._shown: list[str] = []  # the rows of the last table shown (its first line holds the time)
        self._t0 = time.time()
        self._outer: "RunConsole | None" = None

    # ---- set-up and tear-down ---------------------------------------------------------------
    def __enter__(self) -> "RunConsole":
        global _current
        from ganray import storage  # noqa: PLC0415

        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        name = f"{self.kind}-{stamp}-{os.getpid()}.log"
        scheme, path = storage.split_uri(self.exp_uri)
        if scheme == "file":
            folder = os.path.join(path, "logs")
        else:  # a bucket: written here, copied to <experiment>/logs/ at the end
            folder = os.path.join(os.environ.get("GANRAY_CACHE") or os.path.expanduser("~/.cache/ganray"), "logs")
            self.log_upload = storage.join(self.exp_uri, "logs", name)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError:
            folder = tempfile.gettempdir()
        self.log_path = os.path.join(folder, name)
        if self._stream_arg is None:
            self.tty = bool(getattr(sys.stdout, "isatty", lambda: False)())
        if not self.verbose and self._stream_arg is None:
            try:
                self._redirect()
            except OSError as e:  # no log file: the full stream stays on the console
                self.err.write(f"note: cannot write the log file {self.log_path} ({e.strerror or e}); "
                               "the full stream stays on the console\n")
                self.log_path, self.verbose = None, True
        self._outer, _current = _current, self
        return self

    def _redirect(self) -> None:
        """fds 1 and 2 -> the log file; the console keeps duplicates of the original ones."""
        assert self.log_path is not None
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # fails before anything moved
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # the workers' lines Ray forwards: no colour codes in a file
        _flush_all()
        saved = (os.dup(1), os.dup(2))
        self.out = os.fdopen(os.dup(saved[0]), "w", buffering=1, encoding="utf-8", errors="replace")
        self.err = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self._saved_fds = saved

    def __exit__(self, exc_type, exc, tb) -> None:
        global _current
        _current = self._outer
        _flush_all()
        if self._saved_fds is not None:
            os.dup2(self._saved_fds[0], 1)
            os.dup2(self._saved_fds[1], 2)
            for fd in self._saved_fds:
                os.close(fd)
            self._saved_fds = None
            for s in (self.out, self.err):
                s.close()
            self.out, self.err = sys.stdout, sys.stderr
        if self.log_upload and self.log_path and os.path.exists(self.log_path):
            from ganray import storage  # noqa: PLC0415

            try:
                storage.upload_file(self.log_path, self.log_upload)
            except Exception as e:  # noqa: BLE001 — the run's outcome stands; say where the log is
                print(f"note: the log stays at {self.log_path} (copy to {self.log_upload} failed: {e})",
                      file=sys.stderr)

    # ---- what is printed --------------------------------------------------------------------
    def line(self, text: str = "", *, cut: bool = True) -> None:
        self._clear_table()
        self.out.write((_cut(text) if cut else text) + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        """Never cut: the whole reason reaches the user."""
        self._clear_table()
        self.err.write(text.rstrip("\n") + "\n")
        self.err.flush()

    def header(self, lines: Sequence[str]) -> None:
        for text in lines:
            self.line(text)
        if self.log_path and not self.verbose:
            where = f" (copied to {self.log_upload} at the end)" if self.log_upload else ""
            self.line(f"  log       {self.log_path}{where}; --verbose shows it here", cut=False)

    def summary(self, lines: Sequence[str]) -> None:
        """Closing lines; those naming a path (report:, results, log) are never cut."""
        self._drawn = 0  # the last table stays on screen above the summary
        for text in lines:
            self.line(text, cut=not text.lstrip().startswith(PATH_LINES))

    def elapsed(self) -> str:
        return fmt_duration(time.time() - self._t0)

    def table(self, lines: Sequence[str], *, changed: bool, final: bool = False) -> bool:
        """Show the table (header line first) if the rules above allow it now; True if shown."""
        now = time.time()
        since = now - self._last_table
        if self.tty and not self.verbose:
            if not (final or changed or since >= TTY_MIN_SEC):
                return False
            self._clear_table()
            width = max(20, shutil.get_terminal_size((MAX_LINE, 24)).columns - 1)
            for text in lines:  # no wrapped rows: the redraw moves up exactly len(lines) lines
                self.out.write(_cut(text)[:width] + "\n")
            self.out.flush()
            self._drawn = len(lines)
        else:
            self._pending = self._pending or changed
            due = final or (self._pending and since >= PIPE_MIN_SEC) or since >= PIPE_HEARTBEAT_SEC
            if not due or list(lines[1:]) == self._shown:  # nothing new to read
                return False
            self._pending = False
            for text in lines:
                self.out.write(_cut(text) + "\n")
            self.out.flush()
        self._last_table = now
        self._shown = list(lines[1:])
        return True

    def _clear_table(self) -> None:
        if self.tty and not self.verbose and self._drawn:
            self.out.write(f"\x1b[{self._drawn}F\x1b[J")  # up to the table's first line, clear below
            self._drawn = 0


def _flush_all() -> None:
    """Python's and C's buffered stdout/stderr, before their file descriptors move."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def fmt_duration(sec: float) -> str:
    sec = int(round(sec))
    if sec < 60:
        return f"{sec}s"
    m, s = divmod(sec, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"
