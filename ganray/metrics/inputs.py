"""What a metric sees: the generated samples, the cached reference statistics of the real data,
and the state kept between evaluations.

`Reference.build` runs once per run (the `Evaluator` caches it): real features, their mean and
covariance (FCD) and k-NN radii (PRDC), a sample of real data, the mixture's means and σ. The real
features and k-NN distances are kept in the cache folder (<cache>/reference/<sha256>.pt), so the
trials of a sweep on one node compute them once.
`MetricInputs` computes the classifier's features and labels of the generated samples once,
on first use, and shares them between metrics.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ganray.metrics import IMAGE, POINTS, STACKED, data_kind
from ganray.metrics.classifier.model import Classifier, embed

log = logging.getLogger(__name__)

STACKED_CHANNELS = 3  # stacked MNIST: one MNIST digit per channel, mode = 100·d0 + 10·d1 + d2


@dataclass
class Labelled:
    """The classifier's view of a batch."""

    features: Tensor  # [N, d] (stacked: the 3 channels' features side by side, [N, 3d])
    labels: Tensor  # int64 [N]: class (stacked: mode 0..999)
    confidence: Tensor  # [N]: max softmax probability (stacked: product over the 3 channels)


def classify(model: Classifier, x: Tensor, kind: str) -> Labelled:
    """Features, labels and confidence of images x [N, C, H, W] in [-1, 1]."""
    if kind == STACKED:
        n, c, h, w = x.shape
        if c != STACKED_CHANNELS:
            raise ValueError(f"stacked-mnist samples need {STACKED_CHANNELS} channels, got {c}")
        # each channel is an MNIST digit: [N, 3, H, W] -> [3N, 1, H, W]
        f, logits = embed(model, x.reshape(n * c, 1, h, w))
        p = logits.softmax(1).reshape(n, c, -1)  # [N, 3, 10]
        conf, digit = p.max(2)  # [N, 3] each
        # mode = 100·d0 + 10·d1 + d2;  confidence = Π_c max_k p_c(k)
        mode = (digit * torch.tensor([100, 10, 1])).sum(1)
        return Labelled(f.reshape(n, -1), mode, conf.prod(1))
    f, logits = embed(model, x)
    conf, label = logits.softmax(1).max(1)
    return Labelled(f, label, conf)


