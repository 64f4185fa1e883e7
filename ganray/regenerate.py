"""G from a checkpoint: the one place that rebuilds a trained network from a checkpoint's state
and makes something of it after training.

- `generator(state)`: G (G_ema when the checkpoint has one), for `ganray eval CHECKPOINT`;
- `class_counts(checkpoint_uri, n)`: the class (or mode) histogram of n regenerated samples,
  in verdict.json's `counts` format, for `ganray report --samples N`;
- `reconstruct(checkpoint_uri, trial)`: a VAE's reconstructions of held-out real images, for
  the report's VAE-vs-GAN section.

The report reaches this module only through the object it is handed (`write_report(...,
regenerate=ganray.regenerate)`), so the report itself never imports torch.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ganray.collapse import labeller
from ganray.config import Config, ConfigError
from ganray.data import example_shape, load_dataset
from ganray.data.mixtures import mixture_spec
from ganray.families import get_family
from ganray.families.vae import reconstruct as vae_reconstruct
from ganray.metrics import POINTS, STACKED, data_kind
from ganray.metrics.class_coverage import class_histogram, counts_record
from ganray.metrics.classifier.store import reference_classifier
from ganray.metrics.inputs import classify, nearest_mode
from ganray.metrics.mixture_coverage import HQ_SIGMAS, mode_counts
from ganray.models import build_generator
from ganray.report.model import Reconstruction
from ganray.train import checkpoint
from ganray.train.checkpoint import CheckpointError
from ganray.train.sampling import Asked, condition_kind, eval_conditions, generate

log = logging.getLogger(__name__)

VAE_FAMILY = "vae"
RECON_SHOWN = 8  # held-out images shown per VAE trial (originals above, reconstructions below)
RECON_MSE_MAX = 500  # held-out images behind the reconstruction MSE


def generator(state: dict[str, Any], shape: tuple[int, ...] | None = None,
              where: str = "checkpoint") -> tuple[nn.Module, str]:
    """(G with the checkpoint's weights, "G_ema" or "G"): G_ema when the checkpoint has one.
    `shape` is one example's shape (default: the dataset's, without loading it)."""
    cfg = checkpoint.config_of(state)
    if get_family(cfg.train.family).translation:
        raise CheckpointError(f"{where}: a {cfg.train.family} checkpoint translates between two domains; it has no "
                              "G drawing samples from z (its trial's verdict.json judges its test-split translations)")
    which = "G_ema" if state.get("G_ema") is not None else "G"
    shape = shape or example_shape(cfg.data.dataset, cfg.data.load_size)
    # a conditional family's G (its class embedding, its text conditioning) as the family builds it
    G = (get_family(cfg.train.family).build(cfg, shape).G_module if condition_kind(cfg)
         else build_generator(cfg.model, shape))
    try:
        G.load_state_dict(state[which])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{where}: generator weights do not fit the checkpoint's config ({e})") from e
    return G, which


def class_counts(checkpoint_uri: str, n: int) -> dict[str, Any]:
    """Generate `n` samples with the checkpoint's G (G_ema when present) and label them as the
    evaluation does: verdict.json's `counts` ({"of", "names", "counts", "n", "labeller",
    "step"}) plus "generator", the network that made them."""
    state = checkpoint.load(checkpoint_uri)
    cfg = checkpoint.config_of(state)
    G, which = generator(state, where=checkpoint_uri)
    # x = G(z), z ~ N(0, I): [n, *shape], from a seed of its own so the report is reproducible
    x, _ = samples(cfg, G, n, seed=cfg.experiment.seed * 7919 + 1)
    of, names, counts, labeller = _label_counts(x, cfg)
    step = state.get("step")
    return {"of": of, "names": names, "counts": counts, "n": n, "labeller": labeller,
            "step": int(step) if isinstance(step, int) else None, "generator": which}


def samples(cfg: Config, G: nn.Module, n: int, seed: int, real=None) -> tuple[torch.Tensor, Asked | None]:
    """n samples of G on the CPU, and for a conditional family the class each was asked for: a
    balanced request over the classes of `real` (default: the train split, as the evaluation's: the
    classes G trained on; cub200's test species are others)."""
    cond = None
    if condition_kind(cfg):
        cond = eval_conditions(cfg, real if real is not None else load_dataset(cfg.data, "train"), n, seed)
    size = example_shape(cfg.data.dataset, cfg.data.load_size)[-1] if len(example_shape(cfg.data.dataset)) == 3 else 0
    x = generate(G, n, cfg.model.z_dim, torch.device("cpu"), seed=seed, cond=None if cond is None else cond[0],
                 size=size)
    return x, cond


def _label_counts(x: torch.Tensor, cfg: Config) -> tuple[str, list[str], list[int], str]:
    """("classes" or "modes", names, counts per name, what labelled them), labelled by the evaluation's
    own rules (ganray/metrics/class_coverage.py, mixture_coverage.py), without loading the data."""
    kind = data_kind(cfg.data.dataset)
    if kind == POINTS:
        means, sigma = mixture_spec(cfg.data.dataset)
        mode, dist = nearest_mode(x, means)
        c = mode_counts(mode, dist <= HQ_SIGMAS * sigma, means.shape[0])
        return c["of"], c["names"], c["counts"], labeller(cfg.data.dataset, None)
    model, info = reference_classifier(cfg.data, cfg.storage.uri, train_if_missing=False)
    # label = argmax_k classifier logits (stacked MNIST: mode 100·d0 + 10·d1 + d2 over the 3 channels)
    labels = classify(model, x, kind).labels
    K = model.arch.num_classes ** 3 if kind == STACKED else model.arch.num_classes
    # trained on a class subset (data.classes): the counts of those classes, as the evaluation's
    classes = torch.tensor(sorted(cfg.data.classes)) if cfg.data.classes and kind != STACKED else None
    c = counts_record(class_histogram(labels, K, classes), x.shape[0], kind == STACKED, classes)
    return c["of"], c["names"], c["counts"], labeller(cfg.data.dataset, info)


def held_out_images(cfg: Config, n: int, seed: int = 0) -> torch.Tensor:
    """Up to `n` held-out (test split) real images [n, C, H, W], taken in turn from each class present."""
    ds = load_dataset(cfg.data, "test")
    g = torch.Generator().manual_seed(seed)
    per_class = []  # each class's test images, in a seeded random order
    for c in torch.unique(ds.y):
        idx = torch.nonzero(ds.y == c).flatten()
        per_class.append(idx[torch.randperm(idx.numel(), generator=g)])
    # round robin over the classes: x_0 of class a, x_0 of class b, x_1 of class a, ...
    order = [int(p[i]) for i in range(max(p.numel() for p in per_class)) for p in per_class if i < p.numel()]
    return ds.x[torch.tensor(order[:n], dtype=torch.long)]


def reconstruct(checkpoint_uri: str, trial: str, n_shown: int = RECON_SHOWN,
                n_mse: int = RECON_MSE_MAX) -> Reconstruction:
    """Load a VAE checkpoint, rebuild encoder (D) and decoder (G) with the vae family's build,
    and reconstruct held-out real images with G(μ(x))."""
    state = checkpoint.load(checkpoint_uri)
    cfg = checkpoint.config_of(state)
    if cfg.train.family != VAE_FAMILY:
        raise ConfigError(f"train.family: trial {trial} is {cfg.train.family!r}, not {VAE_FAMILY!r}")
    x = held_out_images(cfg, max(n_shown, n_mse), seed=cfg.experiment.seed)
    m = get_family(VAE_FAMILY).build(cfg, tuple(x.shape[1:]))
    try:
        m.G_module.load_state_dict(state["G"])  # decoder
        m.D_module.load_state_dict(state["D"])  # encoder q(z|x)
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{checkpoint_uri}: VAE weights do not fit the checkpoint's config ({e})") from e
    x_hat = vae_reconstruct(m, x)  # G(μ(x)) [n, C, H, W]
    # MSE = mean over images of Σ_pixels (x − G(μ(x)))², the training loss's reconstruction term
    mse = float((x - x_hat).pow(2).flatten(1).sum(1).mean())
    step = state.get("step")
    return Reconstruction(trial, int(step) if isinstance(step, int) else -1, x[:n_shown], x_hat[:n_shown], mse,
                          int(x.shape[0]))
