"""The reference classifier made ready before a run's workers start.

Without this, a dataset with no stored classifier (fashion-mnist, cifar10) gets one on first use,
inside the Evaluator: on rank 0, after DDP has started, for minutes on a CPU, while the other
ranks wait in their first collective (and a sweep's concurrent trials would each train one). So
the drivers call `prepare` before any worker starts — `ganray.sweep` once per experiment,
`ganray.distributed.run_train`, `ganray.local.run_local`:

  - nothing to do, and nothing said, when no metric of eval.metrics needs the classifier (2D
    data, or none that needs features), its key is shipped (mnist), or `<storage>/classifiers/`
    holds it;
  - found only in this machine's cache (`ganray classifier train` without --storage, or an
    earlier run with another storage): copied to `<storage>/classifiers/`, quietly;
  - otherwise one line is said, `make_ready` trains it (30 epochs on the whole train split) and
    stores it in `<storage>/classifiers/` and the cache of the machine it ran on, and a second
    line gives its held-out accuracy and where it went.

Why `<storage>/classifiers/`: it is the first place every worker looks
(`store.reference_classifier`) and the one place that every node of a cluster reads (the trial
record lives there too); a cache is one machine's. Where `make_ready` runs is the driver's
choice (`run`): under Ray, a task with one worker's resources (ganray.distributed), so that
the classifier is trained on a worker's device (a GPU trains it in seconds where a small head
node's CPU takes minutes) reading the data as the workers will; without Ray, in this process.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from ganray.config import Config
from ganray.metrics import POINTS, SPECS, applicable_metrics, data_kind
from ganray.metrics.classifier import classifier_key

log = logging.getLogger(__name__)

EPOCHS = 30  # what first use has always trained (store.reference_classifier's default)


def needs_classifier(cfg: Config) -> bool:
    """Whether a run of `cfg` builds the reference classifier: the loop evaluates (eval.metrics
    not empty) and a metric that applies to the dataset needs its features (collapse.Evaluator)."""
    if not cfg.eval.metrics or data_kind(cfg.data.dataset) == POINTS or cfg.data.dataset.startswith("cyclegan:"):
        return False  # 2-D mixtures and the CycleGAN photo pairs have no classifier
    return any(SPECS[m].needs_features for m in applicable_metrics(cfg.data.dataset, cfg.eval.metrics))


def make_ready(cfg: Config) -> dict[str, Any]:
    """Train the classifier of `cfg.data.dataset` and store it in `<storage>/classifiers/` and this
    machine's cache; returns its record and `where` (the storage file). Run by `prepare` (under
    Ray, in a task: module-level, so that it pickles by name)."""
    import torch  # noqa: PLC0415 (where it runs: a Ray task imports it there)

    from ganray.metrics.classifier.store import cache_folder, storage_folder, train_and_store  # noqa: PLC0415

    device = "cuda" if cfg.scaling.use_gpu and torch.cuda.is_available() else "cpu"
    folders = [storage_folder(cfg.storage.uri), cache_folder(cfg.data)]
    _, info = train_and_store(cfg.data, folders, epochs=EPOCHS, device=device)
    return {**info, "where": f"{folders[0]}/{classifier_key(cfg.data.dataset)}.pt", "device": device}


def prepare(cfg: Config, *, say: Callable[[str], None] = print,
            run: Callable[[Callable[[Config], dict], Config], dict] | None = None) -> dict[str, Any] | None:
    """Make the reference classifier of `cfg` ready where its workers look (module docstring).

    `cfg` has its storage resolved (the workers get the same). `run(make_ready, cfg)` trains it
    where the driver chooses (default: here). Returns make_ready's record when it trained one,
    else None. Storage errors propagate: the run could not store its record either."""
    if not needs_classifier(cfg):
        return None
    from ganray.metrics.classifier import store  # noqa: PLC0415 (torch: only when a run needs it)

    key = classifier_key(cfg.data.dataset)
    stored = store.storage_folder(cfg.storage.uri)
    if key in store.SHIPPED or store.load_classifier(stored, key) is not None:
        return None
    cached = store.load_classifier(store.cache_folder(cfg.data), key)
    if cached is not None:  # the workers look in storage first, and their node's cache may be another
        store.save_classifier(*cached, stored, key)
        log.info("%s classifier copied from %s to %s, where every worker looks", key, store.cache_folder(cfg.data),
                 stored)
        return None
    say(f"  classifier  none stored for {key}: training it before the workers start "
        f"({EPOCHS} epochs on its train split; minutes on a CPU, seconds on a GPU)")
    t0 = time.time()
    info = (run or (lambda fn, c: fn(c)))(make_ready, cfg)
    say(f"  classifier  {key} ready in {time.time() - t0:.0f} s on {info['device']}: held-out accuracy "
        f"{info['held_out_accuracy']:.1%} on {info['n_test']:,} images -> {info['where']}")
    if store.load_classifier(stored, key) is None:  # trained on a node whose storage this driver does not see
        say(f"  classifier  warning: {stored} does not show it from here; workers that cannot read it "
            "train their own on first use (is the storage shared by every node?)")
    return info
