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
from comfy.presets import PRESETS, ModelFile, Preset, missing_files, preset
from comfy.progress import ProgressEvent
from comfy.ui_format import is_ui_format, ui_to_api
from comfy.workflow import BUILTIN_TEMPLATE, WorkflowTemplate, read_template_file, workflow_name
from events.models import FrameRef, PromptRefined
from render.camera import animate_keyframe
from render.errors import ModelFilesMissing, RenderError
from render.media import attempt_dir, write_frames

log = logging.getLogger(__name__)

BACKEND_NAME = "comfyui"
DEFAULT_URLS = "http://127.0.0.1:8188"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_IN_FLIGHT = 2
REFERENCE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# How much larger than the shot a keyframe preset draws its picture (each side).
KEYFRAME_OVERSCAN = 1.25
# How long a server's model folder listing is trusted: a file copied in is seen within this.
MODEL_LISTING_TTL_S = 30.0

RenderProgress = Callable[[PromptRefined, ProgressEvent], Awaitable[None] | None]


def comfy_workflow_name(settings: Any, render_preset: str | None = None) -> str:
    """``workflow_name`` for ``render.backends``: from the preset or the template file alone, no
    server. An unknown preset gets a name of its own here; rendering it fails, naming the choices."""
    if name := render_preset or getattr(settings, "render_preset", None):
        if name not in PRESETS:
            return f"comfyui-{name}-unknown"
        return preset(name).workflow(getattr(settings, "comfy_models", None))
    return workflow_name(getattr(settings, "comfy_workflow", None))



