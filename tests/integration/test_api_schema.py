"""Property-based test of the HTTP API against its own OpenAPI document (Schemathesis).

The real ``tower api`` process over real Kafka and PostgreSQL, with a scene seeded through the
five agents first, so reads of existing ids return real rows. Every operation in
``/openapi.json`` gets up to MAX_EXAMPLES generated cases (positive data, derandomized so a run
is reproducible), plus explicit cases over the seeded ids; each response is checked for: no 5xx,
a documented status code, a documented content type, a body that conforms to the documented
schema, and documented headers. Failures are collected per (operation, check, status) and
listed together at the end, each with the curl command that reproduces it.

The API bugs this test found (FIXED_BUGS) are reproduced one by one by
``test_fixed_api_bug_stays_fixed``: each request must now be answered as documented.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents.registry import STAGE_NAMES
from tower.testing import ApiServer, StageProcesses, start_api

MAX_EXAMPLES = 25  # generated cases per operation (Hypothesis stops earlier when the input space is smaller)
REQUEST_TIMEOUT_S = 15
SEED_TIMEOUT_S = 240
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SEED_BODY = {"session_id": "schema", "scene_description": "Create a scene where Kai fights the dragon",
             "characters": ["Kai", "Dragon"]}
DONE = ("complete", "needs_review")
NDJSON = "application/x-ndjson"
JSON = "application/json"


# `POST /api/director/batches` also accepts a JSONL upload, declared as a plain string: send the
# generated string as the body, unchanged (generated strings are rarely JSONL: they must get 422).
@schemathesis.serializer(NDJSON)
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


@dataclass(frozen=True)
class FixedBug:
    """An API bug this test found (since fixed): how to reproduce it, and the fuzz failures it
    caused (``explains(operation label, check title, status)``), kept for the record."""

    summary: str
    method: str
    path: str
    case: dict[str, Any]
    checks: list[Callable] = field(default_factory=lambda: CHECKS)
    expect_status: tuple[int, ...] = ()
    explains: Callable[[str, str, int | None], bool] = lambda label, check, status: False
    # Send the request once first, and check the second answer once the learner has projected
    # the scene the first one submitted (``case["body"]["scene_id"]``).
    resend_after_projection: bool = False


FIXED_BUGS: dict[str, FixedBug] = {
    # Every 422 is an RFC 9457 problem (application/problem+json, `detail` a string, `errors` a
    # list), but the document keeps FastAPI's default 422: application/json HTTPValidationError.
    "422-documented-as-HTTPValidationError": FixedBug(
        "422 answers application/problem+json; the OpenAPI document says application/json HTTPValidationError",
        "POST", "/api/director/scene/plan", {"body": {"session_id": "s", "scene_description": " "}, "media_type": JSON},
        checks=[content_type_conformance, response_schema_conformance],
        explains=lambda label, check, status: status == 422 and check == "Undocumented Content-Type",
    ),
    # openapi_extra replaces the request body, so FastAPI documents no 422 (nor 409, 413, 415).
    "batches-error-statuses-undocumented": FixedBug(
        "POST /api/director/batches documents only 202; it answers 422 (and 409, 413, 415)",
        "POST", "/api/director/batches", {"body": {"scenes": [{}]}, "media_type": JSON},
        checks=[status_code_conformance],
        explains=lambda label, check, status: (label == "POST /api/director/batches"
                                              and check == "Undocumented status code"
                                              and status in (409, 413, 415, 422)),
    ),
    # The 409 for a used scene_id is raised by the route but not declared in `responses`.
    "integrate-409-undocumented": FixedBug(
        "POST /api/director/workflow/integrate answers 409 for a used scene_id; it documents only 202 and 422",
        "POST", "/api/director/workflow/integrate",
        {"body": {"session_id": "schema", "scene_description": "Kai rests", "scene_id": "scene-used"},
         "media_type": JSON},
        checks=[status_code_conformance], expect_status=(409,), resend_after_projection=True,
        explains=lambda label, check, status: (label == "POST /api/director/workflow/integrate"
                                              and check == "Undocumented status code" and status == 409),
    ),
    # asyncpg raises CharacterNotInRepertoireError for a NUL in a text parameter; not caught.
    "nul-in-scene-id-500": FixedBug(
        "GET /api/director/scenes/%00 answers 500 (also sessions/%00, batches/%00, scenes/%00/events)",
        "GET", "/api/director/scenes/{scene_id}", {"path_parameters": {"scene_id": "\x00"}},
        checks=[not_a_server_error], expect_status=(404, 422),
    ),
    "nul-in-session-id-500": FixedBug(
        "GET /api/director/sessions/%00 answers 500",
        "GET", "/api/director/sessions/{session_id}", {"path_parameters": {"session_id": "a\x00b"}},
        checks=[not_a_server_error], expect_status=(404, 422),
    ),
    # json.loads raises RecursionError (not JSONDecodeError) on a deeply nested line.
    "jsonl-deep-nesting-500": FixedBug(
        "POST /api/director/batches with a JSONL line of 100 000 '[' answers 500 (RecursionError)",
        "POST", "/api/director/batches", {"body": "[" * 100_000, "media_type": NDJSON},
        checks=[not_a_server_error], expect_status=(422,),
    ),
    # Accepted with 202, but PostgreSQL cannot store the NUL: the learner dead-letters the
    # scene.requested event, so the scene the 202 links to never appears.
    "nul-in-text-accepted": FixedBug(
        "POST /api/director/workflow/integrate accepts a NUL in session_id (202); the learner dead-letters it",
        "POST", "/api/director/workflow/integrate",
        {"body": {"session_id": "a\x00b", "scene_description": "Kai rests"}, "media_type": JSON},
        checks=[not_a_server_error], expect_status=(422,),
    ),
}


@pytest.fixture
def schema_api(tower_env: dict[str, str], tmp_path: Path) -> Iterator[ApiServer]:
    """The API process like ``api_server``, but with TOWER_API_SCENE_WAIT_S=0.

    ``GET /scenes/{scene_id}/events`` waits TOWER_API_SCENE_WAIT_S (20 s by default) for a scene
    submitted a moment ago before answering 404; generated ids are unknown, so with the default
    every generated case of that operation would take 5 s. With 0 it answers 404 at once, so the
    operation is generated like every other one (and the seeded, finished scene is streamed by
    an explicit case: its stream ends with `complete`)."""
    server = start_api({**tower_env, "TOWER_API_SCENE_WAIT_S": "0"}, tmp_path / "api.log")
    yield server
    server.stop()


def load_schema(server: ApiServer) -> schemathesis.BaseSchema:
    """The API's document, with an explicit configuration (no schemathesis.toml is looked for):
    an event stream is read to its end (the seeded scene's has more than the default 20 events),
    and reports show the ids sent (a test token only; `session_id` would read [Filtered])."""
    config = schemathesis.Config.from_dict({"max-stream-events": 10_000,
                                            "output": {"sanitization": {"enabled": False}}})
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


def wait_for_scene(client: httpx.Client, scene_id: str, workers: StageProcesses) -> dict[str, Any]:
    """The scene's detail once every shot is final: ``complete`` (all passed) or ``needs_review``
    (some ran out of attempts under the threshold; the procedural renderer often does)."""
    deadline = time.monotonic() + SEED_TIMEOUT_S
    last: Any = None
    while time.monotonic() < deadline:
        workers.assert_alive()
        response = client.get(f"/api/director/scenes/{scene_id}")
        if response.status_code == 200:
            detail = response.json()
            if detail["scene"]["status"] in DONE:
                return detail
            last = detail["scene"]
        else:
            last = (response.status_code, response.text[:300])
        time.sleep(0.5)
    pytest.fail(f"seeded scene {scene_id} not done ({' or '.join(DONE)}) within {SEED_TIMEOUT_S} s; "
                f"last answer: {last}\n{workers.tail()}")


class Validator:
    """Sends cases to the API and collects every check failure, keyed by (operation, check, status)."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.session = requests.Session()
        self.headers = {"Authorization": f"Bearer {server.token}"}
        self.failures: dict[tuple[str, str, int | None], str] = {}
        self.counts: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = {}

    def __call__(self, case: schemathesis.Case, checks: list[Callable] = CHECKS,
                 expect_status: tuple[int, ...] = ()) -> requests.Response | None:
        label = case.operation.label
        self.counts[label] += 1
        curl = case.as_curl_command(headers=self.headers)
        try:
            response = case.call(base_url=self.server.url, session=self.session, headers=self.headers,
                                 timeout=REQUEST_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a transport error fails this case, not the whole run
            self.record(label, type(exc).__name__, None, f"{exc}\n{curl}")
            return None
        self.statuses.setdefault(label, Counter())[response.status_code] += 1
        if expect_status and response.status_code not in expect_status:
            self.record(label, f"expected status {'/'.join(map(str, expect_status))}", response.status_code,
                        f"{response.text[:500]}\n{curl}")
        try:
            case.validate_response(response, checks=checks, headers=self.headers,
                                   transport_kwargs={"base_url": self.server.url})
        except FailureGroup as group:
            for failure in group.exceptions:
                self.record(label, failure.title, response.status_code, str(group))
        except Failure as failure:
            self.record(label, failure.title, response.status_code, str(failure))
        return response

    def record(self, label: str, check: str, status: int | None, report: str) -> None:
        self.failures.setdefault((label, check, status), report)

    def regressions(self) -> dict[tuple, str]:
        """The failures, each labelled with the fixed bug that caused it before, if one did."""
        return {(*key, next((name for name, bug in FIXED_BUGS.items() if bug.explains(*key)), "new")): report
                for key, report in self.failures.items()}


def report(failures: dict[tuple, str]) -> str:
    return "\n\n".join(f"=== {' | '.join(map(str, key))}\n{text}" for key, text in sorted(failures.items(), key=str))


def generate(operation: schemathesis.APIOperation, validate: Validator) -> None:
    """Up to MAX_EXAMPLES generated cases of ``operation``, each validated; failures are collected,
    not raised, so Hypothesis neither stops at the first one nor shrinks."""

    @hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        validate(case)

    run()


def test_every_operation_conforms_to_the_openapi_document(schema_api, workers):
    workers.start(*STAGE_NAMES)
    started = time.monotonic()
    with httpx.Client(base_url=schema_api.url, headers={"Authorization": f"Bearer {schema_api.token}"},
                      timeout=30) as client:
        accepted = client.post("/api/director/workflow/integrate", json=SEED_BODY)
        assert accepted.status_code == 202, accepted.text
        scene_id = accepted.json()["scene_id"]
        detail = wait_for_scene(client, scene_id, workers)
    seeded_s = time.monotonic() - started
    # The seed is done: stop the stages that plan, refine, render and score, so the scenes that
    # generated `workflow/integrate` cases submit do not load the machine during the run; the
    # learner goes on projecting them, so the generated reads see them too.
    for stage in STAGE_NAMES:
        if stage != "learner":
            workers.kill(stage)

    schema = load_schema(schema_api)
    validate = Validator(schema_api)

    # Explicit cases over the seeded data (generated ids are almost always unknown: 404).
    shot = detail["shots"][0]
    frame = next(f for s in detail["shots"] for a in s["attempts"] for f in a["frames"])
    kai = {"session_id": "schema", "scene_description": SEED_BODY["scene_description"], "characters": ["Kai", "Dragon"]}
    explicit: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/api/director/scenes/{scene_id}", {"path_parameters": {"scene_id": scene_id}}, 200),
        ("GET", "/api/director/scenes/{scene_id}/events", {"path_parameters": {"scene_id": scene_id}}, 200),
        ("GET", "/api/director/scenes/{scene_id}/events", {"path_parameters": {"scene_id": "scene-unknown"}}, 404),
        ("GET", "/api/director/sessions/{session_id}", {"path_parameters": {"session_id": "schema"}}, 200),
        ("GET", "/api/director/sessions", {"query": {"limit": 5}}, 200),
        ("GET", "/media/{path}", {"path_parameters": {"path": frame["url"].removeprefix("/media/")}}, 200),
        ("GET", "/api/director/patterns", {}, 200),
        ("GET", "/api/director/trends", {"query": {"by": "pattern", "days": 7}}, 200),
        ("GET", "/api/director/trends", {"query": {"by": "workflow"}}, 200),
        ("POST", "/api/director/scene/plan", {"body": kai, "media_type": JSON}, 200),
        ("POST", "/api/director/prompt/enhance", {"body": {**kai, "shot_number": 2}, "media_type": JSON}, 200),
        ("POST", "/api/director/feedback/submit",
         {"body": {"scene_id": scene_id, "shot_number": shot["shot_number"], "rating": 4, "comment": "schema"},
          "media_type": JSON}, 202),
        ("POST", "/api/director/batches",
         {"body": {"session_id": "schema-batch", "scenes": [{"scene_description": "Kai rests by the river"}]},
          "media_type": JSON}, 202),
        ("POST", "/api/director/batches",
         {"body": '{"scene_description": "Kai climbs the tower"}\n{"scene_description": "The dragon sleeps"}\n',
          "media_type": NDJSON}, 202),
        ("GET", "/health", {}, 200),
        ("GET", "/ready", {}, 200),
        ("GET", "/metrics", {}, 200),
    ]
    for method, path, kwargs, status in explicit:
        response = validate(schema[path][method].Case(**kwargs), expect_status=(status,))
        if response is not None and response.status_code == 200 and path.endswith("/events"):
            assert "event: complete" in response.text, response.text[-500:]
        if response is not None and response.status_code == 202 and path.endswith("/batches"):
            batch_id = response.json()["batch_id"]
            validate(schema["/api/director/batches/{batch_id}"]["GET"].Case(path_parameters={"batch_id": batch_id}),
                     expect_status=(200,))

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        generate(operation, validate)
    workers.assert_alive()

    failures = validate.regressions()
    counts = "\n".join(f"  {validate.counts[label]:3d}  {label}  {dict(validate.statuses.get(label, {}))}"
                       for label in sorted(validate.counts))
    summary = (f"seeded in {seeded_s:.0f} s; {sum(validate.counts.values())} cases in "
               f"{time.monotonic() - started - seeded_s:.0f} s (cases, statuses per operation):\n{counts}")
    print(summary)
    assert {op.label for op in operations} <= set(validate.counts), "an operation got no case"
    assert not failures, f"{len(failures)} failure(s):\n{report(failures)}\n\n{summary}\n--- API log:\n{schema_api.log()}"


@pytest.mark.parametrize("name", list(FIXED_BUGS))
def test_fixed_api_bug_stays_fixed(name: str, schema_api: ApiServer, request: pytest.FixtureRequest):
    """Each bug this test found: its request is now answered as documented."""
    bug = FIXED_BUGS[name]
    schema = load_schema(schema_api)
    validate = Validator(schema_api)
    if bug.resend_after_projection:
        workers: StageProcesses = request.getfixturevalue("workers")
        workers.start("learner")
        with httpx.Client(base_url=schema_api.url, headers=validate.headers, timeout=30) as client:
            first = client.request(bug.method, bug.path, json=bug.case["body"])
            assert first.status_code == 202, first.text
            scene = f"/api/director/scenes/{bug.case['body']['scene_id']}"
            deadline = time.monotonic() + 60
            while client.get(scene).status_code != 200:
                workers.assert_alive()
                assert time.monotonic() < deadline, f"{scene} not projected within 60 s\n{workers.tail()}"
                time.sleep(0.2)
    validate(schema[bug.path][bug.method].Case(**bug.case), checks=bug.checks, expect_status=bug.expect_status)
    assert not validate.failures, f"{bug.summary}:\n{report(validate.failures)}"
