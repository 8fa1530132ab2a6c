"""The API's own logic, in process and without services: planning (a pure endpoint), validation
and problem details, the bearer token, body limits, media paths, SSE cursors, CORS, binding."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import TopicPartition
from fastapi.testclient import TestClient

from api.app import create_app
from api.backends import Backends
from api.routes.live import decode_cursor, encode_cursor
from api.routes.media import media_file
from api.security import check_bind
from foundation.settings import Settings

SEED_BODY = {"session_id": "test", "scene_description": "test scene"}
# Nothing listens here: any request that reached Kafka or PostgreSQL would fail with 503.
NOWHERE = {"kafka_bootstrap": "127.0.0.1:1", "database_url": "postgresql://nobody@127.0.0.1:1/none"}


def client(**overrides) -> TestClient:
    return TestClient(create_app(Settings(**{**NOWHERE, **overrides})), raise_server_exceptions=False)


def test_scene_plan_answers_the_seed_body_with_the_seed_shape():
    response = client().post("/api/director/scene/plan", json=SEED_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_id"] == "test"
    assert body["overall_mood"] and body["lighting_suggestions"]
    first = body["shot_list"][0]
    assert {"shot_number", "camera_angle", "duration", "camera_movement", "characters", "mood"} <= set(first)
    assert [s["shot_number"] for s in body["shot_list"]] == list(range(1, len(body["shot_list"]) + 1))


def test_scene_plan_is_the_planner_agents_plan():
    from director.planner import plan_scene
    from events.models import SceneRequested

    body = {"session_id": "s", "scene_description": "Create a scene where Kai fights the dragon",
            "characters": ["Kai", "Dragon"]}
    answer = client().post("/api/director/scene/plan", json=body).json()
    plan = plan_scene(SceneRequested(scene_id="x", session_id="s", description=body["scene_description"],
                                     characters=body["characters"]), fps=Settings().render_fps)
    assert answer["shot_list"] == [s.model_dump(mode="json") for s in plan.shots]
    assert answer["genre"] == plan.genre == "action"


@pytest.mark.parametrize("body", [
    {"session_id": "test"},
    {"session_id": "test", "scene_description": ""},
    {"session_id": "test", "scene_description": "   "},
    {"session_id": "test", "scene_description": "x" * 2001},
    {"session_id": "test", "scene_description": "ok", "characters": ["c"] * 17},
    {"session_id": "", "scene_description": "ok"},
])
def test_invalid_bodies_are_422_problem_details(body):
    response = client().post("/api/director/scene/plan", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] == "Invalid request"
    assert problem["detail"].startswith("the request is not valid: ") and problem["errors"]
    assert "Traceback" not in response.text


def test_not_json_is_422_and_unknown_routes_404_as_problems():
    app = client()
    broken = app.post("/api/director/scene/plan", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.headers["content-type"] == "application/problem+json"
    missing = app.get("/api/director/nothing-here")
    assert missing.status_code == 404 and missing.json()["detail"].endswith("/docs")
    wrong_method = app.get("/api/director/scene/plan")
    assert wrong_method.status_code == 405 and wrong_method.json()["status"] == 405


def test_writes_need_the_token_401_without_403_wrong():
    app = client(api_token="s3cret")
    body = {**SEED_BODY, "scene_description": "Kai fights the dragon"}
    missing = app.post("/api/director/workflow/integrate", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.headers["content-type"] == "application/problem+json"
    wrong = app.post("/api/director/workflow/integrate", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    basic = app.post("/api/director/feedback/submit", json={}, headers={"Authorization": "Basic czNjcmV0"})
    assert basic.status_code == 401
    # The right token gets past the check: to Kafka, which is not there (503 naming it).
    right = app.post("/api/director/workflow/integrate", json=body, headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 503 and "Kafka" in right.json()["detail"]
    # Reads stay open unless protected; dry runs are reads.
    assert app.post("/api/director/scene/plan", json=SEED_BODY).status_code == 200
    protected = client(api_token="s3cret", api_protect_reads=True)
    assert protected.get("/api/director/sessions").status_code == 401
    assert protected.get("/media/a/b.png").status_code == 401
    assert protected.post("/api/director/scene/plan", json=SEED_BODY).status_code == 401
    assert protected.get("/health").status_code == 200


def test_oversize_bodies_are_413_declared_or_streamed():
    app = client(api_max_body_bytes=4096)
    big = {"session_id": "test", "scene_description": "x" * 5000}
    declared = app.post("/api/director/scene/plan", json=big)
    assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"
    assert "TOWER_API_MAX_BODY_BYTES" in declared.json()["detail"]

    def chunks():
        for _ in range(10):
            yield b"x" * 1000

    streamed = app.post("/api/director/batches", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_services_down_is_503_naming_the_service_and_ready_says_which():
    app = client()
    sessions = app.get("/api/director/sessions")
    assert sessions.status_code == 503 and sessions.json()["service"] == "PostgreSQL"
    assert sessions.headers["retry-after"]
    ready = app.get("/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["kafka"] != "ok" and checks["postgresql"] != "ok"
    assert app.get("/health").json() == {"status": "ok"}


def test_metrics_count_requests_by_route_template_and_status():
    app = client()
    app.post("/api/director/scene/plan", json=SEED_BODY)
    app.get("/api/director/scenes/abc")  # 503 here: no database
    text = app.get("/metrics").text
    assert 'tower_api_requests_total{method="POST",route="/api/director/scene/plan",status="200"} 1.0' in text
    assert 'route="/api/director/scenes/{scene_id}",status="503"' in text
    assert "tower_api_request_seconds_bucket" in text


def test_cors_is_off_unless_an_origin_is_configured():
    preflight = {"Origin": "http://panel.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client().options("/api/director/scene/plan", headers=preflight).headers
    allowed = client(api_cors_origins="http://panel.example").options("/api/director/scene/plan", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "http://panel.example"


def test_cors_origins_setting_reads_a_comma_separated_list(monkeypatch):
    monkeypatch.setenv("TOWER_API_CORS_ORIGINS", "http://a.example, http://b.example")
    assert Settings().api_cors_origins == ["http://a.example", "http://b.example"]


def test_binding_a_network_address_needs_a_token():
    check_bind(Settings(api_host="127.0.0.1"))
    check_bind(Settings(api_host="::1"))
    with pytest.raises(ValueError, match="TOWER_API_TOKEN"):
        check_bind(Settings(api_host="0.0.0.0"))
    check_bind(Settings(api_host="0.0.0.0", api_token="t"))


def test_media_paths_stay_inside_the_store(tmp_path: Path):
    root = tmp_path / "media"
    (root / "scene-1" / "shot01").mkdir(parents=True)
    frame = root / "scene-1" / "shot01" / "frame_0000.png"
    frame.write_bytes(b"\x89PNG")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    (root / "scene-1" / "escape.png").symlink_to(secret)
    (root / "scene-1" / "dir.png").mkdir()
    assert media_file(root, "scene-1/shot01/frame_0000.png") == frame.resolve()
    for refused in ("../secret.png", "scene-1/../../secret.png", str(secret), "/etc/passwd",
                    "scene-1/escape.png", "scene-1/dir.png",
                    "scene-1\\..\\..\\secret.png", "scene-1/shot01/frame_0000.png\x00.png", "", "notes.txt"):
        assert media_file(root, refused) is None, refused


def test_media_route_refuses_traversal_encoded_or_not(tmp_path: Path):
    (tmp_path / "media").mkdir()
    (tmp_path / "outside.png").write_bytes(b"x")
    app = client(media_dir=tmp_path / "media")
    for path in ("/media/../outside.png", "/media/%2e%2e/outside.png", "/media/..%2foutside.png",
                 "/media/%2e%2e%2foutside.png", f"/media/{tmp_path}/outside.png"):
        response = app.get(path)
        assert response.status_code == 404, (path, response.status_code)
        assert response.content != b"x"


def test_sse_cursor_round_trips_and_ignores_what_it_cannot_read():
    positions = {TopicPartition("t.shot.planned", 2): 17, TopicPartition("t.scene.requested", 0): 3}
    assert decode_cursor(encode_cursor(positions)) == positions
    for unreadable in (None, "", "garbage", "c0;x|1|2", "c1;t.shot.planned|x|2"):
        assert decode_cursor(unreadable) == {}


def test_openapi_lists_the_seed_endpoints():
    paths = client().get("/openapi.json").json()["paths"]
    for path in ("/api/director/scene/plan", "/api/director/prompt/enhance", "/api/director/feedback/submit",
                 "/api/director/workflow/integrate", "/api/director/batches", "/api/director/scenes/{scene_id}/events",
                 "/health", "/ready", "/metrics"):
        assert path in paths, path



def test_openapi_shows_the_seed_clients_bodies_as_examples():
    paths = client().get("/openapi.json").json()["paths"]

    def examples(path: str) -> list[dict]:
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]
        return [example["value"] for example in body["examples"].values()]

    feedback = examples("/api/director/feedback/submit")
    assert {"session_id": "test", "quality_scores": {"ssim": 0.85, "consistency": 0.90}} in feedback
    assert any("scene_id" in e and "shot_number" not in e for e in feedback), "a scene-level example"
    assert any("shot_number" in e for e in feedback), "today's shot-level example"
    enhance = examples("/api/director/prompt/enhance")
    assert {"session_id": "test", "prompt": "Kai fights the dragon"} in enhance
    assert any("scene_description" in e for e in enhance)


@pytest.mark.parametrize(("path", "body", "says"), [
    ("/api/director/feedback/submit", {"quality_scores": {"ssim": 0.85}}, "scene_id, or session_id"),
    ("/api/director/feedback/submit", {"session_id": "s", "attempt": 2, "rating": 3}, "attempt needs shot_number"),
    ("/api/director/feedback/submit", {"session_id": "s"}, "give a rating"),
    ("/api/director/prompt/enhance", {"session_id": "s"}, "scene_description (or as prompt"),
    ("/api/director/prompt/enhance", {"session_id": "s", "prompt": " "}, "body.prompt"),
])
def test_seed_shaped_bodies_that_name_nothing_are_422_saying_what_to_send(path, body, says):
    response = client().post(path, json=body)
    assert response.status_code == 422 and says in response.json()["detail"], response.text


def test_seed_shaped_bodies_are_valid_and_scene_description_wins_over_prompt():
    from api.models import EnhanceRequest, FeedbackRequest

    seed = FeedbackRequest.model_validate({"session_id": "s", "quality_scores": {"ssim": 0.85, "consistency": 0.90}})
    assert seed.scope == "scene" and seed.scene_id is None
    assert FeedbackRequest.model_validate({"scene_id": "scene-1", "shot_number": 1, "rating": 2}).scope == "shot"
    assert EnhanceRequest.model_validate({"session_id": "s", "prompt": "Kai fights"}).scene_description == "Kai fights"
    both = EnhanceRequest.model_validate({"session_id": "s", "prompt": "Kai fights", "scene_description": "Mika naps"})
    assert both.scene_description == "Mika naps"
    # Past validation, the seed's bodies reach the database (here: nothing listens, so 503).
    assert client().post("/api/director/prompt/enhance", json={"session_id": "s", "prompt": "Kai"}).status_code == 503


def test_protected_reads_take_the_token_as_a_query_parameter_for_browsers():
    app = client(api_token="s3cret", api_protect_reads=True, media_dir=Path("/nonexistent"))
    assert app.get("/media/a/b.png?access_token=nope").status_code == 403
    assert app.get("/media/a/b.png?access_token=s3cret").status_code == 404  # past the check: no such file
    # Writes still need the header.
    assert app.post("/api/director/workflow/integrate?access_token=s3cret", json=SEED_BODY).status_code == 401


def test_scene_plan_honours_a_target_length_and_reports_what_it_found():
    body = {"session_id": "s", "scene_description": "Kai fights the dragon while Mika watches", "characters": ["Kai"],
            "target_duration_s": 12}
    plan = client().post("/api/director/scene/plan", json=body).json()
    assert abs(sum(s["duration"] for s in plan["shot_list"]) - 12) <= 0.5
    assert "Mika" in plan["detected_characters"] and plan["notes"]
    assert client().post("/api/director/scene/plan", json={**body, "target_duration_s": 0.5}).status_code == 422


class ProjectedAfter(Backends):
    """Backends whose reads find ``value`` from the ``reads``-th on: a scene the learner projects
    while the API waits (the waiting itself is the real one, :meth:`Backends.query_until_found`)."""

    def __init__(self, reads: int, value: object) -> None:
        super().__init__(Settings(**NOWHERE))
        self.found_from, self.value, self.reads = reads, value, 0

    async def query(self, read):  # noqa: ANN001, ANN201 - the read is not run: there is no database
        self.reads += 1
        return self.value if self.reads >= self.found_from else None


def test_a_read_asked_to_wait_answers_once_the_session_is_projected():
    app = create_app(Settings(**NOWHERE, api_scene_wait_s=5))
    session = {"session_id": "s1", "created_at": "2025-01-02T03:00:00Z", "scene_count": 0, "scenes": []}
    app.state.backends = ProjectedAfter(3, session)
    waited = TestClient(app).get("/api/director/sessions/s1", params={"wait": 5})
    assert waited.status_code == 200 and waited.json()["session_id"] == "s1" and app.state.backends.reads == 3

    app.state.backends = ProjectedAfter(3, session)
    assert TestClient(app).get("/api/director/sessions/s1").status_code == 404  # no wait asked: one read
    assert app.state.backends.reads == 1


def test_the_wait_is_bounded_by_the_scene_wait_setting():
    app = create_app(Settings(**NOWHERE, api_scene_wait_s=0.3))
    app.state.backends = ProjectedAfter(1, None)  # never projected
    missing = TestClient(app, raise_server_exceptions=False).get("/api/director/scenes/nope", params={"wait": 60})
    # It read again (it waited), a few times at 0.1 s apart: the 60 s asked for was cut to the setting's 0.3 s
    # (uncut, it would have read some 600 times).
    assert missing.status_code == 404 and 1 < app.state.backends.reads < 50
    assert client().get("/api/director/scenes/nope", params={"wait": 61}).status_code == 422


def test_a_scenes_render_preset_is_one_of_the_shipped_ones():
    from api.models import IntegrateRequest, scene_request

    app = client()
    unknown = app.post("/api/director/workflow/integrate", json={**SEED_BODY, "render_preset": "anime-sd3"})
    assert unknown.status_code == 422 and "render_preset" in unknown.text and "anime-sd15" in unknown.text
    body = IntegrateRequest.model_validate({**SEED_BODY, "scene_description": "Kai", "render_preset": "anime-ref",
                                            "max_render_seconds": 90})
    assert scene_request(body).render_preset == "anime-ref" and scene_request(body).max_render_seconds == 90


def test_a_plan_without_a_readable_history_says_why_it_has_no_eta():
    plan = client().post("/api/director/scene/plan", json=SEED_BODY)
    assert plan.status_code == 200
    body = plan.json()
    assert body["eta"] is None and body["eta_note"].startswith("no ETA: the history is not readable")
