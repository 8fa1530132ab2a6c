"""A weight-free image signature: what a frame looks like, as a short unit vector whose dot product
with another's says how alike the two look (composition, palette, edges), with no model to load.

Three parts, each centred so that unrelated pictures score near 0 rather than near 1, and each
normalised before they are joined, so none dominates by its length:

- **layout** (48): the mean colour of each cell of a 4x4 grid, in YCbCr (brightness apart from
  colour), minus the picture's own mean colour: where it is light, dark, warm or cold;
- **palette** (24): 12 hue bins weighted by saturation, and 12 brightness bins, each a
  distribution minus the uniform one;
- **edges** (8): gradient orientation weighted by magnitude, minus the uniform distribution: a
  picture of verticals (a forest, a city) against one of diagonals (a fight) or of none (a sky).

Deterministic (integer-exact resampling, fixed bins) and rounded to 4 decimals, so the same frame
gives the same event on every machine and a replay rebuilds the same memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GRID = 4
HUE_BINS = 12
VALUE_BINS = 12
EDGE_BINS = 8
DIMENSIONS = GRID * GRID * 3 + HUE_BINS + VALUE_BINS + EDGE_BINS
VERSION = "1"
_SIDE = 64  # the picture is read at this size: enough for palette and edges, cheap at any resolution


def image_signature(image: Image.Image) -> list[float]:
    """The signature of ``image`` (any mode, any size): :data:`DIMENSIONS` floats, unit length."""
    rgb = image.convert("RGB").resize((_SIDE, _SIDE), Image.Resampling.BOX)
    ycbcr = np.asarray(rgb.convert("YCbCr"), np.float64) / 255.0
    cells = ycbcr.reshape(GRID, _SIDE // GRID, GRID, _SIDE // GRID, 3).mean(axis=(1, 3))
    layout = (cells - ycbcr.mean(axis=(0, 1))).ravel()

    hsv = np.asarray(rgb.convert("HSV"), np.float64) / 255.0
    hue = np.histogram(hsv[..., 0], bins=HUE_BINS, range=(0, 1), weights=hsv[..., 1])[0]
    value = np.histogram(hsv[..., 2], bins=VALUE_BINS, range=(0, 1))[0].astype(np.float64)
    palette = np.concatenate([_centred(hue), _centred(value)])

    luma = ycbcr[..., 0]
    dy, dx = np.gradient(luma)
    magnitude = np.hypot(dx, dy)
    orientation = np.mod(np.arctan2(dy, dx), np.pi)  # an edge and its opposite are one orientation
    edges = _centred(np.histogram(orientation, bins=EDGE_BINS, range=(0, np.pi), weights=magnitude)[0])

    signature = np.concatenate([_unit(layout), _unit(palette), _unit(edges)])
    return [round(float(x), 4) for x in _unit(signature)]


def signature_of_file(path: Path) -> list[float]:
    with Image.open(path) as image:
        return image_signature(image)


def _centred(histogram: np.ndarray) -> np.ndarray:
    total = histogram.sum()
    return histogram / total - 1.0 / len(histogram) if total > 0 else np.zeros(len(histogram))


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 1e-12 else np.zeros_like(vector)
