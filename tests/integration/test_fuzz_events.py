"""Event fuzzing through the real agents: events generated from the exported JSON Schemas (by
Schemathesis's Hypothesis engine), then mutated (types, missing fields, sizes up to and past the
broker's limit, bytes that are not UTF-8, headers missing or wrong, tombstones): over 5,000
messages across the six input topics. Every bad message is dead-lettered with a reason by every
stage that reads its topic, every good one is processed, no worker crashes, and every consumer
group ends with lag 0.

The renderer is not started: a valid ``prompt.refined`` may ask for 600 frames of 4096×4096,
which is a valid, very long render rather than a fuzzing finding. Its topic is still fuzzed
(the learner reads it), and its decode and dead-letter path is the same runtime as every stage's.
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import hypothesis
import pytest
import schemathesis
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import HealthCheck, Phase

from events.codec import Malformed, decode_value
from events.envelope import EnvelopeError, header_map, open_envelope
from events.topics import TOPICS, TopicSpec, dead_letter_topic
from foundation.kafka import ensure_topics, read_topic
from tests.integration.harness import wait_for_group

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MESSAGES = 5_000
VALID_PER_TOPIC = 80  # generated bodies per topic, reused under different mutations
BROKER_LIMIT = 1_048_588
# Which running stage reads which topic (the learner reads every topic; the retry controller the scores).
READERS = {"scene.requested": ("planner", "learner"), "shot.planned": ("refiner", "learner"),
           "prompt.refined": ("learner",), "frame.rendered": ("scorer", "learner"),
           "quality.scored": ("learner", "retrier", "editor"), "feedback.submitted": ("learner",),
           "scene.assembled": ("learner",), "scene.reassemble": ("editor", "learner")}
DECODE_FAULTS = {"ValidationError", "EnvelopeError", "EmptyValue"}


@dataclass
class Fuzzed:
    spec: TopicSpec
    kind: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    event_id: str
    good: bool = False
    opened_id: str = ""  # the event id as the contract reads it from the headers
    partition: int = -1
    offset: int = -1


def generated_events(seed: int) -> dict[str, list[dict[str, Any]]]:
    """Valid event bodies per topic, generated from each model's JSON Schema."""
    paths, components = {}, {}
    for spec in TOPICS:
        schema = spec.model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[spec.model.__name__] = schema
        paths[f"/{spec.name}"] = {"post": {
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{spec.model.__name__}"}}}},
            "responses": {"200": {"description": "ok"}}}}
    document = {"openapi": "3.1.0", "info": {"title": "Tower events", "version": "1"}, "paths": paths,
                "components": {"schemas": components}}
    bodies: dict[str, list[dict[str, Any]]] = {}
    for result in schemathesis.openapi.from_dict(document).get_all_operations():
        operation = result.ok()
        found: list[dict[str, Any]] = []

        @hypothesis.settings(max_examples=VALID_PER_TOPIC, derandomize=True, database=None, deadline=None,
                             phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @hypothesis.seed(seed)
        @hypothesis.given(case=operation.as_strategy())
        def collect(case: schemathesis.Case) -> None:
            found.append(case.body)

        collect()
        bodies[operation.path.lstrip("/")] = found
    return bodies


def good_headers(spec: TopicSpec, event_id: str, scene_id: Any) -> list[tuple[str, bytes]]:
    headers = [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_source", b"fuzz"),
               ("ce_type", spec.event_type.encode()), ("content-type", b"application/json")]
    if isinstance(scene_id, str):
        headers.append(("ce_subject", scene_id.encode("utf-8", "surrogatepass")))
    return headers


def mutate(rng: random.Random, spec: TopicSpec, body: dict[str, Any]) -> Fuzzed:
    event_id = str(uuid.UUID(int=rng.getrandbits(128)))
    body = copy.deepcopy(body)
    kind = rng.choices(
        ["valid", "headers", "type", "missing", "garbage", "tombstone", "header-bytes", "big-string", "not-object"],
        weights=[30, 14, 15, 10, 10, 5, 6, 5, 5])[0]
    headers = good_headers(spec, event_id, body.get("scene_id"))
    value: bytes | None
    if kind == "headers":
        broken = rng.choice(["none", "no-id", "wrong-type", "subject"])
        headers = {"none": [], "no-id": [h for h in headers if h[0] != "ce_id"],
                   "wrong-type": [(n, b"tower.other.v1" if n == "ce_type" else v) for n, v in headers],
                   "subject": [h for h in headers if h[0] != "ce_subject"] + [("ce_subject", b"another-scene")]}[broken]
    elif kind == "type":
        field = rng.choice(sorted(body))
        body[field] = rng.choice([[], {}, 12345678901234567890, "text", -1, True, None, 1.5e308, [{"x": 1}]])
    elif kind == "missing":
        del body[rng.choice(sorted(body))]
    elif kind == "header-bytes":
        name = rng.choice(["ce_source", "ce_type", "ce_id", "x-trace"])
        headers = [h for h in headers if h[0] != name] + [(name, bytes(rng.getrandbits(8) | 0x80 for _ in range(8)))]
    elif kind == "big-string":
        strings = sorted(k for k, v in body.items() if isinstance(v, str))
        if strings:
            body[rng.choice(strings)] = "x" * rng.choice([2_001, 70_000, 300_000])
    if kind == "garbage":
        value = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    elif kind == "tombstone":
        value = None
    elif kind == "not-object":
        value = json.dumps(rng.choice([[body], 42, "a string", None])).encode()
    else:
        value = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    key = body.get("scene_id") if isinstance(body.get("scene_id"), str) else "fuzz"
    return Fuzzed(spec, kind, key.encode("utf-8", "surrogatepass")[:200], value, headers, event_id)


def is_good(message: Fuzzed) -> bool:
    """The contract's own verdict: the value decodes to the topic's model and the envelope opens."""
    decoded = decode_value(message.spec.model, message.value)
    if isinstance(decoded, Malformed):
        return False
    try:
        message.opened_id = open_envelope(decoded, message.headers, expected_type=message.spec.event_type).id
    except EnvelopeError:
        return False
    return True


def build(seed: int) -> list[Fuzzed]:
    rng = random.Random(seed)
    bodies = generated_events(seed)
    messages = []
    for index in range(MESSAGES):
        spec = TOPICS[index % len(TOPICS)]
        messages.append(mutate(rng, spec, rng.choice(bodies[spec.name])))
    # At the broker's size limit (its dead letter must be truncated), and past it (refused).
    for size in (BROKER_LIMIT - 600, BROKER_LIMIT - 900):
        messages.append(Fuzzed(TOPICS[0], "near-limit", b"fuzz", b"{" + b"x" * size, good_headers(TOPICS[0], str(uuid.uuid4()), None), ""))
    for message in messages:
        message.good = is_good(message)
    return messages


async def test_fuzzed_events_are_processed_or_dead_lettered_and_nothing_stalls(settings, workers, tower_env):
    messages = build(seed=2026)
    assert len(messages) > MESSAGES and 0.15 < sum(m.good for m in messages) / len(messages) < 0.7
    workers.env = {**tower_env, "TOWER_HANDLER_RETRIES": "1", "TOWER_HANDLER_BACKOFF_S": "0.01"}
    await ensure_topics(settings)
    workers.start("planner", "refiner", "scorer", "learner", "retrier", "editor")

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=2_000_000,
                                linger_ms=5)
    await producer.start()
    try:
        deliveries = [await producer.send(settings.topic(m.spec.name), m.value, key=m.key, headers=m.headers)
                      for m in messages]
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        # Past the broker's limit: refused by the broker at once, so never silently lost.
        too_big = await producer.send(settings.topic("scene.requested"), b"x" * (BROKER_LIMIT + 10_000), key=b"fuzz")
        with pytest.raises(MessageSizeTooLargeError):
            await too_big
    finally:
        await producer.stop()
    failed_sends = [(m.kind, r) for m, r in zip(messages, results, strict=True) if isinstance(r, Exception)]
    assert not failed_sends, failed_sends[:5]
    for message, meta in zip(messages, results, strict=True):
        message.partition, message.offset = meta.partition, meta.offset

    # Lag 0 for every group, in causal order (stages produce to each other's topics).
    topic = settings.topic
    for stage, names in (("planner", ["scene.requested"]), ("scorer", ["frame.rendered"]),
                         ("learner", [spec.name for spec in TOPICS]), ("retrier", ["quality.scored"]),
                         ("editor", ["quality.scored", "scene.reassemble"]), ("learner", [spec.name for spec in TOPICS]),
                         ("refiner", ["shot.planned"]),
                         ("learner", [spec.name for spec in TOPICS])):
        await workers.watch(wait_for_group(settings.kafka_bootstrap, settings.app_id(stage),
                                           [topic(n) for n in names], timeout_s=900))
    workers.assert_alive()

    letters: dict[tuple[str, int, int], dict[str, dict[str, str]]] = {}
    for spec in TOPICS:
        for record in await read_topic(settings.kafka_bootstrap, dead_letter_topic(topic(spec.name)), timeout_s=10):
            h = header_map(record.headers)
            origin = (h["dlq_original_topic"], int(h["dlq_original_partition"]), int(h["dlq_original_offset"]))
            letters.setdefault(origin, {})[h["dlq_consumer"]] = {**h, "_truncated": h.get("dlq_truncated", "")}
    conn = await asyncpg.connect(settings.database_url)
    try:
        projected = {r["event_id"] for r in await conn.fetch("SELECT event_id FROM event_log")}
    finally:
        await conn.close()

    problems, good_but_dead = [], Counter()
    for m in messages:
        mine = letters.get((topic(m.spec.name), m.partition, m.offset), {})
        if not m.good:
            for reader in READERS[m.spec.name]:
                letter = mine.get(reader)
                if letter is None or not letter.get("dlq_error_message"):
                    problems.append(f"{m.kind} on {m.spec.name}@{m.partition}:{m.offset} not dead-lettered by {reader}")
            if m.kind == "near-limit" and any(not letter["_truncated"] for letter in mine.values()):
                problems.append(f"near-limit message at {m.offset} dead-lettered without truncation")
        else:
            learner = mine.get("learner")
            if m.opened_id not in projected and learner is None:
                problems.append(f"good {m.kind} {m.spec.name} {m.event_id} neither projected nor dead-lettered")
            for reader, letter in mine.items():
                if letter["dlq_error_class"] in DECODE_FAULTS:
                    problems.append(f"good {m.spec.name}@{m.offset} refused by {reader}: {letter['dlq_error_message']}")
                good_but_dead[f"{reader}: {letter['dlq_error_class']}: {letter['dlq_error_message'][:90]}"] += 1
    kinds = Counter((m.kind, m.good) for m in messages)
    kinds_of_problems = Counter(p.split(" ")[0] + " " + p.split(" ")[1] for p in problems)
    assert not problems, f"{len(problems)} problem(s) {dict(kinds_of_problems)}, e.g. {problems[:8]}\nmessages: {kinds}"
    # Every event the contract accepts, every stage can handle: what a stage cannot store (NUL
    # characters, integers past PostgreSQL's, index keys past its limit) is refused by the contract.
    assert not good_but_dead, f"valid events a stage still failed on: {dict(good_but_dead)}"
    print(f"{len(messages)} messages {dict(kinds)}")
