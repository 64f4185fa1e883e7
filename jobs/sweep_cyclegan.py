"""CycleGAN's loss weights: which lambda_cycle and identity weight keep the content of a
translation, and which let it collapse (many inputs to one output, or the digit lost)?

    python jobs/sweep_cyclegan.py                  # configs/cyclegan_digits_local.yaml: the offline digit pair,
                                                   # 4 variants (reference, no identity, lambda 1, no cycle), CPU minutes
    python jobs/sweep_cyclegan.py --smoke          # tiny and fast (CI)
    ray job submit --working-dir . -- python jobs/sweep_cyclegan.py --config configs/cyclegan_horse2zebra.yaml \\
        --storage gs://BUCKET/ganray

Each variant sets train.lambda_cycle and train.lambda_identity (docs/config.md); the collapse
stopper stops a trial whose translations collapse (content_lost, many_to_one). The report has a
section per direction (A->B, B->A) with each trial's verdict and its input | translated |
reconstructed grids.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

PRESET = ROOT / "configs" / "cyclegan_digits_local.yaml"

if __name__ == "__main__":
    sys.exit(main(description="Sweep CycleGAN's lambda_cycle and identity weight with the collapse stopper on.",
                  preset=str(PRESET)))
