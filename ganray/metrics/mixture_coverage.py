"""mixture_coverage: mode coverage of 2D Gaussian mixtures (ring8, grid25), PacGAN's definitions.

  hq_share       share of high-quality samples: within 3σ of the nearest mean (for a perfect
                 generator, P(|ε| ≤ 3σ) of a 2D Gaussian = 1 − e^{−9/2} ≈ 98.9%)
  modes_covered  modes with ≥ 1 high-quality sample
  reverse_kl     KL(p_G‖U_K) in nats over modes, each sample assigned to its nearest mean:
                 0 for a uniform spread, ln(K/m) for m equally used modes
"""
from __future__ import annotations

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
    hq = dist <= HQ_SIGMAS * sigma  # high quality: ‖x − μ_nearest‖ ≤ 3σ
    inp.shared["counts"] = mode_counts(mode, hq, K)  # the evidence, for the record
    return {
        "modes_covered": float(torch.unique(mode[hq]).numel()),
        "hq_share": float(hq.float().mean()),
        "reverse_kl": kl_to_uniform(torch.bincount(mode, minlength=K)),
    }
