"""Every benchmark under bench/, one after another, each in a fresh process: `make bench`.

    python bench/run_all.py [--only NAME ...] [--list] [--out bench_results]

Each benchmark prints its own table (docs/performance.md says how to read it and holds the
numbers measured so far); its full output also goes to <out>/<name>.log and its JSON, where
it writes one, to <out>/<name>.json. A closing table gives each benchmark's wall time and
exit code. Exit code 0 when all ran, 1 when one failed, 2 for an unknown --only name.
About 20 minutes on an idle 2-core machine (uploads 2, metrics 1, Ray overhead 6, stopper 9).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, extra arguments; "{json}" is replaced by <out>/<name>.json)
BENCHES = {
    "upload": ("bench_upload.py", ["--json", "{json}"]),
    "metrics": ("bench_metrics.py", []),
    "ray_overhead": ("bench_ray_overhead.py", []),
    "stopper": ("bench_stopper.py", ["--json", "{json}"]),
    "sweep_efficiency": ("bench_sweep_efficiency.py", ["--json", "{json}"]),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these: {', '.join(BENCHES)}")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--out", default="bench_results", help="folder for the logs and JSON (default: bench_results)")
    args = p.parse_args(argv)
    if args.list:
        for name, (script, _) in BENCHES.items():
            print(f"{name:<14} bench/{script}")
        return 0
    names = args.only or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"error: unknown benchmark {', '.join(unknown)}; allowed: {', '.join(BENCHES)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, name in enumerate(names, 1):
        script, extra = BENCHES[name]
        cmd = [sys.executable, str(HERE / script), *(a.replace("{json}", str(out / f"{name}.json")) for a in extra)]
        print(f"[{i}/{len(names)}] {name}: {' '.join(cmd[1:])}  (log: {out / f'{name}.log'})", flush=True)
        t0 = time.time()
        with open(out / f"{name}.log", "w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:  # shown as it comes, kept in the log
                sys.stdout.write(line)
                log.write(line)
            rc = proc.wait()
        results.append((name, time.time() - t0, rc))
    print(f"\n{'benchmark':<14}{'wall':>10}  result")
    for name, wall, rc in results:
        verdict = "ok" if rc == 0 else f"FAILED (exit {rc}; {out / (name + '.log')})"
        print(f"{name:<14}{wall:>9.0f}s  {verdict}")
    return 0 if all(rc == 0 for _, _, rc in results) else 1


if __name__ == "__main__":
    sys.exit(main())
