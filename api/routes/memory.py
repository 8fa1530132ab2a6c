"""The memory, for people: past attempts like a text (``/memory/search``) or like a shot
(``/memory/similar``, by its plan or by how it looks). The API process keeps one embedder's rows and
their index in memory and reads only the rows added since its last read before each search."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from api.models import MemorySearchResponse
from api.problems import Problem
from api.routes.director import backends_of, settings_of
from api.routes.reads import Id
from api.security import require_read
from director.embedding_server import EmbedderUnavailable
from director.memory import Embedder, Hit, embedder_key
from events.models import MAX_SHOTS
from scoring.signature import VERSION as SIGNATURE_VERSION
from store.memory import Memories, configured_embedder, feedback_of, load

router = APIRouter(prefix="/api/director/memory", tags=["memory"], dependencies=[Depends(require_read)])
Limit = Annotated[int, Query(ge=1, le=100, description="Hits to return, best first.")]
_LOCK = "memory_lock"


async def current(request: Request) -> tuple[Embedder, Memories]:
    """The configured embedder and the process's copy of its memory, brought up to date."""
    state = request.app.state
    if getattr(state, _LOCK, None) is None:
        setattr(state, _LOCK, asyncio.Lock())
    async with getattr(state, _LOCK):
        if getattr(state, "memory_embedder", None) is None:
            try:
                state.memory_embedder = await configured_embedder(settings_of(request))
            except EmbedderUnavailable as exc:
                raise Problem(503, f"the memory's embedder is unavailable: {exc}") from exc
        key = embedder_key(state.memory_embedder)
        state.memory = await backends_of(request).query(lambda pool: load(pool, key, getattr(state, "memory", None)))
        return state.memory_embedder, state.memory


async def _hits(request: Request, memories: Memories, hits: list[Hit]) -> list[dict[str, Any]]:
    rows = [memories.rows[hit.index] for hit in hits]
    keys = [(row["scene_id"], row["shot_number"], row["attempt"]) for row in rows]
    said = await backends_of(request).query(lambda pool: feedback_of(pool, keys)) if keys else {}
    return [{**{k: row[k] for k in ("scene_id", "shot_number", "attempt", "composite", "passed", "status", "modifier",
                                    "text")},
             "similarity": round(hit.similarity, 6),
             "feedback": said.get(key),
             "frame_url": f"/media/{row['frame_uri']}" if row["frame_uri"] else None,
             "scene_url": f"/api/director/scenes/{row['scene_id']}"} for hit, row, key in zip(hits, rows, keys, strict=True)]


@router.get("/search", response_model=MemorySearchResponse, summary="Past attempts whose plan reads like the text")
async def search(request: Request, q: Annotated[str, Query(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")],
                 limit: Limit = 10) -> dict[str, Any]:
    embedder, memories = await current(request)
    try:
        [query] = await embedder.embed([q])
    except EmbedderUnavailable as exc:
        raise Problem(503, f"the memory's embedder is unavailable: {exc}") from exc
    return {"query": q, "embedder": embedder_key(embedder), "searched": len(memories.rows),
            "hits": await _hits(request, memories, memories.search(query, limit))}


@router.get("/similar/{scene_id}/{shot_number}", response_model=MemorySearchResponse,
            responses={404: {"description": "No remembered attempt of that shot"}},
            summary="Past attempts like a shot (its kept attempt), from other shots")
async def similar(request: Request, scene_id: Id,
                  shot_number: Annotated[int, Path(ge=1, le=MAX_SHOTS)], limit: Limit = 10,
                  by: Annotated[Literal["plan", "look"], Query(
                      description="`plan`: by what the shots were asked to be (their text embeddings); `look`: by "
                      "how their middle frames look (a weight-free image signature)")] = "plan") -> dict[str, Any]:
    embedder, memories = await current(request)
    mine = memories.shots.get((scene_id, shot_number), [])
    if not mine:
        raise Problem(404, f"nothing remembered of shot {shot_number} of scene {scene_id!r} (a shot is remembered "
                           "once an attempt of it is scored)")
    kept = max(mine, key=lambda i: (memories.rows[i]["passed"], memories.rows[i]["composite"],
                                    -memories.rows[i]["attempt"]))
    if by == "look":
        if not memories.looks[kept].any():
            raise Problem(404, f"shot {shot_number} of scene {scene_id!r} has no image signature (its kept attempt "
                               "has no frames, or was scored before signatures existed)")
        return {"query": memories.rows[kept]["text"], "embedder": f"tower-image-signature/{SIGNATURE_VERSION}",
                "searched": int(memories.looks.any(axis=1).sum()),
                "hits": await _hits(request, memories, memories.looks_like(kept, limit, mine))}
    return {"query": memories.rows[kept]["text"], "embedder": embedder_key(embedder), "searched": len(memories.rows),
            "hits": await _hits(request, memories, memories.search(memories.vectors[kept], limit, mine))}
