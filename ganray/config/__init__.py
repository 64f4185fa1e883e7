"""Typed, frozen experiment configuration loaded from YAML.

One YAML file per experiment; its keys equal the dataclass field names below. Every
problem (unknown key, wrong type, value out of range) raises `ConfigError` naming the dotted
path and what is allowed, before anything runs. What this floor cannot see — storage URIs
(the storage layer's grammar) and metric names (the metrics registry) — is checked by
`ganray.args.load_config`, which every entry point loads configs with. This package imports
only ganray.exits; `ganray.config.parse` converts and range-checks single values.

The dataclass defaults ARE the embedded local defaults: configs/zdim_mnist_local.yaml (which
`python jobs/sweep_zdim.py` runs) equals them (mnist5k, a CPU-sized DCGAN, ./ganray_results).
"""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ganray.config.parse import MAX_INT, ConfigError, check_range, convert, did_you_mean  # noqa: F401 (re-exported)
from ganray.config.sections import (  # noqa: F401 (re-exported)
    ADAM_IMPLS,
    ARCHS,
    CYCLEGAN_SETS,
    D_UPDATES,
    DATASETS,
    DIGIT_TRANSFORMS,
    FAMILIES,
    FAMILY_DEFAULTS,
    FAMILY_KEYS,
    LABELLED_DATASETS,
    PER_CONDITION_MIN,
    REMEDY_FAMILIES,
    SWEEP_AXES,
    TEXT_DATASETS,
    TRAIN_CLASSES,
    TWO_D_DATASETS,
    UNPAIRED_DATASETS,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    ScalingConfig,
    SpeedConfig,
    StorageConfig,
    SweepConfig,
    TrackingConfig,
    TrainConfig,
    _f,
    is_2d,
)


@dataclass(frozen=True)
class Config:
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    # ---- conversions -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def conv(v):
            if isinstance(v, tuple):
                return [conv(x) for x in v]
            return v

        return {
            sec.name: {k: conv(v) for k, v in dataclasses.asdict(getattr(self, sec.name)).items()}
            for sec in dataclasses.fields(self)
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **dotted: Any) -> "Config":
        """`cfg.replace(**{"model.z_dim": 2})`: a new, validated config. Train keys that came from
        the family's settings stay unset, so a new train.family brings its own."""
        d = self.to_dict()
        for k in getattr(self.train, "from_family", ()):
            d["train"][k] = None
        for key, value in dotted.items():
            _set_dotted(d, key, value)
        return from_dict(d)


# ---- loading and validation --------------------------------------------------------


def _build_section(cls, raw: Any, prefix: str, errors: list[str]):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{prefix}: expected a mapping of keys, got {raw!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}"
        if key not in fields:
            errors.append(f"{path}: unknown key{did_you_mean(str(key), fields)}; allowed: {', '.join(fields)}")
            continue
        try:
            v = convert(value, hints[key], path)
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        range_errs = check_range(v, fields[key].metadata, path)
        if range_errs:
            errors.extend(range_errs)
            continue
        kwargs[key] = v
    return cls(**kwargs)


