"""A trial's row in TensorBoard's HParams table: its sweep parameters and its metrics at the last
evaluation, written without TensorFlow as the hparams plugin reads them (its protos:
tensorboard.plugins.hparams.api_pb2 and plugin_data_pb2).

Every trial's run holds, at step 0:
- `_hparams_/experiment`: the columns. One hparam per sweep axis (z_dim, lr_g, lr_d, family, seed),
  with the sweep's values as its discrete domain, and the metrics, each a scalar tag of the run:
  classes_covered, kl_uniform, fcd (2D mixtures: modes_covered, reverse_kl, hq_share) and
  verdict_code (the verdict as a number; its description holds the legend). TensorBoard takes
  the first run's: every trial of a sweep writes the same one (it is derived from the sweep section,
  which every trial's config keeps).
- `_hparams_/session_start_info`: this trial's values, group = the trial's name.
and, once its training has ended (the last step, an early stop or a divergence),
`_hparams_/session_end_info` with STATUS_SUCCESS.

TensorBoard keeps the first summary metadata of a tag in a run (later ones, e.g. of a resumed
writer, are ignored) and the hparams plugin reads only that metadata: so the start info is
written once per run (by the writer that starts the run) and the end info only when training has
ended, never by a writer that failed. The metric values are the scalars' last values, so a
resumed trial's (TensorBoard drops the steps it redoes) are right too.
"""
from __future__ import annotations

from dataclasses import dataclass

from tensorboard.compat.proto.summary_pb2 import DATA_CLASS_TENSOR, Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.proto.types_pb2 import DT_FLOAT
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

from ganray.artifacts.events import event
from ganray.artifacts.layout import VERDICT_CODES, VERDICT_LEGEND
from ganray.config import FAMILY_KEYS, SWEEP_AXES, Config, is_2d, parse_variant

# The plugin's names (tensorboard.plugins.hparams.metadata, which imports more than these need)
PLUGIN_NAME = "hparams"
PLUGIN_DATA_VERSION = 0
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"
SESSION_END_INFO_TAG = "_hparams_/session_end_info"

VERDICT_CODE_TAG = "verdict_code"
VERDICT_CODE_DESCRIPTION = f"the verdict of the last evaluation as a number: {VERDICT_LEGEND}"

# (tag, column, description): scalars the trial writes at every evaluation; the table shows the last
IMAGE_METRICS = (
    ("classes_covered", "classes covered", "classes holding at least 10% of their uniform share of the samples"),
    ("kl_uniform", "KL to uniform", "KL(class histogram || uniform) in nats: 0 = every class equally often"),
    ("fcd", "FCD", "Frechet distance of real and generated samples in the reference classifier's features"),
)
POINT_METRICS = (
    ("modes_covered", "modes covered", "modes with at least one high-quality sample"),
    ("reverse_kl", "reverse KL", "KL(p_G || uniform) over the nearest modes, in nats"),
    ("hq_share", "HQ share", "share of samples within 3 sigma of a mode"),
)


@dataclass(frozen=True)
class HParam:
    name: str                      # the column: z_dim, lr_g, lr_d, family, seed
    key: str                       # the config key it is
    axis: str                      # the sweep field that sweeps it
    value: float | int | str       # this trial's
    domain: tuple                  # the sweep's values; () when the axis is not swept
    differs: bool                  # whether the trials of the sweep may differ in it


@dataclass(frozen=True)
class HParamsTable:
    experiment: str
    hparams: tuple[HParam, ...]
    metrics: tuple[tuple[str, str, str], ...]   # (tag, column, description)


