"""The z_dim sweep: does the generator collapse, and at which latent sizes?

    python jobs/sweep_zdim.py                      # configs/zdim_mnist_local.yaml (= the embedded defaults):
                                                   # local Ray, mnist5k, CPU-sized DCGAN, z_dim 1, 2, 10,
                                                   # 50, 100, storage ./ganray_results
    python jobs/sweep_zdim.py --smoke              # tiny and fast
    ray job submit --working-dir . -- python jobs/sweep_zdim.py --config configs/zdim_mnist.yaml --storage gs://BUCKET/ganray
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

# Equal to the embedded defaults (tests/test_config.py checks it): experiment zdim-mnist-local.
PRESET = ROOT / "configs" / "zdim_mnist_local.yaml"

if __name__ == "__main__":
    sys.exit(main(description="Sweep z_dim (default 1, 2, 10, 50, 100) and report where training collapses.",
                  preset=str(PRESET)))
