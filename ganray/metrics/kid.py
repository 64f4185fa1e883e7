"""kid: Kernel Inception Distance (Bińkowski et al. 2018) in the reference classifier's features,
computed as torch-fidelity computes it in Inception features: the unbiased MMD² of real and
generated features under the cubic polynomial kernel, averaged over random subsets.

  k(x, y) = (xᵀy / d + 1)³                          d: feature dimension
  MMD²_u(X, Y) = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (m(m−1)) − 2 Σ_{i,j} k(x_i, y_j) / m²

for a subset X of m real and a subset Y of m generated features (each drawn without
replacement); `kid` is the mean over `KID_SUBSETS` subsets, `kid_std` their standard
deviation. E[MMD²_u] = MMD² of the two distributions, 0 when they are the same: unlike FCD
(a plug-in estimate, biased upwards by O(d/n)) it is unbiased at any sample size, so values
at the local preset's 2,000 samples are comparable with values at 10,000.

Every subset's three sums are read off whole kernel matrices with one matrix product each:
Σ_{i∈A_s, j∈B_s} K_ij = (Aᵀ K B)_ss for the 0/1 indicator matrices A, B of the subsets, and
the real-real sums, which do not change during a run, are cached in the reference.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs

KID_SUBSETS = 100  # torch-fidelity's kid_subsets
KID_SUBSET_SIZE = 1000  # torch-fidelity's kid_subset_size; smaller when either set is smaller
CHUNK = 1024  # rows of a kernel block (1024 x 10,000 float64: 80 MB)


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """k(x_i, y_j) = (x_iᵀ y_j / d + 1)³ for rows of x [n, d] and y [m, d]: [n, m]."""
    k = torch.addmm(torch.ones((), dtype=x.dtype, device=x.device), x, y.T, alpha=1.0 / x.shape[1])
    return k * k * k


def subset_indicators(n: int, subsets: int, size: int, generator: torch.Generator) -> Tensor:
    """[n, subsets] float64 0/1: column s marks `size` rows drawn without replacement."""
    ind = torch.zeros(n, subsets, dtype=torch.float64)
    for s in range(subsets):
        ind[torch.randperm(n, generator=generator)[:size], s] = 1.0
    return ind


def subset_pair_sums(a: Tensor, b: Tensor, A: Tensor, B: Tensor, chunk: int = CHUNK) -> Tensor:
    """Σ_{i∈A_s, j∈B_s} k(a_i, b_j) for every subset s, i.e. diag(Aᵀ K B): [subsets]."""
    A, B = A.to(a.device), B.to(a.device)
    out = torch.zeros(A.shape[1], dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], chunk):
        out += ((polynomial_kernel(a[i : i + chunk], b) @ B) * A[i : i + chunk]).sum(0)
    return out


def subset_self_sums(a: Tensor, A: Tensor, chunk: int = CHUNK) -> Tensor:
    """Σ_{i≠j∈A_s} k(a_i, a_j) for every subset s: all pairs less the diagonal k(a_i, a_i)."""
    diag = ((a * a).sum(1) / a.shape[1] + 1.0) ** 3  # k(a_i, a_i)
    return subset_pair_sums(a, a, A, A, chunk) - diag @ A.to(a.device)


def kid_from_sums(xx: Tensor, yy: Tensor, xy: Tensor, m: int) -> Tensor:
    """MMD²_u of each subset from its sums Σ_{i≠j} k(x_i, x_j), Σ_{i≠j} k(y_i, y_j), Σ_{i,j} k(x_i, y_j)."""
    return (xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m)


def kid_subsets(real: Tensor, fake: Tensor, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
                seed: int = 0, cache: dict | None = None) -> tuple[float, float]:
    """(mean, std) over `subsets` of MMD²_u(X_s, Y_s), X_s ⊂ real [N, d], Y_s ⊂ fake [M, d], m rows each.

    cache: a dict kept between calls with the same `real` (the real subsets and their sums)."""
    n_real, n_fake = real.shape[0], fake.shape[0]
    m = min(subset_size, n_real, n_fake)
    if m < 2:
        raise ValueError(f"kid needs at least 2 real and 2 generated samples, got {n_real} and {n_fake}")
    real, fake = real.double(), fake.double()
    key = ("kid_real", subsets, m, seed)
    if cache is None or key not in cache:
        R = subset_indicators(n_real, subsets, m, torch.Generator().manual_seed(seed))
        entry = (R, subset_self_sums(real, R))
        if cache is not None:
            cache[key] = entry
    else:
        entry = cache[key]
    R, xx = entry
    F = subset_indicators(n_fake, subsets, m, torch.Generator().manual_seed(seed + 1))
    yy = subset_self_sums(fake, F)
    xy = subset_pair_sums(real, fake, R, F)
    mmd = kid_from_sums(xx, yy, xy, m)
    return float(mmd.mean()), float(mmd.std(unbiased=False))  # np.std, as torch-fidelity reports it


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def kid(inp: MetricInputs) -> dict[str, float]:
    ref = inp.ref
    mean, std = kid_subsets(ref.real_features, inp.labelled.features.to(ref.device), seed=inp.seed, cache=ref.cache)
    return {"kid": mean, "kid_std": std}
