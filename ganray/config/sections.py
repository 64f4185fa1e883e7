"""The sections of a config: one frozen dataclass per YAML section, their defaults, ranges and
docs (`_f`), and the names other layers register. `ganray.config` assembles them into `Config`,
loads YAML and runs the cross-section checks; import from there (it re-exports all of this).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ganray.config.parse import ConfigError

# Names other layers register; kept here so a config can be checked before anything
# heavy is imported. Tests assert these agree with the registries.
# The official CycleGAN datasets, as the authors' datasets/download_cyclegan_dataset.sh lists them:
# data.dataset cyclegan:<name> (ganray.data.unpaired)
CYCLEGAN_SETS = ("apple2orange", "summer2winter_yosemite", "horse2zebra", "monet2photo", "cezanne2photo",
                 "ukiyoe2photo", "vangogh2photo", "maps", "cityscapes", "facades", "iphone2dslr_flower", "ae_photos")
# Two unpaired domains (cyclegan): the offline digits pair and the official sets
UNPAIRED_DATASETS = ("digits2inverse", *(f"cyclegan:{n}" for n in CYCLEGAN_SETS))
DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist5k", "stacked-mnist", "ring8", "grid25", "captioned-mnist",
            "cub200", *UNPAIRED_DATASETS)
DIGIT_TRANSFORMS = ("thick-invert", "invert-transpose")  # data.digits_transform (ganray.data.unpaired)
TEXT_DATASETS = ("captioned-mnist", "cub200")  # images with captions and their embeddings (stackgan)
TWO_D_DATASETS = ("ring8", "grid25")  # the 2-D mixtures (points, not images): the one list of them
FAMILIES = ("gan", "wgan-gp", "began", "vae", "cgan", "stackgan", "cyclegan")
REMEDY_FAMILIES = ("gan", "wgan-gp", "began")  # the families model.pack, minibatch_std, spectral_norm apply to
# Image datasets with class labels: what a class-conditional family (cgan) can condition on
LABELLED_DATASETS = ("mnist", "mnist5k", "fashion-mnist", "cifar10", "captioned-mnist")
# Classes a conditional family's training split asks for (cub200: the StackGAN authors' 150 training
# species); data.classes narrows them. Each needs PER_CONDITION_MIN of an evaluation's eval.n samples.
TRAIN_CLASSES = {"mnist": 10, "mnist5k": 10, "fashion-mnist": 10, "cifar10": 10, "captioned-mnist": 10, "cub200": 150}
PER_CONDITION_MIN = 20
ARCHS = ("auto", "dcgan", "mlp", "pacgan-mlp")  # pacgan-mlp: the PacGAN authors' 2-D nets (ganray.models.mlp)
D_UPDATES = ("joint", "fake_then_real", "simultaneous")  # train.d_updates (ganray.families.gan)
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
    # class-conditional DCGAN: DCGAN's Adam 2e-4, beta1 0.5 (as Miyato & Koyama's DCGAN-size runs)
    "cgan": dict(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
    # StackGAN-v1 (Zhang et al. 2017; the authors' code): Adam 2e-4, betas (0.5, 0.999), both stages
    "stackgan": dict(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
    # CycleGAN (Zhu et al. 2017; the authors' train options): Adam 2e-4, betas (0.5, 0.999)
    "cyclegan": dict(lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, n_critic=1),
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
    variant: str = _f("", doc="the sweep.variants name this trial runs (set by the sweep; '' = none)")


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
    dataset: str = _f("mnist5k", choices=DATASETS, doc="training data: images, the 2D mixtures ring8, grid25, or "
                                                        "captioned images (captioned-mnist offline, cub200) for stackgan")
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
    load_size: int = _f(0, ge=0, le=4096, doc="cub200, cyclegan:<name>: images resized to this size when loaded "
                                            "(cub200: 0 = 64, Stage I's; a Stage-II run sets 256 and Stage I is trained "
                                            "on them downsampled; CycleGAN reference 286)")
    crop_size: int = _f(0, ge=0, le=4096, doc="cyclegan:<name>: a random crop of this size per draw (reference 256); "
                                            "0 = no crop")
    flip: bool = _f(True, doc="cyclegan:<name>: a random horizontal flip per draw in training (the reference's "
                              "default; false = its --no_flip)")
    digits_transform: str = _f(
        "thick-invert", choices=DIGIT_TRANSFORMS,
        doc="digits2inverse: domain B's transformation of the digits. thick-invert = -dilate3x3(a) (undone up to a "
            "closing; a translator learns it in minutes on a CPU); invert-transpose = -a^T (undone exactly; a "
            "global pixel permutation, slow for a convolutional translator)")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _f("auto", choices=ARCHS, doc="auto = dcgan for images, mlp for 2D data; pacgan-mlp = the PacGAN "
                                             "authors' 2D nets (G 4x400 BatchNorm-ReLU, D 3x200 maxout of 5)")
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
    # remedies for mode collapse (docs/config.md, "Remedies"): every family with a discriminator
    pack: int = _f(1, ge=1, le=64, doc="PacGAN's m: D judges m samples at once, stacked along channels (images) or "
                                       "features (2D); 1 = off; train.batch_size must be a multiple of it")
    minibatch_std: int = _f(0, ge=0, le=256, doc="group size of the minibatch standard-deviation layer before D's last "
                                                 "layer (StyleGAN: 4); 0 = off; must divide D's batch "
                                                 "(train.batch_size / model.pack)")
    spectral_norm: bool = _f(False, doc="spectral normalisation of every conv and linear weight of D "
                                        "(Miyato et al. 2018; BEGAN: of the autoencoder)")
    # conditional and translation families (cgan, stackgan, cyclegan)
    embed_dim: int = _f(0, ge=0, le=4096, doc="cgan: size of G's class embedding, concatenated to z; 0 = z_dim")
    c_dim: int = _f(128, ge=1, le=4096, doc="stackgan: size of the conditioning vector c (conditioning augmentation's "
                                            "mu and sigma)")
    cond_augment: bool = _f(True, doc="stackgan: conditioning augmentation, c = mu + sigma * eps with a KL term in "
                                      "G's loss; false = c a fixed linear map of the text embedding (no noise, no KL)")
    ngf: int = _f(64, ge=1, le=4096, doc="stackgan, cyclegan: G's base channel count (model.width does not apply)")
    ndf: int = _f(64, ge=1, le=4096, doc="stackgan, cyclegan: D's base channel count (model.width does not apply)")
    res_blocks: int = _f(0, ge=0, le=64, doc="stackgan Stage II, cyclegan: residual blocks of G; 0 = from the image "
                                             "size (cyclegan: 9 at 256, 6 at 128, fewer below)")


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
            "D.train_on_batch(G.predict(z), 0) and D.train_on_batch(x, 1); simultaneous = D's and G's gradients "
            "at the same weights on one batch of fakes, then both updates (the PacGAN authors' code; "
            "needs train.n_critic 1)")
    gp_lambda: float = _f(10.0, ge=0, doc="WGAN-GP gradient penalty weight")
    began_gamma: float = _f(0.5, gt=0, le=1, doc="BEGAN diversity ratio")
    began_lambda_k: float = _f(0.001, ge=0, doc="BEGAN k_t learning rate")
    vae_alpha: float = _f(1.0, gt=0, doc="VAE loss = KL + alpha * MSE")
    kl_weight: float = _f(2.0, ge=0, doc="stackgan: weight of conditioning augmentation's KL(N(mu, sigma^2) || "
                                         "N(0, I)) in G's loss (the authors' code 2.0; the paper's text lambda = 1)")
    stage: int = _f(1, ge=1, le=2, doc="stackgan: 1 = train Stage I; 2 = train Stage II on a frozen Stage I")
    stage1_checkpoint: str = _f("", doc="stackgan stage 2: URI of the Stage-I checkpoint (a trial folder or "
                                        "checkpoint path, local, s3:// or gs://)")
    lr_decay_steps: int = _f(0, ge=0, doc="stackgan: halve both learning rates every this many steps; 0 = never")
    lambda_cycle: float = _f(10.0, ge=0, doc="cyclegan: weight of the cycle-consistency L1 terms (reference 10)")
    lambda_identity: float = _f(0.5, ge=0, doc="cyclegan: identity L1 weight as a share of lambda_cycle (reference "
                                               "0.5, i.e. 5); 0 = off")
    pool_size: int = _f(50, ge=0, le=10_000, doc="cyclegan: generated images each D's history pool keeps "
                                                 "(reference 50); 0 = no pool")
    log_every: int = _f(20, ge=1, doc="steps between logged metric rows (and the last step)")
    eval_every: int = _f(100, ge=1, doc="steps between evaluations: metrics and the collapse verdict")
    sample_every: int = _f(100, ge=1, doc="steps between sample grids (the fixed-z GIF's frames)")
    checkpoint_every: int = _f(100, ge=1, doc="steps between checkpoints (runs resume from the newest)")
    bf16: bool = _f(False, doc="bf16 autocast of each step on the training device, GPU or CPU; weights stay float32")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"), doc="auto = cuda if scaling.use_gpu and CUDA is there")
    threads: int = _f(0, ge=0, le=1024, doc="torch CPU threads of each training process; 0 = scaling.cpus_per_worker "
                                            "(at least 1), the same under ganray train --local, in a sweep trial and "
                                            "in a Ray Train worker (results depend on it: docs/distributed.md)")

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
    stopper: bool = _f(True, doc="stop trials whose verdict is collapsed, diverged, garbage or a conditional or "
                                 "translation collapse (ignores_condition, collapsed_per_condition, content_lost, "
                                 "many_to_one)")
    patience: int = _f(2, ge=1, doc="consecutive bad evaluations before a trial is stopped")
    grace_steps: int = _f(200, ge=0, doc="no early stop before this step: young GANs look like garbage")
    asha: bool = _f(False, doc="ASHA scheduler: stop trials that rank low by asha_metric at each rung")
    asha_metric: str = _f("fcd", doc="metric ASHA ranks trials by")
    asha_mode: str = _f("min", choices=("min", "max"), doc="min: lower asha_metric is better; max: higher")
    asha_grace_steps: int = _f(0, ge=0, doc="ASHA's first rung (no ASHA stop before it); 0 = train.eval_every")
    asha_reduction_factor: float = _f(4.0, gt=1, doc="ASHA keeps the best 1/this share at each rung; rungs are "
                                                     "asha_grace_steps x this^k (Ray's default 4)")
    max_concurrent_trials: int = _f(0, ge=0, doc="0 = as many as the cluster's resources allow")
    variants: tuple[str, ...] = _f(
        (), doc="named sets of overrides, each one value of a grid axis: 'name: section.key=value, section.key=value' "
                "(a bare 'name': the config as it is, the baseline); values are scalars; trials are named by them")


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
         "sample_diversity", "training_signals", "condition_fidelity", "condition_diversity", "condition_fcd",
         "condition_coverage", "caption_attributes", "translation_content", "translation_diversity",
         "translation_fcd"),
        doc="metrics to compute; those that do not apply to the dataset (e.g. fcd on ring8) or the family (the "
            "condition_* ones: conditional families only; the translation_* ones: translation families, cyclegan, "
            "only) are skipped",
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
    # conditional families (cgan, stackgan) and translation (cyclegan): docs/metrics.md "Conditional collapse"
    fidelity_ignores: float = _f(
        0.5, ge=0, le=1, doc="ignores_condition below this share of samples the reference classifier puts in the "
                             "class they were asked for, overall or in one condition (chance 1/K; real mnist 0.98, "
                             "worst class 0.88)")
    condition_spread_collapsed: float = _f(
        0.25, ge=0, doc="collapsed_per_condition below this spread ratio of one condition's samples over real images "
                        "of its class (classifier features; real 0.95-1.22, one image + pixel noise 0.18-0.35)")
    content_kept_lost: float = _f(
        0.5, ge=0, le=1, doc="content_lost below this share of translated test images that keep their input's class "
                             "(per direction; chance 1/K)")
    translation_spread_collapsed: float = _f(
        0.25, ge=0, doc="many_to_one below this spread of translated outputs over their inputs' (per direction)")
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
    interval_level: float = _f(0.95, gt=0, le=0.999, doc="confidence level of the interval each verdict quotes for its "
                                                      "deciding statistic; borderline when (1 - this)/2 of the bootstrap "
                                                      "resamples or more give another verdict")
    bootstrap: int = _f(200, ge=0, le=100_000, doc="bootstrap resamples of the evaluated samples behind the intervals "
                                                   "that have no exact form; 0 = exact intervals only")
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
