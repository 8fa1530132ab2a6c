"""A scene's render budget stops the escalation ladder: through the real pipeline, the attempt the
refiner finds over budget is its shot's last, the shot goes to review saying why, and the scene
still finishes."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from agents.registry import STAGE_NAMES
from eventlog.follow import follow_scene, produce, scene_envelope
from events.models import ShotReviewRequested
from events.topics import SHOT_REVIEW
from foundation.kafka import read_topic
from tests.integration.test_pipeline import kai_request


async def reviews_of(settings, scene_id: str, count: int, timeout_s: float = 60) -> dict[int, ShotReviewRequested]:
    """The scene's review requests by shot, once ``count`` are there (the retry controller sends
    each just after the score that ends its shot)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_topic(settings.kafka_bootstrap, settings.topic(SHOT_REVIEW.name))
        reviews = [ShotReviewRequested.model_validate_json(r.value) for r in records]
        found = {r.shot_number: r for r in reviews if r.scene_id == scene_id}
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} of {count} review requests after {timeout_s} s")
        await asyncio.sleep(0.2)


async def test_a_spent_render_budget_ends_each_shot_at_the_attempt_it_stopped(settings, workers):
    workers.start(*STAGE_NAMES)
    # Nothing passes (threshold 1), so without the budget every shot would take all three attempts.
    request = kai_request("scene-budget", max_attempts=3, quality_threshold=1.0, max_render_seconds=0.001)
    await produce(settings, [scene_envelope(request)])
    progress = await workers.watch(follow_scene(settings, "scene-budget", timeout_s=240))
    workers.assert_alive()

    scored = defaultdict(list)
    for topic, value in progress.events:
        if topic == "quality.scored":
            scored[value.shot.shot_number].append(value)
    stopped = {n: [a for a in attempts if a.prompt.budget_stop] for n, attempts in scored.items()}
    assert any(stopped.values()), "no attempt was stopped by a budget the first render already spent"
    for number, attempts in scored.items():
        attempts.sort(key=lambda a: a.attempt)
        if stopped[number]:
            # The stopped attempt is the shot's last, and it is the final one the scene counts.
            assert attempts[-1].prompt.budget_stop and len(stopped[number]) == 1, [a.attempt for a in attempts]
            assert progress.finals[number].attempt == attempts[-1].attempt
            assert "render budget of 0.001 s is spent" in attempts[-1].prompt.budget_stop
        else:
            assert attempts[-1].attempt == 3
    assert sum(len(a) for a in scored.values()) < 3 * len(scored)

    by_shot = await reviews_of(settings, "scene-budget", len(scored))
    assert set(by_shot) == set(scored), "every shot that did not pass goes to review"
    for number, attempts in stopped.items():
        if attempts:
            assert by_shot[number].reason.startswith("the scene's render budget of 0.001 s is spent")
