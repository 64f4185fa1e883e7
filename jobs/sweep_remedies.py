"""Remedies for a collapsing GAN: which change to D or to the learning rates turns the verdict
healthy, in how many seeds, at what cost in steps per second?

    python jobs/sweep_remedies.py                  # configs/remedies_mnist_local.yaml: the DCGAN with
                                                   # z_dim 2 on mnist5k (it collapses), 6 variants x 2 seeds
    python jobs/sweep_remedies.py --config configs/remedies_ring8.yaml
                                                   # the vanilla ring8 GAN at lr 1e-3, 6 variants x 2 seeds
    python jobs/sweep_remedies.py --smoke          # tiny and fast (CI): every variant, one seed
    python jobs/sweep_remedies.py --set "sweep.variants=[baseline, 'pack4: model.pack=4']"

Each preset sweeps `sweep.variants` (one grid axis of named override sets: baseline, pack2,
minibatch-std, spectral-norm, ttur; docs/config.md "Remedies") times `sweep.seeds`, on a setting
the z_dim and ring8 sweeps showed collapsing. Its report has one row per variant: the verdicts
over the seeds and the steps per second.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from ganray.sweep import main  # noqa: E402

PRESET = ROOT / "configs" / "remedies_mnist_local.yaml"
# --smoke: the shared smoke sizes (ganray.args.SMOKE: 6 steps, batch 16, so 8 packs of 2 and
# groups of 4), every variant, one seed; a later --set sweep.seeds=... still wins
SMOKE_SEEDS = ["--set", "sweep.seeds=[0]"]


def argv_with_smoke_seeds(argv: list[str]) -> list[str]:
    return SMOKE_SEEDS + argv if "--smoke" in argv else argv


if __name__ == "__main__":
    sys.exit(main(argv_with_smoke_seeds(sys.argv[1:]),
                  description="Sweep remedies for mode collapse (pack, minibatch std, spectral norm, TTUR) "
                              "x seeds on a collapsing setting.",
                  preset=str(PRESET)))
