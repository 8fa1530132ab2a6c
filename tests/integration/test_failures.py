"""Bad input is dead-lettered with its reason and origin; a killed worker resumes without duplicates."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import asyncpg
import pytest

pytestmark = pytest.mark.faults
from aiokafka import AIOKafkaProducer

from agents.registry import STAGE_NAMES
from director.planner import plan_scene
from eventlog.follow import SceneFailed, SceneProgress, end_offsets, follow_scene, produce, scene_envelope
from events.envelope import header_map
from events.models import ShotPlanned
from events.topics import TOPICS, dead_letter_topic
from foundation.kafka import read_topic
from store.queries import pattern_table
from tests.integration.harness import until_assembled
from tests.integration.test_pipeline import kai_request, kai_shot_count

# The stage whose input each topic is (the learner also projects every topic).
OWNER = {"scene.requested": "planner", "shot.planned": "refiner", "prompt.refined": "renderer",
         "frame.rendered": "scorer", "quality.scored": "retrier", "feedback.submitted": "learner",
         "scene.assembled": "learner", "scene.reassemble": "editor"}


async def test_malformed_messages_are_dead_lettered_and_consumption_continues(settings, workers):
    workers.start(*STAGE_NAMES)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    sent = {}
    try:
        for spec in TOPICS:
            topic = settings.topic(spec.name)
            not_json = await producer.send_and_wait(topic, b"{this is not json", key=b"bad-scene")
            no_headers = await producer.send_and_wait(
                topic, kai_request("bad-scene").model_dump_json().encode(), key=b"bad-scene"
            )
            sent[spec.name] = (not_json, no_headers)
    finally:
        await producer.stop()

    # The agents keep consuming: a good scene, submitted the way a person does, still goes through.
    submit = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tower", "submit", "Create a scene where Kai fights the dragon",
        "--characters", "Kai,Dragon", "--scene-id", "scene-after-bad-input", "--follow", "--timeout", "240",
        env=workers.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await workers.watch(submit.communicate())
    text = output.decode()
    assert submit.returncode == 0, text
    angles = [s.camera_angle for s in plan_scene(kai_request("x"), fps=settings.render_fps).shots]
    for expected in ("submitted scene-after-bad-input", "shot.planned", "quality.scored", "Shot plan",
                     *angles, "Quality (every attempt", "Pattern updates"):
        assert expected in text, (expected, text)
    workers.assert_alive()
    status = subprocess.run([sys.executable, "-m", "tower", "status", "scene-after-bad-input", "--json"],
                            env=workers.env, capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert [s["shot_number"] for s in report["shots"]] == list(range(1, len(angles) + 1))
    assert report["pattern_updates"] and all(a["final"] is not None for a in report["attempts"] if a["composite"] is not None)

    for spec in TOPICS:
        topic = settings.topic(spec.name)
        # The owner, the learner projecting it, and the editor, which also reads the scores.
        readers = {"learner": 1, "retrier": 3}.get(OWNER[spec.name], 2)
        letters = await read_topic(settings.kafka_bootstrap, dead_letter_topic(topic), expect=2 * readers)
        mine = [r for r in letters if header_map(r.headers)["dlq_consumer"] == OWNER[spec.name]]
        assert len(mine) == 2, (spec.name, [header_map(r.headers) for r in letters])
        not_json, no_headers = sent[spec.name]
        by_offset = {int(header_map(r.headers)["dlq_original_offset"]): r for r in mine}
        bad_json, bad_envelope = by_offset[not_json.offset], by_offset[no_headers.offset]
        for record, meta in ((bad_json, not_json), (bad_envelope, no_headers)):
            headers = header_map(record.headers)
            assert headers["dlq_original_topic"] == topic
            assert int(headers["dlq_original_partition"]) == meta.partition
            assert record.key == b"bad-scene"
        assert bad_json.value == b"{this is not json"  # kept byte for byte
        assert header_map(bad_json.headers)["dlq_error_class"] == "ValidationError"
        assert "invalid" in header_map(bad_json.headers)["dlq_error_message"]
        assert header_map(bad_envelope.headers)["dlq_error_class"] in {"EnvelopeError", "ValidationError"}

    # Following a scene whose event was dead-lettered fails at once, naming the reason.
    with pytest.raises(SceneFailed, match="was dead-lettered by"):
        await follow_scene(settings, "bad-scene", timeout_s=60)

    # A person finds them with `tower dlq`, which exits 1 while there are dead letters.
    shown = subprocess.run([sys.executable, "-m", "tower", "dlq", "prompt.refined"], env=workers.env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1, shown.stderr
    assert "4 dead letter(s)" in shown.stdout and "invalid PromptRefined: attempt: Field required" in shown.stdout  # renderer + learner


async def test_killed_workers_resume_and_nothing_is_applied_twice(settings, workers, tower_env):
    # Offsets are committed only every 10 minutes, so the killed workers have committed nothing:
    # everything they handled is delivered to them again (asserted below), and must change nothing.
    workers.env = {**tower_env, "TOWER_COMMIT_INTERVAL_S": "600"}
    workers.start(*STAGE_NAMES)
    first_score = asyncio.Event()

    def on_event(topic: str, value: object) -> None:
        if topic == "quality.scored":
            first_score.set()

    await produce(settings, [scene_envelope(kai_request("scene-crash", max_attempts=2))])
    follower = asyncio.create_task(follow_scene(settings, "scene-crash", timeout_s=300, on_event=on_event))
    await workers.watch(asyncio.wait_for(first_score.wait(), 240))

    # Mid-scene, once the retry controller has decided a score: the renderer, the learner and
    # the retry controller die without committing their offsets...
    await workers.until_logged("retrier", " handled ")
    for stage in ("renderer", "learner", "retrier"):
        workers.kill(stage)
    await asyncio.sleep(2)
    # ...and come back; the scene completes from where they stopped.
    workers.start("renderer", "learner", "retrier")
    progress: SceneProgress = await workers.watch(follower)
    workers.assert_alive()
    assert len(progress.finals) == progress.shot_count
    # The scene may finish before a restarted worker has rejoined: wait until each has handled
    # again what it handled before the kill (nothing was committed, so it is all redelivered).
    for stage in ("renderer", "learner", "retrier"):
        await workers.until_logged(stage, " handled ", latest=True)
    await workers.watch(until_assembled(settings.kafka_bootstrap, settings.topic("scene.assembled"), "scene-crash"))

    events = {spec.name: await read_topic(settings.kafka_bootstrap, settings.topic(spec.name)) for spec in TOPICS}
    distinct = {name: {header_map(r.headers)["ce_id"] for r in records} for name, records in events.items()}
    scored_ids = distinct["quality.scored"]
    conn = await asyncpg.connect(settings.database_url)
    try:
        for _ in range(150):
            if await conn.fetchval("SELECT count(*) FROM event_log") >= sum(map(len, distinct.values())):
                break
            await asyncio.sleep(0.2)
        # One row per distinct event, however often an event was delivered or produced.
        assert await conn.fetchval("SELECT count(*) FROM event_log") == sum(map(len, distinct.values()))
        assert await conn.fetchval("SELECT count(*) FROM shots") == progress.shot_count
        assert await conn.fetchval("SELECT count(*) FROM scores") == await conn.fetchval(
            "SELECT count(DISTINCT (scene_id, shot_number, attempt)) FROM attempts WHERE render_status IS NOT NULL"
        )
        frame_rows = await conn.fetchval("SELECT count(*) FROM frames")
        assert frame_rows == await conn.fetchval("SELECT count(DISTINCT (scene_id, shot_number, attempt, frame_index)) FROM frames")
        # Each credited quality.scored event (first attempts) taught the patterns once, not once per delivery.
        table = await pattern_table(conn)
        updates = await conn.fetchval("SELECT count(*) FROM pattern_updates")
        assert updates == await conn.fetchval("SELECT count(*) FROM scores WHERE status = 'ok' AND credited")
        assert sum(p.observations for p in table.values()) == updates <= len(scored_ids)
    finally:
        await conn.close()

    # Redelivery really happened: the restarted renderer rendered its inputs again (the same
    # derived frame.rendered ids, produced twice), and the restarted learner handled more
    # messages, in its two lives, than there are distinct events.
    rendered = events["frame.rendered"]
    assert len(rendered) > len(distinct["frame.rendered"]), "the renderer was not redelivered anything"
    handled = sum(path.read_text().count(" handled ") for path in workers.log_dir.glob("learner.*.log"))
    assert handled > sum(map(len, distinct.values())), f"the learner handled {handled} messages: no redelivery"
    decided = sum(path.read_text().count(" handled ") for path in workers.log_dir.glob("retrier.*.log"))
    assert decided > len(scored_ids), f"the retrier handled {decided} scores: no redelivery"
    # Each retry was issued once: one event id per (scene, shot, attempt), however often decided.
    retries: dict[tuple[str, int, int], set[str]] = {}
    for record in events["shot.planned"]:
        planned = ShotPlanned.model_validate_json(record.value)
        if planned.attempt > 1:
            key = (planned.scene_id, planned.shot.shot_number, planned.attempt)
            retries.setdefault(key, set()).add(header_map(record.headers)["ce_id"])
    assert all(len(ids) == 1 for ids in retries.values()), retries


async def test_a_message_too_large_to_dead_letter_whole_leaves_truncated_and_blocks_nothing(settings, workers):
    """Just under the broker's 1,048,588 bytes on scene.requested: the broker takes it, but its
    dead letter (value plus dlq_* headers) would be over the limit. It goes truncated, with the
    original's size and hash, and the planner goes on with the next scene."""
    import hashlib

    from foundation.kafka import ensure_topics

    await ensure_topics(settings)
    workers.start("planner")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=1_048_588)
    await producer.start()
    head, tail = b'{"scene_id": "big", "session_id": "s", "description": "', b'"}'
    poison = head + b"x" * (1_048_200 - len(head) - len(tail)) + tail
    try:
        sent = await producer.send_and_wait(settings.topic("scene.requested"), poison, key=b"big",
                                            headers=[("ce_id", b"big-1"), ("ce_source", b"kcat"),
                                                     ("ce_type", b"tower.scene.requested.v1")])
    finally:
        await producer.stop()
    await produce(settings, [scene_envelope(kai_request("scene-after-poison"))])

    letters = await workers.watch(read_topic(settings.kafka_bootstrap, dead_letter_topic(settings.topic("scene.requested")),
                                             expect=1, timeout_s=60))
    assert len(letters) == 1, "the poison message was not dead-lettered"
    letter = letters[0]
    headers = header_map(letter.headers)
    assert int(headers["dlq_original_offset"]) == sent.offset and headers.get("dlq_truncated") == "true", (headers, len(letter.value))
    assert headers["dlq_original_size"] == str(len(poison))
    assert headers["dlq_original_sha256"] == hashlib.sha256(poison).hexdigest()
    assert poison.startswith(letter.value) and len(letter.value) > 1_000_000 - 10_000
    assert headers["ce_id"] == "big-1" and headers["dlq_error_class"] == "ValidationError"
    shots = kai_shot_count(settings.render_fps)
    planned = await workers.watch(read_topic(settings.kafka_bootstrap, settings.topic("shot.planned"), expect=shots,
                                             timeout_s=60))
    assert {r.key for r in planned} == {f"scene-after-poison/{n}".encode() for n in range(1, shots + 1)}
    assert len(planned) == shots
    workers.assert_alive()