def nearest_mode(points: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    """(index of the nearest mean [N], distance to it [N]) for 2D points [N, 2], means [K, 2]."""
    d = torch.cdist(points.double(), means.double())  # [N, K]
    dist, idx = d.min(1)
    return idx, dist.float()


def knn_distances(features: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Distances of each row to its 1st..k-th nearest other rows [N, k] (the row itself excluded)."""
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"k-NN distances need more than k={k} points, got {n}")
    out = torch.empty(n, k, device=features.device)
    for i in range(0, n, chunk):
        d = torch.cdist(features[i : i + chunk], features)  # [chunk, N]
        # the k+1 smallest include the point itself at distance 0
        out[i : i + chunk] = d.topk(k + 1, dim=1, largest=False).values[:, 1:]
    return out


def knn_radii(features: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """NND_k: distance of each row to its k-th nearest other row [N] (the row itself excluded)."""
    return knn_distances(features, k, chunk)[:, k - 1]


@dataclass
class Reference:
    """Statistics of the real data, computed once per run."""

    dataset: str
    kind: str  # image | stacked | 2d
    num_modes: int  # K: classes (stacked: 1000, 2d: mixture modes; a class subset: its size)
    real_sample: Tensor | None = None  # up to `diversity_n` real samples (data space, CPU)
    classifier: Classifier | None = None
    classifier_info: dict[str, Any] = field(default_factory=dict)
    real_features: Tensor | None = None  # [N_r, d] on `device`
    mu_real: Tensor | None = None  # float64 [d]
    sigma_real: Tensor | None = None  # float64 [d, d]
    real_radii: Tensor | None = None  # [N_r]: NND_k of real features
    real_nn: Tensor | None = None  # [N_r]: distance of each real feature to its nearest other one
    prdc_k: int = 5
    classes: Tensor | None = None  # images trained on a class subset (data.classes): those labels
    real_labels: Tensor | None = None  # int64 [N_r]: the data's label of each row of real_features (and of
    # real_sample's rows, its first ones), when Reference.build got real_y: the conditional metrics' real classes
    means: Tensor | None = None  # 2d: [K, 2]
    sigma: float = 0.0  # 2d: σ of every mode
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache: dict[str, Any] = field(default_factory=dict)  # derived statistics metrics keep (e.g. Σ_r^{1/2})

    @classmethod
    def build(
        cls,
        dataset: str,
        real_x: Tensor,
        *,
        classifier: tuple[Classifier, dict[str, Any]] | None,
        num_modes: int,
        classes: Tensor | None = None,
        real_y: Tensor | None = None,
        means: Tensor | None = None,
        sigma: float = 0.0,
        max_real: int = 10_000,
        prdc_k: int = 5,
        real_features: bool = True,
        diversity_n: int = 1000,
        seed: int = 0,
        device: torch.device | str = "cpu",
        cache_dir: str | Path | None = None,
    ) -> "Reference":
        """Cache the statistics of real samples `real_x` ([N, C, H, W] in [-1, 1] or [N, 2]).

        num_modes: classes of the dataset (stacked-mnist: 1000); `classes`: the labels present
        when the data is a class subset (then coverage and KL are over those classes only);
        real_features: compute the real features, their Gaussian fit and k-NN radii (FCD, PRDC).
        real_y: the data's labels of real_x [N] (int64): kept in the same order as `real_labels`.
        cache_dir: keep the real features and k-NN distances in <cache_dir>/reference/<sha256>.pt
        (under a file lock), so the trials of a sweep compute them once per node, not once each.
        """
        device = torch.device(device)
        kind = data_kind(dataset)
        g = torch.Generator().manual_seed(seed)
        # a fixed random order (and subset): the reference must not depend on the data's order
        order = torch.randperm(real_x.shape[0], generator=g)[:max_real]
        real_x = real_x[order]
        ref = cls(dataset, kind, 0, real_x[:diversity_n].clone(), prdc_k=prdc_k, device=device)
        if real_y is not None:
            ref.real_labels = real_y.long()[order]
        if kind == POINTS:
            if means is None:
                raise ValueError(f"{dataset}: 2D reference needs the mixture means")
            ref.num_modes, ref.means, ref.sigma = means.shape[0], means.float(), float(sigma)
            return ref
        ref.num_modes = num_modes
        if classes is not None and kind == IMAGE:
            ref.classes, ref.num_modes = classes.long().sort().values, int(classes.numel())
        if classifier is not None:
            model, info = classifier
            ref.classifier, ref.classifier_info = model.to(device).eval(), info
        if classifier is not None and real_features:

            def compute() -> Tensor:  # [N_r, d + k]: the real features (float64) beside their k-NN distances
                feats = classify(ref.classifier, real_x, kind).features.double()  # [N_r, d]
                nn = knn_distances(feats.float().to(device), prdc_k)  # [N_r, k], as PRDC sees them (float32)
                return torch.cat([feats.cpu(), nn.double().cpu()], 1)

            if cache_dir is None:
                kept = compute()
            else:  # every trial of an experiment on this node after the first loads it (float32 -> 64 -> 32: exact)
                from ganray.metrics.inception import cached_tensor  # noqa: PLC0415 (inception imports this module)

                d = classify(ref.classifier, real_x[:1], kind).features.shape[1]
                key = _reference_key(dataset, kind, real_x, ref.classifier, prdc_k, device)
                kept = cached_tensor(Path(cache_dir) / "reference" / f"{key}.pt", (real_x.shape[0], d + prdc_k),
                                     compute)
            feats, nn = kept[:, :-prdc_k], kept[:, -prdc_k:].float().to(device)
            # Gaussian fit of the real features: μ_r = mean, Σ_r = unbiased covariance
            ref.mu_real = feats.mean(0)
            ref.sigma_real = torch.cov(feats.T)
            ref.real_features = feats.float().to(device)
            ref.real_nn, ref.real_radii = nn[:, 0], nn[:, prdc_k - 1]
            log.info("reference %s: %d real samples, features d=%d", dataset, feats.shape[0], feats.shape[1])
        return ref


def _reference_key(dataset: str, kind: str, real_x: Tensor, model: Classifier, prdc_k: int,
                   device: torch.device) -> str:
    """sha256 of what the real features and radii depend on: the real samples in their order, the
    classifier's weights, k, the device type (a GPU's convolutions round otherwise than a CPU's)
    and, on a CPU, torch's thread count (the order of its float32 sums: a hit is then always what
    this process would compute)."""
    where = f"{device.type} threads={torch.get_num_threads()}" if device.type == "cpu" else device.type
    h = hashlib.sha256(f"reference-v1 {dataset} {kind} k={prdc_k} {where}".encode())
    h.update(real_x.detach().cpu().contiguous().numpy().tobytes())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


@dataclass
class MetricInputs:
    """Arguments of every metric function."""

    samples: Tensor  # generated [N, C, H, W] in [-1, 1] or [N, 2], on CPU
    ref: Reference
    fixed_samples: Tensor | None = None  # G(fixed z), for the flip rate
    history: list[dict[str, float]] = field(default_factory=list)  # the loop's logged stats
    state: dict[str, Any] = field(default_factory=dict)  # kept by the Evaluator between evaluations
    flat_window: int = 10  # training signals: the last this-many logged entries
    seed: int = 0
    shared: dict[str, Any] = field(default_factory=dict)  # one evaluation's by-products metrics share
    conditions: Tensor | None = None  # int64 [N]: the class each sample was asked for (conditional runs), else None
    attributes: Tensor | None = None  # float64 [N, 3]: the attribute buckets each sample's caption asked for, else None

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])

    @cached_property
    def labelled(self) -> Labelled:
        if self.ref.classifier is None:
            raise ValueError(f"{self.ref.dataset}: this metric needs the reference classifier")
        return classify(self.ref.classifier, self.samples, self.ref.kind)

    def mode_of(self, x: Tensor) -> Tensor:
        """Class (image), mode 0..999 (stacked) or nearest mixture mode (2d) of each sample."""
        if self.ref.kind == POINTS:
            return nearest_mode(x, self.ref.means)[0]
        return classify(self.ref.classifier, x, self.ref.kind).labels


def kl_to_uniform(counts: Tensor) -> float:
    """KL(p‖U_K) in nats = Σ_k p_k ln(K p_k), with 0 ln 0 = 0: 0 when uniform, ln K for one class."""
    return float(kl_to_uniform_rows(counts.reshape(1, -1))[0])


def kl_to_uniform_rows(counts: Tensor) -> Tensor:
    """kl_to_uniform of every row of counts [B, K] -> float64 [B] (the margins' bootstrap resamples)."""
    K = counts.shape[-1]
    p = counts.double() / counts.sum(-1, keepdim=True).double()
    # Σ_k p_k ln(K p_k); xlogy: 0 ln 0 = 0
    return torch.xlogy(p, K * p).sum(-1)


def expected_modes_covered(n: int, K: int) -> float:
    """E[#modes with ≥ 1 sample] for n uniform samples over K modes: K (1 − (1 − 1/K)^n)."""
    return K * (1.0 - math.exp(n * math.log1p(-1.0 / K))) if K > 1 else 1.0


__all__ = [
    "IMAGE",
    "STACKED",
    "POINTS",
    "Labelled",
    "MetricInputs",
    "Reference",
    "classify",
    "expected_modes_covered",
    "kl_to_uniform",
    "kl_to_uniform_rows",
    "knn_distances",
    "knn_radii",
    "nearest_mode",
]
