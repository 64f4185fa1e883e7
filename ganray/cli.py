"""`ganray` command line. Exit codes: 0 done; 2 bad input; 1 failure during the run."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable

from ganray import storage, sweep, tensorboard, tracking
from ganray.args import RUN_FAILURES, add_config_args, config_from_args, load_config
from ganray.artifacts import layout
from ganray.config import ConfigError
from ganray.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput


def guarded(fn: Callable[[], int]) -> int:
    """Run `fn`, turning bad input into a message and exit 2."""
    try:
        return fn()
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def cmd_validate(args) -> int:
    status = EXIT_OK
    for path in args.configs:
        try:
            load_config(path)
            print(f"{path}: OK")
        except ConfigError as e:
            status = EXIT_BAD_INPUT
            print(f"{path}: INVALID", file=sys.stderr)
            for err in e.errors:
                print(f"  {err}", file=sys.stderr)
    return status


def cmd_train(args) -> int:
    cfg = config_from_args(args)
    try:  # the preflight: a storage that cannot be reached before the run is bad input
        storage.check_storage(cfg.storage.uri)
    except storage.StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if cfg.eval.inception:  # torch-fidelity and its weights, before the run (InceptionError: exit 2)
        from ganray.metrics.inception import InceptionUnavailable, preflight  # noqa: PLC0415 (torch: when asked)

        try:
            preflight(cfg)
        except InceptionUnavailable as e:  # their download server or bucket kept failing: exit 1
            print(f"error: run failed: {e}", file=sys.stderr)
            return EXIT_FAILED
    tracking.preflight(cfg)  # the tracking server answers, W&B has credentials (TrackerUnavailable: exit 2)
    tracked = tracking.describe(cfg)
    print(f"ganray train {cfg.experiment.name}: {cfg.train.steps} steps, {cfg.data.dataset}, family "
          f"{cfg.train.family}, {'in this process' if args.local else 'on Ray Train'}\n"
          + (f"  tracking  {tracked}, when the run has finished\n" if tracked else "")
          + f"  results   {storage.experiment_uri(cfg)}", flush=True)
    try:
        result, trial_uri = _run(cfg, args)
    except RUN_FAILURES as e:  # during the run: a failure (exit 1), not bad input
        logging.getLogger(__name__).error("the run failed", exc_info=True)  # the cause, with its traceback
        print(f"error: run failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    v = result.verdict or {}
    print(f"done: {result.step} steps; verdict {v.get('verdict', 'n/a')}; trial at {trial_uri}")
    for r in v.get("reasons", []):
        print(f"  - {r}")
    if tracked:  # a tracker's failure is logged; the run's exit code stands
        tracking.track_finished_run(cfg, trial_uri.rstrip("/").rsplit("/", 1)[-1], failed=result.diverged)
    if result.diverged:
        print(f"error: run diverged ({'; '.join(v.get('reasons', []))}); last good checkpoint kept in {trial_uri}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _run(cfg, args):
    """(result, trial URI) of one run. The runners are imported here, not at the top: they load
    torch (and Ray), which `ganray validate` must not pay for."""
    if args.local:
        from ganray.local import run_local  # noqa: PLC0415 (torch: see above)

        result = run_local(cfg, progress=not args.quiet)
        return result, layout.trial_paths(storage.experiment_uri(cfg), "train").trial
    from ganray.distributed import run_train  # noqa: PLC0415 (torch and Ray: see above)

    return run_train(cfg)


def _lazy(module: str) -> Callable[[list[str]], int]:
    """The `main` of `module`, imported when the subcommand runs."""
    def run(argv: list[str]) -> int:
        return importlib.import_module(module).main(argv)

    return run


# Subcommands implemented in their own modules, which parse their own arguments: name -> (main,
# help). eval, classifier and report load torch (and matplotlib) when imported, over a second
# that `ganray validate` (0.1 s) and `ganray --help` must not pay: they are named here and
# imported when chosen (schema too: light, but no other command needs it). sweep and tensorboard
# import nothing heavy and are imported normally.
DELEGATED: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "eval": (_lazy("ganray.evaluate"), "score samples or a checkpoint: metrics and a collapse verdict"),
    "classifier": (_lazy("ganray.metrics.classifier.cli"), "train or inspect reference classifiers"),
    "tensorboard": (tensorboard.main, "TensorBoard on <storage>/<experiment>, local, S3 or GCS"),
    "sweep": (sweep.main, "run a Ray Tune sweep (as jobs/sweep_zdim.py)"),
    "report": (_lazy("ganray.report_cli"), "write the sweep report for <storage>/<experiment>"),
    "schema": (_lazy("ganray.schema"), "print the config's JSON Schema (configs/ganray.schema.json)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganray", description="Distributed GAN training on Ray with collapse verdicts.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check config files; exit 0 if all are valid, 2 otherwise")
    v.add_argument("configs", nargs="+")
    v.set_defaults(fn=cmd_validate)
    t = sub.add_parser("train", help="train one run (on Ray; --local: in this process)")
    add_config_args(t, config_required=True)
    t.add_argument("--local", action="store_true", help="run in-process without Ray")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)
    for name, (_main, helptext) in DELEGATED.items():
        sub.add_parser(name, help=helptext, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return guarded(lambda: DELEGATED[argv[0]][0](argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return guarded(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
