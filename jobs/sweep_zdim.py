"""The z_dim sweep: does the generator collapse, and at which latent sizes?

    python jobs/sweep_zdim.py                      # embedded defaults: local Ray, mnist5k, CPU-sized DCGAN,
                                                   # z_dim 1, 2, 10, 50, 100, storage ./ganray_results
    python jobs/sweep_zdim.py --smoke              # tiny and fast
    ray job submit --working-dir . -- python jobs/sweep_zdim.py --config configs/zdim_mnist.yaml --storage gs://BUCKET/ganray
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(description="Sweep z_dim (default 1, 2, 10, 50, 100) and report where training collapses."))
