import json

import pytest

from events.codec import EventCodec, Malformed, decode_value
from events.envelope import Envelope, EnvelopeError, derive_event_id, header_map, open_envelope
from events.models import SceneRequested, ShotPlanned
from events.schemas import export_schemas
from events.topics import SCENE_REQUESTED, SHOT_PLANNED, SIDE_TOPICS, TOPICS, dead_letter_topic


def envelope_of(request: SceneRequested) -> Envelope:
    return Envelope(
        id="e1", source="tower/test", type=SCENE_REQUESTED.event_type,
        scene_id=request.scene_id, session_id=request.session_id, value=request,
    )


def test_envelope_headers_round_trip(kai_request):
    env = envelope_of(kai_request)
    raw = env.headers()
    names = [name for name, _ in raw]
    for required in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type",
                     "ce_correlationid", "ce_sessionid"):
        assert required in names
    assert all(isinstance(v, bytes) for _, v in raw)
    back = open_envelope(kai_request, raw, expected_type=SCENE_REQUESTED.event_type)
    assert (back.id, back.source, back.scene_id, back.session_id) == ("e1", "tower/test", "scene-kai", "session-1")
    assert back.causation_id is None
    assert env.key == b"scene-kai"


def test_a_shot_event_is_keyed_by_scene_and_shot_so_its_attempts_stay_in_order(kai_shots):
    from events.envelope import scene_of_key

    retry = Envelope(id="e2", source="tower/test", type="t", scene_id="scene-kai", session_id="s",
                     value=kai_shots[1].model_copy(update={"attempt": 2}))
    first = Envelope(id="e1", source="tower/test", type="t", scene_id="scene-kai", session_id="s", value=kai_shots[1])
    assert first.key == retry.key == f"scene-kai/{kai_shots[1].shot.shot_number}".encode()
    assert scene_of_key(first.key) == scene_of_key(b"scene-kai") == "scene-kai"


def test_derived_ids_are_deterministic_and_carry_causation(kai_request, kai_shots):
    env = envelope_of(kai_request)
    first = [env.derive(shot, source="tower/planner", index=i) for i, shot in enumerate(kai_shots)]
    again = [env.derive(shot, source="tower/planner", index=i) for i, shot in enumerate(kai_shots)]
    assert [e.id for e in first] == [e.id for e in again]
    assert len({e.id for e in first}) == len(first)
    assert all(e.causation_id == "e1" and e.type == SHOT_PLANNED.event_type for e in first)
    assert first[0].id == derive_event_id("e1", SHOT_PLANNED.event_type, 0)
    assert dict(header_map(first[0].headers()))["ce_causationid"] == "e1"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([], "missing CloudEvents header"),
        ([("ce_id", b"x"), ("ce_source", b"s"), ("ce_type", b"tower.other.v1")], "is not"),
        ([("ce_id", b"x"), ("ce_source", b"s"), ("ce_type", SCENE_REQUESTED.event_type.encode()),
          ("ce_subject", b"another-scene")], "differs from scene_id"),
    ],
)
def test_bad_headers_are_rejected_with_the_reason(kai_request, headers, message):
    with pytest.raises(EnvelopeError, match=message):
        open_envelope(kai_request, headers, expected_type=SCENE_REQUESTED.event_type)


def test_codec_round_trip_and_malformed_values(kai_request):
    codec = EventCodec(SceneRequested)
    assert codec.loads(codec.dumps(kai_request)) == kai_request
    assert json.loads(codec.dumps(kai_request))["scene_id"] == "scene-kai"  # plain JSON, no metadata

    broken = codec.loads(b"{not json")
    assert isinstance(broken, Malformed) and broken.raw == b"{not json" and "invalid SceneRequested" in broken.reason
    missing = decode_value(SceneRequested, b'{"scene_id": "s", "session_id": "x"}')
    assert isinstance(missing, Malformed) and "description" in missing.reason
    bad_id = decode_value(SceneRequested, b'{"scene_id": "../etc", "session_id": "x", "description": "d"}')
    assert isinstance(bad_id, Malformed) and "scene_id" in bad_id.reason
    assert isinstance(decode_value(SceneRequested, None), Malformed)


def test_unknown_fields_are_ignored_for_additive_evolution(kai_shots):
    data = json.loads(kai_shots[0].model_dump_json())
    data["added_in_a_later_minor_version"] = {"anything": 1}
    assert ShotPlanned.model_validate(data) == kai_shots[0]


def test_topics_are_declared_once_with_dead_letters():
    names = [t.name for t in TOPICS]
    assert names == ["scene.requested", "shot.planned", "prompt.refined", "frame.rendered", "quality.scored",
                     "feedback.submitted", "scene.assembled", "scene.reassemble"]
    assert all(t.event_type.startswith("tower.") and t.event_type.endswith(".v1") for t in TOPICS)
    assert dead_letter_topic("shot.planned") == "shot.planned.dlq"


def test_schema_export_writes_one_valid_schema_per_topic(tmp_path):
    paths = export_schemas(tmp_path)
    assert len(paths) == len(TOPICS) + len(SIDE_TOPICS)  # render.progress, shot.review
    schema = json.loads((tmp_path / "tower.scene.requested.v1.schema.json").read_text())
    assert schema["x-topic"] == "scene.requested"
    assert {"scene_id", "session_id", "description"} <= set(schema["required"])
