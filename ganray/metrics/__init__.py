"""Metrics registry: every metric is a function of the generated samples (and cached reference
statistics of the real data) returning flat `{name: float}`.

    @register_metric(signals=("fcd",), kinds=IMAGE_KINDS, needs_real_features=True)
    def fcd(inp: MetricInputs) -> dict[str, float]: ...

`metric_names()` lists the registered metrics and `signal_names(metrics)` every scalar key
those metrics can report; `ganray.config` calls both to check `eval.metrics` and
`sweep.asha_metric` when a config loads. Importing this package imports the metric modules
(torch and small helpers), never trains or loads a classifier.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from ganray.metrics.inputs import MetricInputs

# What a metric applies to: plain image datasets, stacked MNIST (3 digit channels), 2D mixtures.
IMAGE, STACKED, POINTS = "image", "stacked", "2d"
ALL_KINDS = (IMAGE, STACKED, POINTS)
IMAGE_KINDS = (IMAGE, STACKED)

MetricFn = Callable[["MetricInputs"], dict[str, float]]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    signals: tuple[str, ...]  # every key fn can return
    kinds: tuple[str, ...]  # data kinds it applies to; elsewhere it is skipped
    needs_features: bool  # needs the reference classifier (features / labels of samples)
    needs_real_features: bool  # needs the real data's features (FCD, PRDC), computed once per run


_METRICS: dict[str, Metric] = {}


def register_metric(
    fn: MetricFn | None = None,
    *,
    signals: tuple[str, ...] | None = None,
    kinds: tuple[str, ...] = ALL_KINDS,
    needs_features: bool = False,
    needs_real_features: bool = False,
):
    """Register `fn` under its own name. Bare `@register_metric` reports one key, the name."""

    def deco(f: MetricFn) -> MetricFn:
        if f.__name__ in _METRICS and _METRICS[f.__name__].fn is not f:
            raise ValueError(f"metric {f.__name__!r} registered twice")
        bad = [k for k in kinds if k not in ALL_KINDS]
        if bad:
            raise ValueError(f"metric {f.__name__!r}: unknown kinds {bad}; allowed: {', '.join(ALL_KINDS)}")
        _METRICS[f.__name__] = Metric(f.__name__, f, tuple(signals or (f.__name__,)), tuple(kinds),
                                      needs_features or needs_real_features, needs_real_features)
        return f

    return deco(fn) if fn is not None else deco


def _import_all() -> None:
    from ganray.metrics import (  # noqa: F401, PLC0415  (each module registers its metric)
        class_coverage,
        fcd,
        fixed_z_flip_rate,
        mixture_coverage,
        near_real,
        prdc,
        sample_diversity,
        training_signals,
    )


def metric_names() -> tuple[str, ...]:
    _import_all()
    return tuple(_METRICS)


def get_metric(name: str) -> Metric:
    _import_all()
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; allowed: {', '.join(_METRICS)}")
    return _METRICS[name]


def signal_names(metrics: tuple[str, ...]) -> set[str]:
    """Every scalar key the named metrics can report (unknown names contribute nothing)."""
    _import_all()
    return {s for m in metrics if m in _METRICS for s in _METRICS[m].signals}


def applicable_metrics(dataset: str, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The named metrics that apply to `dataset` (e.g. fcd does not apply to ring8)."""
    kind = data_kind(dataset)
    return tuple(m for m in metrics if kind in get_metric(m).kinds)


def data_kind(dataset: str) -> str:
    """"2d" for ring8/grid25, "stacked" for stacked-mnist, else "image"."""
    if dataset in ("ring8", "grid25"):
        return POINTS
    return STACKED if dataset == "stacked-mnist" else IMAGE
