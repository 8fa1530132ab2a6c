"""The editor's files in the media store: the scene video, the storyboard and the timeline.

Written from an :class:`director.editing.EditPlan` into ``<scene>/assembly/<digest>/``: the
folder is named by the plan's inputs digest, so the same inputs always give the same folder and
the same bytes (x264 and the MP4 muxer are deterministic for the same frames and settings), and a
re-cut scene gets a folder of its own. Each file is written under a temporary name and renamed
into place, so a half-written file is never served.

* ``scene.mp4``: H.264 (libx264 through PyAV), yuv420p, even dimensions, ``+faststart`` (the
  index first, so a browser can play and seek before the whole file has arrived).
* ``storyboard.png``: a contact sheet, one keyframe per shot with its number, camera, movement,
  duration, action and score.
* ``timeline.otio``: an OpenTimelineIO timeline, one clip per shot over ``scene.mp4``, with the
  scene, shot, attempt, modifier and scores as clip metadata, and a marker on each cut that
  breaks continuity.
"""

from __future__ import annotations

import hashlib
import io
import os
import textwrap
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from director.continuity import Signature, character_measures, cut_measures, signature
from director.editing import ASSEMBLY_VERSION, Cut, EditPlan, retime
from events.models import (
    AssembledShot,
    CharacterContinuity,
    CutContinuity,
    FrameRef,
    MediaFile,
    SceneAssembled,
)
from render.media import attempt_dir, read_verified

VIDEO_NAME, STORYBOARD_NAME, TIMELINE_NAME = "scene.mp4", "storyboard.png", "timeline.otio"
SLATE_GREY = 24
STORYBOARD_COLUMNS = 3
STORYBOARD_CELL_WIDTH = 320


@dataclass(frozen=True)
class EditOptions:
    crossfade_frames: int = 0  # frames of dissolve at each cut; 0: hard cuts
    continuity_threshold: float = 20.0  # colour distance (Delta E) over which a cut or a character is discontinuous
    qp: int = 18  # x264's constant quantiser (lower is better and larger)

    def as_digest_input(self) -> dict[str, object]:
        return {"crossfade_frames": self.crossfade_frames, "continuity_threshold": self.continuity_threshold,
                "qp": self.qp}


def assembly_dir(scene_id: str, inputs_sha256: str) -> Path:
    """The folder of one assembly, relative to the media store root."""
    return attempt_dir(scene_id, 1, 1).parent.parent / "assembly" / inputs_sha256[:16]


def assemble(root: Path, plan: EditPlan, options: EditOptions) -> SceneAssembled:
    """Write the scene's files for ``plan`` (unless they are there already, whole) and describe them."""
    folder = assembly_dir(plan.scene_id, plan.inputs_sha256)
    frames = {cut.shot.shot_number: _shot_frames(root, cut) for cut in plan.cuts}
    width, height = _scene_size(frames.values())
    timeline_frames = [_fit(frame, width, height) for cut in plan.cuts
                       for frame in _retimed(frames[cut.shot.shot_number], cut, width, height)]
    timeline_frames = _dissolve(timeline_frames, plan.cuts, options.crossfade_frames)
    keyframes = {number: _fit(shot[len(shot) // 2], width, height) if shot else _slate(width, height, number)
                 for number, shot in frames.items()}

    signatures = {n: signature(frame) for n, frame in keyframes.items()}
    sides = [(cut.shot.shot_number, signature(timeline_frames[cut.start_frame + cut.frame_count - 1]),
              signature(timeline_frames[cut.start_frame + cut.frame_count]))
             for cut in plan.cuts[:-1]]
    cuts = cut_measures(sides, options.continuity_threshold)
    appearances: dict[str, list[tuple[int, Signature]]] = {}
    for cut in plan.cuts:
        if cut.take is not None:
            for character in dict.fromkeys(cut.shot.characters):
                appearances.setdefault(character, []).append((cut.shot.shot_number, signatures[cut.shot.shot_number]))
    characters = character_measures(appearances, options.continuity_threshold)
    cut_continuity = [CutContinuity(after_shot=c.after_shot, colour_distance=c.colour_distance,
                                    hash_distance=c.hash_distance, discontinuity=c.discontinuity,
                                    reason=(f"the palette changes across the cut (colour distance {c.colour_distance:.2f}"
                                            f" > {options.continuity_threshold:.2f})") if c.discontinuity else None)
                      for c in cuts]
    broken = {c.after_shot for c in cut_continuity if c.discontinuity}

    video = _write(root, folder / VIDEO_NAME, "video/mp4",
                   lambda path: _encode(path, timeline_frames, plan.fps, options.qp))
    storyboard = _write(root, folder / STORYBOARD_NAME, "image/png",
                        lambda path: _storyboard(keyframes, plan).save(path, format="PNG", compress_level=1))
    timeline = _write(root, folder / TIMELINE_NAME, "application/json",
                      lambda path: path.write_text(_timeline(plan, broken)))
    return SceneAssembled(
        scene_id=plan.scene_id, session_id=plan.session_id, assembly_version=ASSEMBLY_VERSION,
        inputs_sha256=plan.inputs_sha256, fps=plan.fps, width=width, height=height,
        frame_count=plan.frame_count, duration_s=plan.duration_s,
        video=video, storyboard=storyboard, timeline=timeline,
        shots=[_assembled_shot(cut, len(frames[cut.shot.shot_number]), plan.fps) for cut in plan.cuts],
        cuts=cut_continuity,
        characters=[CharacterContinuity(character=c.character, shots=list(c.shots),
                                        max_colour_distance=c.max_colour_distance, discontinuity=c.discontinuity)
                    for c in characters],
        discontinuities=len(broken) + sum(c.discontinuity for c in characters),
    )


def _shot_frames(root: Path, cut: Cut) -> list[np.ndarray]:
    """The take's frames, each checked against its sha256, decoded on every core (Pillow decodes
    without the GIL)."""
    if cut.take is None:
        return []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda ref: _frame(root, ref), cut.take.frames))


