"""An assembled scene's files: the video (with HTTP Range requests, so a browser can seek), the
storyboard and the timeline; ``404`` with a problem document until the editor has cut the scene."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from api.problems import Problem
from api.routes.director import backends_of
from api.routes.media import media_file
from api.routes.reads import Id
from api.security import require_read
from store import queries

router = APIRouter(prefix="/api/director", tags=["assembly"], dependencies=[Depends(require_read)])
Part = Literal["video", "storyboard", "timeline"]
NAMES = {"video": "scene.mp4", "storyboard": "storyboard.png", "timeline": "timeline.otio"}
NOT_YET = {404: {"description": "Unknown scene, or not assembled yet (every shot final, then the editor cuts it)"}}


async def _file(request: Request, scene_id: str, part: Part) -> FileResponse:
    assembly = await backends_of(request).query(lambda pool: queries.scene_assembly(pool, scene_id))
    if assembly is None:
        raise Problem(404, f"scene {scene_id!r} has no {part} yet: it is assembled once every shot is final "
                           "(see GET /api/director/scenes/{scene_id})")
    file = assembly[part]
    found = media_file(request.app.state.settings.media_dir, file["uri"])
    if found is None:
        raise Problem(404, f"the {part} of scene {scene_id!r} ({file['uri']}) is missing from the media store "
                           f"({request.app.state.settings.media_dir})")
    return FileResponse(found, media_type=file["media_type"], filename=f"{scene_id}-{NAMES[part]}",
                        content_disposition_type="inline",
                        headers={"ETag": f'"{file["sha256"]}"', "Cache-Control": "no-cache"})


@router.get("/scenes/{scene_id}/video", response_class=FileResponse, responses=NOT_YET,
            summary="The assembled scene as H.264 MP4 (Range requests supported)")
async def video(scene_id: Id, request: Request) -> FileResponse:
    return await _file(request, scene_id, "video")


@router.get("/scenes/{scene_id}/storyboard", response_class=FileResponse, responses=NOT_YET,
            summary="The scene's storyboard: one keyframe per shot with its plan and score (PNG)")
async def storyboard(scene_id: Id, request: Request) -> FileResponse:
    return await _file(request, scene_id, "storyboard")


@router.get("/scenes/{scene_id}/timeline", response_class=FileResponse, responses=NOT_YET,
            summary="The scene's OpenTimelineIO timeline (JSON): one clip per shot over the video")
async def timeline(scene_id: Id, request: Request) -> FileResponse:
    return await _file(request, scene_id, "timeline")
