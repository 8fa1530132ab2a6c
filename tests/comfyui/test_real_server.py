"""The client, pool and backend against a REAL ComfyUI 0.3.75 (see conftest.py)."""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from comfy.client import ComfyClient
from comfy.errors import ExecutionFailed, JobTimeout, ServerBusy, ValidationFailed
from comfy.jobs import run_job
from comfy.outputs import fetch, output_files
from comfy.pool import ComfyPool, PoolConfig
from comfy.progress import ProgressStream
from render.backends import RenderError
from render.comfyui import ComfyBackend, upload_reference
from render.media import resolve
from tests.comfyui.servers import kill, url_of

pytestmark = [pytest.mark.comfyui, pytest.mark.integration]


def canvas(frames: int = 3, extra: dict | None = None, source: str = "2", save: dict | None = None) -> dict:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": frames, "color": 0x336699}},
        "2": {"class_type": "ImageAddNoise", "inputs": {"image": ["1", 0], "seed": int(time.time_ns() % 2**32), "strength": 0.3}},
    }
    graph.update(extra or {})
    graph.update(save or {"90": {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": "tower/test"}}})
    return graph


def slow(steps: int, step_s: float) -> dict:
    return {"5": {"class_type": "TowerSlowProgress", "inputs": {"images": ["2", 0], "steps": steps, "step_s": step_s}}}


def pool_of(urls, **config) -> ComfyPool:
    return ComfyPool(urls, config=PoolConfig(**{"down_for": 0.5, **config}))


async def history_gone(url: str, prompt_id: str, within: float = 3.0) -> bool:
    async with httpx.AsyncClient(base_url=url) as http:
        end = time.monotonic() + within
        while time.monotonic() < end:
            if (await http.get(f"/history/{prompt_id}")).json() == {}:
                return True
            await asyncio.sleep(0.05)
    return False


async def test_backend_renders_the_builtin_template(comfy_urls, tmp_path, refined):
    events = []
    backend = ComfyBackend(pool_of(comfy_urls[:1]), on_progress=lambda _, p: events.append(p))
    refs = await backend.render(refined, tmp_path)
    assert len(refs) == refined.shot.frame_count
    for ref in refs:
        with Image.open(resolve(tmp_path, ref.uri)) as image:
            assert image.size == (64, 48) == (ref.width, ref.height)
    assert len({ref.sha256 for ref in refs}) == len(refs)  # the seeded grain differs per frame
    assert await history_gone(comfy_urls[0], events[-1].prompt_id)
    again = await backend.render(refined, tmp_path / "again")
    assert [r.sha256 for r in again] == [r.sha256 for r in refs]  # same seed, same frames
    await backend.aclose()


async def test_animated_and_video_outputs_become_frames(comfy_urls, tmp_path, refined):
    template = tmp_path / "clips.json"
    graph = canvas(save={
        "90": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["2", 0], "filename_prefix": "tower/anim", "fps": 8.0,
               "lossless": True, "quality": 80, "method": "fastest"}},
        "91": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0], "fps": 8.0}},
        "92": {"class_type": "SaveVideo", "inputs": {"video": ["91", 0], "filename_prefix": "tower/video", "format": "mp4", "codec": "h264"}},
    })
    template.write_text(json.dumps(graph))
    backend = ComfyBackend(pool_of(comfy_urls[:1]), template)
    refs = await backend.render(refined, tmp_path / "media")
    n = refined.shot.frame_count
    assert len(refs) == 2 * n  # every frame of the WEBP, then every frame of the MP4
    folder = resolve(tmp_path / "media", refs[0].uri).parent
    assert sorted(p.name for p in folder.glob("clip_*")) == ["clip_00.webp", "clip_01.mp4"]
    webp = np.asarray(Image.open(resolve(tmp_path / "media", refs[0].uri)))
    mp4 = np.asarray(Image.open(resolve(tmp_path / "media", refs[n].uri)))
    assert webp.shape == mp4.shape == (48, 64, 3)
    # Same picture: per-pixel grain does not survive h264's chroma subsampling, the colour does.
    assert np.abs(webp.mean(axis=(0, 1)) - mp4.mean(axis=(0, 1))).max() < 12
    await backend.aclose()