def _frame(root: Path, ref: FrameRef) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(read_verified(root, ref))).convert("RGB"))


def _scene_size(shots: object) -> tuple[int, int]:
    """The most common frame size of the shots, made even (H.264 in yuv420p needs it)."""
    sizes = Counter((frame.shape[1], frame.shape[0]) for shot in shots for frame in shot[:1])  # type: ignore[attr-defined]
    width, height = sizes.most_common(1)[0][0] if sizes else (256, 256)
    return max(2, width - width % 2), max(2, height - height % 2)


def _retimed(shot: list[np.ndarray], cut: Cut, width: int, height: int) -> list[np.ndarray]:
    if not shot:
        slate = _slate(width, height, cut.shot.shot_number)
        return [slate] * cut.frame_count
    return [shot[i] for i in retime(len(shot), cut.frame_count)]


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """``frame`` scaled to fit ``width`` x ``height``, centred on black (its aspect kept)."""
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    scale = min(width / frame.shape[1], height / frame.shape[0])
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    scaled = Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height))
    canvas.paste(scaled, ((width - size[0]) // 2, (height - size[1]) // 2))
    return np.asarray(canvas)


def _dissolve(frames: list[np.ndarray], cuts: tuple[Cut, ...], length: int) -> list[np.ndarray]:
    """The last ``length`` frames before each cut blended towards the next shot's first frame (the
    frame count, and so every shot's start, stays as planned)."""
    if length <= 0:
        return frames
    frames = list(frames)
    for cut in cuts[:-1]:
        end = cut.start_frame + cut.frame_count
        span = min(length, cut.frame_count - 1)
        incoming = frames[end].astype(np.float32)
        for k in range(span):
            alpha = (k + 1) / (span + 1)
            index = end - span + k
            frames[index] = ((1 - alpha) * frames[index].astype(np.float32) + alpha * incoming).round().astype(np.uint8)
    return frames


def _slate(width: int, height: int, shot_number: int) -> np.ndarray:
    image = Image.new("RGB", (width, height), (SLATE_GREY,) * 3)
    ImageDraw.Draw(image).text((8, 8), f"shot {shot_number}: no frames", fill=(200, 200, 200),
                               font=ImageFont.load_default(size=max(8, height // 16)))
    return np.asarray(image)


def _encode(path: Path, frames: list[np.ndarray], fps: int, qp: int) -> None:
    import av  # only the editor needs FFmpeg

    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        # Same frames, same bytes: a constant quantiser, one thread, and none of x264's floating-point
        # tuning (adaptive quantisation, macroblock tree, psychovisual RD). With them, the same frames
        # encoded twice in one process gave files that differed in a few blocks.
        stream = container.add_stream("libx264", rate=fps, options={
            "qp": str(qp), "preset": "veryfast", "threads": "1", "x264-params": "aq-mode=0:mbtree=0:psy=0"})
        stream.thread_count = 1
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(yuv420(frame), format="yuv420p")))
        container.mux(stream.encode())


def yuv420(frame: np.ndarray) -> np.ndarray:
    """An RGB frame (even dimensions) as planar YUV 4:2:0, BT.601 limited range (H.264's default),
    as the (height * 3/2) x width array PyAV takes. Converted here, not by FFmpeg's converter (which
    picks its code path by CPU), so the encoder's input is the same on every machine."""
    rgb = frame[..., :3].astype(np.int32)
    height, width = rgb.shape[:2]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    # Chroma from each 2x2 block's mean colour (rounded), a quarter of the pixels.
    block = (rgb[0::2, 0::2] + rgb[1::2, 0::2] + rgb[0::2, 1::2] + rgb[1::2, 1::2] + 2) >> 2
    r, g, b = block[..., 0], block[..., 1], block[..., 2]
    cb = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    cr = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    planes = np.concatenate([y, cb.reshape(height // 4, width), cr.reshape(height // 4, width)])
    return np.clip(planes, 0, 255).astype(np.uint8)


def _storyboard(keyframes: dict[int, np.ndarray], plan: EditPlan) -> Image.Image:
    first = next(iter(keyframes.values()))
    thumb_h = round(STORYBOARD_CELL_WIDTH * first.shape[0] / first.shape[1])
    font = ImageFont.load_default(size=13)
    caption_lines = 5
    cell_h = thumb_h + 8 + caption_lines * 16
    columns = min(STORYBOARD_COLUMNS, len(plan.cuts))
    rows = -(-len(plan.cuts) // columns)
    gap = 12
    sheet = Image.new("RGB", (columns * (STORYBOARD_CELL_WIDTH + gap) + gap, rows * (cell_h + gap) + gap),
                      (250, 250, 247))
    draw = ImageDraw.Draw(sheet)
    for i, cut in enumerate(plan.cuts):
        x, y = gap + (i % columns) * (STORYBOARD_CELL_WIDTH + gap), gap + (i // columns) * (cell_h + gap)
        thumb = Image.fromarray(keyframes[cut.shot.shot_number]).resize((STORYBOARD_CELL_WIDTH, thumb_h),
                                                                         Image.Resampling.BILINEAR)
        sheet.paste(thumb, (x, y))
        score = (f"score {cut.take.composite:.2f}, attempt {cut.take.attempt}" if cut.take else "no scored attempt")
        lines = [f"Shot {cut.shot.shot_number} | {cut.shot.camera_angle} | {cut.shot.camera_movement}",
                 f"{cut.frame_count / plan.fps:.1f} s | {score} | {cut.outcome.replace('_', ' ')}",
                 *textwrap.wrap(cut.shot.action or cut.shot.description, 46)[:caption_lines - 2]]
        for j, line in enumerate(lines):
            draw.text((x, y + thumb_h + 6 + j * 16), line, fill=(30, 30, 30), font=font)
    return sheet


def _timeline(plan: EditPlan, broken: set[int]) -> str:
    import opentimelineio as otio  # only the editor needs it

    def at(frames: int) -> otio.opentime.RationalTime:
        return otio.opentime.RationalTime(frames, plan.fps)

    timeline = otio.schema.Timeline(name=f"Tower scene {plan.scene_id}", global_start_time=at(0))
    timeline.metadata["tower"] = {"scene_id": plan.scene_id, "assembly_version": ASSEMBLY_VERSION,
                                  "inputs_sha256": plan.inputs_sha256}
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    whole = otio.opentime.TimeRange(at(0), at(plan.frame_count))
    for cut in plan.cuts:
        reference = otio.schema.ExternalReference(target_url=VIDEO_NAME, available_range=whole)
        clip = otio.schema.Clip(name=f"Shot {cut.shot.shot_number}: {cut.shot.camera_angle}",
                                media_reference=reference,
                                source_range=otio.opentime.TimeRange(at(cut.start_frame), at(cut.frame_count)))
        take = cut.take
        clip.metadata["tower"] = {
            "scene_id": plan.scene_id, "shot_number": cut.shot.shot_number, "outcome": cut.outcome,
            "attempt": take.attempt if take else None, "modifier": take.modifier if take else None,
            "composite": take.composite if take else None, "metrics": take.metrics if take else {},
            "camera_angle": cut.shot.camera_angle, "camera_movement": cut.shot.camera_movement,
            "action": cut.shot.action,
        }
        if cut.shot.shot_number in broken:
            clip.markers.append(otio.schema.Marker(
                name="continuity", color=otio.schema.MarkerColor.RED,
                marked_range=otio.opentime.TimeRange(at(cut.start_frame + cut.frame_count - 1), at(1)),
                metadata={"tower": {"discontinuity_after_shot": cut.shot.shot_number}}))
        track.append(clip)
    timeline.tracks.append(track)
    return otio.adapters.write_to_string(timeline, "otio_json")


def _write(root: Path, relative: Path, media_type: str, write: Callable[[Path], None]) -> MediaFile:
    """Write a file atomically (a temporary name, then a rename) unless it is there already. What
    an editor killed mid-write left under a temporary name is removed first."""
    path = root / relative
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
            stale.unlink(missing_ok=True)
        temp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
        try:
            write(temp)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    data = path.read_bytes()
    return MediaFile(uri=relative.as_posix(), media_type=media_type, sha256=hashlib.sha256(data).hexdigest(),
                     bytes=len(data))


def _assembled_shot(cut: Cut, source_frames: int, fps: int) -> AssembledShot:
    take = cut.take
    return AssembledShot(
        shot_number=cut.shot.shot_number, attempt=take.attempt if take else None, outcome=cut.outcome,
        modifier=take.modifier if take else None, composite=take.composite if take else None,
        metrics=take.metrics if take else {}, camera_angle=cut.shot.camera_angle,
        camera_movement=cut.shot.camera_movement, action=cut.shot.action[:2000], start_frame=cut.start_frame,
        frame_count=cut.frame_count, duration_s=cut.frame_count / fps,
        source_frames=source_frames,
    )
