"""The Stacked-MNIST protocol of PacGAN Table 2 (Lin et al. 2018, after VEEGAN): a DCGAN and
PacDCGAN2, 26,000 samples judged, 1,000 modes, KL to uniform, a Tune sweep over seeds;
<experiment>/protocol.md puts the paper's rows beside ganray's (docs/protocols.md).

    ray job submit --working-dir . -- python jobs/protocol_stacked_mnist.py --storage gs://BUCKET/ganray
                                                  # configs/protocol_stacked_mnist.yaml: GPUs, 50 epochs
                                                  # (100,000 steps), 2 rows x 10 seeds
    python jobs/protocol_stacked_mnist.py --config configs/protocol_stacked_mnist_smoke.yaml   # CPU, offline
    python jobs/protocol_stacked_mnist.py --smoke   # the CPU preset at the smoke sizes (CI)
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray.report.protocol import STACKED_MNIST  # noqa: E402
from ganray.sweep.protocol import ProtocolJob, run_protocol  # noqa: E402

JOB = ProtocolJob(
    protocol=STACKED_MNIST,
    preset=ROOT / "configs" / "protocol_stacked_mnist.yaml",
    steps_per_epoch=2000,  # an epoch: 128,000 packs at 64 packs a step, for every m
    description="The Stacked-MNIST protocol: DCGAN and PacDCGAN2, 1,000 modes, over seeds.",
    smoke_preset=ROOT / "configs" / "protocol_stacked_mnist_smoke.yaml",
)

if __name__ == "__main__":
    sys.exit(run_protocol(JOB))
