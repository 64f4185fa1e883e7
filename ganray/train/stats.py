"""Training statistics between log steps, and the logged history the training signals read."""
from __future__ import annotations

import torch

from ganray.config import Config


def history_keep(cfg: Config) -> int:
    """Logged entries the loop keeps for training_signals (and saves in checkpoints)."""
    return max(2 * cfg.eval.flat_window, 50)


class StatsWindow:
    """Per-step training statistics since the last log step, as sums and counts (stylegan2-ada's
    `training_stats`): a mean is the sum / the number of values added, whatever other cadence
    (evaluation, samples, checkpoints) read the window in between. Only a log step resets it."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        # note: .item() is a CPU-GPU sync point; it runs only at logged/evaluated steps
        return {k: v.item() / self.counts[k] for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.counts = {}, {}

    def state_dict(self) -> dict:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "counts": dict(self.counts)}

    def load_state_dict(self, d: dict, device: torch.device) -> None:
        self.sums = {k: v.to(device) for k, v in d.get("sums", {}).items()}
        self.counts = dict(d.get("counts", {}))
