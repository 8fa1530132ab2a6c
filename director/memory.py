"""Tower's memory of past shots: what each scored attempt was, as a text embedding, and the nearest
ones to a query.

Pure. The text of an attempt is its plan (description, action, camera, movement, mood, lighting,
setting, time of day, characters) and its prompt pattern; :class:`HashedNgrams`, the built-in
embedder, needs no model and no download: word unigrams and bigrams and character 3-5-grams of
each word (stop words left out), hashed with signed feature hashing into 512 dimensions, weighted
``1 + log(count)`` and normalised, so cosine similarity is a dot product. The same text gives the
same vector on every machine (blake2b, not Python's salted ``hash``). An embedder's name and
version are stored with each vector; a changed embedder is a different memory. A server embedder
(:mod:`director.embedding_server`) is the other kind.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from events.models import PromptSpec, ShotSpec

STOP_WORDS = frozenset(
    "a an and are as at be by create for from in into is it its of on or scene shot that the their then "
    "there they this to where while who with".split()
)
WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


class Embedder(Protocol):
    """Turns texts into unit-length float32 rows. ``name``/``version`` say which vectors these are:
    vectors of different embedders are never compared."""

    name: str
    version: str

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length row per text (float32), in the order of ``texts``."""
        ...


def embedder_key(embedder: Embedder) -> str:
    """What the memory stores with each vector to say whose it is."""
    return f"{embedder.name}/{embedder.version}"


@dataclass(frozen=True)
class HashedNgrams:
    """The built-in embedder: hashed word and character n-grams (see the module docstring)."""

    dimensions: int = 512
    name: str = "tower-hashed-ngrams"
    version: str = "1"

    async def embed(self, texts: list[str]) -> np.ndarray:
        return self.vectors(texts)

    def vectors(self, texts: list[str]) -> np.ndarray:
        """:meth:`embed`, for callers that are not async (it does no I/O)."""
        return np.stack([self._one(text) for text in texts]) if texts else np.zeros((0, self.dimensions), np.float32)

    def _one(self, text: str) -> np.ndarray:
        words = [w for w in WORD.findall(text.lower()) if w not in STOP_WORDS]
        features: Counter[str] = Counter()
        for word in words:
            features[f"w:{word}"] += 2
            padded = f"<{word}>"
            for n in (3, 4, 5):
                features.update(f"c:{padded[i:i + n]}" for i in range(len(padded) - n + 1))
        features.update(f"b:{a}_{b}" for a, b in zip(words, words[1:], strict=False))
        vector = np.zeros(self.dimensions, np.float64)
        for feature, count in features.items():
            digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
            sign = 1.0 if digest >> 63 else -1.0
            vector[digest % self.dimensions] += sign * (1.0 + math.log(count))
        norm = np.linalg.norm(vector)
        return (vector / norm if norm else vector).astype(np.float32)


BUILT_IN = HashedNgrams()


def attempt_text(shot: ShotSpec, prompt: PromptSpec | None = None) -> str:
    """What is remembered of an attempt, as text: its plan, and the prompt pattern it used."""
    parts = [shot.description, shot.action, f"{shot.camera_angle} shot", shot.camera_movement, f"{shot.mood} mood",
             shot.lighting, shot.setting, shot.time_of_day, *shot.characters]
    if prompt is not None:
        parts.append(prompt.modifier)
    return ". ".join(part for part in parts if part)


@dataclass(frozen=True)
class Hit:
    index: int  # the row in the searched matrix
    similarity: float


def nearest(vectors: np.ndarray, query: np.ndarray, k: int, exclude: Iterable[int] = ()) -> list[Hit]:
    """The ``k`` rows of ``vectors`` most similar to ``query`` (cosine: the rows are unit length),
    best first, without the rows in ``exclude``. An exact scan."""
    if len(vectors) == 0 or k <= 0:
        return []
    scores = vectors @ query.astype(np.float32)
    skip = list(exclude)
    if skip:
        scores[skip] = -np.inf
    k = min(k, len(scores) - len(skip))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]  # best first; ties by row, so the order is stable
    return [Hit(int(i), float(scores[i])) for i in top]


@dataclass(frozen=True)
class Remembered:
    """A remembered outcome the memory prior can use: its modifier and composite score."""

    modifier: str
    composite: float


def memory_prior(neighbours: Iterable[tuple[float, Remembered]], strength: float) -> dict[str, tuple[float, float]]:
    """Each modifier's prior evidence from a shot's nearest remembered shots: ``(good, bad)`` sums of
    their scores weighted by similarity (``similarity x composite`` and ``similarity x (1 -
    composite)``; dissimilar ones, at or under 0, count nothing), scaled down to at most
    ``strength`` scores per modifier, as borrowed priors are (:func:`director.learning.beliefs`)."""
    sums: dict[str, list[float]] = {}
    for similarity, outcome in neighbours:
        if similarity <= 0:
            continue
        good_bad = sums.setdefault(outcome.modifier, [0.0, 0.0])
        good_bad[0] += similarity * outcome.composite
        good_bad[1] += similarity * (1.0 - outcome.composite)
    prior = {}
    for modifier, (good, bad) in sums.items():
        scale = min(1.0, strength / (good + bad)) if good + bad > 0 else 0.0
        prior[modifier] = (scale * good, scale * bad)
    return prior
