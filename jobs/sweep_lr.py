"""The learning-rate balance sweep: lr_g x lr_d at a fixed z_dim.

    python jobs/sweep_lr.py [--config C] [--storage URI] [--set k=v] [--smoke]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

DEFAULTS = {
    "experiment.name": "lr-mnist-local",
    "model.z_dim": 10,
    "sweep.z_dim": [],
    "sweep.lr_g": [5.0e-5, 2.0e-4, 8.0e-4],
    "sweep.lr_d": [5.0e-5, 2.0e-4, 8.0e-4],
}

if __name__ == "__main__":
    sys.exit(main(description="Sweep the G/D learning-rate balance at a fixed z_dim.", defaults=DEFAULTS))
