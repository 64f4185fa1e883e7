"""class_coverage: the class histogram of generated samples as labelled by the reference classifier.

  classes_covered   images: classes holding ≥ 10% of their uniform share (≥ 0.1·N/K samples);
                    stacked MNIST (the paper protocol): modes 0..999 with ≥ 1 sample
  kl_uniform        KL(p‖U_K) in nats: 0 for a uniform histogram, ln K for a single class
                    (ln 10 = 2.303; stacked: ln 1000 = 6.908)
  covered_share     share of the samples in the covered classes ("3 of 10 classes hold 96%")
  max_class_share   share of the samples in the largest class
  mean_confidence   mean max-softmax probability (stacked: product over the 3 channels);
                    low on samples that look like no class at all — though a CNN labels
                    uniform noise with confidence ≈ 1, so garbage is told by precision instead
When the real data is a class subset (data.classes), K is the subset's size and samples
labelled outside it belong to no class.
"""
from __future__ import annotations

import math

import torch

from ganray.metrics import IMAGE_KINDS, STACKED, register_metric
from ganray.metrics.inputs import MetricInputs, kl_to_uniform

MIN_SHARE_OF_UNIFORM = 0.1  # a class counts when it holds ≥ 10% of its uniform share N/K


def class_histogram(labels: torch.Tensor, num_classes: int, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Counts per class [K]; with `classes`, the counts of those labels only."""
    if classes is not None:
        return torch.bincount(labels, minlength=int(classes.max()) + 1)[classes]
    return torch.bincount(labels, minlength=num_classes)[:num_classes]


def covered(counts: torch.Tensor, n: int, stacked: bool) -> torch.Tensor:
    """Mask of the classes with ≥ MIN_SHARE_OF_UNIFORM·n/K samples (stacked: ≥ 1 sample) [K]."""
    if stacked:
        return counts >= 1
    return counts >= MIN_SHARE_OF_UNIFORM * n / counts.numel()


@register_metric(
    signals=("classes_covered", "covered_share", "kl_uniform", "max_class_share", "mean_confidence"),
    kinds=IMAGE_KINDS,
    needs_features=True,
)
def class_coverage(inp: MetricInputs) -> dict[str, float]:
    lab = inp.labelled
    counts = class_histogram(lab.labels, inp.ref.num_modes, inp.ref.classes)  # [K]
    mask = covered(counts, inp.n, inp.ref.kind == STACKED)
    return {
        "classes_covered": float(mask.sum()),
        "covered_share": float(counts[mask].sum()) / inp.n,
        "kl_uniform": kl_to_uniform(counts) if counts.sum() > 0 else math.log(counts.numel()),
        "max_class_share": float(counts.max()) / inp.n,
        "mean_confidence": float(lab.confidence.mean()),
    }
