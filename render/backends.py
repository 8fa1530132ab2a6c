"""Render backends behind one interface, chosen by ``TOWER_RENDER_BACKEND``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol

from events.models import FrameRef, FrameRendered, PromptRefined
from render import procedural
from render.media import attempt_dir, write_frames
from tower.settings import Settings


class RenderError(Exception):
    """A render that this prompt can never produce (bad workflow, validation): not retried."""


class RenderBackend(Protocol):
    name: str
    workflow: str
    """The workflow/model version: part of every learned pattern's context."""

    async def render(self, event: PromptRefined, media_root: Path) -> list[FrameRef]:
        """Render one attempt into the media store; :class:`RenderError` for a final failure.

        Any other exception is transient: the agent retries it, then dead-letters the input.
        """
        ...


class ProceduralBackend:
    """The built-in deterministic CPU renderer (:mod:`render.procedural`)."""

    name = procedural.BACKEND_NAME
    workflow = procedural.WORKFLOW

    async def render(self, event: PromptRefined, media_root: Path) -> list[FrameRef]:
        try:
            frames = await asyncio.to_thread(procedural.render_shot, event)
        except ValueError as exc:
            raise RenderError(str(exc)) from exc
        folder = attempt_dir(event.scene_id, event.shot.shot_number, event.attempt)
        return await asyncio.to_thread(write_frames, media_root, folder, frames)


def backend_for(settings: Settings) -> RenderBackend:
    if settings.render_backend == "procedural":
        return ProceduralBackend()
    if settings.render_backend == "comfyui":
        # Imported here: render.comfyui imports RenderError from this module.
        from render.comfyui import ComfyBackend

        return ComfyBackend.from_settings(settings)
    raise ValueError(f"unknown render backend {settings.render_backend!r}")


def workflow_name(settings: Settings) -> str:
    """The workflow/model version part of a pattern's context, without building the backend."""
    if settings.render_backend == "procedural":
        return procedural.WORKFLOW
    if settings.render_backend == "comfyui":
        from render.comfyui import comfy_workflow_name

        return comfy_workflow_name(settings)
    raise ValueError(f"unknown render backend {settings.render_backend!r}")


async def render(backend: RenderBackend, event: PromptRefined, media_root: Path) -> FrameRendered:
    """Run ``backend`` for one attempt; a :class:`RenderError` becomes a failed event."""
    started = time.perf_counter()
    fields = event.model_dump()
    try:
        refs = await backend.render(event, media_root)
    except RenderError as exc:
        return FrameRendered(**fields, status="failed", reason=str(exc), backend=backend.name)
    return FrameRendered(
        **fields,
        status="ok",
        backend=backend.name,
        frames=refs,
        render_ms=round((time.perf_counter() - started) * 1000, 3),
    )
