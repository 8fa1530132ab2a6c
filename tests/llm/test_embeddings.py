"""The server embedder against a real llama-cpp-python server with ``--embedding``, serving a model
the test writes (tests/llm/model.py: a bag of characters, so likeness is predictable), and the
memory through the real stack with it: the learner embeds what it remembers, the API and
``tower memory`` search those vectors, ``tower memory reembed`` fills in what is missing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg
import httpx
import numpy as np
import pytest

from agents.registry import STAGE_NAMES
from director.embedding_server import BATCH, EmbedderUnavailable, ServerEmbedder
from director.memory import embedder_key
from eventlog.follow import follow_scene, produce, scene_envelope
from tests.integration.test_pipeline import kai_request
from tower.testing import free_port


async def test_the_server_embedder_gives_unit_rows_in_order_and_a_fingerprint(embedding_server):
    async with httpx.AsyncClient(timeout=30) as client:
        embedder = await ServerEmbedder(embedding_server, "tower-test", client).open()
        again = await ServerEmbedder(embedding_server, "tower-test", client).open()
        assert len(embedder.version) == 12 and embedder.version == again.version, "same model, same fingerprint"
        assert embedder_key(embedder) == f"server:tower-test/{embedder.version}"

        texts = [f"shot {i} of the duel" for i in range(BATCH + 5)]  # more than one request
        vectors = await embedder.embed(texts)
        assert vectors.shape[0] == len(texts) and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        [seventh] = await embedder.embed([texts[BATCH + 2]])
        assert np.allclose(seventh, vectors[BATCH + 2], atol=1e-5), "rows come back in the order of the texts"

        # A bag of characters: texts of the same letters are nearer than texts of others.
        dawn, dawns, storm = await embedder.embed(["a duel at dawn", "duels at dawn", "xyz qqq"])
        assert dawn @ dawns > dawn @ storm + 0.1


async def test_an_unusable_embedding_server_is_named_with_what_to_do():
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(EmbedderUnavailable, match=r"127\.0\.0\.1:\d+/v1/embeddings could not be reached.*TOWER_EMBEDDINGS_URL"):
            await ServerEmbedder(f"http://127.0.0.1:{free_port()}/v1", "tower-test", client).open()


@pytest.fixture
def server_memory(tower_env: dict[str, str], embedding_server: str) -> dict[str, str]:
    """This test's settings with the server embedder (before the workers and the API start)."""
    tower_env.update({"TOWER_MEMORY_EMBEDDER": "server", "TOWER_EMBEDDINGS_URL": embedding_server,
                      "TOWER_EMBEDDINGS_MODEL": "tower-test"})
    return tower_env


async def test_the_memory_is_embedded_by_the_server_searched_and_filled_in(server_memory, settings, workers,
                                                                          api_server):
    workers.start(*STAGE_NAMES)
    await produce(settings, [scene_envelope(kai_request("scene-emb", max_attempts=1))])
    progress = await workers.watch(follow_scene(settings, "scene-emb", timeout_s=240))
    server_rows = "SELECT count(*) FROM memory WHERE embedder LIKE 'server:tower-test/%'"
    conn = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(150):  # the learner embeds in the background, after it remembers
            if await conn.fetchval(server_rows) >= len(progress.finals):
                break
            await asyncio.sleep(0.2)
        assert await conn.fetchval(server_rows) == len(progress.finals), "the learner embedded every attempt"
        key = await conn.fetchval("SELECT DISTINCT embedder FROM memory WHERE embedder LIKE 'server:%'")
        width = await conn.fetchval("SELECT array_length(vector, 1) FROM memory WHERE embedder = $1 LIMIT 1", key)
        assert width == 64, "the server's vectors, not the built-in 512"
    finally:
        await conn.close()

    async with api_server.client() as client:
        found = (await client.get("/api/director/memory/search", params={"q": "Kai fights the dragon"})).json()
        assert found["embedder"] == key and found["searched"] == len(progress.finals) and found["hits"]
        assert found["hits"][0]["scene_id"] == "scene-emb"

    # The server's vectors lost (a model change, the server down): `tower memory reembed` fills them in.
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("DELETE FROM memory WHERE embedder = $1 AND attempt = 1", key)
        missing = len(progress.finals) - await conn.fetchval(server_rows)
    finally:
        await conn.close()
    assert missing > 0
    filled = subprocess.run([sys.executable, "-m", "tower", "memory", "reembed", "--batch", "2"], env=workers.env,
                            capture_output=True, text=True, timeout=120)
    assert filled.returncode == 0, filled.stderr
    assert f"{missing} remembered attempt(s) embedded with {key}" in filled.stdout
    assert f"{missing}/{missing} embedded" in filled.stderr, "progress is shown"
    searched = subprocess.run([sys.executable, "-m", "tower", "memory", "search", "the dragon", "--json"],
                              env=workers.env, capture_output=True, text=True, timeout=60)
    assert searched.returncode == 0, searched.stderr
    result = json.loads(searched.stdout)
    assert result["embedder"] == key and result["searched"] == len(progress.finals)
