"""`ganray report <storage>/<experiment> [--samples N]`: write the sweep report. An entry point:
it hands the report (ganray.report, which never imports torch) the regenerator of samples.

Exit codes: 0 written, 2 bad input (malformed URI, no such experiment, bad --samples), 1 a
failure while writing.
"""
from __future__ import annotations

import argparse
import logging
import sys

from ganray import storage
from ganray.config import ConfigError
from ganray.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput
from ganray.report import write_report

log = logging.getLogger(__name__)


class _LazyRegenerate:
    """ganray.regenerate, imported (with torch) on first use only: a report without --samples and
    without VAE trials reads the record alone and never loads torch."""

    def __init__(self, threads: int) -> None:
        self._threads = threads

    def __getattr__(self, name: str):
        import torch  # noqa: PLC0415 — on first use, not at the top (see the class docstring)

        from ganray import regenerate  # noqa: PLC0415
        torch.set_num_threads(max(1, self._threads))
        return getattr(regenerate, name)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganray report",
        description="Write the sweep report (report.md, report.html, trials.csv, figures/) next to the trials "
                    "of <storage>/<experiment>.")
    p.add_argument("experiment", help="<storage>/<experiment>: a local path, s3://bucket/prefix/exp or gs://...")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="regenerate N samples from each trial's newest checkpoint and show their class histogram "
                        "instead of the one of the evaluation's counts in verdict.json (default: the counts; "
                        "records written before the counts existed need this for a histogram)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for regenerating samples (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    """`ganray report <storage>/<experiment>`: 0 written, 2 bad input, 1 failure."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        errs = storage.check_storage_uri(args.experiment, "experiment")
        if errs:
            raise ConfigError(errs)
        if storage.split_uri(args.experiment)[0] != "file":
            # a missing bucket, no credentials, an unreachable endpoint: bad input, found before reading
            storage.check_storage(args.experiment)
        if args.samples is not None and args.samples < 1:
            raise ConfigError(f"--samples: must be >= 1 (got {args.samples})")
        where = write_report(args.experiment, samples=args.samples, regenerate=_LazyRegenerate(args.threads))
    except BadInput as e:  # the user's input (storage: a malformed URI, a missing bucket)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 — the command's last word: exit 1 with the cause logged
        log.exception("report failed")
        print(f"error: report failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"report: {where}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
