"""VAE vs GAN: the same latent size, data and budget; the report puts sample grids, VAE
reconstructions, class coverage, FCD, precision (sharpness/realism) and recall (coverage)
side by side.

    python jobs/compare_vae_gan.py                 # offline: mnist5k digits 5 and 7, CPU-sized
    python jobs/compare_vae_gan.py --smoke         # tiny and fast
    python jobs/compare_vae_gan.py --config configs/compare_fashion_shoes.yaml --storage gs://BUCKET/ganray
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

DEFAULTS = {  # the offline stand-in for Fashion-MNIST shoes: two mnist5k digit classes
    "experiment.name": "compare-vae-gan-local",
    "data.dataset": "mnist5k",
    "data.classes": [5, 7],
    "model.z_dim": 100,
    "sweep.z_dim": [],
    "sweep.family": ["gan", "vae"],
    "sweep.seeds": [0, 1],
    "sweep.stopper": False,
    "eval.metrics": ["class_coverage", "fcd", "prdc"],
}

if __name__ == "__main__":
    sys.exit(main(description="Compare a VAE with a DCGAN (same z_dim) on two classes.", defaults=DEFAULTS))
