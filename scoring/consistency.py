"""Character/style consistency of shot frames against a reference frame.

The reference is the first accepted frame of the character/scene when the caller
has one, otherwise the shot's own first frame. Two signals, each in [0, 1]:

* **Embedding similarity** from a pluggable :class:`EmbeddingBackend`:
  ``1 - sqrt(1 - cos)`` (see :func:`embedding_similarity`), in [0, 1]. The
  default :class:`WeightFreeEmbedding` needs no model weights: it concatenates
  square-rooted, normalised histograms of Lab colour, gradient magnitude,
  gradient orientation and 8-neighbour local binary patterns. Because a
  square-rooted histogram has unit L2 norm, the cosine of two such embeddings
  equals the weighted mean of the per-feature Bhattacharyya coefficients
  ``BC = sum_i sqrt(p_i q_i)``, and the similarity above is one minus the
  Hellinger distance ``sqrt(1 - BC)``. When learned weights exist (e.g. a
  DINO/CLIP image encoder), wrap them in a class with the same ``embed`` method
  and pass it to the Scorer.
* **Keypoint agreement**: ORB features of the reference matched to the frame with
  Lowe's ratio test (0.75); the score is the fraction of reference keypoints with
  a good match. It is skipped (weight moved to the embedding) when the reference
  has too few keypoints to be meaningful, e.g. flat colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import torch
from torch import Tensor

#: Frames are analysed at this longest side so texture statistics do not depend
#: on render resolution and a reference of another size compares fairly.
EMBED_SIDE = 256
KEYPOINT_SIDE = 512
ORB_FEATURES = 500
RATIO = 0.75
#: Fewer reference keypoints than this make the match fraction too noisy to use.
MIN_REFERENCE_KEYPOINTS = 16

# Relative weights of the histogram blocks in the weight-free embedding.
_BLOCK_WEIGHTS = {"lab": 0.5, "grad_mag": 0.15, "grad_ori": 0.15, "lbp": 0.2}


@runtime_checkable
class EmbeddingBackend(Protocol):
    """Maps frames to embeddings compared by cosine similarity.

    Contract: ``embed`` takes float frames [N, 3, H, W] in [0, 1] (any device,
    any size; implementations resize as they need) and returns a float tensor
    [N, D] of finite values, one row per frame, in the same order. It must not
    modify its input. ``name`` identifies the backend and its weights version in
    results, because scores from different backends are not comparable.
    """

    name: str

    def embed(self, frames: Tensor) -> Tensor: ...


def _resize_max_side(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= side:
        return img
    s = side / max(h, w)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _norm_sqrt(hist: np.ndarray) -> np.ndarray:
    hist = hist.astype(np.float64).ravel()
    total = hist.sum()
    if total <= 0:
        # An empty histogram (no gradients at all) is a legitimate state;
        # a uniform vector keeps the block unit-norm and comparable.
        return np.full(hist.size, 1.0 / np.sqrt(hist.size))
    return np.sqrt(hist / total)


def _lbp_codes(gray: np.ndarray) -> np.ndarray:
    """8-neighbour local binary pattern codes (0..255) of the interior pixels."""
    g = gray.astype(np.int16)
    c = g[1:-1, 1:-1]
    codes = np.zeros(c.shape, dtype=np.uint8)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    h, w = g.shape
    for bit, (dy, dx) in enumerate(offsets):
        n = g[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
        codes |= (n >= c).astype(np.uint8) << bit
    return codes


def weight_free_features(rgb: np.ndarray) -> np.ndarray:
    """Weight-free embedding of one HxWx3 uint8 RGB frame (float64 vector, unit norm)."""
    img = _resize_max_side(rgb, EMBED_SIDE)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)
    lab_hist = cv2.calcHist([lab], [0, 1, 2], None, [8, 8, 8], [0, 256, 0, 256, 0, 256])

    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    gf = gray.astype(np.float32)
    gx = cv2.Sobel(gf, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gf, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    # Log-spaced magnitude bins: line art and flat fills differ mostly in how
    # often small vs. large gradients occur. 1443 ~ max Sobel magnitude on uint8.
    mag_hist, _ = np.histogram(np.log1p(mag), bins=16, range=(0.0, float(np.log1p(1443.0))))
    ori = np.mod(np.arctan2(gy, gx), np.pi)
    ori_hist, _ = np.histogram(ori, bins=12, range=(0.0, float(np.pi)), weights=mag)
    lbp_hist = np.bincount(_lbp_codes(gray).ravel(), minlength=256)

    blocks = {"lab": lab_hist, "grad_mag": mag_hist, "grad_ori": ori_hist, "lbp": lbp_hist}
    total_w = sum(_BLOCK_WEIGHTS.values())
    parts = [np.sqrt(_BLOCK_WEIGHTS[k] / total_w) * _norm_sqrt(v) for k, v in blocks.items()]
    return np.concatenate(parts)


class WeightFreeEmbedding:
    """Default :class:`EmbeddingBackend`: colour + texture histograms, no model weights.

    Cosine of two embeddings is the weighted mean Bhattacharyya coefficient of
    their histograms, in [0, 1].
    """

    name = "weightfree-hist/1"

    def __init__(self, pool: Executor | None = None) -> None:
        self._pool = pool

    def embed(self, frames: Tensor) -> Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"expected [N, 3, H, W] frames, got {tuple(frames.shape)}")
        u8 = (frames.detach().float() * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)
        arrs = list(u8.permute(0, 2, 3, 1).contiguous().cpu().numpy())
        return torch.from_numpy(np.stack(self.embed_uint8(arrs))).to(torch.float32)

    def embed_uint8(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Same embedding from HxWx3 uint8 arrays, skipping the float round trip."""
        if self._pool is None:
            return [weight_free_features(f) for f in frames]
        return list(self._pool.map(weight_free_features, frames))


