"""class_coverage: the class histogram of generated samples as labelled by the reference classifier.

  classes_covered   images: classes holding ≥ 10% of their uniform share (≥ 0.1·N/K samples);
                    stacked MNIST (the paper protocol): modes 0..999 with ≥ 1 sample
  kl_uniform        KL(p‖U_K) in nats: 0 for a uniform histogram, ln K for a single class
                    (ln 10 = 2.303; stacked: ln 1000 = 6.908)
  max_class_share   share of the samples in the largest class
  mean_confidence   mean max-softmax probability (stacked: product over the 3 channels);
                    low on samples that look like no class at all
"""
from __future__ import annotations

import torch

from ganray.metrics import IMAGE_KINDS, STACKED, register_metric
from ganray.metrics.inputs import MetricInputs, kl_to_uniform

MIN_SHARE_OF_UNIFORM = 0.1  # a class counts when it holds ≥ 10% of its uniform share N/K


def class_histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=num_classes)[:num_classes]


def covered(counts: torch.Tensor, stacked: bool) -> int:
    """Classes with ≥ MIN_SHARE_OF_UNIFORM·N/K samples (stacked: modes with ≥ 1 sample)."""
    if stacked:
        return int((counts >= 1).sum())
    n, K = float(counts.sum()), counts.numel()
    return int((counts >= MIN_SHARE_OF_UNIFORM * n / K).sum())


@register_metric(
    signals=("classes_covered", "kl_uniform", "max_class_share", "mean_confidence"),
    kinds=IMAGE_KINDS,
    needs_features=True,
)
def class_coverage(inp: MetricInputs) -> dict[str, float]:
    lab = inp.labelled
    counts = class_histogram(lab.labels, inp.ref.num_modes)  # [K]
    return {
        "classes_covered": float(covered(counts, inp.ref.kind == STACKED)),
        "kl_uniform": kl_to_uniform(counts),
        "max_class_share": float(counts.max()) / inp.n,
        "mean_confidence": float(lab.confidence.mean()),
    }
