"""Metrics registry: every metric is a function of the generated samples (and cached reference
statistics of the real data) returning flat `{name: float}`.

What each built-in metric is — its name, every key it can report (signals), the data kinds it
applies to, whether it needs the reference classifier — is written once, in `SPECS` below, so
that a config can be checked (`config_metric_errors`, called by `ganray.args.load_config`)
without importing torch. The function itself lives in the spec's module, which registers it
with a bare decorator; `get_metric` imports that module on first use:

    @register_metric  # name, signals, kinds: ganray.metrics.SPECS
    def fcd(inp: MetricInputs) -> dict[str, float]: ...

A metric not in SPECS (a plugin, a test) describes itself in the decorator:
`@register_metric(signals=("a", "b"), kinds=IMAGE_KINDS, needs_features=True)`.
Importing this package imports nothing heavy.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ganray.config import Config, did_you_mean, is_2d

if TYPE_CHECKING:
    from ganray.metrics.inputs import MetricInputs

# What a metric applies to: plain image datasets, stacked MNIST (3 digit channels), 2D mixtures.
IMAGE, STACKED, POINTS = "image", "stacked", "2d"
ALL_KINDS = (IMAGE, STACKED, POINTS)
IMAGE_KINDS = (IMAGE, STACKED)

MetricFn = Callable[["MetricInputs"], dict[str, float]]

# The datasets of RGB (3-channel) images: the ones eval.inception applies to (ganray.metrics.inception).
RGB_DATASETS = ("cifar10", "stacked-mnist")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    signals: tuple[str, ...]  # every key the function can return
    kinds: tuple[str, ...]  # data kinds it applies to; elsewhere it is skipped
    needs_features: bool  # needs the reference classifier (features / labels of samples)
    needs_real_features: bool  # needs the real data's features (FCD, PRDC), computed once per run
    module: str | None  # where the function is registered; None: registered with its spec


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    signals: tuple[str, ...]
    kinds: tuple[str, ...]
    needs_features: bool
    needs_real_features: bool


def _spec(name: str, signals: tuple[str, ...], kinds: tuple[str, ...], *, features: bool = False,
          real_features: bool = False) -> MetricSpec:
    return MetricSpec(name, signals, kinds, features or real_features, real_features, f"ganray.metrics.{name}")


# The built-in metrics (docs/metrics.md says what each measures).
SPECS: dict[str, MetricSpec] = {s.name: s for s in (
    _spec("class_coverage", ("classes_covered", "covered_share", "kl_uniform", "max_class_share", "mean_confidence"),
          IMAGE_KINDS, features=True),
    _spec("fcd", ("fcd",), IMAGE_KINDS, real_features=True),
    _spec("fixed_z_flip_rate", ("fixed_z_flip_rate",), ALL_KINDS, features=True),
    _spec("kid", ("kid", "kid_std"), IMAGE_KINDS, real_features=True),
    _spec("mixture_coverage", ("modes_covered", "hq_share", "reverse_kl", "reverse_kl_hq"), (POINTS,)),
    _spec("near_real", ("near_real_share",), IMAGE_KINDS, real_features=True),
    _spec("prdc", ("precision", "recall", "density", "coverage"), IMAGE_KINDS, real_features=True),
    _spec("sample_diversity", ("spread_ratio", "duplicate_share"), ALL_KINDS),
    _spec("training_signals", ("nonfinite_stats", "loss_D_rel_range", "loss_G_rel_range", "d_acc_range",
                               "d_acc_mean", "m_global_trend"), ALL_KINDS),
    # conditional runs only (samples with the class each was asked for; {} otherwise): ganray.metrics.conditional
    MetricSpec("condition_fidelity", ("condition_fidelity", "condition_fidelity_min"), (IMAGE,), True, False,
               "ganray.metrics.conditional"),
    MetricSpec("condition_diversity", ("condition_spread_ratio", "condition_spread_ratio_min",
                                       "condition_duplicate_share", "condition_duplicate_share_max"),
               (IMAGE,), True, True, "ganray.metrics.conditional"),
    MetricSpec("condition_fcd", ("condition_fcd", "condition_fcd_max"), (IMAGE,), True, True,
               "ganray.metrics.conditional"),
    MetricSpec("condition_coverage", ("condition_coverage", "condition_coverage_min"), (IMAGE,), True, True,
               "ganray.metrics.conditional"),
    # captioned-mnist runs only (each sample's caption names attributes; {} otherwise): ganray.metrics.conditional
    MetricSpec("caption_attributes", ("attribute_rho_thickness", "attribute_rho_slant", "attribute_rho_size"),
               (IMAGE,), False, False, "ganray.metrics.conditional"),
    # translation runs only (the evaluator's test-split translations; {} otherwise): ganray.metrics.translation
    MetricSpec("translation_content", ("content_kept_ab", "content_kept_ba", "cycle_l1_a", "cycle_l1_b"), (IMAGE,),
               True, False, "ganray.metrics.translation"),
    MetricSpec("translation_diversity", ("translation_spread_ratio_ab", "translation_spread_ratio_ba",
                                         "translation_duplicate_share_ab", "translation_duplicate_share_ba"),
               (IMAGE,), True, False, "ganray.metrics.translation"),
    MetricSpec("translation_fcd", ("fcd_ab", "fcd_ba"), (IMAGE,), True, True, "ganray.metrics.translation"),
)}
_FUNCS: dict[str, MetricFn] = {}


def register_metric(
    fn: MetricFn | None = None,
    *,
    signals: tuple[str, ...] | None = None,
    kinds: tuple[str, ...] | None = None,
    needs_features: bool = False,
    needs_real_features: bool = False,
):
    """Register `fn` under its own name. A built-in metric (in SPECS) takes no arguments: its
    spec says the rest. Another bare `@register_metric` reports one key, the name."""
    described = signals is not None or kinds is not None or needs_features or needs_real_features

    def deco(f: MetricFn) -> MetricFn:
        name = f.__name__
        builtin = name in SPECS and SPECS[name].module is not None
        if builtin and described:
            raise ValueError(f"metric {name!r} is described in ganray.metrics.SPECS; register it bare")
        if name in _FUNCS and _FUNCS[name] is not f:
            raise ValueError(f"metric {name!r} registered twice")
        if not builtin:
            bad = [k for k in (kinds or ALL_KINDS) if k not in ALL_KINDS]
            if bad:
                raise ValueError(f"metric {name!r}: unknown kinds {bad}; allowed: {', '.join(ALL_KINDS)}")
            SPECS[name] = MetricSpec(name, tuple(signals or (name,)), tuple(kinds or ALL_KINDS),
                                     needs_features or needs_real_features, needs_real_features, None)
        _FUNCS[name] = f
        return f

    return deco(fn) if fn is not None else deco


def metric_names() -> tuple[str, ...]:
    return tuple(SPECS)


def get_metric(name: str) -> Metric:
    """The metric with its function (importing its module, and so torch, on first use)."""
    if name not in SPECS:
        raise KeyError(f"unknown metric {name!r}; allowed: {', '.join(SPECS)}")
    spec = SPECS[name]
    if name not in _FUNCS and spec.module is not None:
        importlib.import_module(spec.module)  # its @register_metric fills _FUNCS[name]
    if name not in _FUNCS:
        raise KeyError(f"metric {name!r}: {spec.module} registers no function of that name")
    return Metric(name, _FUNCS[name], spec.signals, spec.kinds, spec.needs_features, spec.needs_real_features)


def signal_names(metrics: tuple[str, ...]) -> set[str]:
    """Every scalar key the named metrics can report (unknown names contribute nothing)."""
    return {s for m in metrics if m in SPECS for s in SPECS[m].signals}


def applicable_metrics(dataset: str, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The named metrics that apply to `dataset` (e.g. fcd does not apply to ring8)."""
    kind = data_kind(dataset)
    return tuple(m for m in metrics if kind in SPECS[m].kinds)


