"""Published protocols as jobs: the protocol's preset swept with ganray.sweep (variants x seeds),
then <exp>/protocol.md, the paper's rows beside ganray's (ganray.report.protocol), printed too.

    python jobs/protocol_pacgan.py [--epochs E] [--seeds N] [--dataset ring8|grid25] [sweep options]
    python jobs/protocol_stacked_mnist.py [--epochs E] [--seeds N] [sweep options]

Every option of a sweep job is there (--config, --storage, --set, --smoke, --no-report, -v); the
protocol's own ones are shorthands for --set:

    --epochs E    train.steps = E x the authors' steps per epoch; evaluations (and checkpoints)
                  every E // 20 epochs (at least one), and always at the last step
    --seeds N     sweep.seeds = 0 .. N-1 (the authors ran 10 per row); any list: --set sweep.seeds=[...]
    --dataset D   only the variants of dataset D (variant names start with "D-"), where the
                  protocol has several datasets

--smoke runs one seed per row unless --seeds says otherwise. With --smoke and no --config, a job with a CPU smoke preset (Stacked MNIST: its GPU preset needs a
GPU and the MNIST download) runs that preset instead, at the sweep's smoke sizes.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ganray import storage
from ganray.args import job_config, load_config
from ganray.artifacts import reader
from ganray.config import ConfigError, parse_overrides, parse_variant
from ganray.exits import EXIT_BAD_INPUT, EXIT_FAILED, BadInput
from ganray.report.protocol import Protocol, write_protocol
from ganray.storage import StorageError
from ganray.sweep import main as sweep_main
from ganray.sweep import parser as sweep_parser

log = logging.getLogger(__name__)

SMOKE_SEEDS = 1  # --smoke without --seeds: one seed per row (each trial's start costs seconds)
EVALUATIONS = 20  # --epochs E: about this many evaluations, at whole epochs (the authors evaluate every epoch)


@dataclass(frozen=True)
class ProtocolJob:
    protocol: Protocol
    preset: Path  # the protocol as the authors ran it
    steps_per_epoch: int  # the authors' epoch in ganray's steps (PacGAN 2-D: 100,000 packs / 100 = 1,000)
    description: str
    datasets: tuple[str, ...] = ()  # variant-name prefixes --dataset chooses from; () = no --dataset
    smoke_preset: Path | None = None  # run by --smoke without --config


def positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def _own_options(p: argparse.ArgumentParser, job: ProtocolJob) -> argparse.ArgumentParser:
    g = p.add_argument_group("protocol")
    g.add_argument("--epochs", type=positive, default=None,
                   help=f"train this many of the authors' epochs ({job.steps_per_epoch:,} steps each; "
                        f"the preset: {job.protocol.authors_steps // job.steps_per_epoch})")
    g.add_argument("--seeds", type=positive, default=None,
                   help="seeds 0..N-1 per row (the authors: 10); any list: --set sweep.seeds=[...]")
    if job.datasets:
        g.add_argument("--dataset", choices=job.datasets, default=None, help="only this dataset's variants")
    return p


def protocol_overrides(job: ProtocolJob, args: argparse.Namespace, preset: Path) -> list[str]:
    """The --set items the protocol's own options stand for."""
    out: list[str] = []
    if args.epochs is not None:
        steps = args.epochs * job.steps_per_epoch
        every = job.steps_per_epoch * max(1, args.epochs // EVALUATIONS)
        out += [f"train.steps={steps}", f"train.eval_every={every}", f"train.checkpoint_every={every}",
                f"train.log_every={min(every, job.steps_per_epoch)}"]
    seeds = args.seeds if args.seeds is not None else (SMOKE_SEEDS if args.smoke else None)
    if seeds is not None:
        out.append(f"sweep.seeds=[{', '.join(str(s) for s in range(seeds))}]")
    if getattr(args, "dataset", None):
        cfg = load_config(args.config or preset, parse_overrides(args.overrides))
        keep = [v for v in cfg.sweep.variants if parse_variant(v)[0].startswith(f"{args.dataset}-")]
        if not keep:
            raise ConfigError(f"--dataset {args.dataset}: no sweep.variants entry is named {args.dataset}-...")
        out.append("sweep.variants=" + yaml.safe_dump(keep, default_flow_style=True, width=10_000).strip())
    return out


def run_protocol(job: ProtocolJob, argv: list[str] | None = None) -> int:
    """The job's command line: the sweep (ganray.sweep.main), then protocol.md. Exit codes as a sweep's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _own_options(sweep_parser(job.description), job).parse_args(argv)
    _, rest = _own_options(argparse.ArgumentParser(add_help=False), job).parse_known_args(argv)
    preset = job.smoke_preset if args.smoke and args.config is None and job.smoke_preset else job.preset
    try:
        extra = protocol_overrides(job, args, preset)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sweep_argv = rest + [x for item in extra for x in ("--set", item)]
    rc = sweep_main(sweep_argv, description=job.description, preset=str(preset))
    if rc == EXIT_BAD_INPUT:
        return rc
    # the finished trials' records make the table, after a failed trial too (its notes say what is missing)
    cfg, _ = job_config(sweep_parser(job.description).parse_args(sweep_argv), preset)
    try:
        uri, text = write_protocol(storage.experiment_uri(cfg), job.protocol)
    except (reader.ExperimentNotFound, StorageError) as e:
        print(f"error: no protocol table: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(text, end="")
    print(f"protocol table: {uri}")
    return rc
