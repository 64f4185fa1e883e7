"""mixture_coverage: mode coverage of 2D Gaussian mixtures (ring8, grid25), PacGAN's definitions.

  hq_share       share of high-quality samples: closer than 3σ to the nearest mean (for a perfect
                 generator, P(|ε| < 3σ) of a 2D Gaussian = 1 − e^{−9/2} ≈ 98.9%)
  modes_covered  modes with ≥ 1 high-quality sample
  reverse_kl     KL(p_G‖U_K) in nats over modes, each sample assigned to its nearest mean:
                 0 for a uniform spread, ln(K/m) for m equally used modes
  reverse_kl_hq  the same over the high-quality samples only: PacGAN's Table 1 "reverse KL"

The PacGAN authors' MetricLogger (fjxmlzn/PacGAN, synthetic_data_experiments/PacGAN/pacgan/
extensions.py) assigns a sample to the mode of smallest Mahalanobis distance √Σ(d²/σ²) and
keeps it when that distance is < 3: with one isotropic σ for every mode that is the nearest mean
in Euclidean distance and ‖x − μ‖ < 3σ, as here. Its histogram of modes holds the high-quality
samples only, and the paper's reverse KL is KL(p_HQ‖U_K) = ln K − H(p_HQ) of that histogram
(the logger writes H(p_HQ), its "entropy of coverage"): `reverse_kl_hq`. `reverse_kl` also
counts the off-mode samples at their nearest mode (the verdict's statistic, calibrated on it);
the two agree when nearly every sample is high quality.
"""
from __future__ import annotations

import math

import torch

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs, kl_to_uniform, nearest_mode

HQ_SIGMAS = 3.0


def mode_counts(mode: torch.Tensor, hq: torch.Tensor, K: int) -> dict:
    """The record's histogram of 2D samples: high-quality samples per mode, then "off" (within no
    mode's 3σ): {"of", "names", "counts", "n"}."""
    per_mode = torch.bincount(mode[hq], minlength=K)[:K]
    return {"of": "modes", "names": [str(k) for k in range(K)] + ["off"],
            "counts": [int(c) for c in per_mode] + [int((~hq).sum())], "n": int(mode.numel())}


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def mixture_coverage(inp: MetricInputs) -> dict[str, float]:
    means, sigma = inp.ref.means, inp.ref.sigma
    K = means.shape[0]
    mode, dist = nearest_mode(inp.samples, means)  # [N], [N]
    hq = dist < HQ_SIGMAS * sigma  # high quality: ‖x − μ_nearest‖ < 3σ (the authors' strict "<")
    inp.shared["counts"] = mode_counts(mode, hq, K)  # the evidence, for the record
    per_mode = torch.bincount(mode, minlength=K)  # [K]: every sample at its nearest mode
    inp.shared["nearest_counts"] = [int(c) for c in per_mode]  # reverse_kl's histogram, for the margins' bootstrap
    hq_per_mode = torch.bincount(mode[hq], minlength=K)  # [K]
    return {
        "modes_covered": float((hq_per_mode > 0).sum()),
        "hq_share": float(hq.float().mean()),
        "reverse_kl": kl_to_uniform(per_mode),
        # KL(p_HQ‖U_K) = Σ_k p_k ln(K p_k) over the high-quality histogram; no high-quality
        # sample at all: ln K, the value of a single mode (the limit of total collapse)
        "reverse_kl_hq": kl_to_uniform(hq_per_mode) if bool(hq.any()) else math.log(K),
    }
