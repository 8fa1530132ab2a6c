"""Retrieval quality of the memory's embedders on a labelled set kept in the repository.

``bench/data/memory_kinds.json`` holds short scene descriptions in kinds (a sword duel, a rainy
confession, a storm at sea ...), each kind paraphrased. Each description is a query; its five
nearest other descriptions are found with the embedder and the exact scan the memory uses, and
recall@5 is the share of them of the query's kind (each kind has at least five others). Run with
``make bench-memory``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.report import write_section
from director.memory import BUILT_IN, Embedder, HashedNgrams, nearest

DATA = Path(__file__).parent / "data" / "memory_kinds.json"


def recall_at_5(embedder: Embedder, texts: list[str], kinds: list[str]) -> float:
    vectors = embedder.embed(texts)
    found = [sum(kinds[h.index] == kinds[i] for h in nearest(vectors, vectors[i], 5, exclude=[i])) / 5
             for i in range(len(texts))]
    return float(np.mean(found))


def run() -> str:
    data = json.loads(DATA.read_text())["kinds"]
    texts = [text for kind in data.values() for text in kind]
    kinds = [name for name, kind in data.items() for _ in kind]
    rows = []
    for label, embedder in (("built-in, 512 dimensions (the default)", BUILT_IN),
                            ("built-in, 2048 dimensions", HashedNgrams(dimensions=2048))):
        rows.append(f"| {embedder.name}/{embedder.version}: {label} | {recall_at_5(embedder, texts, kinds):.3f} |")
    return "\n".join([
        "## Memory retrieval (`make bench-memory`)",
        "",
        f"Command: `make bench-memory` (`python -m bench.memory`). Date: {time.strftime('%Y-%m-%d')}. "
        f"{len(texts)} scene descriptions in {len(data)} kinds (`bench/data/memory_kinds.json`), each a query; "
        "recall@5: the share of its five nearest other descriptions that are of its kind "
        f"(chance: {np.mean([(kinds.count(k) - 1) / (len(texts) - 1) for k in kinds]):.3f}).",
        "",
        "| embedder | recall@5 |",
        "|---|---:|",
        *rows,
        "",
        "Reading it: the built-in embedder is lexical (hashed word and character n-grams), so it finds a "
        "paraphrase through the words and word forms it shares, not through meaning: \"steel clashes\" and "
        "\"cross blades\" are strangers to it. More dimensions mean fewer hash collisions and a better recall, "
        "at four times the memory per vector. A server embedder (an OpenAI-compatible `/v1/embeddings`) is "
        "not measured yet.",
    ])


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    section = run()
    write_section("memory", section)
    print(section)


if __name__ == "__main__":
    main()
