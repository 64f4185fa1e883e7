"""Install size and time, for git refs of this repository: `python bench/bench_install.py REF [REF ...]`.

For each ref (e.g. the commit before the lean install and HEAD), on a fresh clone in a temporary
folder:
- test install: `make install` (what `make test` runs first: .venv, pip, torch==2.13.0, -e ".[test]");
- user install: a new venv with `pip install torch==2.13.0` (not timed: the same for every ref),
  then `pip install .` (timed), as a user installs ganray.
It prints one JSON line per ref: seconds and MiB of each venv, and which of mlxtend, scikit-learn,
scipy, gcsfs the user install brought. pip's cache and this machine's local wheels serve both refs
alike, so run the refs back to back in one sitting and compare them with each other.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATCH = ("mlxtend", "scikit-learn", "scipy", "gcsfs", "pandas")


def _run(cmd: list[str], cwd: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.monotonic() - t0


def _mib(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


def measure(ref: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="ganray-install-") as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        subprocess.run(["git", "checkout", "-q", ref], cwd=repo, check=True)
        test_s = _run(["make", "install"], repo)
        user = Path(tmp) / "user"
        _run([sys.executable, "-m", "venv", str(user)], repo)
        _run([str(user / "bin" / "pip"), "install", "-q", "torch==2.13.0"], repo)
        user_s = _run([str(user / "bin" / "pip"), "install", "-q", "."], repo)
        listed = subprocess.run([str(user / "bin" / "pip"), "list", "--format=json"], check=True,
                                capture_output=True, text=True).stdout
        names = {p["name"].lower() for p in json.loads(listed)}
        check = subprocess.run([str(user / "bin" / "pip"), "check"], capture_output=True, text=True)
        return dict(ref=ref, commit=subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True,
                                                   capture_output=True, text=True).stdout.strip(),
                    test_install_s=round(test_s, 1), test_venv_mib=_mib(repo / ".venv"),
                    user_install_s=round(user_s, 1), user_venv_mib=_mib(user), user_packages=len(names),
                    user_has={w: w in names for w in WATCH}, pip_check=check.returncode == 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("refs", nargs="+", help="git refs of this repository (committed states only)")
    args = p.parse_args(argv)
    for ref in args.refs:
        print(json.dumps(measure(ref)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