def hparams_table(cfg: Config) -> HParamsTable:
    """The HParams columns and this trial's values, from its resolved config alone."""
    sweep = cfg.sweep
    families_swept = len(set(sweep.family)) > 1
    cols = []
    for field, key in SWEEP_AXES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        values = tuple(getattr(sweep, field))
        # A value outside the domain would be filtered out of the table: a run that was not
        # part of this grid (ganray train --local with a preset's sweep section) shows no domain.
        domain = tuple(sorted(set(values))) if value in values else ()
        differs = len(set(values)) > 1 or (section == "train" and name in FAMILY_KEYS and families_swept)
        cols.append(HParam(name, key, field, value, domain, differs))
    if sweep.variants:  # sweep.variants: one column of the variant names (each sets several keys)
        names = tuple(sorted(parse_variant(v)[0] for v in sweep.variants))
        variant = cfg.experiment.variant
        cols.append(HParam("variant", "experiment.variant", "variants", variant,
                           names if variant in names else (), len(names) > 1))
    metrics = (POINT_METRICS if is_2d(cfg.data.dataset) else IMAGE_METRICS) + (
        (VERDICT_CODE_TAG, "verdict code", VERDICT_CODE_DESCRIPTION),)
    return HParamsTable(cfg.experiment.name, tuple(cols), metrics)


def _number_or_string(value: float | int | str) -> api_pb2.DataType:
    return api_pb2.DATA_TYPE_STRING if isinstance(value, str) else api_pb2.DATA_TYPE_FLOAT64


def _summary_event(tag: str, data: plugin_data_pb2.HParamsPluginData, wall_time: float, step: int = 0) -> bytes:
    data.version = PLUGIN_DATA_VERSION
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME,
                                                                  content=data.SerializeToString()),
                           data_class=DATA_CLASS_TENSOR)
    null = TensorProto(dtype=DT_FLOAT, tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=0)]))
    return event(step, wall_time, summary=Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=null)]))


def experiment_event(table: HParamsTable, wall_time: float) -> bytes:
    """`_hparams_/experiment`: the columns (hparams with their domains, metrics with their legends)."""
    exp = api_pb2.Experiment(name=table.experiment, time_created_secs=wall_time,
                             description=f"ganray experiment {table.experiment}: one session per trial")
    for h in table.hparams:
        info = exp.hparam_infos.add(name=h.name, type=_number_or_string(h.value), differs=h.differs,
                                    description=f"{h.key}" + (f", swept by sweep.{h.axis}" if h.domain else ""))
        if h.domain:
            info.domain_discrete.extend(list(h.domain))
    for tag, column, description in table.metrics:
        exp.metric_infos.add(name=api_pb2.MetricName(tag=tag), display_name=column, description=description,
                             dataset_type=api_pb2.DATASET_UNKNOWN)
    return _summary_event(EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=exp), wall_time)


def session_start_event(table: HParamsTable, trial: str, wall_time: float) -> bytes:
    """`_hparams_/session_start_info`: this trial's values, its group (one session) named after it."""
    info = plugin_data_pb2.SessionStartInfo(group_name=trial, start_time_secs=wall_time)
    for h in table.hparams:
        if isinstance(h.value, str):
            info.hparams[h.name].string_value = h.value
        else:
            info.hparams[h.name].number_value = float(h.value)
    return _summary_event(SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=info),
                          wall_time)


def session_end_event(step: int, wall_time: float) -> bytes:
    """`_hparams_/session_end_info`: training ended (STATUS_SUCCESS; the verdict says how it went)."""
    info = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=wall_time)
    return _summary_event(SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=info),
                          wall_time, step)


def verdict_code_event(step: int, verdict: str, wall_time: float) -> bytes | None:
    """The scalar `verdict_code` (VERDICT_CODES) at `step`, the legend as its description; None
    for a verdict without a code."""
    code = VERDICT_CODES.get(verdict)
    if code is None:
        return None
    meta = SummaryMetadata(display_name="verdict code", summary_description=VERDICT_CODE_DESCRIPTION)
    value = Summary.Value(tag=VERDICT_CODE_TAG, simple_value=float(code), metadata=meta)
    return event(step, wall_time, summary=Summary(value=[value]))
