"""VAE vs GAN: the same latent size, data and budget; the report puts sample grids, VAE
reconstructions, class coverage, FCD, precision (sharpness/realism) and recall (coverage)
side by side.

    python jobs/compare_vae_gan.py                 # configs/compare_vae_gan_local.yaml: offline, mnist5k
                                                   # digits 5 and 7, CPU-sized (5-8 min)
    python jobs/compare_vae_gan.py --smoke         # tiny and fast (CI)
    python jobs/compare_vae_gan.py --config configs/compare_fashion_shoes.yaml --storage gs://BUCKET/ganray

The report (<storage>/<experiment>/report.html) has a "VAE vs GAN" section; docs/compare.md
explains it and records what a local run showed.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

# The offline stand-in for Fashion-MNIST shoes: two mnist5k digit classes, sized for a laptop.
PRESET = ROOT / "configs" / "compare_vae_gan_local.yaml"

if __name__ == "__main__":
    sys.exit(main(description="Compare a VAE with a DCGAN (same z_dim) on two classes.", preset=str(PRESET)))
