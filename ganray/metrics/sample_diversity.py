"""sample_diversity: classifier-free checks of how varied the generated samples are, in data space
(pixels, or 2D coordinates), on up to 1,000 samples compared with as many real ones.

  spread_ratio     mean ‖G(z_i) − G(z_j)‖ / mean ‖x_i − x_j‖ (pairs i ≠ j): ≈ 1 like the data,
                   0 for one sample repeated (a constant generator), > 1 for noise
  duplicate_share  share of samples that are near-copies of another sample: their nearest
                   neighbour lies closer, relative to the set's own mean pairwise distance,
                   than it does for all but 1% of real samples. ≈ 0.01 for real data, 1 for a
                   generator that repeats a few images, whatever those images look like.

The second is what tells "10 digits, each drawn once and repeated" (classes and spread look
perfect) from real data, and it is scale-free, so blurry but varied samples are not copies.
"""
from __future__ import annotations

import torch

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs, Reference

MAX_SAMPLES = 1000
REAL_QUANTILE = 0.01  # a "near-copy" is closer than 99% of real samples are to their nearest neighbour
EXACT = 1e-6  # distances below this share of the real spread are rounding error: exact copies


def _subsample(x: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    # float64: cdist's ‖a‖² + ‖b‖² − 2ab form loses ~1e-3 in float32, enough to hide exact copies
    x = x.reshape(x.shape[0], -1).double()
    if x.shape[0] > m:
        x = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:m]]
    return x


def spread_and_nn(x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(mean pairwise distance, each row's nearest-neighbour distance [n]) of rows x [n, D]."""
    n = x.shape[0]
    d = torch.cdist(x, x)  # [n, n]
    spread = float(d.sum() / (n * (n - 1)))
    d.fill_diagonal_(float("inf"))
    return spread, d.min(1).values


def real_nn_threshold(ref: Reference, m: int, seed: int) -> tuple[float, float]:
    """(mean pairwise distance, 1% quantile of NN distance / that spread) of m real samples, cached per m."""
    key = ("real_nn", m)
    if key not in ref.cache:
        if ref.real_sample is None or ref.real_sample.shape[0] < 2:
            raise ValueError(f"{ref.dataset}: sample_diversity needs real samples in the reference")
        spread, nn = spread_and_nn(_subsample(ref.real_sample, m, seed))
        ref.cache[key] = (spread, float(torch.quantile(nn / spread, REAL_QUANTILE)))
    return ref.cache[key]


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def sample_diversity(inp: MetricInputs) -> dict[str, float]:
    if inp.n < 2:
        raise ValueError(f"sample_diversity needs at least 2 samples, got {inp.n}")
    x = _subsample(inp.samples, MAX_SAMPLES, inp.seed)
    m = min(x.shape[0], inp.ref.real_sample.shape[0])
    x = x[:m]
    spread_real, q_real = real_nn_threshold(inp.ref, m, inp.seed)
    spread, nn = spread_and_nn(x)
    # near-copy: NN(G(z_i)) / spread_G < q_real, or an exact copy (distance at float64 rounding level)
    exact = nn <= EXACT * spread_real
    dup = ((nn < q_real * spread) | exact).float().mean()
    inp.shared["duplicate_m"] = m  # the samples judged: the denominator of duplicate_share's interval
    return {"spread_ratio": spread / max(spread_real, 1e-12), "duplicate_share": float(dup)}