@dataclass(frozen=True)
class Keypoints:
    count: int
    descriptors: np.ndarray | None


def orb_keypoints(rgb: np.ndarray) -> Keypoints:
    """ORB descriptors of a frame at KEYPOINT_SIDE working resolution."""
    gray = cv2.cvtColor(_resize_max_side(rgb, KEYPOINT_SIDE), cv2.COLOR_RGB2GRAY)
    orb = cv2.ORB_create(nfeatures=ORB_FEATURES)
    _, desc = orb.detectAndCompute(gray, None)
    return Keypoints(count=0 if desc is None else len(desc), descriptors=desc)


def keypoint_agreement(ref: Keypoints, frame: Keypoints) -> float:
    """Fraction of reference keypoints whose best frame match passes the ratio test."""
    if ref.descriptors is None or ref.count == 0:
        return 0.0
    if frame.descriptors is None or frame.count < 2:
        return 0.0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    good = 0
    for m in matcher.knnMatch(ref.descriptors, frame.descriptors, k=2):
        if len(m) == 2 and m[0].distance < RATIO * m[1].distance:
            good += 1
    return min(1.0, good / ref.count)


@dataclass(frozen=True)
class ConsistencyResult:
    """Per-shot consistency. ``per_frame`` is aligned with ``frame_indices``."""

    score: float
    minimum: float
    embedding: float
    keypoints: float
    keypoints_used: bool
    frame_indices: list[int]
    per_frame: list[float]


def sample_indices(n_frames: int, max_frames: int, reference_is_first_frame: bool) -> list[int]:
    """Evenly spaced frame indices (first to last) to compare with the reference.

    When the reference is frame 0 itself, frame 0 is left out: it would compare
    to itself with similarity 1 and inflate the mean.
    """
    lo = 1 if reference_is_first_frame else 0
    if n_frames - lo <= max_frames:
        return list(range(lo, n_frames))
    idx = np.linspace(lo, n_frames - 1, max_frames).round().astype(int)
    return sorted(set(int(i) for i in idx))


def embedding_similarity(ref: Tensor, emb: Tensor) -> Tensor:
    """Similarity in [0, 1] of each row of ``emb`` [N, D] to ``ref`` [D].

    ``1 - sqrt(1 - cos)``, i.e. one minus the chord distance between the
    L2-normalised embeddings divided by sqrt(2), clamped at 0. Compared with raw
    cosine it spreads out the near-1 region where histogram embeddings live
    (cos 0.99 -> 0.90, 0.9999 -> 0.99), and maps orthogonal or anti-correlated
    embeddings to 0. For the weight-free backend this is one minus the Hellinger
    distance of the (weighted) histograms.
    """
    ref = ref.to(torch.float64).flatten()
    emb = emb.to(torch.float64)
    cos = (emb @ ref) / (emb.norm(dim=1) * ref.norm()).clamp(min=1e-12)
    return (1.0 - torch.sqrt((1.0 - cos).clamp(min=0.0))).clamp(0.0, 1.0)


def combine(embedding_sims: list[float], keypoint_sims: list[float] | None, keypoint_weight: float) -> list[float]:
    """Per-frame consistency: ``(1 - w) * embedding + w * keypoints`` (or embedding only)."""
    if keypoint_sims is None or keypoint_weight <= 0:
        return list(embedding_sims)
    w = keypoint_weight
    return [(1 - w) * e + w * k for e, k in zip(embedding_sims, keypoint_sims, strict=True)]