async def test_step_progress_and_queue_position(comfy_urls):
    pool = pool_of(comfy_urls[:1], max_in_flight=2)
    await pool.start()
    first, second = ProgressStream(), ProgressStream()

    async def finish(client, result):
        return output_files(result.history)

    jobs = [asyncio.create_task(pool.run(canvas(extra=slow(5, 0.08), source="5"), finish=finish, deadline_s=30, on_progress=first.send))]
    await asyncio.sleep(0.15)
    jobs.append(asyncio.create_task(pool.run(canvas(), finish=finish, deadline_s=30, on_progress=second.send)))
    for job, stream in zip(jobs, (first, second), strict=True):
        job.add_done_callback(lambda _, s=stream: s.close())
    results = await asyncio.gather(*jobs)
    progress = [e async for e in first]
    waiting = [e async for e in second]
    steps = [(e.value, e.max, e.node_type) for e in progress if e.kind == "progress"]
    assert steps == [(i, 5, "TowerSlowProgress") for i in range(1, 6)]
    fractions = [e.fraction for e in progress if e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(e.kind == "queued" and (e.queue_position or 0) >= 1 for e in waiting)
    assert all(len(r) == 3 for r in results)
    await pool.aclose()


async def test_a_node_that_raises_is_final_with_its_message(comfy_urls, tmp_path, refined):
    template = tmp_path / "raises.json"
    template.write_text(json.dumps(canvas(extra={"5": {"class_type": "TowerRaise", "inputs": {"images": ["2", 0], "message": "kaboom 42"}}}, source="5")))
    backend = ComfyBackend(pool_of(comfy_urls[:1]), template)
    with pytest.raises(RenderError, match=r"TowerRaise.*kaboom 42"):
        await backend.render(refined, tmp_path / "media")
    await backend.aclose()


async def test_validation_400_is_final_with_node_errors(comfy_urls):
    pool = pool_of(comfy_urls)
    graph = canvas()
    graph["1"]["inputs"]["width"] = -5
    with pytest.raises(ValidationFailed) as caught:
        await pool.run(graph, finish=lambda c, r: asyncio.sleep(0), deadline_s=10)
    assert caught.value.final and "1" in caught.value.node_errors and "width" in str(caught.value)
    await pool.aclose()


async def test_out_of_memory_is_retried_once_elsewhere_then_final(comfy_urls):
    pool = pool_of(comfy_urls)
    events = []
    with pytest.raises(ExecutionFailed, match="out of memory twice") as caught:
        await pool.run(canvas(extra={"5": {"class_type": "TowerOutOfMemory", "inputs": {"images": ["2", 0]}}}, source="5"),
                       finish=lambda c, r: asyncio.sleep(0), deadline_s=20, on_progress=events.append)
    assert caught.value.final
    assert {(e.attempt, e.server) for e in events if e.kind == "started"} == {(1, comfy_urls[0]), (2, comfy_urls[1])}
    await pool.aclose()


async def test_a_missing_model_moves_the_job_to_a_server_that_has_it(comfy_urls):
    pool = pool_of(comfy_urls)
    graph = canvas(extra={"5": {"class_type": "TowerModelLoader", "inputs": {"images": ["2", 0], "model_name": "tower-test.bin"}}}, source="5")

    async def finish(client, result):
        return client.url

    assert await pool.run(graph, finish=finish, deadline_s=20) == comfy_urls[1]
    await pool.aclose()


async def test_deadline_interrupts_the_running_prompt_and_cleans_up(comfy_urls):
    client = ComfyClient(comfy_urls[0])
    events = []
    started = time.monotonic()
    with pytest.raises(JobTimeout):
        await run_job(client, canvas(extra=slow(400, 0.05), source="5"), deadline=time.monotonic() + 1.5, on_progress=events.append)
    assert time.monotonic() - started < 2.5
    prompt_id = events[0].prompt_id
    end = time.monotonic() + 3
    while prompt_id in await client.queue() and time.monotonic() < end:
        await asyncio.sleep(0.05)
    assert prompt_id not in await client.queue()  # interrupted: it no longer runs
    assert await history_gone(comfy_urls[0], prompt_id)  # and the interrupted entry was deleted
    await client.aclose()


async def test_ui_format_export_is_converted_with_object_info(comfy_urls, tmp_path, refined):
    ui = {
        "nodes": [
            {"id": 1, "type": "EmptyImage", "mode": 0, "inputs": [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 4}],
             "widgets_values": [512, 48, 2, 1234]},
            {"id": 2, "type": "ImageAddNoise", "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}], "widgets_values": [7, "randomize", 0.2]},
            {"id": 3, "type": "Reroute", "mode": 0, "inputs": [{"name": "", "type": "*", "link": 2}]},
            {"id": 5, "type": "SaveImage", "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 3}], "widgets_values": ["tower/ui"]},
            {"id": 6, "type": "PrimitiveNode", "mode": 0, "widgets_values": [40, "fixed"]},
            {"id": 7, "type": "Note", "mode": 0, "widgets_values": ["exported from the editor"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 3, 0, 5, 0, "IMAGE"], [4, 6, 0, 1, 0, "INT"]],
        "groups": [], "version": 0.4,
    }
    template = tmp_path / "ui-export.json"
    template.write_text(json.dumps(ui))
    backend = ComfyBackend(pool_of(comfy_urls[:1]), template)
    refs = await backend.render(refined, tmp_path / "media")
    assert len(refs) == refined.shot.frame_count and (refs[0].width, refs[0].height) == (64, 48)
    assert backend.workflow.startswith("comfyui-ui-export-")
    await backend.aclose()


async def test_reference_images_are_uploaded_for_loadimage(comfy_urls, tmp_path):
    reference = tmp_path / "Kai.png"
    Image.new("RGB", (20, 10), (10, 200, 60)).save(reference)
    client = ComfyClient(comfy_urls[0])
    name = await upload_reference(client, reference)
    assert name.startswith("tower/ref-") and name.endswith(".png")
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "tower/ref"}},
    }
    result = await run_job(client, graph, deadline=time.monotonic() + 20)
    [data] = await fetch(client, output_files(result.history))
    pixel = Image.open(io.BytesIO(data)).convert("RGB").getpixel((5, 5))
    assert all(abs(a - b) <= 1 for a, b in zip(pixel, (245, 55, 195), strict=True))  # inverted (float rounding)
    await client.delete_history([result.prompt_id])
    await client.aclose()


