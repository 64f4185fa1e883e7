"""near_real: the share of generated samples that lie as close to the real data, in the reference
classifier's feature space, as real samples lie to each other — the garbage detector.

  near_real_share = 1/M Σ_j 1[min_i ‖Y_j − X_i‖ ≤ q95],
  q95 = the 95th percentile of min_{i' ≠ i} ‖X_i − X_i'‖ over real features X

≈ 0.95 for real data (by construction), 0 for noise. Unlike PRDC's precision, which tests each
sample against a ball of its own size around every real point, one global radius is not fooled
by the few real outliers whose k-NN balls are huge: with the shipped MNIST classifier, uniform
noise reaches precision 0.3 but near_real_share 0.
"""
from __future__ import annotations

import torch

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs

REAL_QUANTILE = 0.95


def nearest_real_distance(fake: torch.Tensor, real: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """min_i ‖Y_j − X_i‖ for every row of fake [M, d] against real [N, d] -> [M]."""
    return torch.cat([torch.cdist(fake[j : j + chunk], real).min(1).values for j in range(0, fake.shape[0], chunk)])


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def near_real(inp: MetricInputs) -> dict[str, float]:
    ref = inp.ref
    if "near_real_q" not in ref.cache:
        ref.cache["near_real_q"] = float(torch.quantile(ref.real_nn.float(), REAL_QUANTILE))
    d = inp.shared.get("nearest_real")  # left by prdc when it ran first
    if d is None:
        d = nearest_real_distance(inp.labelled.features.to(ref.device), ref.real_features)
    return {"near_real_share": float((d <= ref.cache["near_real_q"]).float().mean())}
