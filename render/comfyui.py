"""The ComfyUI render backend: a workflow template, patched per attempt, run on a server pool.

``ComfyBackend.render`` implements :class:`render.backends.RenderBackend`:

* the template (``TOWER_COMFY_WORKFLOW``, API or UI format; default the built-in model-free
  ``comfy/templates/modelfree.json``) gets the attempt's prompt, negative prompt, seed, steps,
  cfg, width, height and ``shot.frame_count`` in the slots it has (:mod:`comfy.workflow`);
* a character reference image (``TOWER_COMFY_REFERENCES_DIR/<character>.png|jpg|webp``) is
  uploaded to the chosen server when the template has a ``LoadImage`` slot;
* outputs land in the media store under ``attempt_dir(...)``, named by us: still images become
  ``frame_NNNN.png`` (PNG bytes kept as the server wrote them, other formats re-encoded);
  animated images and videos are kept as ``clip_KK.<ext>`` and every frame they hold is
  extracted to ``frame_NNNN.png``. Frames are numbered across outputs in output-node order;
* failures that no retry can fix (validation, a node that raises, a model no server has, out of
  memory twice, a template we cannot use, a job slower than its deadline) become
  :class:`RenderError`; everything else (servers down or full, lost jobs) is raised as is, for
  the agent to retry (servers down or full are outages, waited out without limit).

``workflow`` is ``comfyui-<template name>-<sha256 prefix of the template file>``, so editing a
template changes the learning context, and it can be computed without a server.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from PIL import Image

from comfy.client import ComfyClient
from comfy.errors import ComfyError, JobTimeout, WorkflowError
from comfy.jobs import JobResult
from comfy.media import animated_frames, encode_png, png_size, sniff, still_frame, video_frames
from comfy.outputs import fetch, output_files
from comfy.pool import ComfyPool, PoolConfig
from comfy.progress import ProgressEvent
from comfy.ui_format import is_ui_format, ui_to_api
from comfy.workflow import BUILTIN_TEMPLATE, WorkflowTemplate, read_template_file, workflow_name
from events.models import FrameRef, PromptRefined
from render.errors import RenderError
from render.media import attempt_dir

log = logging.getLogger(__name__)

BACKEND_NAME = "comfyui"
DEFAULT_URLS = "http://127.0.0.1:8188"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_IN_FLIGHT = 2
REFERENCE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")

RenderProgress = Callable[[PromptRefined, ProgressEvent], Awaitable[None] | None]


def comfy_workflow_name(settings: Any) -> str:
    """``workflow_name`` for ``render.backends``: from the template file alone, no server."""
    return workflow_name(getattr(settings, "comfy_workflow", None))



def motion_bucket(strength: float) -> int:
    """A ``motion_bucket_id`` (1-255, SVD's default 127) for a motion strength in [0, 1]."""
    return round(1 + min(1.0, max(0.0, strength)) * 254)

class ComfyBackend:
    name = BACKEND_NAME

    def __init__(
        self,
        pool: ComfyPool,
        template_path: Path | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        references_dir: Path | None = None,
        on_progress: RenderProgress | None = None,
    ) -> None:
        self.pool = pool
        self.template_path = Path(template_path) if template_path else BUILTIN_TEMPLATE
        self.workflow = workflow_name(self.template_path)
        self.timeout_s = timeout_s
        self.references_dir = references_dir
        self.on_progress = on_progress
        self._template: WorkflowTemplate | None = None
        self._started = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Any, on_progress: RenderProgress | None = None) -> ComfyBackend:
        """Build from Tower settings (``comfy_urls``, ``comfy_workflow``, ``comfy_timeout_s``,
        ``comfy_max_in_flight``, ``comfy_references_dir``; documented defaults when absent)."""
        pool = ComfyPool.from_urls(
            getattr(settings, "comfy_urls", DEFAULT_URLS),
            config=PoolConfig(max_in_flight=getattr(settings, "comfy_max_in_flight", DEFAULT_MAX_IN_FLIGHT)),
        )
        return cls(
            pool,
            getattr(settings, "comfy_workflow", None),
            timeout_s=getattr(settings, "comfy_timeout_s", DEFAULT_TIMEOUT_S),
            references_dir=getattr(settings, "comfy_references_dir", None),
            on_progress=on_progress,
        )

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def template(self) -> WorkflowTemplate:
        """The loaded template; a UI-format file is converted with the first server's /object_info."""
        async with self._lock:
            if not self._started:
                await self.pool.start()
                self._started = True
            if self._template is None:
                self._template = await self._load_template()
            return self._template

    async def _load_template(self) -> WorkflowTemplate:
        name, data, sha = read_template_file(self.template_path)
        info = None
        if is_ui_format(data):
            info = await self._object_info()
            data = ui_to_api(data, info)
        # With /object_info at hand, sampler names and steps/cfg outside a node's range are checked by it.
        template = WorkflowTemplate.from_graph(name, data, sha, object_info=info)
        # Without these the frames would not match the shot the scorer expects.
        template.require("width", "height", "frame_count")
        return template

    async def _object_info(self) -> dict[str, Any]:
        last: Exception | None = None
        for server in self.pool.servers:
            try:
                return await server.client.object_info()
            except ComfyError as exc:
                last = exc
        raise WorkflowError(f"no server answered /object_info to convert the UI workflow: {last}")

    async def render(self, event: PromptRefined, media_root: Path) -> list[FrameRef]:
        try:
            template = await self.template()
            spec = event.prompt
            graph = template.patch(
                {
                    "prompt": spec.prompt,
                    "negative_prompt": spec.negative_prompt,
                    "seed": spec.seed,
                    "steps": spec.steps,
                    "cfg": spec.cfg,
                    "sampler": spec.sampler,  # mapped to ComfyUI's name; kept where not a valid choice
                    "width": spec.width,
                    "height": spec.height,
                    "frame_count": event.shot.frame_count,
                    "motion_bucket": motion_bucket(spec.motion_strength),
                }
            )
            reference = self._reference_for(event) if template.slots.get("reference_image") else None
            folder = attempt_dir(event.scene_id, event.shot.shot_number, event.attempt)

            async def prepare(client: ComfyClient, workflow: dict[str, Any]) -> dict[str, Any]:
                if reference is None:
                    return workflow
                name = await upload_reference(client, reference)
                for target in template.slots["reference_image"]:
                    workflow[target.node_id]["inputs"][target.input] = name
                return workflow

            async def finish(client: ComfyClient, result: JobResult) -> list[FrameRef]:
                files = output_files(result.history)
                blobs = await fetch(client, files)
                return await asyncio.to_thread(store_outputs, media_root, folder, blobs)

            return await self.pool.run(
                graph,
                prepare=prepare,
                finish=finish,
                deadline_s=self.timeout_s,
                on_progress=self._progress_for(event),
            )
        except ComfyError as exc:
            if exc.final or isinstance(exc, JobTimeout):
                raise RenderError(f"comfyui: {exc}") from exc
            raise

    def _reference_for(self, event: PromptRefined) -> Path | None:
        if self.references_dir is None:
            return None
        for character in event.shot.characters:
            stem = re.sub(r"[^A-Za-z0-9._-]", "_", character)
            for ext in REFERENCE_EXTENSIONS:
                path = self.references_dir / f"{stem}{ext}"
                if path.is_file():
                    return path
        return None

    def _progress_for(self, event: PromptRefined) -> Callable[[ProgressEvent], Awaitable[None]] | None:
        callback = self.on_progress
        if callback is None:
            return None

        async def relay(progress: ProgressEvent) -> None:
            result = callback(event, progress)
            if inspect.isawaitable(result):
                await result

        return relay


