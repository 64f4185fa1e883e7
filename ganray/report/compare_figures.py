"""VAE vs GAN in pictures, and the section put together: the final metrics per family, the
final sample grids side by side, and a VAE's reconstructions of held-out images (made from its
checkpoint by the regenerator the report is handed)."""
from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from PIL import Image

from ganray.artifacts.reader import brief
from ganray.report.compare import (
    COMPARE_METRICS,
    FAMILY_COLOUR,
    FAMILY_LABEL,
    VAE_FAMILY,
    Comparison,
    FamilyNumbers,
    Spread,
    compares_vae_with_gan,
    coverage_sentence,
    family_numbers,
    family_of,
    precision_caveat,
    support_sentence,
    trade_off_sentence,
)
from ganray.report.figures import new_figure, text_colour, to_png
from ganray.report.model import REGENERATE_ERRORS, Experiment, Reconstruction, Regenerate, class_count
from ganray.report.tables import varying_axes

log = logging.getLogger(__name__)


def figure_vae_vs_gan_metrics(nums: dict[str, FamilyNumbers], n_classes: int | None) -> bytes | None:
    """One panel per metric: a bar per family at the mean, ± the spread, a dot per seed."""
    keys = [(k, label, better) for k, label, better in COMPARE_METRICS if any(k in f.metrics for f in nums.values())]
    if not keys:
        return None
    fams = list(nums.values())
    fig = new_figure(2.5 * len(keys) + 0.4, 3.2)
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for ax, (key, label, better) in zip(axes, keys):
        for i, f in enumerate(fams):
            s = f.metrics.get(key)
            if s is None:
                continue
            colour = FAMILY_COLOUR.get(f.family, "#999999")
            ax.bar(i, s.mean, yerr=s.sd if s.n > 1 else None, color=colour, alpha=0.55, capsize=4, width=0.6)
            ax.scatter([i] * s.n, s.values, color=colour, edgecolor="black", linewidths=0.5, s=18, zorder=3)
        ax.set_xticks(range(len(fams)), [f.label for f in fams], fontsize=8)
        title = label + (f" (of {n_classes})" if key == "classes_covered" and n_classes else "")
        ax.set_title(f"{title}\n{better} is better", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
        if key in ("precision", "recall"):
            ax.set_ylim(0, 1.05)
        if key == "classes_covered" and n_classes:
            ax.set_ylim(0, n_classes + 0.3)
    seeds = sorted({s.n for f in fams for s in f.metrics.values()})
    fig.suptitle(f"VAE vs GAN: final metrics per family (bar: mean; error bar: sd over seeds; dots: one seed each; "
                 f"{'/'.join(map(str, seeds))} seeds)", fontsize=9)
    return to_png(fig)


def _decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L") if im.mode in ("L", "LA", "P", "I") else im.convert("RGB"))


def figure_vae_vs_gan_samples(exp: Experiment, nums: dict[str, FamilyNumbers]) -> bytes | None:
    """The final sample grid of every trial: one column per family, one row per seed."""
    by_family = {f: [t for t in exp.trials if family_of(t) == f and t.last_samples_png] for f in nums}
    by_family = {f: ts for f, ts in by_family.items() if ts}
    if not by_family:
        return None
    n_rows = max(len(ts) for ts in by_family.values())
    fig = new_figure(3.0 * len(by_family) + 0.2, 3.2 * n_rows + 0.5)
    grid = fig.subplots(n_rows, len(by_family), squeeze=False)
    for ax in grid.flat:
        ax.set_visible(False)
    for c, (fam, trials) in enumerate(by_family.items()):
        for r, t in enumerate(trials):
            ax = grid[r][c]
            ax.set_visible(True)
            img = _decode_png(t.last_samples_png)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
            seed = t.params.get("seed")
            ax.set_title(f"{FAMILY_LABEL.get(fam, fam)}" + (f" seed {seed}" if seed is not None else "")
                         + f", step {t.samples[-1][0]}\n{t.status}", fontsize=8, color=text_colour(t.verdict_name))
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Final sample grids (the same fixed z per seed; VAE samples are G(z), z ~ N(0, I))", fontsize=9)
    return to_png(fig)


def image_rows(rows: list[Any], pad: int = 2) -> np.ndarray:
    """Images [n, C, H, W] in [-1, 1] per row -> one uint8 picture [H', W', C], rows stacked, gray padding."""
    arrays = [r.detach().float().cpu().numpy() if hasattr(r, "detach") else np.asarray(r, dtype=np.float32)
              for r in rows]
    n = max(a.shape[0] for a in arrays)
    _, c, h, w = arrays[0].shape
    out = np.full((len(arrays) * (h + pad) + pad, n * (w + pad) + pad, c), 128, dtype=np.uint8)
    for r, a in enumerate(arrays):
        # x ∈ [-1, 1] -> pixel = round(255 · (x + 1) / 2), clipped
        pixels = np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)
        for i in range(a.shape[0]):
            y, x = pad + r * (h + pad), pad + i * (w + pad)
            out[y:y + h, x:x + w, :] = pixels[i].transpose(1, 2, 0)
    return out


