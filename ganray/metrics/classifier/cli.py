"""`ganray classifier train --dataset D [--storage URI | --out DIR]`: train a reference classifier
and store it with its held-out accuracy. Exit codes: 0 done, 2 bad input, 1 storage failure."""
from __future__ import annotations

import argparse
import logging
import sys

import torch

from ganray.config import ConfigError, DataConfig
from ganray.data import DataUnavailable
from ganray.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, BadInput
from ganray.metrics.classifier import IMAGE_DATASETS, classifier_key
from ganray.metrics.classifier.model import Arch
from ganray.metrics.classifier.store import cache_folder, save_classifier, storage_folder
from ganray.metrics.classifier.training import train_classifier
from ganray.storage import StorageError, check_storage_uri


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganray classifier", description="Train and store a reference classifier.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the classifier of a dataset and store it with its held-out accuracy")
    t.add_argument("--dataset", required=True, help=f"one of {', '.join(IMAGE_DATASETS)}")
    where = t.add_mutually_exclusive_group()
    where.add_argument("--storage", default=None, help="storage URI; the classifier goes to <URI>/classifiers/<key>.pt")
    where.add_argument("--out", default=None, help="exact folder (or URI) for <key>.pt/.json (default: the cache)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--width", type=int, default=Arch.width, help="channels of the first conv layer")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    t.add_argument("--source", default="", help="data.source: folder or URI holding the official files")
    t.add_argument("--cache-dir", default="", help="data.cache_dir")
    return p


def main(argv: list[str] | None = None) -> int:
    """`ganray classifier train --dataset D [--storage URI | --out DIR]`: 0 done, 2 bad input, 1 failure."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.dataset not in IMAGE_DATASETS:
            raise ConfigError(f"--dataset: unknown image dataset {args.dataset!r}; allowed: {', '.join(IMAGE_DATASETS)}")
        if args.epochs < 1 or args.width < 1:
            raise ConfigError(f"--epochs and --width: must be >= 1 (got {args.epochs}, {args.width})")
        for flag, uri in (("--storage", args.storage), ("--out", args.out), ("--source", args.source)):
            if uri:
                errs = check_storage_uri(uri, flag)
                if errs:
                    raise ConfigError(errs)
        torch.set_num_threads(max(1, args.threads))
        data_cfg = DataConfig(dataset=args.dataset, source=args.source, cache_dir=args.cache_dir)
        key = classifier_key(args.dataset)
        out = args.out or (storage_folder(args.storage) if args.storage else cache_folder(data_cfg))
        model, info = train_classifier(args.dataset, data_cfg=data_cfg, epochs=args.epochs, seed=args.seed, width=args.width)
        info["command"] = "ganray classifier " + " ".join(sys.argv[1:] if argv is None else argv)
        where = save_classifier(model, info, out, key)
    except BadInput as e:  # the arguments, the data
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StorageError, DataUnavailable) as e:  # reading the data or storing the classifier failed
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.dataset} classifier: held-out accuracy {info['held_out_accuracy']:.2%} "
          f"on {info['n_test']:,} images -> {where}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
