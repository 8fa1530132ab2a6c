"""The memory's pure parts: the built-in embedder and the exact nearest-neighbour scan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from director.learning import beliefs
from director.memory import BUILT_IN, HashedNgrams, Remembered, attempt_text, memory_prior, nearest
from scoring.signature import DIMENSIONS as SIGNATURE_DIMENSIONS
from store.memory import Memories, neighbours

KINDS = json.loads((Path(__file__).parents[2] / "bench" / "data" / "memory_kinds.json").read_text())["kinds"]


def test_the_built_in_embedder_is_deterministic_and_unit_length():
    texts = ["Kai fights the dragon on the cliff", "A rainy confession under one umbrella", ""]
    vectors = BUILT_IN.vectors(texts)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0) and not vectors[2].any()
    assert np.array_equal(vectors, HashedNgrams().vectors(texts)), "no per-process salt: same text, same vector"
    # Words shared, and word forms (fights / fighting), bring texts closer.
    dragon, fight, rain = BUILT_IN.vectors(["the dragon battle", "Kai fighting a dragon", "rain at the bus stop"])
    assert dragon @ fight > dragon @ rain


def test_nearest_is_best_first_and_leaves_out_what_it_is_told(kai_shots):
    vectors = BUILT_IN.vectors([attempt_text(p.shot) for p in kai_shots])
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
    vectors = BUILT_IN.vectors(texts)
    found = [sum(kinds[h.index] == kinds[i] for h in nearest(vectors, vectors[i], 5, exclude=[i])) / 5
             for i in range(len(texts))]
    assert len(KINDS) >= 10 and len(texts) >= 60
    assert np.mean(found) > 2 / len(KINDS), np.mean(found)


def test_the_memory_prior_weighs_outcomes_by_similarity_and_is_bounded():
    near = [(0.9, Remembered("clean-cel", 0.8)), (0.5, Remembered("clean-cel", 0.4)),
            (0.6, Remembered("rim-light-drama", 0.2)), (-0.3, Remembered("rim-light-drama", 1.0)),
            (0.0, Remembered("soft-focus", 1.0))]
    prior = memory_prior(near, strength=10.0)
    assert prior["clean-cel"] == pytest.approx((0.9 * 0.8 + 0.5 * 0.4, 0.9 * 0.2 + 0.5 * 0.6))
    assert prior["rim-light-drama"] == pytest.approx((0.6 * 0.2, 0.6 * 0.8))  # the dissimilar one counts nothing
    assert "soft-focus" not in prior
    bounded = memory_prior(near, strength=0.5)
    assert sum(bounded["clean-cel"]) == pytest.approx(0.5)
    assert bounded["clean-cel"][0] / sum(bounded["clean-cel"]) == pytest.approx(0.92 / 1.4)


def test_a_memory_prior_moves_a_new_contexts_belief_beside_the_borrowed_one():
    context = "close-up|tense|rain|w1"
    plain = beliefs(context, {}, ["clean-cel", "rim-light-drama"])
    remembered = beliefs(context, {}, ["clean-cel", "rim-light-drama"], memory={"clean-cel": (1.6, 0.4)})
    assert plain["clean-cel"].mean == pytest.approx(0.5)
    assert remembered["clean-cel"].mean == pytest.approx(2.6 / 4.0) and remembered["clean-cel"].remembered == 2.0
    assert remembered["rim-light-drama"] == plain["rim-light-drama"]


def test_the_memory_prior_reads_only_credited_scored_shots_of_the_workflow_and_not_the_shot_itself():
    rows = [dict(scene_id="a", shot_number=1, workflow="w1", credited=True, status="ok", modifier="m1", composite=0.9),
            dict(scene_id="b", shot_number=1, workflow="w2", credited=True, status="ok", modifier="m2", composite=0.9),
            dict(scene_id="b", shot_number=2, workflow="w1", credited=False, status="ok", modifier="m3", composite=0.9),
            dict(scene_id="b", shot_number=3, workflow="w1", credited=True, status="failed", modifier="m4", composite=0),
            dict(scene_id="c", shot_number=1, workflow="w1", credited=True, status="ok", modifier="m5", composite=0.3)]
    vectors = BUILT_IN.vectors([f"row {i}" for i in range(len(rows))])
    memories = loaded(rows, vectors)
    found = neighbours(memories, vectors[0], workflow="w1", k=10, exclude_shot=("c", 1))
    assert [outcome.modifier for _, outcome in found] == ["m1"]
    assert found[0][0] == pytest.approx(1.0, abs=1e-5)
    assert len(neighbours(memories, vectors[0], workflow="w1", k=10)) == 2, "c's shot 1 counts for other shots"


def loaded(rows: list[dict], vectors: np.ndarray, batches: int = 1) -> Memories:
    """``rows`` as :func:`store.memory.load` gives them, added in ``batches``."""
    records = [dict(row, seq=i + 1, vector=v.tolist(), signature=row.get("signature")) for i, (row, v)
               in enumerate(zip(rows, vectors, strict=True))]
    memories = Memories()
    for part in np.array_split(np.arange(len(records)), batches):
        memories.extend([records[i] for i in part])
    return memories


def test_rows_added_in_batches_are_searched_as_if_loaded_at_once(kai_shots):
    texts = [f"{attempt_text(p.shot)}, take {take}" for take in "abc" for p in kai_shots]
    rows = [dict(scene_id=f"s{i // len(kai_shots)}", shot_number=i % len(kai_shots) + 1, workflow="w1", credited=True,
                 status="ok", modifier=f"m{i % 2}", composite=0.5) for i in range(len(texts))]
    vectors = BUILT_IN.vectors(texts)
    whole, parts = loaded(rows, vectors), loaded(rows, vectors, batches=3)
    assert parts.last_seq == len(rows) and parts.shots == whole.shots
    query = vectors[1]
    assert [h.index for h in parts.search(query, 5, exclude=[1])] == [h.index for h in whole.search(query, 5, exclude=[1])]
    assert {h.index for h in whole.search(query, 3)} == {h.index for h in nearest(vectors, query, 3)}
    assert neighbours(parts, query, workflow="w1", k=4) == neighbours(whole, query, workflow="w1", k=4)


def look(*head: float) -> list[float]:
    """A signature of the scorer's width that starts with ``head``."""
    return [*head] + [0.0] * (SIGNATURE_DIMENSIONS - len(head))


def test_similar_by_look_compares_image_signatures_of_rows_that_have_one():
    rows = [dict(scene_id="a", shot_number=i + 1, workflow="w1", credited=True, status="ok", modifier="m",
                 composite=0.5, signature=signature) for i, signature in
            enumerate([look(1.0, 0.0), look(0.8, 0.6), None, look(0.0, 1.0), [1.0, 0.0]])]
    memories = loaded(rows, BUILT_IN.vectors([f"row {i}" for i in range(len(rows))]))
    assert [(h.index, round(h.similarity, 3)) for h in memories.looks_like(0, 5, exclude=[0])] == [(1, 0.8), (3, 0.0)]
    assert memories.looks_like(2, 5, exclude=[2]) == [], "a row without a signature looks like nothing"
    assert memories.looks_like(4, 5, exclude=[4]) == [], "nor does one of another width (another signature version)"