async def test_a_scene_with_a_dead_lettered_event_is_marked_failed_and_not_dead_lettered_twice(settings, workers, tower_env):
    """The learner reads the dead-letter topics: the scene is failed, with the reason, in the
    projections and `tower status`; a replay under a new group dead-letters nothing again."""
    workers.start("planner", "learner")
    good = kai_request("scene-doomed")
    envelope = scene_envelope(good)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:  # a scene.requested of scene-doomed whose headers lie about its type
        bad_headers = [(k, b"tower.something.else.v1" if k == "ce_type" else v) for k, v in envelope.headers()]
        await producer.send_and_wait(settings.topic("scene.requested"), envelope.encode_value(), key=b"scene-doomed",
                                     headers=bad_headers)
    finally:
        await producer.stop()

    deadline = asyncio.get_running_loop().time() + 60
    while True:
        status = subprocess.run([sys.executable, "-m", "tower", "status", "scene-doomed"], env=workers.env,
                                capture_output=True, text=True, timeout=60)
        if "FAILED" in status.stdout or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert status.returncode == 1, (status.stdout, status.stderr)
    assert "FAILED: a" in status.stdout and "scene.requested event" in status.stdout and "EnvelopeError" in status.stdout
    letters = await read_topic(settings.kafka_bootstrap, dead_letter_topic(settings.topic("scene.requested")), expect=2)
    assert sorted(header_map(r.headers)["dlq_consumer"] for r in letters) == ["learner", "planner"]

    # Replay under new groups: the same messages are recognised as dead-lettered already.
    workers.stop_all()
    workers.env = {**tower_env, "TOWER_GROUP_PREFIX": tower_env["TOWER_GROUP_PREFIX"] + "-replay",
                   "TOWER_LEARNER_EMITS_ALERTS": "false"}
    workers.start("planner", "learner")
    from tests.integration.harness import wait_for_group

    topic = settings.topic("scene.requested")
    for stage in ("planner", "learner"):
        await workers.watch(wait_for_group(settings.kafka_bootstrap, f"{workers.env['TOWER_GROUP_PREFIX']}-{stage}",
                                           [topic], timeout_s=60))
    assert len(await read_topic(settings.kafka_bootstrap, dead_letter_topic(topic))) == 2


