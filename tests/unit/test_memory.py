"""The memory's pure parts: the built-in embedder and the exact nearest-neighbour scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from director.memory import BUILT_IN, HashedNgrams, attempt_text, nearest

KINDS = json.loads((Path(__file__).parents[2] / "bench" / "data" / "memory_kinds.json").read_text())["kinds"]


def test_the_built_in_embedder_is_deterministic_and_unit_length():
    texts = ["Kai fights the dragon on the cliff", "A rainy confession under one umbrella", ""]
    vectors = BUILT_IN.embed(texts)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0) and not vectors[2].any()
    assert np.array_equal(vectors, HashedNgrams().embed(texts)), "no per-process salt: same text, same vector"
    # Words shared, and word forms (fights / fighting), bring texts closer.
    dragon, fight, rain = BUILT_IN.embed(["the dragon battle", "Kai fighting a dragon", "rain at the bus stop"])
    assert dragon @ fight > dragon @ rain


def test_nearest_is_best_first_and_leaves_out_what_it_is_told(kai_shots):
    vectors = BUILT_IN.embed([attempt_text(p.shot) for p in kai_shots])
    hits = nearest(vectors, vectors[0], 3)
    assert hits[0].index == 0 and abs(hits[0].similarity - 1.0) < 1e-5
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    assert 0 not in [h.index for h in nearest(vectors, vectors[0], 3, exclude=[0])]
    assert len(nearest(vectors, vectors[0], 99)) == len(kai_shots) and nearest(vectors[:0], vectors[0], 3) == []


def test_an_attempt_is_remembered_by_its_plan_and_pattern(kai_shots):
    shot = kai_shots[0].shot
    text = attempt_text(shot)
    assert shot.action in text and shot.camera_angle in text and all(c in text for c in shot.characters)


def test_the_built_in_embedder_finds_descriptions_of_the_same_kind_better_than_chance():
    """Measured on the labelled set in bench/data (``make bench-memory`` reports the figure): a
    lexical embedder finds paraphrases only through the words they share, so it is far from
    perfect, but far from chance (about 1 in 11 here)."""
    texts = [t for kind in KINDS.values() for t in kind]
    kinds = [k for k, kind in KINDS.items() for _ in kind]
    vectors = BUILT_IN.embed(texts)
    found = [sum(kinds[h.index] == kinds[i] for h in nearest(vectors, vectors[i], 5, exclude=[i])) / 5
             for i in range(len(texts))]
    assert len(KINDS) >= 10 and len(texts) >= 60
    assert np.mean(found) > 2 / len(KINDS), np.mean(found)