async def test_killing_the_server_mid_job_fails_over(comfy_urls, victim_port):
    pool = pool_of([url_of(victim_port), comfy_urls[0]])
    await pool.start()
    events = []

    def on_progress(event):
        events.append(event)
        if event.kind == "progress" and event.server == url_of(victim_port) and event.value == 2:
            kill(victim_port)

    async def finish(client, result):
        return client.url, len(output_files(result.history))

    started = time.monotonic()
    assert await pool.run(canvas(extra=slow(20, 0.1), source="5"), finish=finish, deadline_s=30, on_progress=on_progress) == (comfy_urls[0], 3)
    assert time.monotonic() - started < 15
    assert [e.server for e in events if e.kind == "started"] == [url_of(victim_port), comfy_urls[0]]
    assert pool.status()[0]["healthy"] is False
    await pool.aclose()


async def test_killing_the_only_server_fails_clearly_within_the_deadline(victim_port):
    pool = pool_of([url_of(victim_port)])
    await pool.start()

    def on_progress(event):
        if event.kind == "progress" and event.value == 2:
            kill(victim_port)

    started = time.monotonic()
    with pytest.raises(ServerBusy, match="no ComfyUI server available before the deadline.*down"):
        await pool.run(canvas(extra=slow(20, 0.1), source="5"), finish=lambda c, r: asyncio.sleep(0), deadline_s=4, on_progress=on_progress)
    assert time.monotonic() - started < 6
    await pool.aclose()