def figure_vae_reconstructions(recons: list[Reconstruction]) -> bytes | None:
    """Per VAE trial: held-out originals above, their reconstructions G(μ(x)) below."""
    if not recons:
        return None
    n = max(r.originals.shape[0] for r in recons)
    fig = new_figure(max(4.0, 0.55 * n + 1.4), 1.5 * len(recons) + 0.6)
    axes = fig.subplots(len(recons), 1, squeeze=False)[:, 0]
    for ax, r in zip(axes, recons):
        img = image_rows([r.originals, r.reconstructions])
        ax.imshow(img[:, :, 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        h = r.originals.shape[2] + 2
        ax.set_yticks([2 + h / 2 - 1, 2 + h + h / 2 - 1], ["held-out", "reconstructed"], fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"{r.trial}, step {r.step}: held-out MSE {r.mse:.1f} (Σ over pixels, mean of {r.n_mse} images)",
                     fontsize=8)
    fig.suptitle("VAE reconstructions: originals above, G(μ(x)) below", fontsize=9)
    return to_png(fig)


def attach_reconstructions(exp: Experiment, nums: dict[str, FamilyNumbers], notes: list[str],
                           regenerate: Regenerate | None) -> list[Reconstruction]:
    """Reconstructions of every VAE trial with a checkpoint, made by `regenerate`; failures become notes."""
    vae_trials = [t for t in exp.trials if family_of(t) == VAE_FAMILY]
    if regenerate is None:
        notes.append("no reconstructions: the report was written without a checkpoint regenerator "
                     "(`ganray report` makes them)")
        return []
    out = []
    for t in vae_trials:
        if not t.checkpoints:
            notes.append(f"{t.name}: reconstructions unavailable (no checkpoint to reconstruct with)")
            continue
        try:
            out.append(regenerate.reconstruct(t.checkpoints[-1][1], t.name))
        except REGENERATE_ERRORS as e:
            log.warning("trial %s: no reconstructions (%s)", t.name, brief(e, 1000))
            notes.append(f"{t.name}: reconstructions unavailable ({brief(e)})")
    if out and VAE_FAMILY in nums:
        nums[VAE_FAMILY].recon_mse = Spread([r.mse for r in out])
    return out


COMPARE_FIGURES = (  # (file name, caption, what to look for)
    ("vae_vs_gan_metrics.png", "VAE vs GAN: final metrics per family",
     "Bars at the mean over seeds, error bars at the spread, one dot per seed. The textbook trade-off: the VAE "
     "higher on recall and classes covered, the GAN higher on precision."),
    ("vae_vs_gan_samples.png", "VAE vs GAN: final sample grids",
     "Side by side: VAE samples are typically smooth and blurry, GAN samples sharp but possibly repetitive."),
    ("vae_reconstructions.png", "VAE reconstructions of held-out images",
     "Originals from the test split above, the VAE's reconstructions G(μ(x)) below: close copies mean the "
     "encoder and decoder learnt the data; blur here is the same blur as in the samples."),
)


def vae_vs_gan(exp: Experiment, regenerate: Regenerate | None = None) -> Comparison | None:
    """The VAE vs GAN comparison (numbers, sentences, reconstructions, figures), or None when the
    trials do not span the vae family and a GAN family. Call after attach_media (sample grids)
    and attach_histograms (the number of classes)."""
    if not compares_vae_with_gan(exp):
        return None
    nums = family_numbers(exp)
    c = Comparison(nums, [], class_count(exp))
    others = [a for a in varying_axes(exp.trials) if a not in ("family", "seed")]
    if others:
        c.notes.append(f"the trials also vary {', '.join(others)}; the family numbers pool over them")
    c.reconstructions = attach_reconstructions(exp, nums, c.notes, regenerate)
    vae = nums[VAE_FAMILY]
    gans = [g for fam, g in nums.items() if fam != VAE_FAMILY]
    c.sentences = [trade_off_sentence(vae, g) for g in gans]
    if (cov := coverage_sentence(nums, c.n_classes)) is not None:
        c.sentences.append(cov)
    c.sentences += [x for g in gans if (x := support_sentence(vae, g)) is not None]
    c.sentences += [x for f in nums.values() if (x := precision_caveat(f)) is not None]
    draw = {"vae_vs_gan_metrics.png": lambda: figure_vae_vs_gan_metrics(nums, c.n_classes),
            "vae_vs_gan_samples.png": lambda: figure_vae_vs_gan_samples(exp, nums),
            "vae_reconstructions.png": lambda: figure_vae_reconstructions(c.reconstructions)}
    for name, caption, _explain in COMPARE_FIGURES:
        png = draw[name]()
        if png is not None:
            c.figures[name] = (caption, png)
    return c

