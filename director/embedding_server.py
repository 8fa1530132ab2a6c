"""A server embedder: any OpenAI-compatible ``POST /v1/embeddings`` (llama.cpp's server with
``--embedding``, llama-cpp-python's, Ollama, vLLM ...), for a memory that finds paraphrases by
meaning rather than by shared words.

Its version is a fingerprint of what the server answers for a fixed probe text, taken by
:meth:`ServerEmbedder.open`: a different model behind the same name gives different vectors, and
so a different memory (vectors of two embedders are never compared). The client is the caller's
(an ``httpx.AsyncClient``), as for the LLM planner.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import httpx
import numpy as np

PROBE = "Tower embedder fingerprint: a lone swordsman at dawn on a windy cliff."
BATCH = 32  # texts per request: what llama.cpp's default batch of 2048 tokens takes for short plans


class EmbedderUnavailable(RuntimeError):
    """The embedding server could not be used; the message says which server and why."""


@dataclass
class ServerEmbedder:
    """Embeds through ``{url}/embeddings``; ``version`` is unknown until :meth:`open`."""

    url: str  # the API base, e.g. http://127.0.0.1:8080/v1
    model: str
    client: httpx.AsyncClient
    api_key: str | None = None
    version: str = field(default="", init=False)

    @property
    def name(self) -> str:
        return f"server:{self.model}"

    async def open(self) -> ServerEmbedder:
        """Fingerprint the server's model (its answer for :data:`PROBE`, rounded so float noise in
        the last digits does not change it). Raises :class:`EmbedderUnavailable`."""
        [probe] = await self.embed([PROBE])
        self.version = hashlib.sha256(np.round(probe, 3).astype(np.float32).tobytes()).hexdigest()[:12]
        return self

    async def embed(self, texts: list[str]) -> np.ndarray:
        rows = [await self._batch(texts[i:i + BATCH]) for i in range(0, len(texts), BATCH)]
        return np.vstack(rows) if rows else np.zeros((0, 0), np.float32)

    async def _batch(self, texts: list[str]) -> np.ndarray:
        endpoint = f"{self.url.rstrip('/')}/embeddings"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            response = await self.client.post(endpoint, json={"model": self.model, "input": texts}, headers=headers)
            response.raise_for_status()
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = np.asarray([item["embedding"] for item in data], np.float32)
        except httpx.HTTPStatusError as exc:
            raise EmbedderUnavailable(f"{endpoint} answered {exc.response.status_code}: "
                                      f"{exc.response.text[:300]}") from exc
        except httpx.HTTPError as exc:
            raise EmbedderUnavailable(f"{endpoint} could not be reached ({type(exc).__name__}: {exc}); is the "
                                      "embedding server running, and TOWER_EMBEDDINGS_URL its API base?") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbedderUnavailable(f"{endpoint} did not answer in the OpenAI embeddings shape: {exc!r}") from exc
        if vectors.ndim != 2 or len(vectors) != len(texts) or not np.isfinite(vectors).all():
            raise EmbedderUnavailable(f"{endpoint} gave {vectors.shape} for {len(texts)} texts (or non-finite values)")
        # Cosine similarity is a dot product of unit rows; not every server normalises.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