def overscan(size: int) -> int:
    """A keyframe's side for a shot's side: :data:`KEYFRAME_OVERSCAN` larger, a multiple of 8 (the
    latent's cell), so the camera moves over detail the model drew instead of magnifying it."""
    return -(-round(size * KEYFRAME_OVERSCAN) // 8) * 8


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
        render_preset: Preset | None = None,
        model_names: dict[str, str] | None = None,
    ) -> None:
        self.pool = pool
        self.preset = render_preset
        self.model_names = dict(model_names or {})
        self.template_path = Path(template_path) if template_path else BUILTIN_TEMPLATE
        self.workflow = (render_preset.workflow(self.model_names) if render_preset is not None
                         else workflow_name(self.template_path))
        self._listings: dict[str, tuple[float, dict[str, list[str]]]] = {}
        self.timeout_s = timeout_s
        self.references_dir = references_dir
        self.on_progress = on_progress
        self._templates: dict[str | None, WorkflowTemplate] = {}
        self._started = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Any, on_progress: RenderProgress | None = None) -> ComfyBackend:
        """Build from Tower settings (``comfy_urls``, ``render_preset`` or ``comfy_workflow``,
        ``comfy_models``, ``comfy_timeout_s``, ``comfy_max_in_flight``, ``comfy_references_dir``;
        documented defaults when absent). An unknown preset is a :class:`WorkflowError`."""
        name = getattr(settings, "render_preset", None)
        chosen = preset(name) if name else None
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
            render_preset=chosen,
            model_names=getattr(settings, "comfy_models", None),
        )

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def template(self, chosen: Preset | None = None) -> WorkflowTemplate:
        """The loaded template of a preset (``None``: the file's); a UI-format file is converted
        with the first server's /object_info."""
        async with self._lock:
            if not self._started:
                await self.pool.start()
                self._started = True
            key = chosen.name if chosen is not None else None
            if key not in self._templates:
                self._templates[key] = await self._load_template(chosen)
            return self._templates[key]

    def preset_of(self, event: PromptRefined) -> Preset | None:
        """The scene's own preset, else the renderer's (``TOWER_RENDER_PRESET``), else none."""
        return preset(event.render_preset) if event.render_preset else self.preset

    async def _load_template(self, chosen: Preset | None) -> WorkflowTemplate:
        if chosen is not None:
            graph = chosen.graph(self.model_names)
            template = WorkflowTemplate.from_graph(chosen.name, graph, object_info=None)
            template.require("prompt", "seed", "width", "height")
            if chosen.kind == "video":
                template.require("frame_count")
            return template
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
            chosen = self.preset_of(event)
            keyframe = chosen is not None and chosen.kind == "keyframe"
            template = await self.template(chosen)
            spec = event.prompt
            graph = template.patch(
                {
                    "prompt": spec.prompt,
                    "negative_prompt": spec.negative_prompt,
                    "seed": spec.seed,
                    "steps": spec.steps,
                    "cfg": spec.cfg,
                    "sampler": spec.sampler,  # mapped to ComfyUI's name; kept where not a valid choice
                    "width": overscan(spec.width) if keyframe else spec.width,
                    "height": overscan(spec.height) if keyframe else spec.height,
                    "frame_count": 1 if keyframe else event.shot.frame_count,
                    "motion_bucket": motion_bucket(spec.motion_strength),
                }
            )
            reference = self._reference_for(event) if template.slots.get("reference_image") else None
            if reference is None and chosen is not None and chosen.needs_reference:
                raise RenderError(
                    f"preset {chosen.name} needs a reference image of one of {', '.join(event.shot.characters) or '(no characters)'}: "
                    f"put <character>.png (or .jpg, .webp) in TOWER_COMFY_REFERENCES_DIR ({self.references_dir or 'unset'})"
                )
            if chosen is not None:
                await self._check_models(chosen)
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
                if keyframe:
                    return await asyncio.to_thread(store_animated_keyframe, media_root, folder, blobs, event)
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

    async def _check_models(self, chosen: Preset) -> None:
        """Refuse, before anything is queued, a preset whose files no server of the pool has."""
        files = chosen.files(self.model_names)
        missing: dict[str, list[ModelFile]] = {}
        unreachable: list[str] = []
        for server in self.pool.servers:
            try:
                listings = await self._listing(server.client, {f.folder for f in files})
            except ComfyError as exc:
                unreachable.append(f"{server.url} ({exc})")
                continue
            lacking = missing_files(files, listings)
            if not lacking:
                return
            missing[server.url] = lacking
        if unreachable:
            return  # a server that did not answer may have the files: the pool finds out, or waits
        raise ModelFilesMissing(chosen.name, missing)

    async def _listing(self, client: ComfyClient, folders: set[str]) -> dict[str, list[str]]:
        now = asyncio.get_running_loop().time()
        cached = self._listings.get(client.url)
        if cached is not None and now - cached[0] < MODEL_LISTING_TTL_S and folders <= cached[1].keys():
            return cached[1]
        listing = {folder: await client.models(folder) for folder in sorted(folders)}
        self._listings[client.url] = (now, listing)
        return listing

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


def store_animated_keyframe(root: Path, relative_dir: Path, blobs: list[bytes], event: PromptRefined) -> list[FrameRef]:
    """The first picture of a keyframe preset's outputs, kept as ``keyframe.png`` and moved by the
    shot's planned camera (:mod:`render.camera`) into ``shot.frame_count`` frames at the shot's fps."""
    keyframe = None
    for data in blobs:
        media = sniff(data)
        if media is not None and media.kind == "still":
            try:
                keyframe = still_frame(data)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise RenderError(f"comfyui: cannot decode the keyframe ({media.ext}): {exc}") from exc
            break
    if keyframe is None:
        raise RenderError("comfyui: the keyframe preset produced no picture")
    folder = root / relative_dir
    folder.mkdir(parents=True, exist_ok=True)
    for stale in list(folder.glob("frame_*.png")) + list(folder.glob("clip_*")):
        stale.unlink()
    _write_atomic(folder / "keyframe.png", encode_png(keyframe))
    spec = event.prompt
    frames = animate_keyframe(keyframe, movement=event.shot.camera_movement, frame_count=event.shot.frame_count,
                              fps=event.shot.fps, motion=spec.camera_motion, seed=spec.seed,
                              width=spec.width, height=spec.height)
    return write_frames(root, relative_dir, frames)


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
