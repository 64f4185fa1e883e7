"""What the loop draws: minibatches of a rank's data shard, latent vectors, the fixed z batch,
and samples of G for evaluation — each from a generator of its own, so that the streams are
recorded in checkpoints and evaluation never moves training's.
"""
from __future__ import annotations

import contextlib
import logging
from typing import NamedTuple

import torch
from torch import nn

from ganray.config import Config
from ganray.data import Dataset
from ganray.data.unpaired import Unpaired

log = logging.getLogger(__name__)


GRID_ROWS = 10  # conditional families: conditions (rows) of the fixed (z, condition) grid, at most


def condition_kind(cfg: Config) -> str:
    """What the family conditions on: "" (nothing), "class" (cgan: the label) or "text" (stackgan:
    a caption's embedding)."""
    return {"cgan": "class", "stackgan": "text"}.get(cfg.train.family, "")


class Sampler:
    """Random minibatches of one rank's data shard and latent vectors, from recorded generators.

    The generators live on the training device, and the indices and z are drawn there: a step
    copies nothing from the host and never waits for it (no host-device sync). Under
    speed.cuda_graphs the draws stay outside the captured graph (ganray.train.speed.GraphedStep
    copies each into a static input before a replay), so g_data and g_z are not registered to
    the graph. On the CPU the streams are those of a CPU generator, as before.
    A checkpoint's streams continue only on the device type that wrote them (a CUDA generator's
    state is not a CPU generator's); elsewhere the run goes on with fresh streams and says so.

    Conditional families (`condition` "class" or "text"): next_real() gives (x, cond) and
    sample_z(n) gives (z, cond), cond the labels [N] or one of each example's T caption
    embeddings [N, E]; a fake's condition is that of a random example of the shard (so fakes are
    asked for the classes and captions in the data's proportions), drawn from the z stream."""

    def __init__(self, data: Dataset | Unpaired, batch_size: int, z_dim: int, seed: int, device: torch.device,
                 condition: str = ""):
        # two unpaired domains (cyclegan): next_real() gives (a, b), each drawn and augmented on its own
        self.pair = data.to(device) if isinstance(data, Unpaired) else None
        self.x = self.pair.a.x if self.pair is not None else data.x.to(device)
        self.condition = condition
        self.y = data.y.to(device) if condition else None
        if condition == "text" and data.c is None:
            raise ValueError(f"text conditions: dataset {data.name} has no caption embeddings")
        self.c = data.c.to(device) if condition == "text" else None  # [N, T, E]
        self.batch_size = batch_size
        self.z_dim = z_dim
        self.device = device
        self.seed = seed
        self.g_data = torch.Generator(device=device)
        self.g_z = torch.Generator(device=device)
        self._seed(seed)

    def _seed(self, seed: int) -> None:
        self.g_data.manual_seed(seed)
        self.g_z.manual_seed(seed + 1_000_003)

    def _cond(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The condition of the examples at idx [N]: their labels, or one of their T captions' embeddings."""
        if self.condition == "class":
            return self.y[idx]  # [N]
        t = torch.randint(0, self.c.shape[1], (idx.shape[0],), generator=g, device=self.device)
        return self.c[idx, t]  # [N, E]

    def next_real(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.pair is not None:  # (a [N, ...], b [N, ...]): unpaired, each cropped and flipped as configured
            n, g = self.batch_size, self.g_data
            ia = torch.randint(0, len(self.pair.a), (n,), generator=g, device=self.device)
            ib = torch.randint(0, len(self.pair.b), (n,), generator=g, device=self.device)
            self.last_idx = ia
            return self.pair.batch("a", ia, g), self.pair.batch("b", ib, g)
        # indices drawn on the device the data lives on: no host-device copy
        idx = torch.randint(0, self.x.shape[0], (self.batch_size,), generator=self.g_data, device=self.device)
        self.last_idx = idx
        if self.condition:
            return self.x[idx], self._cond(idx, self.g_data)
        return self.x[idx]

    def sample_z(self, n: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # z ~ N(0, I)  [n, z_dim], on the training device
        z = torch.randn(n, self.z_dim, generator=self.g_z, device=self.device)
        self.last_z = z
        if self.condition:
            idx = torch.randint(0, self.x.shape[0], (n,), generator=self.g_z, device=self.device)
            return z, self._cond(idx, self.g_z)
        return z

    def fingerprint(self) -> dict[str, float]:
        """Sums of the last real batch and the last z: they differ between ranks."""
        # note: a CPU-GPU sync point, at log steps of DDP runs only
        real = self.x[self.last_idx].double().sum()
        z = getattr(self, "last_z", None)  # cyclegan draws no z
        return {"ddp_data_fingerprint": float(real), **({"ddp_z_fingerprint": float(z.double().sum())} if z is not None
                                                        else {})}

    def state(self) -> dict:
        return {"data": self.g_data.get_state(), "z": self.g_z.get_state(), "device_type": self.device.type}

    def load_state(self, s: dict, step: int) -> None:
        """Continue the streams of a checkpoint; `step` seeds fresh ones where that cannot be done."""
        written_on = s.get("device_type", "cpu")  # checkpoints before issue 17: CPU generators
        if written_on == self.device.type:
            self.g_data.set_state(s["data"])
            self.g_z.set_state(s["z"])
            return
        log.warning("sampler streams of a %s checkpoint cannot continue on %s: fresh streams from the seed and "
                    "step %d (not bitwise a straight run)", written_on, self.device.type, step)
        self._seed((self.seed * 1_000_033 + 7_919 * step) % 2**32)  # not the run's first batches (CPU: 32-bit seeds)


def fixed_z(cfg: Config, device: torch.device, n: int | None = None) -> torch.Tensor:
    """The same z batch on every rank and every resume: samples, GIF frames and flip rate use it."""
    # drawn on the CPU, once per run: the same batch whatever the training device
    g = torch.Generator().manual_seed(10_007 * (cfg.experiment.seed + 1))
    return torch.randn(cfg.eval.n_fixed_z if n is None else n, cfg.model.z_dim, generator=g).to(device)


Inputs = torch.Tensor | tuple[torch.Tensor, ...]  # what G is called with: z, or (z, condition)


def grid_classes(data: Dataset) -> torch.Tensor:
    """The classes of the fixed grid's rows: up to GRID_ROWS of the data's classes, evenly spaced."""
    classes = torch.unique(data.y)
    pick = torch.linspace(0, len(classes) - 1, min(GRID_ROWS, len(classes))).round().long()
    return classes[pick]


TRANSLATION_COLUMNS = 6  # cyclegan: test images per domain in the fixed grid (6 rows of 6: a 6 x 6 grid)


def translation_inputs(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cyclegan's fixed test images: TRANSLATION_COLUMNS of each domain's test split, evenly spaced
    (the digits: spread over the classes), as the networks see them."""
    from ganray.data import load_dataset  # noqa: PLC0415

    test = load_dataset(cfg.data, "test")
    pick = [torch.linspace(0, len(d) - 1, TRANSLATION_COLUMNS).round().long() for d in (test.a, test.b)]
    return test.batch("a", pick[0]).to(device), test.batch("b", pick[1]).to(device)


@torch.no_grad()
def translation_grid(nets: dict[str, nn.Module], fixed: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The fixed grid of a translation run, rows of TRANSLATION_COLUMNS images each, on the CPU:
    a | G_AB(a) | G_BA(G_AB(a)) | b | G_BA(b) | G_AB(G_BA(b)) (input, translated, reconstructed, each way)."""
    a, b = fixed
    G_AB, G_BA = nets["G_AB"], nets["G_BA"]
    modes = [G_AB.training, G_BA.training]
    G_AB.eval(), G_BA.eval()
    fake_b, fake_a = G_AB(a).float(), G_BA(b).float()
    rows = [a, fake_b, G_BA(fake_b).float(), b, fake_a, G_AB(fake_a).float()]
    G_AB.train(modes[0]), G_BA.train(modes[1])
    return torch.cat([r.float().cpu() for r in rows])  # [6 * columns, C, H, W]


def fixed_inputs(cfg: Config, data: Dataset, device: torch.device) -> Inputs:
    """G's inputs for the sample grid, the GIF and the flip rate. Unconditional: fixed_z. Conditional:
    a K x K grid of (z, condition) pairs, K = len(grid_classes(data)), row-major: row r holds the K
    fixed z under condition r (the class; text: the first caption of the first example of the
    class), so each column is one z across conditions and each row one condition across z."""
    if isinstance(data, Unpaired):
        return translation_inputs(cfg, device)
    kind = condition_kind(cfg)
    if not kind:
        return fixed_z(cfg, device)
    classes = grid_classes(data)
    k = len(classes)
    z = fixed_z(cfg, device, n=k).repeat(k, 1)  # [k*k, z_dim]: row r, column j -> z_j
    if kind == "class":
        return z, classes.repeat_interleave(k).to(device)  # [k*k]
    return z, data.c[_grid_examples(data), 0].repeat_interleave(k, dim=0).to(device)  # [k*k, E]


def _grid_examples(data: Dataset) -> torch.Tensor:
    """The example whose first caption conditions each row of the fixed grid: the first of each grid class."""
    return torch.stack([torch.nonzero(data.y == c)[0, 0] for c in grid_classes(data)])  # [k]


def grid_captions(cfg: Config, data: Dataset) -> list[str] | None:
    """The caption of each row of a text-conditional run's fixed grid, top first (None otherwise)."""
    if condition_kind(cfg) != "text" or not data.captions:
        return None
    return [data.captions[int(i)][0] for i in _grid_examples(data)]


class Asked(NamedTuple):
    """What an evaluation asks G for, sample by sample."""

    cond: torch.Tensor  # G's conditions: labels [n] or caption embeddings [n, E]
    labels: torch.Tensor  # int64 [n]: the class each asks for
    attributes: torch.Tensor | None = None  # float64 [n, 3]: the (thickness, slant, size) buckets its caption asks for
    # (captioned-mnist; ganray.data.attributes), else None


def eval_conditions(cfg: Config, data: Dataset, n: int, seed: int) -> Asked | None:
    """What an evaluation's n samples are asked for (`Asked`): the data's classes in turn (a balanced
    request: n/K each), for text a random example of that class and one of its captions (and, for
    captioned-mnist, the attributes that caption names); None for unconditional families."""
    kind = condition_kind(cfg)
    if not kind:
        return None
    g = torch.Generator().manual_seed(seed)
    classes = torch.unique(data.y)
    labels = classes[torch.arange(n) % len(classes)]  # [n]
    if kind == "class":
        return Asked(labels, labels)
    idx = torch.empty(n, dtype=torch.long)
    for c in classes:
        rows = torch.nonzero(data.y == c)[:, 0]
        where = torch.nonzero(labels == c)[:, 0]
        idx[where] = rows[torch.randint(0, len(rows), (len(where),), generator=g)]
    t = torch.randint(0, data.c.shape[1], (n,), generator=g)
    attributes = None
    if data.name == "captioned-mnist" and data.captions:
        from ganray.data.captioned import caption_attributes  # noqa: PLC0415

        attributes = torch.tensor([caption_attributes(data.captions[i][j]) for i, j in zip(idx.tolist(), t.tolist())],
                                  dtype=torch.float64)  # [n, 3]
    return Asked(data.c[idx, t], labels, attributes)


def call(G: nn.Module, inputs: Inputs) -> torch.Tensor:
    """G(z), or G(z, condition) for a conditional family's (z, condition)."""
    out = G(*inputs) if isinstance(inputs, tuple) else G(inputs)
    return out[0] if isinstance(out, tuple) else out  # stackgan's G: (image, mu, logvar)


def at_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images [N, C, h, w] resized (bilinear) to size x size, as they are when already that size or
    size is 0: stackgan's Stage I draws below the data's size, and the evaluation judges them at it."""
    if not size or x.dim() != 4 or x.shape[-1] == size:
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, device: torch.device, seed: int, batch: int = 1000,
             cond: torch.Tensor | None = None, size: int = 0) -> torch.Tensor:
    """n samples from G in eval mode (BN running statistics), from a generator of their own
    so that evaluation never moves the training RNG; conditional: G(z, cond[i]) for sample i;
    images at size x size when size > 0 (`at_size`)."""
    # z drawn on the CPU (off the training step): `ganray eval` and the report's regeneration on
    # the CPU draw the same z for a seed as a GPU run's evaluation did
    g = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    out = []
    with own_rng(device, seed):
        for i in range(0, n, batch):
            z = torch.randn(min(batch, n - i), z_dim, generator=g).to(device)
            inputs = z if cond is None else (z, cond[i:i + z.shape[0]].to(device))
            out.append(at_size(call(G, inputs).float(), size).cpu())
    G.train(was_training)
    return torch.cat(out)


@contextlib.contextmanager
def own_rng(device: torch.device | str, seed: int):
    """Noise a network draws inside the block (stackgan's conditioning augmentation ε) comes from
    torch's global RNG seeded with `seed`, and training's global stream is as it was after it."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type="cuda"):
        torch.manual_seed(seed)
        yield


FIXED_NOISE_SEED = 4_099  # the fixed grid's network noise (CA's ε): the same in every frame


@torch.no_grad()
def sample_fixed(G: nn.Module, z: Inputs, size: int = 0) -> torch.Tensor:
    """G(z) (conditional: G(z, condition)) for the fixed inputs, in eval mode, on the CPU (images at
    size x size when size > 0)."""
    was = G.training
    G.eval()
    first = z[0] if isinstance(z, tuple) else z
    with own_rng(first.device, FIXED_NOISE_SEED):
        out = at_size(call(G, z).float(), size).cpu()
    G.train(was)
    return out