async def test_dead_letters_are_redriven_once_their_cause_is_fixed(settings, workers, tower_env):
    """The refiner's table is missing (a broken deployment: not an outage, so its shots are
    dead-lettered and the scene is failed); once it is back, `tower dlq redrive` re-publishes
    them and the scene completes."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        from store.migrate import migrate

        await migrate(conn)
        await conn.execute("ALTER TABLE refinements RENAME TO refinements_away")
        workers.env = {**tower_env, "TOWER_HANDLER_RETRIES": "1", "TOWER_HANDLER_BACKOFF_S": "0.05"}
        workers.start(*STAGE_NAMES)
        await produce(settings, [scene_envelope(kai_request("scene-redrive", max_attempts=1))])
        with pytest.raises(SceneFailed, match="UndefinedTableError"):
            await workers.watch(follow_scene(settings, "scene-redrive", timeout_s=120))
        shots = kai_shot_count(settings.render_fps)
        letters = await read_topic(settings.kafka_bootstrap, dead_letter_topic(settings.topic("shot.planned")),
                                   expect=shots, timeout_s=60)
        assert len(letters) == shots, [header_map(r.headers) for r in letters]

        await conn.execute("ALTER TABLE refinements_away RENAME TO refinements")  # the fix
        offsets = await end_offsets(settings)  # follow what comes after the dead letters
        redriven = subprocess.run([sys.executable, "-m", "tower", "dlq", "redrive", "shot.planned"], env=workers.env,
                                  capture_output=True, text=True, timeout=60)
        assert redriven.returncode == 0, redriven.stdout + redriven.stderr
        assert redriven.stdout.count("redriven to") == shots, redriven.stdout
        progress = await workers.watch(follow_scene(settings, "scene-redrive", timeout_s=180, start_offsets=offsets))
    finally:
        await conn.close()
    assert len(progress.finals) == progress.shot_count == shots
    status = subprocess.run([sys.executable, "-m", "tower", "status", "scene-redrive"], env=workers.env,
                            capture_output=True, text=True, timeout=60)
    assert "FAILED" not in status.stdout, status.stdout  # the redriven failures no longer count


async def test_sigterm_ends_a_worker_waiting_out_an_outage_within_its_timeout(settings, workers, tower_env):
    """The learner's database is unreachable: its first event waits the outage out. SIGTERM must
    still end the worker (the event is abandoned, to be redelivered), within TOWER_SHUTDOWN_TIMEOUT_S."""
    import signal
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"postgresql://tower@127.0.0.1:{sock.getsockname()[1]}/tower"
    workers.env = {**tower_env, "TOWER_DATABASE_URL": dead, "TOWER_SHUTDOWN_TIMEOUT_S": "10"}
    workers.start("learner")
    await produce(settings, [scene_envelope(kai_request("scene-outage"))])
    await workers.until_logged("learner", "service unavailable", timeout_s=60)
    process = workers.procs["learner"]
    process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(process.wait, 30)  # the timeout (10 s) with room to spare
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the worker ignored SIGTERM during an outage:\n{workers.tail()}") from None
    assert code in (0, 70), (code, workers.tail())
