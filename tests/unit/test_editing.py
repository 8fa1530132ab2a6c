"""The editor without Kafka: when a scene is cut, which attempt goes in, and the files it writes
(read back with PyAV, Pillow and OpenTimelineIO)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest
from PIL import Image

from director.editing import Take, edit_plan, kept_take, retime
from events.models import FrameRef
from render.editing import EditOptions, assemble
from render.media import attempt_dir, write_frames
from tests.unit.test_learning import scored


def take(root: Path | None, planned, *, attempt=1, composite=0.8, colour=(40, 90, 160), frames=4, size=(64, 48),
         status="ok", max_attempts=None):
    """A scored attempt of ``planned`` whose frames (if ``root``) are a coloured field with a moving bar."""
    shot = planned.model_copy(update={"max_attempts": max_attempts or planned.max_attempts})
    value = scored(shot, "clean-cel", composite, attempt=attempt, status=status)
    if root is not None and status == "ok":
        images = []
        for i in range(frames):
            image = np.zeros((size[1], size[0], 3), np.uint8)
            image[:] = colour
            image[size[1] // 3: size[1] // 2, i * 4: i * 4 + 10] = 255
            images.append(image)
        refs = write_frames(root, attempt_dir(value.scene_id, value.shot.shot_number, attempt), images)
        value = value.model_copy(update={"frames": refs})
    elif status == "ok":  # named, not written: enough to decide the cut
        value = value.model_copy(update={"frames": [FrameRef(index=0, uri="f.png", width=64, height=48, sha256="0" * 64)]})
    return Take.of(value)


def first(count: int, shots):
    """The first ``count`` shots of a plan, as a scene of ``count`` shots."""
    return [p.model_copy(update={"shot": p.shot.model_copy(update={"shot_count": count})}) for p in shots[:count]]


def test_retiming_spreads_an_attempts_frames_over_the_planned_length():
    assert retime(4, 8) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert retime(8, 4) == [0, 2, 4, 6]
    assert retime(3, 3) == [0, 1, 2]
    assert retime(0, 5) == []


def test_a_scene_is_cut_once_every_shot_is_final_from_the_passing_or_best_attempt(kai_shots):
    planned = kai_shots[0].model_copy(update={"quality_threshold": 0.6})
    failed_once = take(None, planned, composite=0.4)
    assert kept_take([failed_once]) is None, "attempt 1 of 3 failed: not final, a retry is coming"
    passed = take(None, planned, attempt=2, composite=0.7)
    assert kept_take([failed_once, passed]) == (passed, "accepted")

    spent = [take(None, planned, attempt=a, composite=c) for a, c in ((1, 0.4), (2, 0.5), (3, 0.45))]
    assert kept_take(spent)[1] == "needs_review" and kept_take(spent)[0].attempt == 2, "the best attempt, for review"
    broken = [take(None, planned, attempt=a, status="failed", composite=0.0) for a in (1, 2, 3)]
    assert kept_take(broken) == (None, "missing")

    shots = [take(None, p, composite=0.9) for p in kai_shots]
    assert edit_plan("scene", "s", shots[:-1]) is None, "a shot is still missing"
    plan = edit_plan("scene", "s", shots)
    assert [c.shot.shot_number for c in plan.cuts] == list(range(1, len(kai_shots) + 1))
    assert plan.frame_count == sum(round(p.shot.duration * p.shot.fps) for p in kai_shots)
    assert [c.start_frame for c in plan.cuts] == [sum(c.frame_count for c in plan.cuts[:i]) for i in range(len(plan.cuts))]
    assert edit_plan("scene", "s", reversed(shots)).inputs_sha256 == plan.inputs_sha256, "order of arrival is no input"
    assert edit_plan("scene", "s", shots, {"crossfade_frames": 2}).inputs_sha256 != plan.inputs_sha256


def test_the_scene_video_lasts_the_plan_and_its_files_read_back(tmp_path, kai_shots):
    root = tmp_path / "media"
    # The second shot is rendered at another size (scaled into the scene's), the third with one
    # frame only (held for its planned length).
    takes = [take(root, p, frames=(4, 6, 1)[i] if i < 3 else 4, size=(100, 40) if i == 1 else (64, 48))
             for i, p in enumerate(kai_shots)]
    plan = edit_plan(kai_shots[0].scene_id, "s", takes)
    event = assemble(root, plan, EditOptions())
    assert (event.width, event.height) == (64, 48) and event.frame_count == plan.frame_count

    with av.open(str(root / event.video.uri)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width % 2, stream.codec_context.height % 2) == (0, 0)
        decoded = sum(1 for _ in container.decode(video=0))
        duration = float(stream.duration * stream.time_base)
    assert decoded == plan.frame_count == sum(round(p.shot.duration * p.shot.fps) for p in kai_shots)
    assert abs(duration - sum(p.shot.duration for p in kai_shots)) <= 1 / plan.fps
    data = (root / event.video.uri).read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "+faststart: the index comes first"

    storyboard = Image.open(root / event.storyboard.uri)
    assert storyboard.format == "PNG"
    assert storyboard_tiles(storyboard, event.width, event.height, len(kai_shots)) == len(kai_shots), "a tile per shot"
    timeline = otio.adapters.read_from_file(str(root / event.timeline.uri))
    clips = list(timeline.find_clips())
    assert [c.metadata["tower"]["shot_number"] for c in clips] == [s.shot_number for s in event.shots]
    assert [c.source_range.duration.to_frames() for c in clips] == [s.frame_count for s in event.shots]
    assert [c.source_range.start_time.to_frames() for c in clips] == [s.start_frame for s in event.shots]
    assert clips[0].metadata["tower"]["attempt"] == 1 and clips[0].metadata["tower"]["composite"] == 0.8
    assert [s.source_frames for s in event.shots[:3]] == [4, 6, 1]

    # The same inputs again, into another store: the same files, byte for byte.
    _copy_frames(root, tmp_path / "copy")
    again = assemble(tmp_path / "copy", plan, EditOptions())
    assert (again.video.sha256, again.storyboard.sha256, again.timeline.sha256) == \
        (event.video.sha256, event.storyboard.sha256, event.timeline.sha256)


def test_a_palette_jump_is_a_discontinuity_on_its_cut_and_its_characters(tmp_path, kai_shots):
    root = tmp_path / "media"
    shots = first(3, kai_shots)
    colours = [(40, 90, 160), (42, 88, 158), (230, 120, 20)]  # the third shot jumps to another palette
    plan = edit_plan(shots[0].scene_id, "s", [take(root, p, colour=c) for p, c in zip(shots, colours, strict=True)])
    event = assemble(root, plan, EditOptions())
    assert [c.discontinuity for c in event.cuts] == [False, True]
    assert event.cuts[0].colour_distance < 3 < 20 < event.cuts[1].colour_distance
    assert "palette" in event.cuts[1].reason
    shared = {c.character: c for c in event.characters}
    in_all = set.intersection(*(set(p.shot.characters) for p in shots))
    assert in_all and all(shared[name].discontinuity for name in in_all)
    assert event.discontinuities == 1 + sum(c.discontinuity for c in event.characters)
    clips = list(otio.adapters.read_from_file(str(root / event.timeline.uri)).find_clips())
    assert [len(c.markers) for c in clips] == [0, 1, 0], "the marker sits on the shot before the broken cut"


@pytest.mark.parametrize("crossfade", [0, 2])
def test_a_cross_fade_keeps_every_shots_length(tmp_path, kai_shots, crossfade):
    root = tmp_path / "media"
    plan = edit_plan(kai_shots[0].scene_id, "s", [take(root, p, colour=(20 * i, 60, 200 - 20 * i))
                                                   for i, p in enumerate(first(2, kai_shots))])
    event = assemble(root, plan, EditOptions(crossfade_frames=crossfade))
    with av.open(str(root / event.video.uri)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == plan.frame_count
    cut = plan.cuts[0].frame_count
    before, at = frames[cut - 1].astype(int).mean(axis=(0, 1)), frames[cut].astype(int).mean(axis=(0, 1))
    jump = np.abs(before - at).max()
    assert (jump < 12) if crossfade else (jump > 12), f"a {'dissolve' if crossfade else 'hard cut'}: jump {jump:.1f}"


def _copy_frames(source: Path, target: Path) -> None:
    import shutil

    for path in source.rglob("frame_*.png"):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


def test_a_regenerated_shot_is_cut_from_the_attempt_the_person_asked_for(kai_shots):
    planned = kai_shots[0].model_copy(update={"max_attempts": 1})
    accepted = take(None, planned, composite=0.9)
    directed_plan = planned.model_copy(update={"escalation": "directed", "max_attempts": 2})
    directed = take(None, directed_plan, attempt=2, composite=0.5, max_attempts=2)
    assert directed.directed and kept_take([accepted, directed]) == (directed, "needs_review"), "even scoring lower"
    broken = take(None, directed_plan, attempt=2, status="failed", composite=0.0, max_attempts=2)
    assert kept_take([accepted, broken]) == (accepted, "accepted"), "an unscorable regeneration changes nothing"


def storyboard_tiles(sheet: Image.Image, width: int, height: int, cells: int) -> int:
    """How many of the sheet's grid cells hold a picture (the rest are the bare background)."""
    from render.editing import STORYBOARD_CELL_WIDTH, STORYBOARD_COLUMNS

    columns = min(STORYBOARD_COLUMNS, cells)
    rows = -(-cells // columns)
    thumb_h = round(STORYBOARD_CELL_WIDTH * height / width)
    cell_w = (sheet.width - 12) // columns
    cell_h = (sheet.height - 12) // rows
    pixels = np.asarray(sheet.convert("RGB")).astype(int)
    background = pixels[2, 2]
    filled = 0
    for i in range(columns * rows):
        x, y = 12 + (i % columns) * cell_w, 12 + (i // columns) * cell_h
        thumb = pixels[y: y + thumb_h, x: x + STORYBOARD_CELL_WIDTH]
        filled += bool(np.abs(thumb - background).max() > 0)
    return filled
