"""The editor through the real stack: a scene through the seven agents ends with ``scene.assembled``,
its video, storyboard and timeline read back with PyAV, Pillow and OpenTimelineIO, served by
``tower api`` (the video with Range requests), and cut once however often it is delivered."""

from __future__ import annotations

import asyncio
import hashlib
import io
import subprocess
import sys

import asyncpg
import av
import httpx
import numpy as np
import opentimelineio as otio
from PIL import Image

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from events.envelope import header_map, scene_of_key
from events.models import FrameRendered, SceneAssembled
from foundation.kafka import read_topic
from tests.integration.harness import wait_for_group
from tests.integration.test_pipeline import kai_request
from tests.unit.test_editing import storyboard_tiles


async def assembled_events(settings, scene_id: str, expect: int = 1, timeout_s: float = 120) -> list:
    records = await read_topic(settings.kafka_bootstrap, settings.topic("scene.assembled"), expect=expect,
                               timeout_s=timeout_s)
    return [r for r in records if scene_of_key(r.key) == scene_id]


async def test_a_scene_ends_as_one_video_a_storyboard_and_a_timeline(settings, workers, tower_env, api_server):
    workers.start(*STAGE_NAMES)
    await produce(settings, [scene_envelope(kai_request("scene-film", max_attempts=2))])
    progress = await workers.watch(follow_scene(settings, "scene-film", timeout_s=240))
    records = await workers.watch(assembled_events(settings, "scene-film"))
    assert len(records) == 1, f"{len(records)} scene.assembled events\n{workers.tail()}"
    event = SceneAssembled.model_validate_json(records[0].value)
    headers = header_map(records[0].headers)
    assert headers["ce_type"] == "tower.scene.assembled.v1" and headers["ce_source"] == "tower/editor"

    # The plan, as the scores carried it: every shot once, in order, at its planned length.
    shots = {s.shot.shot_number: s.shot for s in progress.finals.values()}
    assert [s.shot_number for s in event.shots] == sorted(shots)
    assert event.frame_count == sum(round(s.duration * s.fps) for s in shots.values())
    for assembled in event.shots:
        final = progress.finals[assembled.shot_number]
        if final.passed:
            assert (assembled.outcome, assembled.attempt) == ("accepted", final.attempt)

    media = settings.media_dir
    video = media / event.video.uri
    assert hashlib.sha256(video.read_bytes()).hexdigest() == event.video.sha256
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(video=0))
        duration = float(stream.duration * stream.time_base)
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    assert decoded == event.frame_count, "the frame count is the sum of the shots'"
    assert abs(duration - sum(s.duration for s in shots.values())) <= 1 / event.fps, "the plan's total, within a frame"
    board = Image.open(media / event.storyboard.uri)
    assert board.format == "PNG" and storyboard_tiles(board, event.width, event.height, len(shots)) == len(shots)
    clips = list(otio.adapters.read_from_file(str(media / event.timeline.uri)).find_clips())
    assert [c.metadata["tower"]["shot_number"] for c in clips] == [s.shot_number for s in event.shots]
    assert [c.source_range.duration.to_seconds() for c in clips] == \
        [round(shots[s.shot_number].duration * event.fps) / event.fps for s in event.shots], "the plan's durations"
    assert all(c.metadata["tower"]["scene_id"] == "scene-film" for c in clips)

    async with api_server.client() as client:
        scene = (await poll(client, "/api/director/scenes/scene-film",
                            lambda body: body.get("assembly") is not None)).json()
        assembly = scene["assembly"]
        assert assembly["video"]["sha256"] == event.video.sha256 and assembly["event_id"] == headers["ce_id"]
        assert [s["attempt"] for s in assembly["shots"]] == [s.attempt for s in event.shots]

        whole = await client.get(assembly["video"]["url"])
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert hashlib.sha256(whole.content).hexdigest() == event.video.sha256
        part = await client.get(assembly["video"]["url"], headers={"Range": "bytes=100-299"})
        assert part.status_code == 206, part.text
        assert part.headers["content-range"] == f"bytes 100-299/{event.video.bytes}"
        assert part.content == whole.content[100:300], "a browser can seek"
        board = await client.get(assembly["storyboard"]["url"])
        assert board.headers["content-type"] == "image/png" and Image.open(io.BytesIO(board.content)).width > 0
        timeline = await client.get(assembly["timeline"]["url"])
        assert timeline.status_code == 200 and timeline.json()["OTIO_SCHEMA"].startswith("Timeline")
        unknown = await client.get("/api/director/scenes/no-such-scene/video")
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        assert "assembled once every shot is final" in unknown.json()["detail"]

        # The files lost: a reassembly writes them again, the same bytes, under the same event.
        video.unlink()
        (media / event.storyboard.uri).unlink()
        assert (await client.get(assembly["video"]["url"])).status_code == 404
        asked = await client.post("/api/director/scenes/scene-film/reassemble")
        assert asked.status_code == 202, asked.text
        assert (await client.post("/api/director/scenes/no-such-scene/reassemble")).status_code == 404
        again = await workers.watch(assembled_events(settings, "scene-film", expect=2))
        assert [header_map(r.headers)["ce_id"] for r in again] == [headers["ce_id"]] * 2
        assert SceneAssembled.model_validate_json(again[1].value) == event
        assert hashlib.sha256(video.read_bytes()).hexdigest() == event.video.sha256
        assert hashlib.sha256((media / event.storyboard.uri).read_bytes()).hexdigest() == event.storyboard.sha256

    # `tower status` says where the files are.
    status = subprocess.run([sys.executable, "-m", "tower", "status", "scene-film"], env=workers.env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert str((media / event.video.uri).resolve()) in status.stdout and "Film (" in status.stdout, status.stdout

    # Delivered again (an editor under a new consumer group over the same database): the scene is
    # recognised as cut, and nothing is sent twice.
    workers.stop_all()
    workers.env = {**tower_env, "TOWER_GROUP_PREFIX": tower_env["TOWER_GROUP_PREFIX"] + "-again"}
    workers.start("editor")
    await workers.watch(wait_for_group(settings.kafka_bootstrap, workers.env["TOWER_GROUP_PREFIX"] + "-editor",
                                       [settings.topic("quality.scored")]))
    assert len(await read_topic(settings.kafka_bootstrap, settings.topic("scene.assembled"))) == 2, "nothing new"


def decoded(path) -> list:  # noqa: ANN001
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24").astype(np.int16) for frame in container.decode(video=0)]


async def poll(client: httpx.AsyncClient, path: str, done, timeout_s: float = 60) -> httpx.Response:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await client.get(path)
        if response.status_code == 200 and done(response.json()):
            return response
        assert asyncio.get_running_loop().time() < deadline, f"{path}: {response.status_code} {response.text[:500]}"
        await asyncio.sleep(0.3)


async def test_regenerating_one_shot_re_renders_it_alone_and_re_cuts_the_scene(settings, workers, api_server):
    workers.start(*STAGE_NAMES)
    await produce(settings, [scene_envelope(kai_request("scene-regen", max_attempts=1))])
    await workers.watch(follow_scene(settings, "scene-regen", timeout_s=240))
    [first] = await workers.watch(assembled_events(settings, "scene-regen"))
    before = SceneAssembled.model_validate_json(first.value)
    conn = await asyncpg.connect(settings.database_url)
    try:
        credited = await conn.fetchval("SELECT count(*) FROM pattern_updates")
    finally:
        await conn.close()

    direction = {"note": "the dragon closer, more fire", "seed": 1234}
    async with api_server.client() as client:
        path = "/api/director/scenes/scene-regen/shots/2/regenerate"
        started = await client.post(path, json=direction)
        assert started.status_code == 202, started.text
        again = await client.post(path, json=direction)
        assert again.status_code == 200 and again.json()["status"] == "already_requested"
        assert again.json()["event_id"] == started.json()["event_id"], "the same request is the same attempt"
        attempt = started.json()["attempt"]
        assert attempt == 2
        missing = await client.post("/api/director/scenes/scene-regen/shots/99/regenerate", json={})
        assert missing.status_code == 404 and "has no shot 99" in missing.json()["detail"]
        unknown = await client.post(path, json={"modifier": "no-such-pattern"})
        assert unknown.status_code == 422 and "no modifier" in unknown.json()["detail"]

    records = await workers.watch(assembled_events(settings, "scene-regen", expect=2))
    assert len({header_map(r.headers)["ce_id"] for r in records}) == 2, "the scene was cut again, once"
    after = SceneAssembled.model_validate_json(records[-1].value)
    assert [s.attempt for s in after.shots] == [attempt if s.shot_number == 2 else s.attempt for s in before.shots]
    assert after.video.sha256 != before.video.sha256 and after.video.uri != before.video.uri
    # The new video differs in that shot's frames only (beyond the encoder's rounding).
    old, new = decoded(settings.media_dir / before.video.uri), decoded(settings.media_dir / after.video.uri)
    assert len(old) == len(new) == after.frame_count
    shot = next(s for s in after.shots if s.shot_number == 2)
    inside = range(shot.start_frame, shot.start_frame + shot.frame_count)
    change = [float(np.abs(a - b).mean()) for a, b in zip(old, new, strict=True)]
    assert all(change[i] > 3 for i in inside), [round(c, 1) for c in change]
    assert all(c < 0.5 for i, c in enumerate(change) if i not in inside), [round(c, 1) for c in change]

    # One render of the new attempt, made as directed, and nothing credited to a pattern.
    rendered = [FrameRendered.model_validate_json(r.value)
                for r in await read_topic(settings.kafka_bootstrap, settings.topic("frame.rendered"))]
    directed = [r for r in rendered if (r.scene_id, r.shot.shot_number, r.attempt) == ("scene-regen", 2, attempt)]
    assert len(directed) == 1, f"{len(directed)} renders of the regenerated attempt"
    assert directed[0].escalation == "directed" and directed[0].prompt.seed == 1234
    assert directed[0].prompt.prompt.endswith("the dragon closer, more fire")
    assert directed[0].prompt.modifier_probability == 1.0, "a person's choice, logged as such"
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pattern_updates") == credited
        assert await conn.fetchval("SELECT credited FROM scores WHERE scene_id = 'scene-regen' AND attempt = $1",
                                   attempt) is False
    finally:
        await conn.close()

    # The same from the command line, for another shot.
    cli = subprocess.run([sys.executable, "-m", "tower", "regenerate", "scene-regen", "1", "--note", "wider"],
                         env=workers.env, capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "regenerating shot 1 of scene-regen as attempt 2" in cli.stdout, cli.stdout + cli.stderr
    records = await workers.watch(assembled_events(settings, "scene-regen", expect=3))
    latest = SceneAssembled.model_validate_json(records[-1].value)
    assert [s.attempt for s in latest.shots][:2] == [2, 2]


async def test_an_editor_killed_mid_encode_leaves_no_partial_file_and_its_successor_cuts_the_scene(
        settings, workers, tower_env):
    # A long, large scene, so the encode takes long enough to be caught in the act.
    workers.env = {**tower_env, "TOWER_RENDER_WIDTH": "512", "TOWER_RENDER_HEIGHT": "512"}
    workers.start(*(stage for stage in STAGE_NAMES if stage != "editor"))
    await produce(settings, [scene_envelope(kai_request("scene-kill", max_attempts=1, target_duration_s=30))])
    await workers.watch(follow_scene(settings, "scene-kill", timeout_s=400))
    workers.start("editor")
    folder = settings.media_dir / "scene-kill" / "assembly"
    deadline = asyncio.get_running_loop().time() + 120
    while not (partial := list(folder.glob("*/.scene.*.tmp.mp4"))):
        workers.assert_alive()
        assert asyncio.get_running_loop().time() < deadline, f"the editor never started encoding\n{workers.tail()}"
        await asyncio.sleep(0.01)
    workers.kill("editor")
    assert partial[0].exists(), "killed mid-encode: the partial file is there"
    assert not list(folder.glob("*/scene.mp4")), "and no scene.mp4 under its final name"

    workers.start("editor")
    [record] = await workers.watch(assembled_events(settings, "scene-kill", timeout_s=180))
    event = SceneAssembled.model_validate_json(record.value)
    assert not list(folder.glob("*/.*.tmp*")), "the partial file was removed"
    with av.open(str(settings.media_dir / event.video.uri)) as container:
        assert sum(1 for _ in container.decode(video=0)) == event.frame_count


async def test_a_frame_missing_at_assembly_fails_the_scene_with_the_reason(settings, workers, tower_env):
    workers.env = {**tower_env, "TOWER_HANDLER_RETRIES": "1", "TOWER_HANDLER_BACKOFF_S": "0.05"}
    workers.start(*(stage for stage in STAGE_NAMES if stage != "editor"))
    await produce(settings, [scene_envelope(kai_request("scene-lost", max_attempts=1))])
    progress = await workers.watch(follow_scene(settings, "scene-lost", timeout_s=240))
    lost = progress.finals[1].frames[0].uri
    (settings.media_dir / lost).unlink()
    workers.start("editor")
    deadline = asyncio.get_running_loop().time() + 120
    while True:
        status = subprocess.run([sys.executable, "-m", "tower", "status", "scene-lost"], env=workers.env,
                                capture_output=True, text=True, timeout=60)
        if "FAILED" in status.stdout:
            break
        workers.assert_alive()
        assert asyncio.get_running_loop().time() < deadline, f"no failure recorded\n{status.stdout}\n{workers.tail()}"
        await asyncio.sleep(0.5)
    assert status.returncode == 1 and "dead-lettered by editor" in status.stdout, status.stdout
    assert f"frame {lost} cannot be read" in status.stdout, status.stdout
    assert "Film: not assembled yet" in status.stdout
    workers.assert_alive()
    handled = sum(p.read_text().count("giving up on quality.scored") for p in workers.log_dir.glob("editor.*.log"))
    assert handled == 1, "one failure, retried and dead-lettered: no crash loop"
    assert not await read_topic(settings.kafka_bootstrap, settings.topic("scene.assembled"), timeout_s=3)
