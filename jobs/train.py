"""Train one run on Ray Train (DDP workers), or in-process with --local.

    python jobs/train.py --config configs/zdim_mnist.yaml --storage gs://BUCKET/ganray [--set k=v] [--smoke]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ganray.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--config" in argv:  # jobs take --config; `ganray train` takes the config positionally
        i = argv.index("--config")
        argv = [argv[i + 1], *argv[:i], *argv[i + 2:]]
    elif not argv or argv[0].startswith("-"):
        argv = [str(Path(__file__).resolve().parents[1] / "configs" / "zdim_mnist_local.yaml"), *argv]
    sys.exit(main(["train", *argv]))
