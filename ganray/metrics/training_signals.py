"""training_signals: what the loop's own logged numbers say (`history`: one dict per log step,
e.g. {"step", "loss_D", "loss_G", "d_acc_real", "d_acc_fake", "k_t", "m_global"}).

  nonfinite_stats    logged entries holding a NaN or ±inf anywhere in the run so far (> 0: diverged)
  loss_D_rel_range   (max − min) / max(|mean|, 1e-3) of loss_D over the last `flat_window` logs;
  loss_G_rel_range   near 0 = flat (the game stopped moving)
  d_acc_range        max − min of D's accuracy ½(d_acc_real + d_acc_fake) over the window
  d_acc_mean         its mean (≈ 1: D wins outright, G gets no useful gradient)
  m_global_trend     BEGAN: relative change of the least-squares line through
                     M_global = L(x) + |γ L(x) − L(G(z))| across the window; > 0 = rising (not converging)

Flatness and trend need a full window and the keys present; what cannot be computed is left out.
"""
from __future__ import annotations

import math

import torch

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs

EPS_LOSS = 1e-3  # denominators below this count as "loss ≈ 0"


def _nonfinite(entry: dict) -> bool:
    return any(isinstance(v, (int, float)) and not math.isfinite(v) for v in entry.values())


def _series(window: list[dict], key: str) -> list[float] | None:
    vals = [e.get(key) for e in window]
    if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in vals):
        return None
    return [float(v) for v in vals]


def rel_range(x: list[float]) -> float:
    """(max − min) / max(|mean|, EPS_LOSS)."""
    return (max(x) - min(x)) / max(abs(sum(x) / len(x)), EPS_LOSS)


def linear_trend(steps: list[float], y: list[float]) -> float:
    """Relative change of the least-squares line y ≈ a + b·step across the window: b·Δstep / |mean y|."""
    s, v = torch.tensor(steps, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    ds = s - s.mean()
    denom = float((ds**2).sum())
    if denom == 0:
        return 0.0
    b = float((ds * (v - v.mean())).sum()) / denom  # slope of the fit
    return b * float(s.max() - s.min()) / max(abs(float(v.mean())), EPS_LOSS)


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def training_signals(inp: MetricInputs) -> dict[str, float]:
    history = inp.history or []
    out = {"nonfinite_stats": float(sum(_nonfinite(e) for e in history))}
    w = inp.flat_window
    if len(history) < w:
        return out
    window = history[-w:]
    for key in ("loss_D", "loss_G"):
        x = _series(window, key)
        if x is not None:
            out[f"{key}_rel_range"] = rel_range(x)
    real, fake = _series(window, "d_acc_real"), _series(window, "d_acc_fake")
    if real is not None and fake is not None:
        acc = [(a + b) / 2 for a, b in zip(real, fake)]  # D accuracy on a half-real, half-fake batch
        out["d_acc_range"] = max(acc) - min(acc)
        out["d_acc_mean"] = sum(acc) / len(acc)
    m = _series(window, "m_global")
    steps = _series(window, "step") or [float(i) for i in range(len(window))]
    if m is not None:
        out["m_global_trend"] = linear_trend(steps, m)
    return out
