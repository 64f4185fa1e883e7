"""prdc: precision, recall, density and coverage (Naeem et al. 2020, k = 5) in the reference
classifier's feature space. With real features X_1..X_N, generated Y_1..Y_M and
NND_k(·) the distance to the k-th nearest neighbour within the same set:

  precision = 1/M Σ_j 1[∃ i: ‖Y_j − X_i‖ < NND_k(X_i)]          fidelity
  recall    = 1/N Σ_i 1[∃ j: ‖X_i − Y_j‖ < NND_k(Y_j)]          diversity
  density   = 1/(kM) Σ_j Σ_i 1[‖Y_j − X_i‖ < NND_k(X_i)]       ≈ 1 for identical distributions
  coverage  = 1/N Σ_i 1[∃ j: ‖Y_j − X_i‖ < NND_k(X_i)]          falls when modes are dropped

For identical distributions, E[coverage] = 1 − Π_{i=1..k} (N − i)/(N + M − i) (their Lemma 2),
≈ 0.97 for M = N and k = 5; `expected_coverage` gives it for other sizes.
"""
from __future__ import annotations

import math

import torch

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs, knn_radii


def expected_coverage(n_real: int, n_fake: int, k: int) -> float:
    """E[coverage] when real and generated come from the same distribution: 1 − Π (N−i)/(N+M−i)."""
    log_p = sum(math.log((n_real - i) / (n_real + n_fake - i)) for i in range(1, k + 1))
    return 1.0 - math.exp(log_p)


def compute_prdc(real: torch.Tensor, real_radii: torch.Tensor, fake: torch.Tensor, k: int,
                 chunk: int = 2048, nearest_real: torch.Tensor | None = None) -> dict[str, float]:
    """PRDC of features real [N, d] (with their NND_k radii [N]) and fake [M, d].

    nearest_real: an [M] tensor to fill with min_i ‖Y_j − X_i‖ on the way (near_real uses it).
    """
    M, N = fake.shape[0], real.shape[0]
    fake_radii = knn_radii(fake, k)  # NND_k(Y_j) [M]
    in_real_balls = 0  # Σ_j 1[∃ i ...]           (precision)
    density_sum = 0.0  # Σ_j Σ_i 1[...]          (density)
    covered = torch.zeros(N, dtype=torch.bool, device=real.device)  # ∃ j: Y_j ∈ B(X_i)
    recalled = torch.zeros(N, dtype=torch.bool, device=real.device)  # ∃ j: X_i ∈ B(Y_j)
    for j in range(0, M, chunk):
        d = torch.cdist(fake[j : j + chunk], real)  # [m, N]
        if nearest_real is not None:
            nearest_real[j : j + chunk] = d.min(1).values
        inside = d < real_radii[None, :]  # Y_j ∈ B(X_i, NND_k(X_i))
        in_real_balls += int(inside.any(1).sum())
        density_sum += float(inside.sum())
        covered |= inside.any(0)
        recalled |= (d < fake_radii[j : j + chunk, None]).any(0)  # X_i ∈ B(Y_j, NND_k(Y_j))
    return {
        "precision": in_real_balls / M,
        "recall": float(recalled.float().mean()),
        "density": density_sum / (k * M),
        "coverage": float(covered.float().mean()),
    }


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def prdc(inp: MetricInputs) -> dict[str, float]:
    ref = inp.ref
    k = ref.prdc_k
    if inp.n <= k:
        raise ValueError(f"prdc needs more than k={k} samples, got {inp.n}")
    fake = inp.labelled.features.to(ref.device)
    nearest = torch.empty(fake.shape[0], device=ref.device)
    out = compute_prdc(ref.real_features, ref.real_radii, fake, k, nearest_real=nearest)
    inp.shared["nearest_real"] = nearest  # saves near_real a second pass over the distances
    return out
