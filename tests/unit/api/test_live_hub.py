"""The live hub's fan-out without a broker: records in (as the hub's consumer returns them),
deliveries out per watcher. The real tail, completion and reconnects under load are in
tests/integration/test_live.py."""

from __future__ import annotations

import json

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from api.live_hub import Delivery, LiveHub, decode_cursor
from api.routes.live import _Cursor
from director.planner import plan_scene
from events.envelope import Envelope, new_event_id
from events.models import SceneRequested, ShotPlanned
from events.topics import SCENE_REQUESTED, SHOT_PLANNED, dead_letter_topic
from foundation.settings import Settings

SETTINGS = Settings(topic_prefix="t.")
REQUEST = SceneRequested(scene_id="scene-a", session_id="s", description="Kai fights the dragon",
                         characters=["Kai", "Dragon"])
PLAN = plan_scene(REQUEST, fps=4)


def hub(queue_size: int = 100) -> LiveHub:
    return LiveHub(SETTINGS, max_scenes=8, scene_buffer=1000, queue_size=queue_size)


def record(value, topic: str, offset: int, partition: int = 0, headers: list | None = None) -> ConsumerRecord:
    envelope = Envelope(id=new_event_id(), source="test", type=topic, scene_id=value.scene_id,
                        session_id=value.session_id, value=value)
    return ConsumerRecord(SETTINGS.topic(topic), partition, offset, 0, 0, envelope.key, envelope.encode_value(),
                          None, 0, 0, headers if headers is not None else envelope.headers())


def planned(number: int, scene_id: str = "scene-a") -> ShotPlanned:
    return ShotPlanned(scene_id=scene_id, session_id="s", attempt=1, max_attempts=3, quality_threshold=0.6,
                       shot=PLAN.shots[number - 1], overall_mood=PLAN.overall_mood,
                       lighting_suggestions=PLAN.lighting_suggestions)


def offsets(deliveries: list[Delivery]) -> list[int]:
    return [d.record.offset for d in deliveries if d.record is not None]


def drain(queue) -> list[Delivery]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def test_a_late_watcher_gets_the_past_then_the_live_events_exactly_once() -> None:
    live = hub()
    live._dispatch([[record(REQUEST, SCENE_REQUESTED.name, 10), ]])
    live._dispatch([[record(planned(1), SHOT_PLANNED.name, 20, 1), record(planned(2), SHOT_PLANNED.name, 21, 1)]])
    channel = live.channel("scene-a")
    early_snapshot, early = live.join(channel)
    live._dispatch([[record(planned(3), SHOT_PLANNED.name, 22, 1)]])
    late_snapshot, late = live.join(channel)
    live._dispatch([[record(planned(4), SHOT_PLANNED.name, 23, 1)]])

    assert offsets(early_snapshot) + offsets(drain(early.queue)) == [10, 20, 21, 22, 23]
    assert offsets(late_snapshot) + offsets(drain(late.queue)) == [10, 20, 21, 22, 23]
    # Each delivery is encoded once: every watcher is sent the same bytes.
    assert early_snapshot[0].frame is late_snapshot[0].frame
    last = channel.deliveries[-1]
    assert decode_cursor(last.cursor) == {TopicPartition("t.scene.requested", 0): 11,
                                          TopicPartition("t.shot.planned", 1): 24}


async def test_records_of_a_scene_whose_start_was_not_read_open_no_channel() -> None:
    live = hub()
    live._dispatch([[record(planned(1, "scene-b"), SHOT_PLANNED.name, 5, 2)]])
    assert live.channel("scene-b") is None
    live._dispatch([[record(REQUEST, SCENE_REQUESTED.name, 3)]])
    live._dispatch([[record(planned(1, "scene-b"), SHOT_PLANNED.name, 6, 2)]])
    assert offsets(live.channel("scene-a").deliveries) == [3], "another scene's event leaked into the channel"


async def test_a_slow_watcher_is_told_and_dropped_without_holding_up_the_others() -> None:
    live = hub(queue_size=2)
    live._dispatch([[record(REQUEST, SCENE_REQUESTED.name, 0)]])
    channel = live.channel("scene-a")
    _, slow = live.join(channel)
    _, quick = live.join(channel)
    received = []
    for number in range(1, 5):
        live._dispatch([[record(planned(number), SHOT_PLANNED.name, number, 1)]])
        received += drain(quick.queue)
    assert offsets(received) == [1, 2, 3, 4]
    assert slow.overflowed and slow not in channel.watchers
    # What it was given before it fell behind is intact, in order; nothing was skipped silently.
    assert offsets(drain(slow.queue)) == [1, 2]
    assert live.stats["overflows"] == 1


