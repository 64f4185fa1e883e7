"""fixed_z_flip_rate: share of the fixed-z batch whose predicted class (stacked: mode; 2D: nearest
mixture mode) changed since the previous evaluation — the "digits keep flickering" symptom.

Reported from the second evaluation on (the first has nothing to compare with); the Evaluator
keeps the previous predictions in `MetricInputs.state`.
"""
from __future__ import annotations

from ganray.metrics import register_metric
from ganray.metrics.inputs import MetricInputs

STATE_KEY = "fixed_z_labels"


@register_metric  # name, signals, kinds: ganray.metrics.SPECS
def fixed_z_flip_rate(inp: MetricInputs) -> dict[str, float]:
    if inp.fixed_samples is None or inp.fixed_samples.shape[0] == 0:
        return {}
    labels = inp.mode_of(inp.fixed_samples)  # [n_fixed]
    previous = inp.state.get(STATE_KEY)
    inp.state[STATE_KEY] = labels
    if previous is None or previous.shape != labels.shape:
        return {}
    # flip rate = 1/n Σ_i 1[class_t(G(z_i)) ≠ class_{t−1}(G(z_i))]
    return {"fixed_z_flip_rate": float((labels != previous).float().mean())}
