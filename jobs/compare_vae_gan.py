"""VAE vs GAN: the same latent size, data and budget; the report puts sample grids, VAE
reconstructions, class coverage, FCD, precision (sharpness/realism) and recall (coverage)
side by side.

    python jobs/compare_vae_gan.py                 # offline: mnist5k digits 5 and 7, CPU-sized (5-8 min)
    python jobs/compare_vae_gan.py --smoke         # tiny and fast (CI)
    python jobs/compare_vae_gan.py --config configs/compare_fashion_shoes.yaml --storage gs://BUCKET/ganray

The report (<storage>/<experiment>/report.html) has a "VAE vs GAN" section; docs/compare.md
explains it and records what a local run showed.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

# The offline stand-in for Fashion-MNIST shoes: two mnist5k digit classes. Sized for a laptop:
# 4 trials x 400 steps at width 0.25 take 5-8 minutes on 2 CPU cores (docs/compare.md).
DEFAULTS = {
    "experiment.name": "compare-vae-gan-local",
    "data.dataset": "mnist5k",
    "data.classes": [5, 7],
    "model.z_dim": 100,              # the same latent size for both families
    "train.steps": 400,
    "train.eval_every": 100,
    "train.sample_every": 100,
    "train.checkpoint_every": 100,
    "eval.n": 1000,                  # generated samples per evaluation (900 real digits of the two classes)
    "sweep.z_dim": [],
    "sweep.family": ["gan", "vae"],
    "sweep.seeds": [0, 1],
    "sweep.stopper": False,          # the comparison needs both families' full runs
    # precision/recall (prdc) are the trade-off; near_real and sample_diversity say why when they disagree with the eye
    "eval.metrics": ["class_coverage", "fcd", "prdc", "near_real", "sample_diversity"],
}

if __name__ == "__main__":
    sys.exit(main(description="Compare a VAE with a DCGAN (same z_dim) on two classes.", defaults=DEFAULTS))
