"""Pictures of samples: image grids as PNG, 2-D point clouds as scatter plots, GIFs of frames."""
from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

GIF_FRAME_MS = 250


def to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def image_grid(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> one uint8 grid [rows·(H+pad)+pad, cols·(W+pad)+pad, C],
    cols = ceil(sqrt(N)); gray (128) padding between cells."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    # x ∈ [-1, 1] -> pixel = round(255 · (x + 1) / 2), clipped
    pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w, :] = pixels[i].transpose(1, 2, 0)
    return grid


def png_bytes(grid: np.ndarray) -> bytes:
    img = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def scatter_png(points: np.ndarray, lim: float, title: str) -> tuple[bytes, int, int]:
    """A 320x320 scatter plot of [N, 2] points within [-lim, lim]²: (PNG, height, width)."""
    fig = Figure(figsize=(4, 4), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5, c="tab:blue", linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    width, height = (int(v) for v in fig.canvas.get_width_height())
    return buf.getvalue(), height, width


def gif_bytes(frames: list[bytes], frame_ms: int = GIF_FRAME_MS) -> bytes:
    """An endlessly looping GIF of PNG frames (in order)."""
    images = [Image.open(io.BytesIO(f)).convert("RGB") for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    return buf.getvalue()


