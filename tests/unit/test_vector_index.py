"""The HNSW index over the memory's vectors, against the exact scan it stands in for."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from usearch.index import Matches

from director.memory import nearest
from director.vector_index import VectorIndex


def unit_rows(count: int, dimensions: int = 64, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dimensions)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return unit_rows(3000)


@pytest.fixture(scope="module")
def index(rows) -> VectorIndex:
    index = VectorIndex(rows.shape[1])
    index.add(rows)
    return index


def recall_at_10(index: VectorIndex, rows: np.ndarray, queries: np.ndarray) -> float:
    found = 0
    for query in queries:
        hits, exact = index.search(query, 10), nearest(rows, query, 10)
        assert len(hits) == 10
        assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
        # float16 storage: the similarity is the float32 dot product give or take ~1e-3
        assert np.allclose([h.similarity for h in hits], rows[[h.index for h in hits]] @ query, atol=2e-3)
        found += len({h.index for h in hits} & {h.index for h in exact})
    return found / (10 * len(queries))


def test_it_finds_what_the_exact_scan_finds(rows, index):
    # Uniformly random rows and queries, a few thousand; bench/memory_scale.py measures the
    # memory's own texts at a million rows.
    queries = unit_rows(100, seed=1)
    recall = recall_at_10(index, rows, queries)
    assert recall >= 0.97
    narrow = VectorIndex(rows.shape[1], expansion_search=8)  # the settings are the caller's to trade
    narrow.add(rows)
    assert recall_at_10(narrow, rows, queries) < recall


def test_a_row_finds_itself_first(rows, index):
    hit = index.search(rows[1234], 1)[0]
    assert hit.index == 1234 and hit.similarity == pytest.approx(1.0, abs=2e-3)


def test_excluded_rows_are_never_returned_and_k_is_still_met(rows, index):
    query = rows[7]
    exclude = {7, *(h.index for h in nearest(rows, query, 30))}
    hits = index.search(query, 10, exclude=exclude)
    assert len(hits) == 10 and not exclude & {h.index for h in hits}
    assert {h.index for h in hits} <= {h.index for h in nearest(rows, query, 60)}, "the next best, not any"


def test_excluding_nearly_everything_leaves_what_remains():
    small = unit_rows(20, seed=2)
    index = VectorIndex(small.shape[1])
    index.add(small)
    hits = index.search(small[0], 10, exclude=range(15))
    assert sorted(h.index for h in hits) == [15, 16, 17, 18, 19]
    assert index.search(small[0], 10, exclude=range(20)) == []
    assert len(index.search(small[0], 50)) == 20, "fewer rows than k: all of them"


def test_a_short_answer_from_the_graph_is_made_up_by_the_exhaustive_pass(rows, index, monkeypatch):
    # HNSW can miss rows (a node no link leads to); the contract still promises k of them.
    search = index._index.search

    def graph_misses_rows(*args, exact: bool = False, **kwargs) -> Matches:
        matches = search(*args, exact=exact, **kwargs)
        return matches if exact else Matches(keys=matches.keys[:3], distances=matches.distances[:3])

    monkeypatch.setattr(index._index, "search", graph_misses_rows)
    hits = index.search(rows[3], 10, exclude=[3])
    assert [h.index for h in hits] == [h.index for h in nearest(rows, rows[3], 10, exclude=[3])]


def test_an_empty_index_finds_nothing():
    index = VectorIndex(64)
    assert len(index) == 0 and index.search(unit_rows(1)[0], 10) == []
    index.add(np.zeros((0, 64), np.float32))
    assert len(index) == 0
    index.add(unit_rows(5))
    assert index.search(unit_rows(1)[0], 0) == []


def test_batches_keep_their_row_numbers(rows):
    index = VectorIndex(rows.shape[1])
    for start, stop in ((0, 1), (1, 700), (700, 701), (701, 2000)):
        index.add(rows[start:stop])
    assert len(index) == 2000
    for row in (0, 1, 699, 700, 701, 1999):
        assert index.search(rows[row], 1)[0].index == row
    assert index.memory_bytes() >= 2000 * 64 * 2, "at least the float16 vectors"


def test_adds_and_searches_from_several_threads(rows):
    index = VectorIndex(rows.shape[1])
    index.add(rows[:100])
    errors: list[BaseException] = []

    def add() -> None:
        for start in range(100, 1000, 100):
            index.add(rows[start:start + 100])

    def search() -> None:
        try:
            for row in range(0, 1000, 7):
                hits = index.search(rows[row], 5)
                assert len(hits) == 5 and all(0 <= h.index < 1000 for h in hits)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread's assert
            errors.append(error)

    threads = [threading.Thread(target=add), *(threading.Thread(target=search) for _ in range(2))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(index) == 1000
    assert [index.search(rows[row], 1)[0].index for row in (0, 500, 999)] == [0, 500, 999]