async def upload_reference(client: ComfyClient, path: Path) -> str:
    """Upload a reference image under a content-addressed name; returns the LoadImage value."""
    data = await asyncio.to_thread(path.read_bytes)
    media = sniff(data)
    if media is None or media.kind != "still":
        raise WorkflowError(f"reference {path.name} is not a still image")
    name = f"ref-{hashlib.sha256(data).hexdigest()[:16]}{media.ext}"
    return await client.upload_image(data, name)


def store_outputs(root: Path, relative_dir: Path, blobs: list[bytes]) -> list[FrameRef]:
    """Write fetched outputs into the media store (names chosen here) and return the frames.

    Raises :class:`RenderError` when no output holds a picture or a video.
    """
    folder = root / relative_dir
    folder.mkdir(parents=True, exist_ok=True)
    # A retry of the same attempt may produce fewer files: clear what an earlier try left.
    for stale in list(folder.glob("frame_*.png")) + list(folder.glob("clip_*")):
        stale.unlink()
    refs: list[FrameRef] = []
    clips = 0
    skipped = 0

    def add_frame(data: bytes, width: int, height: int) -> None:
        name = f"frame_{len(refs):04d}.png"
        _write_atomic(folder / name, data)
        refs.append(
            FrameRef(
                index=len(refs),
                uri=(relative_dir / name).as_posix(),
                width=width,
                height=height,
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )

    for data in blobs:
        media = sniff(data)
        if media is None:
            skipped += 1
            continue
        if media.kind == "still":
            try:
                if media.ext == ".png":
                    add_frame(data, *png_size(data))
                else:
                    frame = still_frame(data)
                    add_frame(encode_png(frame), frame.shape[1], frame.shape[0])
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                # The same bytes will fail the same way: final, not a transient error to retry.
                raise RenderError(f"comfyui: cannot decode {media.ext} output: {exc}") from exc
            continue
        clip = folder / f"clip_{clips:02d}{media.ext}"
        clips += 1
        _write_atomic(clip, data)
        try:
            frames = animated_frames(data) if media.kind == "animated" else video_frames(clip)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise RenderError(f"comfyui: cannot decode {media.kind} output {clip.name}: {exc}") from exc
        for frame in frames:
            add_frame(encode_png(frame), frame.shape[1], frame.shape[0])
    if skipped:
        log.info("comfy: %d output file(s) were neither pictures nor videos; not stored", skipped)
    if not refs:
        raise RenderError("comfyui: the workflow produced no image or video output")
    return refs


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)
