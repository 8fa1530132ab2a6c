"""An approximate nearest-neighbour index (HNSW, from ``usearch``) over the memory's unit vectors.

The same answers as :func:`director.memory.nearest`, approximately, without scanning every row:
rows are only appended, and a row's key is its row number in insertion order (0, 1, 2, ...), so a
hit's ``index`` is the row of the matrix the memory keeps. To rebuild, make a new index and ``add``
the matrix. The metric is the inner product, which is the cosine for the unit-length rows the
embedders give. Vectors are stored as float16: half the memory of float32 and faster to compare
(at a million built-in vectors, 1 GB instead of 2), for a similarity within about 1e-3 of the
float32 dot product and the same recall (bench/memory_scale.py).
"""

from __future__ import annotations

import threading
from collections.abc import Collection

import numpy as np
from usearch.index import Index, Matches, MetricKind, ScalarKind

from director.memory import Hit

# At a million built-in vectors of shot texts (bench/memory_scale.py), recall@10 of the exact scan
# was 0.84 with the library's default search depth (64), 0.96 at 192 and 0.98 at 256, for a p99
# of ~3 ms on 2 cores; doubling connectivity instead reached 0.98 at 128 with 20 % more memory.
CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 256


class VectorIndex:
    """HNSW over unit-length float32 rows of ``dimensions``; ``add`` appends, ``search`` finds.

    ``connectivity`` (HNSW's M: links per node), ``expansion_add`` (efConstruction) and
    ``expansion_search`` (ef) trade memory and time for recall. ``add`` and ``search`` may be
    called from any thread: they take turns, because the library does not make an ``add`` (which
    may grow its storage) safe beside a ``search``. ``add`` itself uses the library's threads and
    lets go of the GIL, but searches wait for it: a rebuild fills a new index and swaps it in.
    """

    def __init__(self, dimensions: int, *, connectivity: int = CONNECTIVITY, expansion_add: int = EXPANSION_ADD,
                 expansion_search: int = EXPANSION_SEARCH) -> None:
        self.dimensions = dimensions
        self._index = Index(ndim=dimensions, metric=MetricKind.IP, dtype=ScalarKind.F16, connectivity=connectivity,
                            expansion_add=expansion_add, expansion_search=expansion_search)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._index)

    def add(self, vectors: np.ndarray) -> None:
        """Append the rows of ``vectors`` (``(n, dimensions)``, unit length); they get the next row
        numbers as keys, in order."""
        rows = np.ascontiguousarray(vectors, np.float32).reshape(-1, self.dimensions)
        if not len(rows):
            return
        with self._lock:
            start = len(self._index)
            self._index.add(np.arange(start, start + len(rows), dtype=np.uint64), rows)

    def search(self, query: np.ndarray, k: int, exclude: Collection[int] = ()) -> list[Hit]:
        """The ``k`` rows most similar to ``query`` (approximately), best first, none of them in
        ``exclude``; fewer only when the index has fewer than ``k`` rows outside ``exclude``."""
        skip = set(exclude)
        query = np.ascontiguousarray(query, np.float32).reshape(self.dimensions)
        with self._lock:
            size = len(self._index)
            wanted = min(k, size - sum(1 for row in skip if 0 <= row < size))
            if wanted <= 0:
                return []
            # No filter in the Python binding: ask for as many more as there are rows to drop.
            hits = self._hits(self._index.search(query, wanted + len(skip), threads=1), skip)
            if len(hits) < wanted:  # HNSW may come back short; the exhaustive pass never does
                hits = self._hits(self._index.search(query, wanted + len(skip), threads=1, exact=True), skip)
        return hits[:wanted]

    @staticmethod
    def _hits(matches: Matches, skip: set[int]) -> list[Hit]:
        # usearch's inner-product distance is 1 - dot, best first.
        return [Hit(int(key), 1.0 - float(distance)) for key, distance in zip(matches.keys, matches.distances,
                                                                               strict=True) if int(key) not in skip]

    def memory_bytes(self) -> int:
        """The index's memory as the library counts it: the vectors, the graph, the key lookup and
        the room reserved for rows to come."""
        return int(self._index.memory_usage)

    def describe(self) -> str:
        """The settings, for reports."""
        return (f"usearch HNSW, inner product, float16 vectors, connectivity {self._index.connectivity}, "
                f"expansion_add {self._index.expansion_add}, expansion_search {self._index.expansion_search}")
