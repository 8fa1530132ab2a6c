"""Output listing, media sniffing and storage into the media store, and the backend on a FAKE server."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from comfy.media import sniff
from comfy.outputs import output_files
from comfy.pool import ComfyPool, PoolConfig
from director.refiner import refine
from render.backends import RenderError
from render.comfyui import ComfyBackend, store_outputs
from render.media import attempt_dir, resolve
from tests.unit.comfy.conftest import FAST_CLIENT, FAST_JOB, eventually
from tests.unit.comfy.fake_server import FakeComfy, png_bytes


def picture(fmt: str, frames: int = 1, **save) -> bytes:
    images = [Image.new("RGB", (10, 8), (40 * i, 90, 200)) for i in range(frames)]
    buffer = io.BytesIO()
    if frames > 1:
        save.update(save_all=True, append_images=images[1:], duration=100, loop=0)
    images[0].save(buffer, format=fmt, **save)
    return buffer.getvalue()


def video(tmp_path, frames: int = 5) -> bytes:
    path = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 8, (16, 12))
    for i in range(frames):
        writer.write(np.full((12, 16, 3), 30 * i, np.uint8))
    writer.release()
    return path.read_bytes()


def test_output_files_take_every_kind_in_node_order_and_prefer_saved_files():
    entry = {"outputs": {
        "10": {"gifs": [{"filename": "a.gif", "subfolder": "s", "type": "output", "format": "image/gif"}]},
        "9": {"images": [{"filename": "b.webp", "subfolder": "", "type": "output"}], "animated": [True]},
        "2:1": {"video": [{"filename": "c.mp4", "subfolder": "", "type": "output"}]},
        "11": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
        "12": {"text": ["not a file"]},
    }}
    files = output_files(entry)
    assert [(f.node_id, f.key, f.filename) for f in files] == [("2:1", "video", "c.mp4"), ("9", "images", "b.webp"), ("10", "gifs", "a.gif")]
    assert files[1].animated and files[2].server_format == "image/gif"
    only_preview = {"outputs": {"11": entry["outputs"]["11"]}}
    assert [f.filename for f in output_files(only_preview)] == ["p.png"]  # previews when nothing was saved


def test_sniff_reads_bytes_not_names(tmp_path):
    assert sniff(png_bytes()).kind == "still"
    assert sniff(picture("PNG", 3)).kind == "animated"  # APNG
    assert (sniff(picture("WEBP", 3)).kind, sniff(picture("WEBP")).kind) == ("animated", "still")
    assert (sniff(picture("GIF", 2)).kind, sniff(picture("GIF")).kind) == ("animated", "still")
    assert sniff(picture("JPEG")).ext == ".jpg"
    assert sniff(video(tmp_path)) .kind == "video"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None


def test_store_outputs_writes_frames_under_our_names(tmp_path):
    rel = attempt_dir("scene:1", 2, 1)
    blobs = [png_bytes(10, 8), picture("JPEG"), picture("WEBP", 3), video(tmp_path, 4), b"not media"]
    refs = store_outputs(tmp_path / "media", rel, blobs)
    assert [r.index for r in refs] == list(range(1 + 1 + 3 + 4))
    assert [r.uri for r in refs[:2]] == ["scene_1/shot02/attempt1/frame_0000.png", "scene_1/shot02/attempt1/frame_0001.png"]
    assert (refs[0].width, refs[0].height) == (10, 8) and (refs[-1].width, refs[-1].height) == (16, 12)
    folder = tmp_path / "media" / rel
    assert (folder / "frame_0000.png").read_bytes() == blobs[0]  # PNGs are kept byte for byte
    assert sorted(p.name for p in folder.glob("clip_*")) == ["clip_00.webp", "clip_01.mp4"]
    for ref in refs:
        with Image.open(resolve(tmp_path / "media", ref.uri)) as image:
            assert image.format == "PNG" and image.size == (ref.width, ref.height)
    with pytest.raises(RenderError, match="no image or video"):
        store_outputs(tmp_path / "media", rel, [b"not media"])


@pytest.fixture
def refined(kai_shots):
    return refine(kai_shots[0], {}, width=64, height=48, workflow="x", learner_version="1")


async def test_backend_renders_into_the_media_store(tmp_path, refined):
    fake = FakeComfy()
    await fake.start()
    pool = ComfyPool([fake.url], config=PoolConfig(), job_config=FAST_JOB, client_config=FAST_CLIENT)
    seen = []
    backend = ComfyBackend(pool, on_progress=lambda event, progress: seen.append((event.attempt, progress.kind)))
    refs = await backend.render(refined, tmp_path)
    assert len(refs) == 1 and refs[0].uri.startswith(attempt_dir(refined.scene_id, refined.shot.shot_number, 1).as_posix())
    submitted = fake.graphs[fake.submissions[0]]
    assert submitted["1"]["inputs"]["batch_size"] == refined.shot.frame_count
    assert (submitted["1"]["inputs"]["width"], submitted["1"]["inputs"]["height"]) == (64, 48)
    assert submitted["2"]["inputs"]["seed"] == refined.prompt.seed
    # History is removed after collecting, in the background.
    await eventually(lambda: fake.deleted_history == fake.submissions, "the history's removal")
    assert seen[-1] == (1, "finished")
    assert backend.workflow.startswith("comfyui-modelfree-")
    await backend.aclose()
    await fake.stop()


async def test_backend_turns_final_errors_into_render_errors(tmp_path, refined):
    fake = FakeComfy()
    await fake.start()
    template = tmp_path / "broken.json"
    template.write_text('{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},'
                        ' "2": {"class_type": "Invalid", "inputs": {}},'
                        ' "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}')
    pool = ComfyPool([fake.url], job_config=FAST_JOB, client_config=FAST_CLIENT)
    backend = ComfyBackend(pool, template)
    with pytest.raises(RenderError, match="Required input is missing"):
        await backend.render(refined, tmp_path / "media")
    await backend.aclose()
    await fake.stop()
