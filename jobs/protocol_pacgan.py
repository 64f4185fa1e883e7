"""The PacGAN Table 1 protocol (Lin et al. 2018) on the 2-D ring and grid: the vanilla GAN and
PacGAN2 with the authors' networks, optimiser, batch, data and length, a Tune sweep over seeds;
<experiment>/protocol.md puts the paper's rows beside ganray's (docs/protocols.md).

    python jobs/protocol_pacgan.py                       # configs/protocol_pacgan.yaml: 400 epochs
                                                         # (400,000 steps), 4 rows x 10 seeds: 55 h on
                                                         # 2 CPU cores, for a cluster
    python jobs/protocol_pacgan.py --epochs 20 --seeds 3 # about an hour on 2 CPU cores (docs/protocols.md)
    python jobs/protocol_pacgan.py --dataset ring8       # only the ring's two rows
    python jobs/protocol_pacgan.py --smoke               # tiny and fast (CI)
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray.report.protocol import PACGAN_TABLE1  # noqa: E402
from ganray.sweep.protocol import ProtocolJob, run_protocol  # noqa: E402

JOB = ProtocolJob(
    protocol=PACGAN_TABLE1,
    preset=ROOT / "configs" / "protocol_pacgan.yaml",
    steps_per_epoch=1000,  # an epoch: 100,000 packs at 100 packs a step, for every m
    description="The PacGAN Table 1 protocol: GAN and PacGAN2 on the 2-D ring and grid, over seeds.",
    datasets=("ring8", "grid25"),
)

if __name__ == "__main__":
    sys.exit(run_protocol(JOB))
