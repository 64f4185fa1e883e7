"""The learning-rate balance sweep: lr_g x lr_d at a fixed z_dim.

    python jobs/sweep_lr.py [--config C] [--storage URI] [--set k=v] [--smoke]

Without --config it runs configs/lr_mnist_local.yaml (mnist5k, 3 x 3 learning rates). With
--config C it sweeps this job's grid (the preset's sweep.lr_g x sweep.lr_d, sweep.z_dim empty:
z_dim fixed at C's model.z_dim) over C, unless C (or --set) sets sweep.lr_g or sweep.lr_d: then
C's own grid runs. The console's header says which.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

PRESET = ROOT / "configs" / "lr_mnist_local.yaml"

if __name__ == "__main__":
    sys.exit(main(description="Sweep the G/D learning-rate balance at a fixed z_dim.", preset=str(PRESET),
                  keep_grid=True))