def _cross_checks(cfg: Config) -> list[str]:
    errs: list[str] = []
    if not cfg.experiment.name or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", cfg.experiment.name):
        errs.append(f"experiment.name: must be letters, digits, '.', '_' or '-' (got {cfg.experiment.name!r})")
    two_d = is_2d(cfg.data.dataset)
    if two_d and cfg.model.arch == "dcgan":
        errs.append(f"model.arch: dcgan needs image data; data.dataset {cfg.data.dataset!r} is 2D (use mlp or auto)")
    if not two_d and cfg.model.arch in ("mlp", "pacgan-mlp"):
        errs.append(f"model.arch: {cfg.model.arch} is for 2D data; data.dataset {cfg.data.dataset!r} is images (use dcgan or auto)")
    if two_d and cfg.train.family in ("began", "vae"):
        errs.append(f"train.family: {cfg.train.family} needs image data (data.dataset is {cfg.data.dataset!r})")
    for i, fam in enumerate(cfg.sweep.family):
        if fam not in FAMILIES:
            errs.append(f"sweep.family[{i}]: unknown value {fam!r}; allowed: {', '.join(FAMILIES)}")
    for name in ("z_dim", "seeds"):
        for i, v in enumerate(getattr(cfg.sweep, name)):
            if v < (1 if name == "z_dim" else 0):
                errs.append(f"sweep.{name}[{i}]: must be >= {1 if name == 'z_dim' else 0} (got {v})")
    for name in ("lr_g", "lr_d"):
        for i, v in enumerate(getattr(cfg.sweep, name)):
            if v <= 0:
                errs.append(f"sweep.{name}[{i}]: must be > 0 (got {v})")
    if not cfg.sweep.seeds:
        errs.append("sweep.seeds: empty grid; give at least one seed")
    if cfg.train.d_updates != "joint":  # separate fake and real D steps: the gan family's BCE only
        families = sorted({cfg.train.family, *cfg.sweep.family} - {"gan"})
        if families:
            errs.append(f"train.d_updates: {cfg.train.d_updates} is for the gan family only; train.family or "
                        f"sweep.family gives {', '.join(families)} (use joint)")
        elif cfg.train.d_updates == "simultaneous" and cfg.train.n_critic != 1:
            errs.append(f"train.n_critic: {cfg.train.n_critic} with train.d_updates simultaneous, which updates "
                        "D and G once each from the same weights (use n_critic 1)")
    if two_d:  # the 2-D MLPs have their own BatchNorm and LeakyReLU, not these
        defaults = ModelConfig()
        for key in ("bn_momentum", "bn_eps", "leaky_slope"):
            if getattr(cfg.model, key) != getattr(defaults, key):
                errs.append(f"model.{key}: applies to the dcgan arch; data.dataset {cfg.data.dataset!r} is 2D (mlp)")
    sc = cfg.scaling
    # DDP ranks that share a GPU fail in NCCL ("Duplicate GPU detected", Ray issue 48012)
    if sc.use_gpu and sc.num_workers > 1 and sc.gpus_per_worker != int(sc.gpus_per_worker):
        errs.append(f"scaling.gpus_per_worker: {sc.gpus_per_worker} with scaling.num_workers {sc.num_workers}: "
                    "DDP workers on a shared GPU fail in NCCL (Duplicate GPU detected); give each worker whole "
                    "GPUs (gpus_per_worker: 1) or run one worker (num_workers: 1); fractions are for "
                    "packing one-worker trials")
    errs += _speed_checks(cfg)
    errs += _remedy_checks(cfg)
    errs += _conditional_checks(cfg)
    errs += _variant_checks(cfg)
    return errs


