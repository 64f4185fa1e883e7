"""Reference classifiers: a small CNN per image dataset, whose penultimate layer is also the
feature space for the Fréchet distance and precision/recall/density/coverage.

A classifier is two files, `<key>.pt` (fp16 state_dict + architecture) and `<key>.json`
(held-out accuracy, seed, command), where key = `classifier_key(dataset)`: the MNIST-digit
datasets (mnist5k, mnist, stacked-mnist) share the key "mnist", the others use their name.
Where a run finds the classifier, in order:
  1. `<storage>/classifiers/<key>.pt`, written by `ganray classifier train --dataset D
     --storage URI` or by an earlier first use;
  2. the local cache, `<cache>/classifiers/<key>.pt` (<cache> = data.cache_dir,
     $GANRAY_CACHE or ~/.cache/ganray);
  3. the shipped MNIST classifier, `ganray/metrics/weights/mnist.pt` (trained on mnist5k's
     train split; held-out accuracy in mnist.json), for key "mnist";
  4. otherwise it is trained on first use and stored in both places above. `ganray train`
     and sweeps do that before their workers start (`ready.prepare`), so workers only load it.
Stacked MNIST has no classifier of its own: each of its 3 channels is an MNIST digit,
labelled by the MNIST classifier.

The shipped one was made with
    python -m ganray.metrics.classifier.cli train --dataset mnist5k --out ganray/metrics/weights

The package: `model` (the network and `embed`), `training` (`train_classifier`), `store`
(save/load, the shipped weights, `reference_classifier`: the lookup above), `ready` (the
drivers' `prepare`: the classifier made ready before any worker starts), `cli` (`ganray
classifier`). This module names the datasets and keys; it imports nothing heavy.
"""
from __future__ import annotations

from ganray.config import DATASETS, is_2d

MNIST_LIKE = ("mnist5k", "mnist", "stacked-mnist", "captioned-mnist", "digits2inverse")
IMAGE_DATASETS = tuple(d for d in DATASETS if not is_2d(d))


def classifier_key(dataset: str) -> str:
    """The classifier a dataset uses: MNIST digits (mnist5k, mnist, stacked-mnist, captioned-mnist) share "mnist"."""
    return "mnist" if dataset in MNIST_LIKE else dataset
