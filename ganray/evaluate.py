"""`ganray eval`: metrics and a collapse verdict for a file of samples or for a checkpoint.

    ganray eval SAMPLES.npy --dataset D [--json]     float array in [-1, 1]: N x C x H x W, or N x 2 (2D data)
    ganray eval CHECKPOINT [--n 10000] [--json]      generates with G_ema when the checkpoint has one
    ganray eval <storage>/<experiment>/trials/<trial>  the trial's newest checkpoint (read from its record)

Also `python -m ganray.evaluate ...`. `--json` prints one object:
{"dataset", "n", "metrics": {...}, "verdict", "reasons": [...], "margin": {...}} (margin: the deciding
statistic, its threshold and interval, docs/metrics.md "Margins"; null when diverged). `--inception` adds fid, kid_inception,
inception_score (and their std) to the metrics (RGB datasets; ganray/metrics/inception.py).
Exit codes (ganray.exits): 0 done (whatever the verdict), 2 bad input (missing or malformed file,
wrong shape or value range, unknown dataset, unreadable checkpoint), 1 failure while evaluating
(e.g. the storage holding the checkpoint cannot be reached).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganray import exits, storage
from ganray.args import check_config
from ganray.artifacts import layout, reader
from ganray.config import DATASETS, Config, EvalConfig, is_2d, parse_overrides
from ganray.data import DataUnavailable
from ganray.exits import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from ganray.storage import StorageError, resolve_config

log = logging.getLogger(__name__)

RANGE_TOLERANCE = 1e-3  # images may overshoot [-1, 1] by float rounding, no more
MIN_SAMPLES = 10
# Default sample counts: the stacked-MNIST paper protocol, PacGAN's 2D protocol, else 10,000.
N_STACKED, N_2D, N_IMAGES = 26_000, 2_500, 10_000


class BadInput(exits.BadInput, ValueError):
    """Anything wrong with what the user gave: exit code 2."""


def default_n(dataset: str) -> int:
    if is_2d(dataset):
        return N_2D
    return N_STACKED if dataset == "stacked-mnist" else N_IMAGES


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ganray eval",
        description="Score generated samples (.npy) or a checkpoint: collapse metrics and a verdict.",
    )
    p.add_argument("source", help="SAMPLES.npy (with --dataset), a checkpoint file or folder, or a trial folder "
                        "(<storage>/<experiment>/trials/<trial>: its newest checkpoint); local, s3:// or gs://")
    p.add_argument("--dataset", default=None, help=f"dataset of SAMPLES.npy: {', '.join(DATASETS)}")
    p.add_argument("--n", type=int, default=None,
                   help="checkpoint: samples to generate (default 10,000; stacked-mnist 26,000; 2D 2,500)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--storage", default=None, help="storage URI holding classifiers/ (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. eval.kl_partial=0.2 or data.source=gs://bucket/mnist")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (checkpoint)")
    p.add_argument("--inception", action="store_true",
                   help="also FID, KID and Inception Score in Inception features (RGB data; pip install -e "
                        "'.[fid]' in the ganray checkout; weights: --set eval.inception_weights=PATH, else downloaded once)")
    return p


def load_samples(path: str) -> np.ndarray:
    """The float array in a .npy file, or BadInput naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{path}: file not found")
    with open(p, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise BadInput(f"{path}: not a .npy file (no NUMPY header); save samples with numpy.save")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise BadInput(f"{path}: not a readable .npy array ({e})") from None
    if not isinstance(arr, np.ndarray):
        raise BadInput(f"{path}: expected one array, got {type(arr).__name__}")
    if arr.dtype.kind != "f":
        raise BadInput(f"{path}: expected a float array in [-1, 1], got dtype {arr.dtype} "
                       "(scale uint8 pixels with x / 127.5 - 1)")
    return arr


def check_samples(arr: np.ndarray, dataset: str, shape: tuple[int, ...], path: str) -> torch.Tensor:
    """Shape (N, *shape) and range checks; the samples as float32 [N, ...]."""
    two_d = len(shape) == 1
    want = "N x 2" if two_d else "N x " + " x ".join(map(str, shape))
    if arr.ndim != len(shape) + 1 or tuple(arr.shape[1:]) != tuple(shape):
        raise BadInput(f"{path}: shape {tuple(arr.shape)} does not fit {dataset}: expected {want}")
    if arr.shape[0] < MIN_SAMPLES:
        raise BadInput(f"{path}: {arr.shape[0]} samples; need at least {MIN_SAMPLES}")
    if not np.isfinite(arr).all():
        raise BadInput(f"{path}: {int((~np.isfinite(arr)).sum()):,} values are NaN or inf")
    lo, hi = float(arr.min()), float(arr.max())
    if not two_d and (lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE):
        raise BadInput(f"{path}: values span [{lo:.3g}, {hi:.3g}]; images must be in [-1, 1] "
                       "(x / 127.5 - 1 for 0..255 pixels, 2x - 1 for [0, 1])")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _with_overrides(cfg: Config, overrides: list[str], storage: str | None, inception: bool = False) -> Config:
    ov = parse_overrides(overrides)
    if storage:
        ov["storage.uri"] = storage
    if inception:
        ov["eval.inception"] = True
    # the default storage (./ganray_results) is where reference classifiers trained by runs are kept
    return resolve_config(check_config(cfg.replace(**ov) if ov else cfg))


def _real(cfg: Config):
    from ganray.data import load_dataset  # noqa: PLC0415

    return load_dataset(cfg.data, "train")


def evaluate_array(x: torch.Tensor, cfg: Config, real=None, asked=None) -> dict[str, Any]:
    """The JSON payload for samples x of cfg.data.dataset (asked: what a conditional family's samples were
    asked for, ganray.train.sampling.Asked)."""
    from ganray.collapse import Evaluator  # noqa: PLC0415

    real = real if real is not None else _real(cfg)
    evaluator = Evaluator(cfg, real, "cpu")
    res = evaluator(x, None, 0, [], **({} if asked is None else {"conditions": asked.labels,
                                                                  "attributes": asked.attributes}))
    if res.verdict != "diverged":  # FID, KID, IS in Inception features when eval.inception (--inception)
        res.metrics.update(evaluator.inception_metrics(x))
    metrics = {k: (v if math.isfinite(v) else None) for k, v in res.metrics.items()}  # JSON has no NaN
    return {"dataset": cfg.data.dataset, "n": int(x.shape[0]), "metrics": metrics, "verdict": res.verdict,
            "reasons": res.reasons, "margin": res.margin}


def eval_samples(args: argparse.Namespace) -> dict[str, Any]:
    if not args.dataset:
        raise BadInput("--dataset is required with a samples file (e.g. --dataset mnist5k)")
    if args.dataset not in DATASETS:
        raise BadInput(f"--dataset: unknown dataset {args.dataset!r}; allowed: {', '.join(DATASETS)}")
    if args.n is not None:
        raise BadInput("--n applies to checkpoints; a samples file is scored whole")
    arr = load_samples(args.source)
    cfg = _with_overrides(Config().replace(**{"data.dataset": args.dataset}), args.overrides, args.storage,
                          args.inception)
    real = _real(cfg)
    x = check_samples(arr, args.dataset, real.shape, args.source)
    return evaluate_array(x, cfg, real)


def checkpoint_source(source: str) -> str:
    """A checkpoint file or a folder holding checkpoint.pt as given; a trial folder: its newest
    checkpoint, as the trial record's reader finds it (`source` itself when it has none)."""
    if source.endswith(".pt") or storage.exists(storage.join(source, layout.CHECKPOINT_FILE)):
        return source
    return reader.latest_checkpoint(source) or source


def eval_checkpoint(args: argparse.Namespace) -> dict[str, Any]:
    from ganray import regenerate  # noqa: PLC0415
    from ganray.train import checkpoint  # noqa: PLC0415
    state = checkpoint.load(checkpoint_source(args.source))
    cfg = checkpoint.config_of(state)
    if not cfg.eval.metrics:  # the run evaluated nothing; scoring it is what was asked for
        cfg = cfg.replace(**{"eval.metrics": list(EvalConfig().metrics)})
    cfg = _with_overrides(cfg, args.overrides, args.storage, args.inception)
    if args.dataset and args.dataset != cfg.data.dataset:
        raise BadInput(f"--dataset {args.dataset}: the checkpoint was trained on {cfg.data.dataset}")
    n = args.n if args.n is not None else default_n(cfg.data.dataset)
    if n < MIN_SAMPLES:
        raise BadInput(f"--n: need at least {MIN_SAMPLES} samples (got {n})")
    real = _real(cfg)
    G, which = regenerate.generator(state, real.shape, where=args.source)  # G_ema when the checkpoint has one
    log.info("generating %d samples with %s from step %s", n, which, state.get("step"))
    x, asked = regenerate.samples(cfg, G, n, seed=args.seed, real=real)  # conditional: a balanced request
    return evaluate_array(x, cfg, real, asked)


def format_text(payload: dict[str, Any]) -> str:
    lines = [f"{payload['dataset']}: {payload['n']:,} samples -> {payload['verdict']}"]
    lines += [f"  - {r}" for r in payload["reasons"]]
    if payload.get("margin"):
        from ganray.collapse import format_margin  # noqa: PLC0415 (torch: loaded by the evaluation already)

        lines.append(f"  {format_margin(payload['margin'])}")
    width = max((len(k) for k in payload["metrics"]), default=0)
    for k, v in payload["metrics"].items():
        lines.append(f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        is_npy = args.source.endswith(".npy")
        payload = eval_samples(args) if is_npy else eval_checkpoint(args)
    except exits.BadInput as e:  # config, data, checkpoint or samples the user gave
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StorageError, DataUnavailable) as e:  # the storage or a download failed: not the user's input
        print(f"error: evaluation failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(payload))
    else:
        print(format_text(payload))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
