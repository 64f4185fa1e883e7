"""StackGAN's conditioning augmentation (CA), on and off, by z_dim: does CA add variety among the
images drawn for one caption, as the paper claims? Stage I, then Stage II on each Stage-I trial.

    python jobs/sweep_stackgan.py                  # configs/stackgan_mnist_local.yaml: the captioned offline
                                                   # digits, CA on/off x z_dim 10, 100; both stages, CPU minutes
    python jobs/sweep_stackgan.py --stages 1       # Stage I only
    python jobs/sweep_stackgan.py --smoke          # tiny and fast (CI): both stages
    ray job submit --working-dir . -- python jobs/sweep_stackgan.py --config configs/stackgan_cub.yaml \\
        --storage gs://BUCKET/ganray --set data.source=gs://BUCKET/cub

Stage I runs as the sweep <name>; Stage II as the sweep <name>-stage2 with train.stage 2 and
train.stage1_checkpoint the Stage-I experiment: each Stage-II trial starts from the newest
checkpoint of the Stage-I trial with its z_dim, CA setting, seed and variant, frozen. Each
stage's report compares CA on with CA off (docs/metrics.md, "Conditional collapse").
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray import storage  # noqa: E402
from ganray.args import job_config  # noqa: E402
from ganray.data import STAGE2_SIZES  # noqa: E402
from ganray.exits import EXIT_BAD_INPUT, EXIT_OK, BadInput  # noqa: E402
from ganray.sweep import main, parser  # noqa: E402

PRESET = ROOT / "configs" / "stackgan_mnist_local.yaml"
DESCRIPTION = "StackGAN: conditioning augmentation on/off x z_dim, Stage I then Stage II on the frozen Stage I."


def split_stages(argv: list[str]) -> tuple[int, list[str]]:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--stages", type=int, choices=(1, 2), default=2)
    known, rest = p.parse_known_args(argv)
    return known.stages, rest


def stage2_argv(argv: list[str]) -> list[str]:
    """The Stage-II sweep's arguments: the Stage-I ones, plus the stage, its Stage-I experiment and its name."""
    args = parser(DESCRIPTION).parse_args(argv)
    cfg, _ = job_config(args, PRESET)
    # Stage II's images: cub200 loaded at 256 (Stage I's run loads them at 64); captioned-mnist is 28x28 in both
    size = STAGE2_SIZES[cfg.data.dataset] if cfg.data.dataset == "cub200" else 0
    return [*argv, "--set", "train.stage=2", "--set", f"train.stage1_checkpoint={storage.experiment_uri(cfg)}",
            "--set", f"experiment.name={cfg.experiment.name.removesuffix('-smoke')}-stage2",
            *(["--set", f"data.load_size={size}"] if size else [])]


def run(argv: list[str]) -> int:
    stages, argv = split_stages(argv)
    rc = main(argv, description=DESCRIPTION, preset=str(PRESET))
    if rc != EXIT_OK or stages == 1:
        return rc
    try:
        argv2 = stage2_argv(argv)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print("\nStage II on the frozen Stage-I trials:", flush=True)
    return main(argv2, description=DESCRIPTION, preset=str(PRESET))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
