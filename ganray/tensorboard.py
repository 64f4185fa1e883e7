"""`ganray tensorboard <storage>/<experiment>`: TensorBoard on <storage>/<experiment>/tensorboard,
every trial a run, for a local path, s3:// or gs://, with the storage endpoints carried over.

How TensorBoard (without TensorFlow installed) reads each scheme:
- local: directly (the fast Rust data server when it is available).
- s3://: its built-in S3 reader, boto3 with `endpoint_url=$S3_ENDPOINT`; S3_ENDPOINT is set
  from AWS_ENDPOINT_URL(_S3) so an S3-compatible server is reached; credentials and region
  come from boto3's standard chain. The Rust data server does not read s3://, so
  --load_fast=false (TensorBoard would fall back to it anyway).
- gs://: the Rust data server reads real GCS; with STORAGE_EMULATOR_HOST set (the emulator)
  --load_fast=false makes TensorBoard read through fsspec/gcsfs, which honour it (gcsfs comes
  with the `gcs` extra: pip install -e '.[gcs]' in the ganray checkout; without it this command exits 2).
Extra arguments (e.g. --reload_interval 5) are passed on to TensorBoard.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import subprocess
import sys

from ganray import storage
from ganray.artifacts import layout
from ganray.exits import EXIT_BAD_INPUT

log = logging.getLogger(__name__)


def logdir(experiment_uri: str) -> str:
    """<storage>/<experiment>/tensorboard: one sub-folder (a run) per trial."""
    return storage.join(experiment_uri, layout.TENSORBOARD_DIR)


def tensorboard_command(experiment_uri: str, *, port: int = 6006, host: str = "localhost",
                        extra: list[str] | tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that run TensorBoard on the experiment; raises StorageError for a
    malformed URI."""
    storage.validate_uri(experiment_uri)
    scheme, path = storage.split_uri(experiment_uri)
    target = path + "/tensorboard" if scheme == "file" else logdir(experiment_uri)
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir", target, "--port", str(port), "--host", host]
    env = dict(os.environ)
    if scheme == "s3":
        ep = storage.s3_endpoint()
        if ep:
            env["S3_ENDPOINT"] = ep  # the only endpoint variable TensorBoard's S3 reader passes to boto3
        argv.append("--load_fast=false")  # the data server reads local and gs:// paths only
    elif scheme == "gs" and storage.gcs_endpoint():
        env["STORAGE_EMULATOR_HOST"] = storage.gcs_endpoint()
        # gcsfs would ask the storage-control API (absent from the emulator) for each bucket's layout
        env.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        argv.append("--load_fast=false")  # the data server's own GCS client ignores the emulator
    return argv + list(extra), env


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganray tensorboard",
        description="TensorBoard on <storage>/<experiment>/tensorboard (local, s3:// or gs://); "
                    "other arguments are passed on to tensorboard.")
    p.add_argument("experiment", help="<storage>/<experiment>, e.g. s3://bucket/ganray/zdim-mnist")
    p.add_argument("--port", type=int, default=6006)
    p.add_argument("--host", default="localhost", help="address to listen on (0.0.0.0 for all)")
    return p


def main(argv: list[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    try:
        cmd, env = tensorboard_command(args.experiment, port=args.port, host=args.host, extra=extra)
        scheme, path = storage.split_uri(args.experiment)
        if scheme == "gs" and "--load_fast=false" in cmd and importlib.util.find_spec("gcsfs") is None:
            # TensorBoard's Python loader reads gs:// through fsspec, which needs gcsfs (the gcs extra)
            print("error: reading gs:// with --load_fast=false (the GCS emulator, or asked for) needs gcsfs: "
                  "pip install -e '.[gcs]' in the ganray checkout", file=sys.stderr)
            return EXIT_BAD_INPUT
        if scheme == "file":
            if not os.path.isdir(path + "/tensorboard"):
                print(f"note: no event files yet under {path}/tensorboard; TensorBoard will wait for them",
                      file=sys.stderr)
        else:
            storage.check_storage(args.experiment, write_probe=False)  # bucket, credentials, endpoint
    except storage.StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"TensorBoard on {logdir(args.experiment)} at http://{args.host}:{args.port}/", file=sys.stderr)
    return _run(cmd, env)


def _run(cmd: list[str], env: dict[str, str]) -> int:
    """Run TensorBoard in the foreground; SIGTERM/SIGINT are passed on to it."""
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        proc.send_signal(signum)

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, forward)
    except ValueError:  # not the main thread: no handlers, the child is still stopped in `finally`
        pass
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
