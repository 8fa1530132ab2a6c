"""The editor through the real stack: a scene through the six agents ends with ``scene.assembled``,
its video, storyboard and timeline read back with PyAV, Pillow and OpenTimelineIO, served by
``tower api`` (the video with Range requests), and cut once however often it is delivered."""

from __future__ import annotations

import asyncio
import hashlib
import io

import av
import httpx
import opentimelineio as otio
from PIL import Image

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from events.envelope import header_map, scene_of_key
from events.models import SceneAssembled
from foundation.kafka import read_topic
from tests.integration.harness import wait_for_group
from tests.integration.test_pipeline import kai_request


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
    assert Image.open(media / event.storyboard.uri).format == "PNG"
    clips = list(otio.adapters.read_from_file(str(media / event.timeline.uri)).find_clips())
    assert [c.metadata["tower"]["shot_number"] for c in clips] == [s.shot_number for s in event.shots]
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

    # Delivered again (an editor under a new consumer group over the same database): the scene is
    # recognised as cut, and nothing is sent twice.
    workers.stop_all()
    workers.env = {**tower_env, "TOWER_GROUP_PREFIX": tower_env["TOWER_GROUP_PREFIX"] + "-again"}
    workers.start("editor")
    await workers.watch(wait_for_group(settings.kafka_bootstrap, workers.env["TOWER_GROUP_PREFIX"] + "-editor",
                                       [settings.topic("quality.scored")]))
    assert len(await read_topic(settings.kafka_bootstrap, settings.topic("scene.assembled"))) == 1


async def poll(client: httpx.AsyncClient, path: str, done, timeout_s: float = 60) -> httpx.Response:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await client.get(path)
        if response.status_code == 200 and done(response.json()):
            return response
        assert asyncio.get_running_loop().time() < deadline, f"{path}: {response.status_code} {response.text[:500]}"
        await asyncio.sleep(0.3)
