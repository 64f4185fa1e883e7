"""Training without Ray: the loop (`train`), what it samples, its statistics window, its state
and checkpoint file. `from ganray.train import train` is the loop."""
from ganray.train.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
