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

from ganray.metrics import STACKED, register_metric
from ganray.metrics.inputs import MetricInputs, kl_to_uniform

MIN_SHARE_OF_UNIFORM = 0.1  # a class counts when it holds ≥ 10% of its uniform share N/K


def class_histogram(labels: torch.Tensor, num_classes: int, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Counts per class [K]; with `classes`, the counts of those labels only."""
    if classes is not None:
        return torch.bincount(labels, minlength=int(classes.max()) + 1)[classes]
    return torch.bincount(labels, minlength=num_classes)[:num_classes]


def counts_record(counts: torch.Tensor, n: int, stacked: bool, classes: torch.Tensor | None = None) -> dict:
    """The record's form of a histogram of n samples: {"of", "names", "counts", "n"} (stacked: modes
    "000".."999"; a class subset: its labels, and samples labelled outside it are in no count)."""
    names = ([f"{k:03d}" for k in range(counts.numel())] if stacked
             else [str(int(c)) for c in classes] if classes is not None
             else [str(k) for k in range(counts.numel())])
    return {"of": "modes" if stacked else "classes", "names": names, "counts": [int(c) for c in counts],
            "n": int(n)}


def covered(counts: torch.Tensor, n: int, stacked: bool) -> torch.Tensor:
    """Mask of the classes with ≥ MIN_SHARE_OF_UNIFORM·n/K samples (stacked: ≥ 1 sample) [..., K]."""
    if stacked:
        return counts >= 1
    return counts >= MIN_SHARE_OF_UNIFORM * n / counts.shape[-1]


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def class_coverage(inp: MetricInputs) -> dict[str, float]:
    lab = inp.labelled
    counts = class_histogram(lab.labels, inp.ref.num_modes, inp.ref.classes)  # [K]
    mask = covered(counts, inp.n, inp.ref.kind == STACKED)
    # the evidence behind the numbers, for the record (verdict.json) and the report's histogram
    inp.shared["counts"] = counts_record(counts, inp.n, inp.ref.kind == STACKED, inp.ref.classes)
    return {
        "classes_covered": float(mask.sum()),
        "covered_share": float(counts[mask].sum()) / inp.n,
        "kl_uniform": kl_to_uniform(counts) if counts.sum() > 0 else math.log(counts.numel()),
        "max_class_share": float(counts.max()) / inp.n,
        "mean_confidence": float(lab.confidence.mean()),
    }
