"""The memory, for people: past attempts like a text (``/memory/search``) or like a shot
(``/memory/similar``). The API process keeps the vectors in memory and reads only the rows added
since its last read before each search; the search is an exact scan (:func:`director.memory.nearest`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request

from api.models import MemorySearchResponse
from api.problems import Problem
from api.routes.director import backends_of
from api.routes.reads import Id
from api.security import require_read
from director.memory import BUILT_IN, nearest
from events.models import MAX_SHOTS
from store.memory import Memories, embedder_key, load

router = APIRouter(prefix="/api/director/memory", tags=["memory"], dependencies=[Depends(require_read)])
Limit = Annotated[int, Query(ge=1, le=100, description="Hits to return, best first.")]
_LOCK = "memory_lock"


async def current(request: Request) -> Memories:
    """The process's copy of the memory, brought up to date (only new rows are read)."""
    state = request.app.state
    if getattr(state, _LOCK, None) is None:
        setattr(state, _LOCK, asyncio.Lock())
    async with getattr(state, _LOCK):
        state.memory = await backends_of(request).query(lambda pool: load(pool, BUILT_IN, getattr(state, "memory", None)))
        return state.memory


def _hits(memories: Memories, query: np.ndarray, limit: int, exclude: list[int]) -> list[dict[str, Any]]:
    hits = []
    for hit in nearest(memories.vectors, query, limit, exclude):
        row = memories.rows[hit.index]
        hits.append({**{k: row[k] for k in ("scene_id", "shot_number", "attempt", "composite", "passed", "status",
                                              "modifier", "text")},
                     "similarity": round(hit.similarity, 6),
                     "frame_url": f"/media/{row['frame_uri']}" if row["frame_uri"] else None,
                     "scene_url": f"/api/director/scenes/{row['scene_id']}"})
    return hits


@router.get("/search", response_model=MemorySearchResponse, summary="Past attempts whose plan reads like the text")
async def search(request: Request, q: Annotated[str, Query(min_length=1, max_length=2000, pattern=r"^[^\x00]+$")],
                 limit: Limit = 10) -> dict[str, Any]:
    memories = await current(request)
    [query] = BUILT_IN.embed([q])
    return {"query": q, "embedder": embedder_key(BUILT_IN), "searched": len(memories.rows),
            "hits": _hits(memories, query, limit, [])}


@router.get("/similar/{scene_id}/{shot_number}", response_model=MemorySearchResponse,
            responses={404: {"description": "No remembered attempt of that shot"}},
            summary="Past attempts like a shot (its kept attempt), from other shots")
async def similar(request: Request, scene_id: Id, shot_number: Annotated[int, Path(ge=1, le=MAX_SHOTS)],
                  limit: Limit = 10) -> dict[str, Any]:
    memories = await current(request)
    mine = [i for i, row in enumerate(memories.rows)
            if row["scene_id"] == scene_id and row["shot_number"] == shot_number]
    if not mine:
        raise Problem(404, f"nothing remembered of shot {shot_number} of scene {scene_id!r} (a shot is remembered "
                           "once an attempt of it is scored)")
    kept = max(mine, key=lambda i: (memories.rows[i]["passed"], memories.rows[i]["composite"],
                                    -memories.rows[i]["attempt"]))
    return {"query": memories.rows[kept]["text"], "embedder": embedder_key(BUILT_IN), "searched": len(memories.rows),
            "hits": _hits(memories, memories.vectors[kept], limit, mine)}
