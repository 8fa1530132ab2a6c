"""Render backends behind one interface, chosen by ``TOWER_RENDER_BACKEND``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from events.models import FrameRef, FrameRendered, PromptRefined, RenderProgress
from foundation.settings import Settings
from render import procedural, simulated
from render.errors import RenderError
from render.media import attempt_dir, write_frames

ProgressSink = Callable[[RenderProgress], Awaitable[None]]
"""Receives progress of the attempt being rendered; must not raise."""


class RenderBackend(Protocol):
    name: str
    workflow: str
    """The workflow/model version: part of every learned pattern's context."""

    async def render(self, event: PromptRefined, media_root: Path) -> list[FrameRef]:
        """Render one attempt into the media store; :class:`RenderError` for a final failure.

        Any other exception is transient: the agent retries it, then dead-letters the input.
        """
        ...


def progress_of(event: PromptRefined, backend: str, kind: str, **fields: Any) -> RenderProgress:
    return RenderProgress(
        scene_id=event.scene_id, session_id=event.session_id, shot_number=event.shot.shot_number,
        attempt=event.attempt, backend=backend, kind=kind, **fields,
    )


class ProceduralBackend:
    """The built-in deterministic CPU renderer (:mod:`render.procedural`); progress per frame.

    With ``simulated_model`` set it is the ``simulated`` backend: the same frames, but each
    modifier's response per context comes from :mod:`render.simulated`'s seeded table."""

    name = procedural.BACKEND_NAME
    workflow = procedural.WORKFLOW

    def __init__(self, on_progress: ProgressSink | None = None, simulated_model: int | None = None) -> None:
        self.on_progress = on_progress
        self.simulated_model = simulated_model
        if simulated_model is not None:
            self.name, self.workflow = "simulated", simulated.workflow(simulated_model)

    async def _report(self, event: PromptRefined, kind: str, **fields: Any) -> None:
        if self.on_progress is not None:
            await self.on_progress(progress_of(event, self.name, kind, **fields))

    async def render(self, event: PromptRefined, media_root: Path) -> list[FrameRef]:
        total = event.shot.frame_count
        await self._report(event, "started", fraction=0.0, step=0, steps=total)
        response = (None if self.simulated_model is None
                    else simulated.response(event.prompt.context, event.prompt.modifier, self.simulated_model))
        frames_iter = procedural.iter_frames(event, response)
        frames = []
        try:
            while (frame := await asyncio.to_thread(next, frames_iter, None)) is not None:
                frames.append(frame)
                await self._report(event, "progress", fraction=len(frames) / total, step=len(frames), steps=total)
        except ValueError as exc:
            raise RenderError(str(exc)) from exc
        folder = attempt_dir(event.scene_id, event.shot.shot_number, event.attempt)
        refs = await asyncio.to_thread(write_frames, media_root, folder, frames)
        await self._report(event, "finished", fraction=1.0, step=total, steps=total)
        return refs


class SleepBackend:
    """A fake render backend for benchmarks (named as such): it waits ``seconds``, as a remote
    render server would, and writes tiny blank frames. It measures how many renders the pipeline
    keeps in flight, with no CPU work to share the cores with."""

    name = "sleep"
    workflow = "sleep-fake-v1"

    def __init__(self, seconds: float, on_progress: ProgressSink | None = None) -> None:
        self.seconds = seconds
        self.on_progress = on_progress

    async def render(self, event: PromptRefined, media_root: Path) -> list[FrameRef]:
        if self.on_progress is not None:
            await self.on_progress(progress_of(event, self.name, "started", fraction=0.0))
        await asyncio.sleep(self.seconds)
        blank = [np.zeros((32, 32, 3), dtype=np.uint8)] * min(event.shot.frame_count, 2)  # the scorer's minimum
        folder = attempt_dir(event.scene_id, event.shot.shot_number, event.attempt)
        return await asyncio.to_thread(write_frames, media_root, folder, blank)


def render_in_flight(settings: Settings) -> int:
    """How many renders one renderer worker runs at once (``TOWER_RENDER_IN_FLIGHT``, or the backend's)."""
    if settings.render_in_flight is not None:
        return settings.render_in_flight
    if settings.render_backend == "comfyui":
        servers = [url for url in settings.comfy_urls.split(",") if url.strip()]
        return settings.comfy_max_in_flight * max(1, len(servers))
    return 4 if settings.render_backend == "sleep" else 1


def backend_for(settings: Settings, on_progress: ProgressSink | None = None) -> RenderBackend:
    if settings.render_backend == "procedural":
        return ProceduralBackend(on_progress)
    if settings.render_backend == "sleep":
        return SleepBackend(settings.sleep_render_s, on_progress)
    if settings.render_backend == "simulated":
        return ProceduralBackend(on_progress, simulated_model=settings.simulated_model)
    if settings.render_backend == "comfyui":
        # Imported here: only a ComfyUI renderer pays for the ComfyUI client's imports.
        from render.comfyui import ComfyBackend

        async def relay(event: PromptRefined, progress: Any) -> None:
            if on_progress is not None:
                await on_progress(progress_of(
                    event, "comfyui", progress.kind, fraction=progress.fraction, step=progress.value,
                    steps=progress.max, queue_position=progress.queue_position, server=progress.server,
                ))

        return ComfyBackend.from_settings(settings, on_progress=relay)
    raise ValueError(f"unknown render backend {settings.render_backend!r}")


def workflow_name(settings: Settings, render_preset: str | None = None) -> str:
    """The workflow/model version part of a pattern's context, without building the backend.
    ``render_preset``: a scene's own preset, which only the comfyui backend renders with."""
    if settings.render_backend == "procedural":
        return procedural.WORKFLOW
    if settings.render_backend == "comfyui":
        from render.comfyui import comfy_workflow_name

        return comfy_workflow_name(settings, render_preset)
    if settings.render_backend == "sleep":
        return SleepBackend.workflow
    if settings.render_backend == "simulated":
        return simulated.workflow(settings.simulated_model)
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