def _remedy_checks(cfg: Config) -> list[str]:
    """model.pack and model.minibatch_std reshape D's batch: they must divide it."""
    m, errs = cfg.model, []
    remedies = [k for k, off in (("pack", 1), ("minibatch_std", 0), ("spectral_norm", False)) if getattr(m, k) != off]
    families = sorted({cfg.train.family, *cfg.sweep.family} - set(REMEDY_FAMILIES))
    if remedies and families:
        why = "has no discriminator" if families == ["vae"] else "does not take it"
        errs.append(f"model.{remedies[0]}: the {', '.join(families)} family {why}; remove it or use "
                    f"{', '.join(REMEDY_FAMILIES)}")
    if cfg.train.batch_size % m.pack:
        errs.append(f"model.pack: {m.pack} does not divide train.batch_size {cfg.train.batch_size} "
                    "(D judges packs of model.pack samples)")
    elif m.minibatch_std and (cfg.train.batch_size // m.pack) % m.minibatch_std:
        errs.append(f"model.minibatch_std: group size {m.minibatch_std} does not divide D's batch of "
                    f"{cfg.train.batch_size // m.pack} (train.batch_size / model.pack)")
    return errs


def _conditional_checks(cfg: Config) -> list[str]:
    """A class-conditional family needs an image dataset with class labels."""
    families, errs = {cfg.train.family, *cfg.sweep.family}, []
    if "cgan" in families and cfg.data.dataset not in LABELLED_DATASETS:
        errs.append(f"train.family: cgan conditions on class labels; data.dataset {cfg.data.dataset!r} has none it "
                    f"can use (use {', '.join(LABELLED_DATASETS)})")
    if "stackgan" in families:
        if cfg.data.dataset not in TEXT_DATASETS:
            errs.append(f"train.family: stackgan conditions on captions; data.dataset {cfg.data.dataset!r} has none "
                        f"(use {', '.join(TEXT_DATASETS)})")
        if cfg.train.stage == 2 and not cfg.train.stage1_checkpoint:
            errs.append("train.stage1_checkpoint: Stage II trains on a frozen Stage I; give the URI of a Stage-I "
                        "checkpoint (a trial folder or checkpoint.pt)")
        if cfg.train.batch_size < 2:
            errs.append("train.batch_size: stackgan's mismatched (real image, wrong text) pairs need at least 2")
    k = len(cfg.data.classes) or TRAIN_CLASSES.get(cfg.data.dataset, 0)
    if families & {"cgan", "stackgan"} and cfg.eval.metrics and k and cfg.eval.n < PER_CONDITION_MIN * k:
        errs.append(f"eval.n: {cfg.eval.n} samples give {cfg.eval.n // k} per condition for {k} classes; the "
                    f"per-condition statistics need at least {PER_CONDITION_MIN} each (eval.n >= {PER_CONDITION_MIN * k})")
    if cfg.train.stage1_checkpoint and (cfg.train.family != "stackgan" or cfg.train.stage != 2):
        errs.append("train.stage1_checkpoint: only for train.family stackgan with train.stage 2")
    return errs + _translation_checks(cfg, families)


def _translation_checks(cfg: Config, families: set[str]) -> list[str]:
    """cyclegan translates between the two domains of an unpaired dataset, and only it reads one."""
    errs = []
    unpaired = cfg.data.dataset in UNPAIRED_DATASETS
    if "cyclegan" in families and not unpaired:
        errs.append(f"train.family: cyclegan translates between two unpaired domains; data.dataset "
                    f"{cfg.data.dataset!r} has one (use digits2inverse or cyclegan:<name>, e.g. cyclegan:horse2zebra)")
    if unpaired and families - {"cyclegan"}:
        errs.append(f"data.dataset: {cfg.data.dataset} holds two unpaired domains, for train.family cyclegan; "
                    f"train.family or sweep.family gives {', '.join(sorted(families - {'cyclegan'}))}")
    if "cyclegan" in families:
        if cfg.model.g_ema:
            errs.append("model.g_ema: not for cyclegan (its two generators translate; no G_ema is kept)")
        if cfg.train.n_critic != 1:
            errs.append(f"train.n_critic: cyclegan takes one D step per G step, as the reference (got {cfg.train.n_critic})")
    if cfg.data.crop_size and cfg.data.load_size and cfg.data.crop_size > cfg.data.load_size:
        errs.append(f"data.crop_size: {cfg.data.crop_size} is larger than data.load_size {cfg.data.load_size}")
    photos = cfg.data.dataset.startswith("cyclegan:")
    drawn = cfg.data.crop_size or cfg.data.load_size
    if photos and drawn and (drawn % 4 or drawn < 8):
        key = "crop_size" if cfg.data.crop_size else "load_size"
        errs.append(f"data.{key}: cyclegan's generators halve the image twice: the images drawn ({drawn}x{drawn}) must "
                    "be a multiple of 4 and at least 8 (the reference: 256)")
    if cfg.data.crop_size and not photos:
        errs.append(f"data.crop_size: applies to cyclegan:<name>; {cfg.data.dataset} would ignore it")
    if cfg.data.load_size and not photos and cfg.data.dataset != "cub200":
        errs.append(f"data.load_size: applies to cub200 and cyclegan:<name>; {cfg.data.dataset} would ignore it")
    return errs


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'pack2: model.pack=2, train.lr_d=4e-4' -> ("pack2", {"model.pack": 2, "train.lr_d": 4e-4});
    a bare 'baseline' -> ("baseline", {}). The values are YAML scalars."""
    name, _, rest = str(text).partition(":")
    name = name.strip()
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise ConfigError(f"{text!r}: a variant starts with its name (letters, digits, '.', '_', '-') "
                          "then ': section.key=value, ...'")
    items = [t.strip() for t in rest.split(",") if t.strip()]
    return name, parse_overrides(items)


def _variant_checks(cfg: Config) -> list[str]:
    """Each sweep.variants entry parses, names a unique variant, sets no swept or sweep key, and
    makes a valid config."""
    errs: list[str] = []
    names: set[str] = set()
    swept = {key for f, key in SWEEP_AXES if getattr(cfg.sweep, f)}
    for i, text in enumerate(cfg.sweep.variants):
        try:
            name, over = parse_variant(text)
        except ConfigError as e:
            errs += [f"sweep.variants[{i}]: {x}" for x in e.errors]
            continue
        if name in names:
            errs.append(f"sweep.variants[{i}]: the name {name!r} is given twice")
        names.add(name)
        bad = sorted(k for k in over if k.startswith("sweep.") or k in swept)
        if bad:
            errs.append(f"sweep.variants[{i}] ({name}): sets {', '.join(bad)}, which the sweep itself sets")
            continue
        try:
            cfg.replace(**{"sweep.variants": [], **over})
        except ConfigError as e:
            errs += [f"sweep.variants[{i}] ({name}): {x}" for x in e.errors]
    return errs


def _speed_checks(cfg: Config) -> list[str]:
    """speed.cuda_graphs replays one captured step: a CUDA device, a family whose step keeps no
    host-side state (BEGAN's k_t and the VAE's step are not captured), no DDP all-reduce inside."""
    if not cfg.speed.cuda_graphs:
        return []
    errs = []
    if cfg.train.device == "cpu" or (cfg.train.device == "auto" and not cfg.scaling.use_gpu):
        errs.append("speed.cuda_graphs: CUDA-graph capture needs a GPU (scaling.use_gpu: true or train.device: cuda); "
                    f"got train.device {cfg.train.device!r}, scaling.use_gpu {cfg.scaling.use_gpu}")
    families = (cfg.train.family, *cfg.sweep.family)
    if any(f not in ("gan", "wgan-gp") for f in families):
        errs.append(f"speed.cuda_graphs: only for the gan and wgan-gp families (got {', '.join(families)})")
    if cfg.scaling.num_workers > 1:
        errs.append(f"speed.cuda_graphs: one worker only (got scaling.num_workers {cfg.scaling.num_workers})")
    return errs


def from_dict(raw: Any) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"<root>: expected a mapping of sections, got {type(raw).__name__}")
    errors: list[str] = []
    sections = {f.name: f for f in dataclasses.fields(Config)}
    built = {}
    for key, value in raw.items():
        if key not in sections:
            errors.append(f"{key}: unknown section{did_you_mean(str(key), sections)}; allowed: {', '.join(sections)}")
            continue
        built[key] = _build_section(sections[key].default_factory, value, key, errors)
    cfg = Config(**built)
    if not errors:
        errors += _cross_checks(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def from_yaml(text: str) -> Config:
    """The Config of `Config.to_yaml()` text (a sweep hands each Tune trial its config as this text:
    Tune keeps it as it is when it saves and restores a run, which it does not do for objects)."""
    return from_dict(yaml.safe_load(text))


def config_of(value: "Config | str") -> Config:
    """A Config given as itself or as its to_yaml() text."""
    return value if isinstance(value, Config) else from_yaml(value)


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{key}: overrides take the form section.key=value (e.g. train.lr_g=2e-4)")
    sec, name = parts
    if not isinstance(d.get(sec, {}), dict):
        raise ConfigError(f"{sec}: expected a mapping of keys")
    d.setdefault(sec, {})[name] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["train.lr_g=2e-4", "sweep.z_dim=[1,2]"]` -> {"train.lr_g": 2e-4, ...}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value (e.g. train.lr_g=2e-4)")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        out[key.strip()] = value
    return out


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Load a YAML config (None = embedded defaults) and apply `--set` overrides."""
    raw: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a YAML text file (byte {e.start} is not UTF-8); "
                              "give a configs/*.yaml file") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the config file ({e.strerror or e})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if overrides:
        ov = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        for key, value in ov.items():
            _set_dotted(raw, key, value)
    return from_dict(raw)
