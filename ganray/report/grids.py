"""Pieces of the record's sample grids for the conditional and translation sections: a band of
rows cut out of a grid PNG (one condition's row, one direction's three rows) and two grids side
by side (Stage I beside Stage II). The grids are ganray.artifacts.images.image_grid's: cells in
rows and columns with `pad` gray pixels around each."""
from __future__ import annotations

import inspect
import io

from PIL import Image, UnidentifiedImageError

from ganray.artifacts.images import image_grid

PAD = inspect.signature(image_grid).parameters["pad"].default  # the gray border around every cell
GAP_PX = 8  # white between two grids side by side


def _open(png: bytes | None) -> Image.Image | None:
    if not png:
        return None
    try:
        img = Image.open(io.BytesIO(png))
        img.load()
        return img
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def crop_rows(png: bytes | None, n_rows: int, first: int, stop: int) -> bytes | None:
    """Rows first..stop-1 (0-based) of a grid of n_rows rows, with their borders, as PNG; None
    when the image is not such a grid (its height is not n_rows·(h + PAD) + PAD for a whole h)."""
    img = _open(png)
    if img is None or n_rows < 1 or not 0 <= first < stop <= n_rows:
        return None
    # height = n_rows · (h + PAD) + PAD: a cell's height h
    cell, rest = divmod(img.height - PAD, n_rows)
    if rest or cell <= PAD:
        return None
    return _png(img.crop((0, first * cell, img.width, stop * cell + PAD)))


def side_by_side(left: bytes | None, right: bytes | None) -> bytes | None:
    """Two images next to each other, tops aligned, GAP_PX of white between; None unless both open."""
    a, b = _open(left), _open(right)
    if a is None or b is None:
        return None
    mode = "RGB" if "RGB" in (a.mode, b.mode) else "L"
    out = Image.new(mode, (a.width + GAP_PX + b.width, max(a.height, b.height)), "white")
    out.paste(a.convert(mode), (0, 0))
    out.paste(b.convert(mode), (a.width + GAP_PX, 0))
    return _png(out)
