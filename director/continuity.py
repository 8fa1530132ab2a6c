"""Cross-shot continuity by weight-free measures: does the scene look like one scene across its cuts?

Two measures, neither with a learned model:

* **Colour distance**: how far apart two frames' colour statistics are in CIELAB, the space in
  which equal distances look about equally different: the Euclidean distance between their
  (mean, standard deviation) of L*, a* and b*, over the frames reduced to 64 pixels a side (box
  averages: the palette, not the grain). Between two frames of one flat colour it is the
  CIE76 colour difference (Delta E): about 2 is just noticeable, and above 20 or so the palette has
  changed. A cut between two shots of one setting keeps its palette even when the camera angle
  changes; a jump in palette is what a viewer reads as "another place" or "another time".
* **Perceptual-hash distance**: the share of differing bits between two frames' 64-bit DCT
  hashes (pHash). It follows composition, so it changes at most cuts (a new angle is a new
  layout) and is reported, not judged.

A cut is a discontinuity when its colour distance is over the threshold. A character's shots
are compared the same way, pairwise by keyframe: without a detector the whole frame stands for
the character, so a character whose shots are all in one setting looks continuous, and a
costume change inside a steady palette is not seen. That is what these measures cannot do: they
see palette and layout, not identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from PIL import Image

HASH_SIDE = 32  # the frame is reduced to 32x32 grey before the DCT
HASH_BITS_SIDE = 8  # the hash keeps the 8x8 lowest frequencies


@dataclass(frozen=True)
class Signature:
    """What continuity compares of one frame."""

    colour: np.ndarray  # mean and standard deviation of L*, a*, b*
    phash: np.ndarray  # 64 booleans


STATS_SIDE = 64  # colour statistics are taken over the frame reduced to at most 64 pixels a side


def signature(frame: np.ndarray) -> Signature:
    """The colour statistics and perceptual hash of an RGB frame (H x W x 3, uint8)."""
    image = Image.fromarray(frame[..., :3])
    factor = max(1, -(-max(image.size) // STATS_SIDE))
    small = np.asarray(image.reduce(factor) if factor > 1 else image)
    lab = _lab(small.reshape(-1, 3))
    return Signature(np.concatenate([lab.mean(axis=0), lab.std(axis=0)]), _phash(frame))


def colour_distance(a: Signature, b: Signature) -> float:
    """Euclidean distance of the CIELAB statistics (Delta E units: 0 the same, 2 just noticeable)."""
    return float(np.linalg.norm(a.colour - b.colour))


def hash_distance(a: Signature, b: Signature) -> float:
    """Share of the perceptual-hash bits that differ (0 the same layout, about 0.5 unrelated)."""
    return float(np.mean(a.phash != b.phash))


@dataclass(frozen=True)
class CutMeasure:
    after_shot: int
    colour_distance: float
    hash_distance: float
    discontinuity: bool


@dataclass(frozen=True)
class CharacterMeasure:
    character: str
    shots: tuple[int, ...]
    max_colour_distance: float
    discontinuity: bool


def cut_measures(sides: list[tuple[int, Signature, Signature]], threshold: float) -> list[CutMeasure]:
    """Per cut: (the shot before it, its last frame's signature, the next shot's first frame's)."""
    measures = []
    for after_shot, before, after in sides:
        colour = colour_distance(before, after)
        measures.append(CutMeasure(after_shot, round(colour, 4), round(hash_distance(before, after), 4),
                                   colour > threshold))
    return measures


def character_measures(appearances: dict[str, list[tuple[int, Signature]]], threshold: float) -> list[CharacterMeasure]:
    """Per character seen in two shots or more: the largest colour distance between any two of its
    shots' keyframes."""
    measures = []
    for character, shots in sorted(appearances.items()):
        if len(shots) < 2:
            continue
        worst = max(colour_distance(a, b) for (_, a), (_, b) in combinations(shots, 2))
        measures.append(CharacterMeasure(character, tuple(n for n, _ in shots), round(worst, 4), worst > threshold))
    return measures


def _lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255) to CIELAB under D65."""
    c = rgb.astype(np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def _phash(frame: np.ndarray) -> np.ndarray:
    grey = Image.fromarray(frame[..., :3]).convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, dtype=np.float64)
    low = _dct_matrix(HASH_SIDE)[:HASH_BITS_SIDE]
    coefficients = low @ pixels @ low.T
    values = coefficients.ravel()[1:]  # the DC term says only how bright the frame is
    return np.concatenate([[coefficients[0, 0] > np.median(values)], values > np.median(values)])


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (so the hash needs numpy alone)."""
    k = np.arange(n)[:, None]
    matrix = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix
