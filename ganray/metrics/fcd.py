"""fcd: Fréchet distance between Gaussian fits of real and generated features of the reference
classifier (FID with the dataset's own classifier instead of Inception):

  FCD = ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2})

0 for identical feature statistics; grows with both a shift of the mean and a mismatch of the
spread (a collapsed generator has a small Σ_g).
"""
from __future__ import annotations

import torch

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs, Reference


def sqrtm_psd(S: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix: V diag(√max(λ, 0)) Vᵀ."""
    lam, V = torch.linalg.eigh(S)
    return (V * lam.clamp(min=0).sqrt()) @ V.T


def frechet_distance(mu_r: torch.Tensor, sigma_r: torch.Tensor, mu_g: torch.Tensor, sigma_g: torch.Tensor,
                     sqrt_sigma_r: torch.Tensor | None = None) -> float:
    """FD of N(μ_r, Σ_r) and N(μ_g, Σ_g), in float64."""
    s = sqrt_sigma_r if sqrt_sigma_r is not None else sqrtm_psd(sigma_r)
    # Tr (Σ_r Σ_g)^{1/2} = Tr (Σ_r^{1/2} Σ_g Σ_r^{1/2})^{1/2} = Σ √λ_i, the latter matrix being symmetric PSD
    lam = torch.linalg.eigvalsh(s @ sigma_g @ s)
    tr_sqrt = lam.clamp(min=0).sqrt().sum()
    d = float(((mu_r - mu_g) ** 2).sum() + torch.trace(sigma_r) + torch.trace(sigma_g) - 2 * tr_sqrt)
    return max(d, 0.0)


def _sqrt_sigma_real(ref: Reference) -> torch.Tensor:
    if "sqrt_sigma_real" not in ref.cache:
        ref.cache["sqrt_sigma_real"] = sqrtm_psd(ref.sigma_real)
    return ref.cache["sqrt_sigma_real"]


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def fcd(inp: MetricInputs) -> dict[str, float]:
    f = inp.labelled.features.double()  # [N, d]
    if f.shape[0] < 2:
        raise ValueError(f"fcd needs at least 2 samples, got {f.shape[0]}")
    mu_g, sigma_g = f.mean(0), torch.cov(f.T)
    ref = inp.ref
    return {"fcd": frechet_distance(ref.mu_real, ref.sigma_real, mu_g, sigma_g, _sqrt_sigma_real(ref))}
