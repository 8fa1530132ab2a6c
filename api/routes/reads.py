"""Reads from the PostgreSQL projections: sessions and their history, a scene in full, batches,
the pattern table with recommendations, and quality trends."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request

from api.models import (
    BatchProgress,
    PatternTableResponse,
    SceneDetail,
    SessionHistory,
    SessionList,
    TrendResponse,
)
from api.problems import Problem
from api.routes.director import backends_of, settings_of
from api.security import require_read
from director.learning import Posterior, advise, learning_parameters
from director.modifiers import MODIFIERS
from store import queries

router = APIRouter(prefix="/api/director", tags=["reads"], dependencies=[Depends(require_read)])
# No NUL: PostgreSQL text cannot hold one, and no id contains one.
Id = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00]+$")]
NOT_FOUND = {404: {"description": "Unknown id"}}
# A client that has just submitted a scene asks to wait rather than retry on 404s, which browsers
# log as console errors; the wait is bounded by TOWER_API_SCENE_WAIT_S, like the live stream's.
Wait = Annotated[float, Query(ge=0, le=60, description=(
    "Seconds to wait for a just-submitted scene to be projected before answering 404 "
    "(at most TOWER_API_SCENE_WAIT_S); the answer comes as soon as it is there."))]


@router.get("/sessions", response_model=SessionList, summary="Creative sessions, newest first")
async def list_sessions(request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> dict[str, Any]:
    total, rows = await backends_of(request).query(lambda pool: queries.sessions(pool, limit=limit, offset=offset))
    return {"total": total, "sessions": rows}


@router.get("/sessions/{session_id}", response_model=SessionHistory, responses=NOT_FOUND,
            summary="A session's history: its scenes with their state")
async def session_history(session_id: Id, request: Request, wait: Wait = 0) -> dict[str, Any]:
    return found(await projected(request, lambda pool: queries.session_history(pool, session_id), wait),
                 f"no session {session_id!r}")


@router.get("/scenes/{scene_id}", response_model=SceneDetail, responses=NOT_FOUND,
            summary="A scene: plan, attempts, scores, retry reasons, frames, accepted attempts, feedback")
async def scene(scene_id: Id, request: Request, wait: Wait = 0) -> dict[str, Any]:
    detail = found(await projected(request, lambda pool: queries.scene_detail(pool, scene_id), wait),
                   f"no scene {scene_id!r} (a scene appears once the learner has projected its request)")
    shots = detail["shots"]
    for shot in shots:
        shot["fps"] = (shot.get("spec") or {}).get("fps")
        for attempt in shot["attempts"]:
            attempt["frames"] = [
                {"index": f["frame_index"], "url": f"/media/{f['uri']}", "width": f["width"], "height": f["height"]}
                for f in attempt["frames"]
            ]
            if attempt["score_status"] is not None:
                attempt["score"] = {
                    "status": attempt["score_status"], "composite": attempt["composite"], "passed": attempt["passed"],
                    "final": attempt["final"], "metrics": attempt["metrics"] or {}, "reason": attempt["score_reason"],
                    "scorer_version": attempt["scorer_version"], "device": attempt["device"],
                }
    return {
        "scene": detail["scene"],
        "overall_mood": shots[0]["overall_mood"] if shots else None,
        "lighting_suggestions": shots[0]["lighting_suggestions"] if shots else None,
        "shots": shots,
        "feedback": detail["feedback"],
        "failures": detail["failures"],
        "assembly": _with_urls(scene_id, detail["assembly"]),
    }


def _with_urls(scene_id: str, assembly: dict[str, Any] | None) -> dict[str, Any] | None:
    """The assembly with each file's URL on this API (:mod:`api.routes.assembly`)."""
    if assembly is None:
        return None
    files = {part: {**assembly[part], "url": f"/api/director/scenes/{scene_id}/{part}"}
             for part in ("video", "storyboard", "timeline")}
    return {**assembly, **files}


@router.get("/batches/{batch_id}", response_model=BatchProgress, responses=NOT_FOUND,
            summary="A batch's progress: scenes queued, running, done and needing review")
async def batch(batch_id: Id, request: Request) -> dict[str, Any]:
    return found(await backends_of(request).query(lambda pool: queries.batch_progress(pool, batch_id)),
                 f"no batch {batch_id!r}")


@router.get("/patterns", response_model=PatternTableResponse,
            summary="The learned patterns (posterior mean, 95% lower bound, count) and advice per context")
async def patterns(request: Request) -> dict[str, Any]:
    rows = await backends_of(request).query(queries.pattern_rows)
    by_context: dict[str, dict[str, Posterior]] = {}
    table = []
    for r in rows:
        post = Posterior(r["alpha_micros"], r["beta_micros"], r["observations"], r["square_micros"])
        by_context.setdefault(r["context"], {})[r["modifier"]] = post
        table.append({"context": r["context"], "modifier": r["modifier"], "mean": round(post.mean, 6),
                      "lower_bound": round(post.lower_bound, 6), "observations": post.observations,
                      "alpha": post.alpha, "beta": post.beta, "sources": _json(r["sources"]), "updated_at": r["updated_at"]})
    advice = []
    known = {(context, modifier): post for context, row in by_context.items() for modifier, post in row.items()}
    for context in sorted(by_context):
        rec = advise(known, context, list(MODIFIERS), learning_parameters(settings_of(request)))
        advice.append({"context": context, "best": rec.best, "best_lower_bound": rec.best_lower_bound,
                       "probability_best": dict(rec.probability_best), "stop": list(rec.stop)})
    return {"patterns": table, "recommendations": advice}


@router.get("/trends", response_model=TrendResponse,
            summary="Quality per day: overall, per pattern, or per workflow and scorer version")
async def trends(request: Request, by: Literal["day", "pattern", "workflow"] = "day",
                 days: Annotated[int, Query(ge=1, le=3650)] = 30,
                 bucket: Literal["day", "hour"] = "day") -> dict[str, Any]:
    rows = await backends_of(request).query(
        lambda pool: queries.quality_trends(pool, by=by, days=days, bucket=bucket))
    return {"by": by, "bucket": bucket, "days": days, "rows": rows}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def projected(request: Request, read: Callable[[Any], Awaitable[Any]], wait_s: float) -> Any:
    """What ``read`` finds, waiting up to ``wait_s`` (at most TOWER_API_SCENE_WAIT_S) for it."""
    return await backends_of(request).query_until_found(read, min(wait_s, settings_of(request).api_scene_wait_s))


def found(value: Any, missing: str) -> Any:
    """``value``, or a 404 saying ``missing`` when there is none."""
    if value is None:
        raise Problem(404, missing)
    return value