def data_kind(dataset: str) -> str:
    """"2d" for the 2-D mixtures, "stacked" for stacked-mnist, else "image"."""
    if is_2d(dataset):
        return POINTS
    return STACKED if dataset == "stacked-mnist" else IMAGE


def config_metric_errors(cfg: Config) -> list[str]:
    """Errors in eval.metrics (unknown names, none applies to the dataset) and in
    sweep.asha_metric (not a key the chosen metrics report)."""
    errs = []
    known = metric_names()
    for i, m in enumerate(cfg.eval.metrics):
        if m not in known:
            errs.append(f"eval.metrics[{i}]: unknown metric {m!r}{did_you_mean(m, known)}; allowed: {', '.join(known)}")
    if not errs and cfg.eval.metrics and not applicable_metrics(cfg.data.dataset, cfg.eval.metrics):
        errs.append(f"eval.metrics: none of {', '.join(cfg.eval.metrics)} applies to data.dataset "
                    f"{cfg.data.dataset!r} (2D mixtures: mixture_coverage; images: class_coverage, fcd, ...)")
    errs += inception_errors(cfg)
    if cfg.sweep.asha:
        reportable = signal_names(cfg.eval.metrics)
        if cfg.sweep.asha_metric not in reportable:
            errs.append(
                f"sweep.asha_metric: unknown metric {cfg.sweep.asha_metric!r}"
                f"{did_you_mean(cfg.sweep.asha_metric, reportable)}; allowed: {', '.join(sorted(reportable))}"
            )
    return errs


def inception_errors(cfg: Config) -> list[str]:
    """Errors in eval.inception / eval.inception_weights: Inception features are for RGB images only
    (grey digits replicated to 3 channels are far from ImageNet: their FID compares with nothing; the
    dataset's own classifier, fcd and kid, measures them), and the final evaluation must exist."""
    ev, errs = cfg.eval, []
    if ev.inception and cfg.data.dataset not in RGB_DATASETS:
        errs.append(f"eval.inception: FID, KID and IS need RGB images ({', '.join(RGB_DATASETS)}); "
                    f"data.dataset {cfg.data.dataset!r} is not (its classifier's fcd and kid measure it)")
    if ev.inception and not ev.metrics:
        errs.append("eval.inception: needs the evaluation at the end of a trial, but eval.metrics is empty")
    if "://" in ev.inception_weights and not ev.inception_weights.startswith(("s3://", "gs://")):
        errs.append(f"eval.inception_weights: expected a local path or an s3:// or gs:// URI, got "
                    f"{ev.inception_weights!r} (a download mirror: $GANRAY_MIRROR_INCEPTION)")
    return errs
