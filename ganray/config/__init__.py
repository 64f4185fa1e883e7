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

# Names other layers register; kept here so a config can be checked before anything
# heavy is imported. Tests assert these agree with the registries.
DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist5k", "stacked-mnist", "ring8", "grid25")
TWO_D_DATASETS = ("ring8", "grid25")  # the 2-D mixtures (points, not images): the one list of them
FAMILIES = ("gan", "wgan-gp", "began", "vae")
ARCHS = ("auto", "dcgan", "mlp")
D_UPDATES = ("joint", "fake_then_real")  # train.d_updates (ganray.families.gan)
ADAM_IMPLS = ("default", "for-loop", "foreach", "fused")  # speed.adam; ganray.families maps them to torch's flags
# Each family's published optimiser settings, applied to every train key the config leaves unset
# (null). An explicit value always wins; the saved config shows the values that ran, so a saved
# config.yaml given back as --config pins them (a new --set train.family keeps them). Families read
# them from the resolved TrainConfig (tc.n_critic, tc.beta1, ...). Change a config with
# Config.replace, which re-resolves them; dataclasses.replace on a section does not.
FAMILY_KEYS = ("lr_g", "lr_d", "beta1", "beta2", "n_critic")
FAMILY_DEFAULTS: dict[str, dict[str, float | int]] = {
    # DCGAN (Radford et al. 2016): Adam 2e-4, beta1 0.5
    "gan": dict(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
    # WGAN-GP (Gulrajani et al. 2017): n_critic 5, Adam 1e-4, betas (0.5, 0.9) as in the authors'
    # MNIST code (gan_mnist.py); the paper's Algorithm 1 lists beta1 = 0
    "wgan-gp": dict(lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.9, n_critic=5),
    # BEGAN (Berthelot et al. 2017): Adam, initial lr 1e-4 (the paper's range 5e-5 to 1e-4), beta1 0.5
    "began": dict(lr_g=1e-4, lr_d=1e-4, beta1=0.5, beta2=0.999, n_critic=1),
    # VAE baseline: ganray's own (the VAE paper used Adagrad); lr_d and n_critic are not used
    "vae": dict(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
}


def is_2d(dataset: str) -> bool:
    """True for the 2-D mixtures (TWO_D_DATASETS), False for image datasets."""
    return dataset in TWO_D_DATASETS


def _f(default, *, ge=None, gt=None, le=None, choices=None, doc=""):
    """A dataclass field with range/choice metadata checked by `validate`."""
    meta = dict(ge=ge, gt=gt, le=le, choices=choices, doc=doc)
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = _f("zdim-mnist-local", doc="experiment folder under the storage URI")
    seed: int = _f(0, ge=0, doc="base seed; a worker uses seed * world_size + rank")


@dataclass(frozen=True)
class StorageConfig:
    uri: str = _f(
        "",
        doc="local path, s3://bucket/prefix or gs://bucket/prefix; '' = $GANRAY_STORAGE, else ./ganray_results "
            "(~/ganray_results under `ray job submit`, whose working directory Ray deletes). Local paths are "
            "made absolute where the command starts",
    )


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _f("mnist5k", choices=DATASETS, doc="training data: images, or the 2D mixtures ring8, grid25")
    source: str = _f(
        "",
        doc="folder or s3://, gs:// prefix holding the official files (read from there only); "
        "'' = the cache, filled by downloading",
    )
    cache_dir: str = _f("", doc="download cache; '' = $GANRAY_CACHE or ~/.cache/ganray")
    download: bool = _f(True, doc="download official files into the cache when they are not there (source '')")
    mirror: str = _f(
        "",
        doc="http(s) base URL of a mirror holding the official file names, checked against the same sha256; "
        "'' = $GANRAY_MIRROR_<DATASET> (e.g. GANRAY_MIRROR_FASHION_MNIST) or the official locations",
    )
    classes: tuple[int, ...] = _f((), doc="keep only these class labels; () = all")
    n_train: int = _f(
        0,
        ge=0,
        doc="cap on training examples; generated sets draw this many; 0 = all (stacked-mnist 50000, 2D mixtures 100000)",
    )
    seed: int = _f(0, ge=0, doc="seed of generated data (stacked-mnist triplets, 2D mixture draws); fixed across trials")
    stacked_base: str = _f("mnist5k", choices=("mnist5k", "mnist"), doc="stacked-mnist: where the base digits come from")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _f("auto", choices=ARCHS, doc="auto = dcgan for images, mlp for 2D data")
    z_dim: int = _f(10, ge=1, le=65536, doc="size of the latent z that G maps to a sample")
    width: float = _f(0.25, gt=0, le=16, doc="channel multiplier; 1.0 = the classic Keras MNIST DCGAN")
    g_ema: bool = _f(False, doc="keep an exponential moving average of G (G_ema)")
    ema_decay: float = _f(0.999, gt=0, le=1, doc="G_ema decay per G step (model.g_ema)")
    # dcgan only (the 2-D MLPs keep their own); the defaults are PyTorch's, the Keras DCGAN's are in
    # configs/zdim_mnist_original.yaml
    bn_momentum: float = _f(
        0.1, gt=0, le=1, doc="BatchNorm momentum of the DCGAN generator in PyTorch's convention: running = "
                             "(1 - m) * running + m * batch; Keras' momentum k is 1 - k here (Keras 0.8 = 0.2)")
    bn_eps: float = _f(1e-5, gt=0, le=1, doc="BatchNorm eps of the DCGAN generator (PyTorch 1e-5, Keras 1e-3)")
    leaky_slope: float = _f(
        0.2, ge=0, le=1, doc="negative slope of every LeakyReLU of the DCGAN generator and discriminator "
                             "(Keras' LeakyReLU default: 0.3); BEGAN's autoencoder and the VAE's encoder keep 0.2")


@dataclass(frozen=True)
class TrainConfig:
    family: str = _f("gan", choices=FAMILIES, doc="losses and steps; unset train keys take its settings")
    steps: int = _f(600, ge=1, le=100_000_000, doc="generator steps")
    batch_size: int = _f(64, ge=1, le=1_000_000, doc="per worker: the global batch is batch_size * num_workers")
    # null (the default) = the family's published setting (FAMILY_DEFAULTS); resolved on load
    lr_g: float | None = _f(None, gt=0, doc="G's Adam learning rate; null = the family's (gan 2e-4, wgan-gp 1e-4)")
    lr_d: float | None = _f(None, gt=0, doc="D's Adam learning rate; null = the family's")
    beta1: float | None = _f(None, ge=0, le=1, doc="Adam beta1; null = the family's (0.5)")
    beta2: float | None = _f(None, ge=0, le=1, doc="Adam beta2; null = the family's (gan 0.999, wgan-gp 0.9)")
    n_critic: int | None = _f(None, ge=1, le=100, doc="D steps per G step; null = the family's (wgan-gp 5, others 1)")
    d_updates: str = _f(
        "joint", choices=D_UPDATES,
        doc="gan family: how a D step uses its batches. joint = one optimizer step on BCE(D(x), 1) + BCE(D(G(z)), 0) "
            "over [real, fake] (one forward, one backward); fake_then_real = two optimizer steps, first on a fake "
            "batch drawn with G in eval mode (label 0), then on the real batch (label 1), as the Keras DCGAN's "
            "D.train_on_batch(G.predict(z), 0) and D.train_on_batch(x, 1)")
    gp_lambda: float = _f(10.0, ge=0, doc="WGAN-GP gradient penalty weight")
    began_gamma: float = _f(0.5, gt=0, le=1, doc="BEGAN diversity ratio")
    began_lambda_k: float = _f(0.001, ge=0, doc="BEGAN k_t learning rate")
    vae_alpha: float = _f(1.0, gt=0, doc="VAE loss = KL + alpha * MSE")
    log_every: int = _f(20, ge=1, doc="steps between logged metric rows (and the last step)")
    eval_every: int = _f(100, ge=1, doc="steps between evaluations: metrics and the collapse verdict")
    sample_every: int = _f(100, ge=1, doc="steps between sample grids (the fixed-z GIF's frames)")
    checkpoint_every: int = _f(100, ge=1, doc="steps between checkpoints (runs resume from the newest)")
    bf16: bool = _f(False, doc="bf16 autocast of each step on the training device, GPU or CPU; weights stay float32")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"), doc="auto = cuda if scaling.use_gpu and CUDA is there")

    def __post_init__(self) -> None:
        # Fill the keys left unset with the family's settings; remember which, so that a change of
        # family (cfg.replace(**{"train.family": ...}), a sweep.family grid) re-resolves them.
        defaults = FAMILY_DEFAULTS.get(self.family, FAMILY_DEFAULTS["gan"])
        unset = [k for k in FAMILY_KEYS if getattr(self, k) is None]
        for k in unset:
            object.__setattr__(self, k, defaults[k])
        object.__setattr__(self, "from_family", frozenset(unset))  # not a field: never saved


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: int = _f(1, ge=1, doc="Ray Train workers (DDP ranks) per trial")
    use_gpu: bool = _f(False, doc="give each worker gpus_per_worker GPUs")
    cpus_per_worker: float = _f(1.0, gt=0, doc="CPUs Ray reserves for each worker")
    gpus_per_worker: float = _f(1.0, gt=0, doc="fractions pack several small trials on one GPU")
    max_failures: int = _f(0, ge=-1, doc="restarts of a failed trial from its newest checkpoint (Ray Train or Tune FailureConfig); -1 = unlimited")
    sync_batchnorm: bool = _f(False, doc="convert BatchNorm to SyncBatchNorm under DDP")


@dataclass(frozen=True)
class SweepConfig:
    z_dim: tuple[int, ...] = _f((1, 2, 10, 50, 100), doc="grid; () = model.z_dim only")
    lr_g: tuple[float, ...] = _f((), doc="grid; () = train.lr_g only")
    lr_d: tuple[float, ...] = _f((), doc="grid; () = train.lr_d only")
    family: tuple[str, ...] = _f((), doc="grid; () = train.family only")
    seeds: tuple[int, ...] = _f((0,), doc="seeds per grid point")
    stopper: bool = _f(True, doc="stop trials whose verdict is collapsed/diverged/garbage")
    patience: int = _f(2, ge=1, doc="consecutive bad evaluations before a trial is stopped")
    grace_steps: int = _f(200, ge=0, doc="no early stop before this step: young GANs look like garbage")
    asha: bool = _f(False, doc="ASHA scheduler: stop trials that rank low by asha_metric at each rung")
    asha_metric: str = _f("fcd", doc="metric ASHA ranks trials by")
    asha_mode: str = _f("min", choices=("min", "max"), doc="min: lower asha_metric is better; max: higher")
    asha_grace_steps: int = _f(0, ge=0, doc="ASHA's first rung (no ASHA stop before it); 0 = train.eval_every")
    asha_reduction_factor: float = _f(4.0, gt=1, doc="ASHA keeps the best 1/this share at each rung; rungs are "
                                                     "asha_grace_steps x this^k (Ray's default 4)")
    max_concurrent_trials: int = _f(0, ge=0, doc="0 = as many as the cluster's resources allow")


# sweep field -> the config key each value of its grid sets (ganray.sweep's axes, the HParams columns)
SWEEP_AXES = (("z_dim", "model.z_dim"), ("lr_g", "train.lr_g"), ("lr_d", "train.lr_d"), ("family", "train.family"),
              ("seeds", "experiment.seed"))


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation of generated samples and the collapse verdict (docs/metrics.md).

    The verdict thresholds were calibrated on the acceptance cases of docs/metrics.md
    (`python -m ganray.metrics.calibrate` prints the table they were read from).
    """

    n: int = _f(2000, ge=10, doc="generated samples per evaluation (stacked-mnist paper protocol: 26000)")
    n_fixed_z: int = _f(64, ge=1, doc="fixed z batch for sample grids, GIF and flip rate")
    metrics: tuple[str, ...] = _f(
        ("class_coverage", "mixture_coverage", "fcd", "kid", "prdc", "near_real", "fixed_z_flip_rate",
         "sample_diversity", "training_signals"),
        doc="metrics to compute; those that do not apply to the dataset (e.g. fcd on ring8) are skipped",
    )
    n_real: int = _f(10000, ge=10, doc="real samples in the cached reference statistics (FCD, PRDC)")
    prdc_k: int = _f(5, ge=1, doc="k of the k-NN balls of precision/recall/density/coverage")
    coverage_partial: float = _f(
        0.95, ge=0, le=1, doc="partial_collapse below this share of the modes a uniform sample would cover")
    coverage_collapsed: float = _f(
        0.5, ge=0, le=1, doc="collapsed at or below this share of the modes a uniform sample would cover")
    kl_partial: float = _f(
        0.1, ge=0, doc="partial_collapse above this KL(p||uniform) in nats, after the (K-1)/2n small-sample bias")
    duplicate_partial: float = _f(0.2, ge=0, le=1, doc="partial_collapse at or above this share of near-copies")
    duplicate_collapsed: float = _f(0.5, ge=0, le=1, doc="collapsed at or above this share of near-copies")
    near_real_garbage: float = _f(
        0.2, ge=0, le=1, doc="garbage below this share of samples as near the real features as real ones are "
                             "(images; noise: 0, young DCGANs that already cover every class: 0.24-0.48)")
    confidence_garbage: float = _f(
        0.5, ge=0, le=1, doc="garbage below this mean classifier confidence, when near_real is off")
    hq_garbage: float = _f(0.1, ge=0, le=1, doc="garbage below this share of samples within 3 sigma of a mode (2D)")
    flip_rate_warn: float = _f(0.5, ge=0, le=1, doc="a reason (not a verdict) at or above this fixed-z flip rate")
    flat_window: int = _f(10, ge=2, doc="training signals: the last this-many logged entries")
    flat_rel_range: float = _f(0.01, ge=0, doc="a loss is flat when (max - min) / |mean| over the window is below this")
    m_global_rise: float = _f(0.1, ge=0, doc="BEGAN: a reason when M_global's fitted line rises by more than this share")
    inception: bool = _f(False, doc="FID, KID and Inception Score with the standard Inception network at a trial's "
                                    "final evaluation (RGB data; pip install -e '.[fid]')")
    inception_weights: str = _f("", doc="path or URI of the Inception weights file; '' = download once into the "
                                        "cache with a sha256 check")

    def __post_init__(self) -> None:
        errs = []
        if self.coverage_collapsed > self.coverage_partial:
            errs.append(f"eval.coverage_collapsed: must be <= eval.coverage_partial ({self.coverage_partial}); "
                        f"got {self.coverage_collapsed}")
        if self.duplicate_partial > self.duplicate_collapsed:
            errs.append(f"eval.duplicate_partial: must be <= eval.duplicate_collapsed ({self.duplicate_collapsed}); "
                        f"got {self.duplicate_partial}")
        if "prdc" in self.metrics and self.n <= self.prdc_k:
            errs.append(f"eval.n: prdc needs more samples than eval.prdc_k ({self.prdc_k}); got {self.n}")
        if errs:
            raise ConfigError(errs)


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment trackers every trial is logged to, beside its record and TensorBoard (docs/tracking.md).

    Credentials and server options come from each tracker's standard environment only
    (MLFLOW_TRACKING_TOKEN, WANDB_API_KEY, WANDB_MODE, ...), never from configs.
    """

    mlflow_uri: str = _f("", doc="MLflow tracking URI (http://host:5000, file:/path, databricks); '' = off; "
                                 "pip install -e '.[mlflow]'")
    mlflow_experiment: str = _f("", doc="MLflow experiment the trials are logged under; '' = experiment.name")
    wandb_project: str = _f("", doc="Weights & Biases project; '' = off; WANDB_MODE=offline writes run files "
                                    "only; pip install -e '.[wandb]'")
    wandb_group: str = _f("", doc="W&B group of the trials; '' = experiment.name")


@dataclass(frozen=True)
class SpeedConfig:
    """Options that compute the same step faster (docs/config.md, "Speed options"); each is off
    until a GPU measurement (bench/gpu_check.py) says it pays."""

    adam: str = _f("default", choices=ADAM_IMPLS,
                   doc="Adam's implementation: default = torch's choice (foreach on CUDA), for-loop, foreach, "
                       "fused; the same update")
    channels_last: bool = _f(False, doc="image models and real batches in channels_last (NHWC) memory format")
    compile: bool = _f(False, doc="torch.compile G's and D's forward (and so their backward; wgan-gp: G's only, "
                                  "its penalty is a double backward through D); the first steps compile "
                                  "(inductor on CPU needs a C++ compiler)")
    compile_backend: str = _f("inductor", choices=("inductor", "aot_eager", "eager"),
                              doc="torch.compile's backend; aot_eager and eager trace without generating code "
                                  "(debugging, and the CPU test)")
    cuda_graphs: bool = _f(False, doc="capture the whole family step (D and G updates) in one CUDA graph and "
                                      "replay it; GPU only, gan and wgan-gp, one worker")


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
    if not two_d and cfg.model.arch == "mlp":
        errs.append(f"model.arch: mlp is for 2D data; data.dataset {cfg.data.dataset!r} is images (use dcgan or auto)")
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
