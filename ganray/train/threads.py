"""The torch CPU threads of a training process (`train.threads`).

A CPU run's numbers depend on how many threads torch splits its sums over: the blocks of a
convolution's or matmul's reduction are added in another order, so the float32 results differ in
the last bits within the first steps, and over a few hundred steps a verdict can differ
(docs/distributed.md, "Reproducibility"). Left to itself, torch takes its thread count from
OMP_NUM_THREADS, or else from the machine's cores; a sweep's Tune actor and a Ray Train worker get
OMP_NUM_THREADS from Ray (their CPUs), a `ganray train --local` process gets whatever the shell
has. So every place where a training process starts pins the same count from the config:
`ganray.local.run_local` and `run_trial` (`ganray train --local`, single-worker sweep trials),
`ganray.distributed.train_worker` (Ray Train workers) and the Ray task that trains a missing
reference classifier.

Only the intra-op threads are pinned. torch's inter-op pool (torch.jit.fork and the like; eager
ops, their backward and the loop never use it) does not change a result, and
torch.set_num_interop_threads may be called once per process, before any parallel work, which a
reused Tune actor or a test process cannot promise.
"""
from __future__ import annotations

import logging

import torch

from ganray.config import Config

log = logging.getLogger(__name__)


def train_threads(cfg: Config) -> int:
    """train.threads; 0 = scaling.cpus_per_worker rounded down (0.5 CPU: 1), at least 1."""
    return max(1, cfg.train.threads or int(cfg.scaling.cpus_per_worker))


_said: dict[str, str] = {}  # the last line this process logged


def pin_threads(cfg: Config, *, say: bool = True) -> int:
    """torch.set_num_threads(train_threads(cfg)) in this process; returns the count. `say`: an
    INFO line with the count, where it came from and, when it changed, what torch had before;
    once per process while the count and its source stay the same (a reused Tune actor's next
    trial, run_trial after run_local)."""
    n, before = train_threads(cfg), torch.get_num_threads()
    torch.set_num_threads(n)
    source = "train.threads" if cfg.train.threads else f"scaling.cpus_per_worker {cfg.scaling.cpus_per_worker:g}"
    line = f"torch threads: {n} ({source}"
    if say and _said.get("line") != line:
        log.info("%s%s)", line, f"; torch had {before}" if before != n else "")
        _said["line"] = line
    return n
