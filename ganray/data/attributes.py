"""Stroke attributes measured on a digit image: thickness, slant and size, and their caption words.

`measure(x)` turns images x float [N, 1, H, W] in [-1, 1] into float64 [N, 3], the columns
(thickness, slant, size), computed from the ink I = (x + 1) / 2 in [0, 1] (white ink on black, as
MNIST), with pixel rows r (downwards) and columns c:

  thickness  = 2 * sum(I) / TV(I), TV(I) = sum |I[r+1, c] - I[r, c]| + sum |I[r, c+1] - I[r, c]|
               (the ink's mass over half its perimeter: for a stroke of width w and length L the mass
               is w L and the perimeter 2 (L + w), so thickness ~ w in pixels for L >> w; no
               skeleton needed). In pixels at the image's resolution: the cut points are for 28x28.
  slant      = -mu11 / mu02, with the ink's central moments mu11 = sum I (c - c̄)(r - r̄) and
               mu02 = sum I (r - r̄)^2 around its centroid (r̄, c̄): the shear dc/dr of the
               least-squares line c = c̄ + s (r - r̄) through the ink, negated because rows grow
               downwards, so > 0 = the top leans right (right-slanted); tan(angle from vertical).
  size       = h * w / (H * W): the share of the image covered by the bounding box of the ink pixels
               I > 0.5 (h rows by w columns). MNIST scales every digit's larger side to 20 pixels, so
               the box height is 20 for almost every digit: its area (a wide digit is large) is what varies.

An image without ink (I > 0.5 nowhere) gets size 0, and thickness and slant 0 where their
denominators are 0.

Words (`words`, `buckets`): thickness and size by tertiles of mnist5k's training digits, the cut
points written below as constants (tests/test_captioned_mnist.py recomputes them): the thinnest
third "thin", the thickest third "thick", the middle third no word; the same with "small" / "large".
A value equal to a cut point is in the middle bucket (box areas are multiples of 1/784 and tie).
Slant is cut at a fixed shear of ±SLANT_CUT = 0.2 (11.3° from vertical), not by tertiles: MNIST
leans right on average (median shear 0.14), and its left third is upright to the eye; the words
say what one sees: "left-slanted" (10.5% of the training digits), "upright" (48.1%),
"right-slanted" (41.4%). Size's ties make its buckets 32.7% / 37.3% / 30.0%.
"""
from __future__ import annotations

import torch

NAMES = ("thickness", "slant", "size")
# Bucket 0, 1, 2 of each attribute; "" = the middle bucket has no word in a caption.
WORDS = (("thin", "", "thick"), ("left-slanted", "upright", "right-slanted"), ("small", "", "large"))

# Tertiles (1/3 and 2/3 quantiles, torch.quantile's linear interpolation) of `measure` over the
# 4,500 mnist5k training digits (ganray.data.mnist5k, split "train").
THICKNESS_CUTS = (1.7579839974570957, 2.1447540429699288)
SIZE_CUTS = (0.35714285714285715, 0.40816326530612246)  # = 280/784 and 320/784
SLANT_CUT = 0.2
CUTS = (THICKNESS_CUTS, (-SLANT_CUT, SLANT_CUT), SIZE_CUTS)


def _extent(mask: torch.Tensor) -> torch.Tensor:
    """bool [N, L] -> int64 [N]: last True index - first True index + 1 (0 where none)."""
    idx = torch.arange(mask.shape[1])
    lo = torch.where(mask, idx, mask.shape[1]).min(1).values
    hi = torch.where(mask, idx, -1).max(1).values
    return (hi - lo + 1).clamp(min=0)


def measure(x: torch.Tensor) -> torch.Tensor:
    """float [N, 1, H, W] in [-1, 1] -> float64 [N, 3]: (thickness, slant, size), the formulas above."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"attributes.measure: expected [N, 1, H, W] images, got {tuple(x.shape)}")
    ink = (x[:, 0].detach().to("cpu", torch.float64) + 1.0) / 2.0  # [N, H, W] in [0, 1]
    n, h, w = ink.shape
    mass = ink.sum((1, 2))  # [N]
    tv = (ink[:, 1:, :] - ink[:, :-1, :]).abs().sum((1, 2)) + (ink[:, :, 1:] - ink[:, :, :-1]).abs().sum((1, 2))
    thickness = torch.where(tv > 0, 2.0 * mass / tv.clamp(min=1e-12), torch.zeros_like(mass))

    rows = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    cols = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    safe_mass = mass.clamp(min=1e-12).view(-1, 1, 1)
    dr = rows - (ink * rows).sum((1, 2), keepdim=True) / safe_mass  # r - r̄, [N, H, 1]
    dc = cols - (ink * cols).sum((1, 2), keepdim=True) / safe_mass  # c - c̄, [N, 1, W]
    mu02 = (ink * dr * dr).sum((1, 2))
    mu11 = (ink * dr * dc).sum((1, 2))
    slant = torch.where(mu02 > 0, -mu11 / mu02.clamp(min=1e-12), torch.zeros_like(mu02))

    on = ink > 0.5  # [N, H, W]
    size = (_extent(on.any(2)) * _extent(on.any(1))).to(torch.float64) / (h * w)
    return torch.stack([thickness, slant, size], dim=1)


def buckets(values: torch.Tensor) -> torch.Tensor:
    """float64 [N, 3] from `measure` -> int64 [N, 3] in {0, 1, 2}: below the low cut, between the cuts
    (either end included), above the high cut."""
    out = torch.ones(values.shape, dtype=torch.int64)
    for j, (lo, hi) in enumerate(CUTS):
        out[:, j] = torch.where(values[:, j] < lo, 0, torch.where(values[:, j] > hi, 2, 1))
    return out


def words(bucket_row) -> tuple[str, str, str]:
    """(thickness, slant, size) bucket indices -> their words ("" for a middle bucket without one)."""
    return tuple(WORDS[j][int(b)] for j, b in enumerate(bucket_row))
