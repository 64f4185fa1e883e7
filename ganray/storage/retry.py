"""The one retry loop of ganray: storage operations and dataset downloads both run through
`with_retry`. Each try that fails with a transient error (the caller's `classify` says which)
is logged and followed by a pause that doubles from `first_pause_sec` up to `max_pause_sec`,
each drawn within ±`jitter` of its nominal length so that many workers hit by the same
outage do not retry in step; it stops at the first success, a permanent error, or when the
budget (a time, a number of tries, or both) is spent."""
from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from ganray.storage.errors import StorageInputError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_RETRY_SEC = 60.0                # how long one storage operation keeps retrying transient errors
RETRY_ENV = "GANRAY_STORAGE_RETRY_SEC"  # overrides DEFAULT_RETRY_SEC


@dataclass(frozen=True)
class Budget:
    """How long an operation keeps retrying, and how it waits between tries."""
    seconds: float | None = None  # stop once this much time has passed since the first try
    tries: int | None = None      # stop after this many tries; None: no limit on either
    first_pause_sec: float = 0.5  # pause after the first failed try; doubles after each next
    max_pause_sec: float = 8.0
    jitter: float = 0.2           # each pause is its nominal length times U(1 - jitter, 1 + jitter)


def with_retry(what: str, where: str, op: Callable[[], T], budget: Budget,
               classify: Callable[[Exception], str | None],
               give_up: Callable[[int, str], Exception], logger: logging.Logger = log) -> T:
    """Run `op` until it returns. An exception from it goes to `classify`: a reason (a short
    string) marks it transient, to retry while the budget lasts; None re-raises it as it is;
    classify may raise an error of its own instead (a permanent one, translated). When the
    budget is spent, `give_up(tries, last reason)` is raised from the last error."""
    deadline = None if budget.seconds is None else time.monotonic() + budget.seconds
    delay, tries = budget.first_pause_sec, 0
    while True:
        tries += 1
        try:
            return op()
        except Exception as e:  # noqa: BLE001 — classify decides; nothing is swallowed
            reason = classify(e)
            if reason is None:
                raise
            left_sec = float("inf") if deadline is None else deadline - time.monotonic()
            if left_sec <= 0 or (budget.tries is not None and tries >= budget.tries):
                raise give_up(tries, reason) from e
            pause = min(left_sec, delay * random.uniform(1 - budget.jitter, 1 + budget.jitter))
            left = [f"{left_sec:.0f} s"] if deadline is not None else []
            if budget.tries is not None:
                left.append(f"{budget.tries - tries} tries")
            logger.warning("%s: %s failed (%s); try %d, retrying in %.1f s (%s left)",
                           where, what, reason, tries, pause, ", ".join(left) or "no limit")
            time.sleep(pause)
            delay = min(delay * 2, budget.max_pause_sec)


def retry_budget_sec(retry_sec: float | None = None) -> float:
    """Seconds a storage operation keeps retrying transient errors: the argument, else
    $GANRAY_STORAGE_RETRY_SEC, else DEFAULT_RETRY_SEC."""
    if retry_sec is not None:
        return max(0.0, float(retry_sec))
    env = os.environ.get(RETRY_ENV)
    if env:
        try:
            return max(0.0, float(env))
        except ValueError:
            raise StorageInputError(f"{RETRY_ENV}={env!r} is not a number of seconds") from None
    return DEFAULT_RETRY_SEC
