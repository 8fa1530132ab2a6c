"""Fast resume: a worker with a stable name (``TOWER_WORKER_ID``) is a static group member, so
after a SIGKILL its restart takes its partitions back at once, where a dynamic member's successor
waits for the dead member's session to expire."""

from __future__ import annotations

import asyncio
import time

from eventlog.follow import produce, scene_envelope
from events.models import SceneRequested
from foundation.kafka import read_topic

# Far longer than the test waits for the restarted worker: only a static member can make it.
SESSION_TIMEOUT_S = 90
WAIT_S = 45


async def planned_scenes(settings, scene: bytes, timeout_s: float) -> bool:
    """Whether ``shot.planned`` carries a shot of ``scene`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        records = await read_topic(settings.kafka_bootstrap, settings.topic("shot.planned"))
        if any(r.key.split(b"/")[0] == scene for r in records):
            return True
        await asyncio.sleep(0.3)
    return False


async def test_a_killed_static_member_resumes_before_its_session_could_expire(settings, workers, tower_env):
    workers.env = {**tower_env, "TOWER_WORKER_ID": "resume-1", "TOWER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}
    workers.start("planner")
    before = SceneRequested(scene_id="scene-before-kill", session_id="s", description="Kai walks at dawn")
    await produce(settings, [scene_envelope(before)])
    assert await workers.watch(planned_scenes(settings, b"scene-before-kill", 60)), "the planner never started"

    workers.kill("planner")  # no LeaveGroup: the member stays registered until its session expires
    workers.start("planner")
    after = SceneRequested(scene_id="scene-after-kill", session_id="s", description="Kai walks at dawn")
    await produce(settings, [scene_envelope(after)])
    assert await workers.watch(planned_scenes(settings, b"scene-after-kill", WAIT_S)), (
        f"the restarted planner did not plan a new scene within {WAIT_S} s (session timeout "
        f"{SESSION_TIMEOUT_S} s): it did not rejoin as the same static member")
