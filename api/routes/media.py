"""Frames from the media store, and nothing outside it: ``..``, absolute paths, encoded traversal
and symlinks leading out are refused (404, without saying what exists)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from api.problems import Problem
from api.security import require_read

router = APIRouter(tags=["media"], dependencies=[Depends(require_read)])
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif", ".mp4": "video/mp4", ".webm": "video/webm", ".otio": "application/json"}


def media_file(root: Path, relative: str) -> Path | None:
    """The file ``relative`` names inside ``root``, or ``None`` if it is not a media file in there."""
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or "\\" in relative or "\x00" in relative \
            or any(part in {"..", "."} for part in path.parts) or path.suffix.lower() not in MEDIA_TYPES:
        return None
    base = root.resolve()
    candidate = (base / path).resolve()  # follows symlinks, so one leading out is caught below
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


@router.get("/media/{path:path}", response_class=FileResponse, responses={404: {"description": "Not in the media store"}},
            summary="A rendered frame from the media store")
async def media(path: str, request: Request) -> FileResponse:
    found = media_file(request.app.state.settings.media_dir, path)
    if found is None:
        raise Problem(404, f"no media file {path!r} in the media store")
    return FileResponse(found, media_type=MEDIA_TYPES[found.suffix.lower()],
                        headers={"Cache-Control": "public, max-age=3600"})