async def test_a_dead_letter_ends_the_channel_with_failed() -> None:
    live = hub()
    live._dispatch([[record(REQUEST, SCENE_REQUESTED.name, 0)]])
    channel = live.channel("scene-a")
    _, watcher = live.join(channel)
    bad = record(planned(1), SHOT_PLANNED.name, 7, 1)
    dead = ConsumerRecord(dead_letter_topic(SETTINGS.topic(SHOT_PLANNED.name)), 1, 0, 0, 0, bad.key, bad.value, None,
                          0, 0, [("dlq_error_message", b"boom"), ("dlq_error_class", b"ValueError")])
    live._dispatch([[dead]])
    live._dispatch([[record(planned(2), SHOT_PLANNED.name, 8, 1)]])
    got = drain(watcher.queue)
    assert [d.body.split(b"\n")[0] for d in got] == [b"event: dead_letter", b"event: failed"]
    failed = json.loads(got[-1].body.split(b"\n")[1][len(b"data: "):])
    assert failed["reason"] == "boom" and failed["error_class"] == "ValueError"
    assert channel.ended and got[-1].record is None


async def test_a_resumed_cursor_skips_what_it_has_and_never_goes_back() -> None:
    live = hub()
    live._dispatch([[record(REQUEST, SCENE_REQUESTED.name, 0)]])
    live._dispatch([[record(planned(n), SHOT_PLANNED.name, n, 1) for n in (1, 2, 3)]])
    snapshot, _ = live.join(live.channel("scene-a"))
    # Resumed from another process's cursor: it had shot.planned up to offset 2, and more of a
    # partition this channel has not carried.
    other = TopicPartition("t.frame.rendered", 4)
    cursor = _Cursor({TopicPartition("t.shot.planned", 1): 3, other: 9})
    frames = [cursor.frame(d) for d in snapshot]
    assert [f is not None for f in frames] == [True, False, False, True]
    sent = decode_cursor(frames[-1].split(b"\n")[0][len(b"id: "):].decode())
    assert sent[TopicPartition("t.shot.planned", 1)] == 4 and sent[other] == 9
    assert sent[TopicPartition("t.scene.requested", 0)] == 1


async def test_records_dispatched_before_the_history_task_runs_are_not_history_too(monkeypatch) -> None:
    """The poll task can dispatch between a channel opening from history and that history's
    first step: those records go aside, and the history stops where the hub stood at the open."""
    import api.live_hub as live_hub

    live = hub()
    tp = TopicPartition(SETTINGS.topic(SHOT_PLANNED.name), 0)
    log = [record(REQUEST, SHOT_PLANNED.name, 0), record(planned(1), SHOT_PLANNED.name, 1),
           record(planned(2), SHOT_PLANNED.name, 2)]

    async def scene_history(settings, scene_id, *, since_ms, until):
        return [live_hub.decode_record(settings, r) for r in log if r.offset < until[tp]]

    monkeypatch.setattr(live_hub, "scene_history", scene_history)
    live._read_to = {tp: 2}
    channel = live._open_from_history("scene-a", 0)
    live._dispatch([[log[2]]])  # before the history task has run a step
    assert channel.aside, "the live record should wait aside while the history is read"
    await channel.ready.wait()
    assert offsets(channel.deliveries) == [0, 1, 2]


async def test_an_event_the_log_holds_twice_is_delivered_once() -> None:
    live = hub()
    live._dispatch([[record(REQUEST, SCENE_REQUESTED.name, 0)]])
    channel = live.channel("scene-a")
    _, watcher = live.join(channel)
    first = record(planned(1), SHOT_PLANNED.name, 4, 1)
    again = ConsumerRecord(first.topic, 1, 5, 0, 0, first.key, first.value, None, 0, 0, first.headers)
    live._dispatch([[first, again, record(planned(2), SHOT_PLANNED.name, 6, 1)]])
    assert offsets(drain(watcher.queue)) == [4, 6]
    # The cursor still passes the copy: a resumed stream does not read it again.
    assert decode_cursor(channel.deliveries[-1].cursor)[TopicPartition("t.shot.planned", 1)] == 7
