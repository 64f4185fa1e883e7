"""`ganray` command line. Exit codes: 0 done; 2 bad input; 1 failure during the run."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from ganray.config import ConfigError, load

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the user's input is wrong (exit 2), not that the run failed."""
    from ganray.checkpoint import CheckpointError
    from ganray.data import DataError
    from ganray.storage import StorageError

    return (ConfigError, DataError, CheckpointError, StorageError, FileNotFoundError)


def guarded(fn: Callable[[], int]) -> int:
    """Run `fn`, turning bad input into a message and exit 2."""
    try:
        return fn()
    except bad_input_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def add_config_args(p: argparse.ArgumentParser, config_required: bool = False) -> None:
    if config_required:
        p.add_argument("config", help="experiment YAML (configs/*.yaml)")
    else:
        p.add_argument("--config", default=None, help="experiment YAML; default: the embedded local defaults")
    p.add_argument("--storage", default=None, help="local path, s3://bucket/prefix or gs://bucket/prefix")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config key, e.g. --set train.lr_g=2e-4 (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny steps, widths and evaluation sizes (a run takes seconds), as experiment <name>-smoke")
    # SUPPRESS: `ganray -v train ...` (the top-level flag) is not reset by the subcommand's default
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                   help="sweeps: the full stream (ganray's, Ray's and the workers' logs) on the console instead of "
                        "a log file; ganray train: debug logging")


SMOKE = {
    "train.steps": 6,
    "train.log_every": 3,
    "train.eval_every": 3,
    "train.sample_every": 3,
    "train.checkpoint_every": 3,
    "train.batch_size": 16,
    "model.width": 0.125,
    "eval.n": 200,
    "eval.n_fixed_z": 16,
    "data.n_train": 2000,
}


def config_from_args(args: argparse.Namespace, defaults: dict | None = None):
    """Config from --config (or the embedded defaults plus a job's `defaults` when there is
    none), then --smoke, --storage and --set; later ones win."""
    overrides: dict = dict(defaults or {}) if getattr(args, "config", None) is None else {}
    if getattr(args, "smoke", False):
        overrides.update(SMOKE)
    if getattr(args, "storage", None):
        overrides["storage.uri"] = args.storage
    from ganray.config import parse_overrides

    overrides.update(parse_overrides(getattr(args, "overrides", [])))
    from ganray.storage import resolve_config

    cfg = load(getattr(args, "config", None), overrides)
    if getattr(args, "smoke", False):  # a smoke run never resumes, or is taken for, the real experiment
        cfg = cfg.replace(**{"experiment.name": f"{cfg.experiment.name}-smoke"})
    # once, here: trials and workers get the absolute URI (Tune gives each trial its own cwd)
    return resolve_config(cfg)


def cmd_validate(args) -> int:
    status = EXIT_OK
    for path in args.configs:
        try:
            load(path)
            print(f"{path}: OK")
        except ConfigError as e:
            status = EXIT_BAD_INPUT
            print(f"{path}: INVALID", file=sys.stderr)
            for err in e.errors:
                print(f"  {err}", file=sys.stderr)
    return status


def cmd_train(args) -> int:
    cfg = config_from_args(args)
    from ganray.storage import check_storage

    check_storage(cfg.storage.uri)
    from ganray.storage import experiment_uri

    print(f"ganray train {cfg.experiment.name}: {cfg.train.steps} steps, {cfg.data.dataset}, family "
          f"{cfg.train.family}, {'in this process' if args.local else 'on Ray Train'}\n"
          f"  results   {experiment_uri(cfg)}", flush=True)
    if args.local:
        from ganray.local import run_local, trial_uris

        result = run_local(cfg, progress=not args.quiet)
        trial_uri, _ = trial_uris(cfg, "train")
    else:
        from ganray.distributed import run_train

        result, trial_uri = run_train(cfg)
    v = result.verdict or {}
    print(f"done: {result.step} steps; verdict {v.get('verdict', 'n/a')}; trial at {trial_uri}")
    for r in v.get("reasons", []):
        print(f"  - {r}")
    if result.diverged:
        print(f"error: run diverged ({'; '.join(v.get('reasons', []))}); last good checkpoint kept in {trial_uri}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _delegate(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).main(argv)

    return run


# Subcommands implemented in their own modules, which parse their own arguments.
DELEGATED = {
    "eval": ("ganray.evaluate", "score samples or a checkpoint: metrics and a collapse verdict"),
    "classifier": ("ganray.metrics.classifier", "train or inspect reference classifiers"),
    "tensorboard": ("ganray.tensorboard", "TensorBoard on <storage>/<experiment>, local, S3 or GCS"),
    "sweep": ("ganray.sweep", "run a Ray Tune sweep (as jobs/sweep_zdim.py)"),
    "report": ("ganray.report", "write the sweep report for <storage>/<experiment>"),
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
    for name, (_module, helptext) in DELEGATED.items():
        sub.add_parser(name, help=helptext, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return guarded(lambda: _delegate(DELEGATED[argv[0]][0])(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return guarded(lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
