import numpy as np
import pytest

from director.refiner import refine
from render.media import attempt_dir, resolve, write_frames
from render.procedural import render_shot


def frames_for(planned, modifier="clean-cel"):
    refined = refine(planned, {}, width=64, height=48, workflow="procedural-v2", learner_version="1")
    refined = refined.model_copy(update={"prompt": refined.prompt.model_copy(update={"modifier": modifier})})
    return render_shot(refined)


def mean_abs_change(frames):
    stack = np.stack(frames).astype(np.float32)
    return float(np.abs(np.diff(stack, axis=0)).mean())


def test_frames_are_deterministic_and_sized(kai_shots):
    a, b = frames_for(kai_shots[0]), frames_for(kai_shots[0])
    assert len(a) == kai_shots[0].shot.frame_count
    assert a[0].shape == (48, 64, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_motion_follows_the_shot_and_the_modifier(kai_shots):
    # The planned shot that moves least (establishing) vs the one that moves most (the impact).
    still = min(kai_shots, key=lambda p: p.shot.expected_motion)
    action = max(kai_shots, key=lambda p: p.shot.expected_motion)
    assert action.shot.expected_motion - still.shot.expected_motion >= 0.5
    assert mean_abs_change(frames_for(action, "dynamic-action")) > mean_abs_change(frames_for(still, "dynamic-action"))
    assert mean_abs_change(frames_for(action, "dynamic-action")) > mean_abs_change(frames_for(action, "steady-cinematic"))


def test_unknown_modifier_is_a_clear_error(kai_shots):
    with pytest.raises(ValueError, match="unknown modifier"):
        frames_for(kai_shots[0], "no-such-modifier")


def test_media_store_names_are_safe(tmp_path, kai_shots):
    rel = attempt_dir("scene:1", 2, 3)
    assert rel.as_posix() == "scene_1/shot02/attempt3"
    refs = write_frames(tmp_path, rel, frames_for(kai_shots[0])[:2])
    assert [r.uri for r in refs] == ["scene_1/shot02/attempt3/frame_0000.png", "scene_1/shot02/attempt3/frame_0001.png"]
    assert resolve(tmp_path, refs[0].uri).is_file()
    assert not list((tmp_path / rel).glob(".*.tmp"))
    with pytest.raises(ValueError, match="escapes"):
        resolve(tmp_path, "../../etc/passwd")


async def test_procedural_backend_reports_progress_per_frame(tmp_path, kai_shots):
    from director.refiner import refine as refine_shot
    from render.backends import ProceduralBackend, render

    seen = []

    async def sink(progress):
        seen.append(progress)

    event = refine_shot(kai_shots[1], {}, width=32, height=32, workflow="procedural-v2", learner_version="1")
    rendered = await render(ProceduralBackend(sink), event, tmp_path)
    total = kai_shots[1].shot.frame_count
    assert rendered.status == "ok" and len(rendered.frames) == total
    assert [p.kind for p in seen] == ["started"] + ["progress"] * total + ["finished"]
    assert [p.step for p in seen[1:-1]] == list(range(1, total + 1))
    assert seen[-1].fraction == 1.0 and all(p.scene_id == "scene-kai" and p.attempt == 1 for p in seen)


async def test_a_render_that_cannot_succeed_is_a_failed_event(tmp_path, kai_shots):
    from director.refiner import refine as refine_shot
    from render.backends import ProceduralBackend, render

    event = refine_shot(kai_shots[0], {}, width=32, height=32, workflow="procedural-v2", learner_version="1")
    event = event.model_copy(update={"prompt": event.prompt.model_copy(update={"modifier": "nope"})})
    rendered = await render(ProceduralBackend(), event, tmp_path)
    assert rendered.status == "failed" and "unknown modifier" in rendered.reason and not rendered.frames


def test_frames_are_verified_against_their_digest(tmp_path, kai_shots):
    from render.media import verified

    [ref] = write_frames(tmp_path, attempt_dir("s", 1, 1), frames_for(kai_shots[0])[:1])
    assert verified(tmp_path, ref) == resolve(tmp_path, ref.uri)
    resolve(tmp_path, ref.uri).write_bytes(b"rewritten by another render")
    with pytest.raises(ValueError, match="changed since it was rendered"):
        verified(tmp_path, ref)
    resolve(tmp_path, ref.uri).unlink()
    with pytest.raises(ValueError, match="cannot be read"):
        verified(tmp_path, ref)


def test_the_camera_pans_by_the_prompts_camera_motion_not_by_words(kai_shots):
    planned = max(kai_shots, key=lambda p: p.shot.expected_motion).model_copy(update={"shot": kai_shots[0].shot.model_copy(
        update={"characters": [], "expected_motion": 0.8})})
    refined = refine(planned, {}, width=64, height=48, workflow="procedural-v2", learner_version="1")
    steady = refined.prompt.model_copy(update={"modifier": "dynamic-action"})

    def drift(camera_motion: float) -> float:
        """How far the last frame is from the first, brightness-normalised (flicker and grain aside)."""
        prompt = steady.model_copy(update={"camera_motion": camera_motion})
        frames = render_shot(refined.model_copy(update={"prompt": prompt}))
        first, last = (f.astype(np.float32).mean(axis=2) for f in (frames[0], frames[-1]))
        return float(np.abs(first / first.mean() - last / last.mean()).mean())

    assert drift(1.0) > 3 * drift(0.0), "a tracking camera moves the backdrop away, a static one keeps it"
