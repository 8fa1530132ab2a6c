"""Fixtures over real Kafka and PostgreSQL (used by tests/integration and tests/comfyui):
unique topics, consumer groups, database and media folder per test. Services start only when a
test asks for them."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from director.planner import plan_scene
from events.models import SceneRequested, ShotPlanned
from foundation.kafka import delete_topics
from foundation.settings import Settings
from store.pool import create_database, drop_database
from tests.integration.harness import kafka_service, postgres_service, warm_up
from tower.testing import ApiServer, StageProcesses, start_api


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "kafka_bootstrap" in fixtures or "settings" in fixtures or "api_server" in fixtures:
            item.add_marker(pytest.mark.kafka)
            item.add_marker(pytest.mark.integration)
        if "postgres_url" in fixtures or "database_url" in fixtures:
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with kafka_service() as bootstrap:
        asyncio.run(warm_up(bootstrap))
        yield bootstrap


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_service() as url:
        yield url


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test (dropped afterwards)."""
    name = f"tower_test_{uuid.uuid4().hex[:10]}"
    yield await create_database(postgres_url, name)
    await drop_database(postgres_url, name)


@pytest.fixture
async def tower_env(kafka_bootstrap: str, database_url: str, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """TOWER_* settings for one test: its own topics, consumer groups, database and media store.
    The topics are deleted afterwards, so the broker does not load every test's partitions at
    each restart."""
    unique = uuid.uuid4().hex[:8]
    values = {
        "TOWER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TOWER_DATABASE_URL": database_url,
        "TOWER_TOPIC_PREFIX": f"t{unique}.",
        "TOWER_GROUP_PREFIX": f"t{unique}",
        "TOWER_MEDIA_DIR": str(tmp_path / "media"),
        "TOWER_STATE_DIR": str(tmp_path / "state"),
        "TOWER_RENDER_WIDTH": "96",
        "TOWER_RENDER_HEIGHT": "96",
        "TOWER_COMMIT_INTERVAL_S": "0.5",
        "TOWER_SESSION_TIMEOUT_S": "8",
        "TOWER_SCORER_DEVICE": "cpu",
        "TOWER_LOG_LEVEL": "INFO",
    }
    yield {**os.environ, **values, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    await delete_topics(kafka_bootstrap, values["TOWER_TOPIC_PREFIX"])


@pytest.fixture
def settings(tower_env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("TOWER_").lower(): v for k, v in tower_env.items() if k.startswith("TOWER_")})


@pytest.fixture
def workers(tower_env: dict[str, str], tmp_path: Path) -> Iterator[StageProcesses]:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    pool = StageProcesses(tower_env, log_dir)
    yield pool
    pool.stop_all()


@pytest.fixture
def kai_request() -> SceneRequested:
    return SceneRequested(
        scene_id="scene-kai",
        session_id="session-1",
        description="Create a scene where Kai fights the dragon",
        characters=["Kai", "Dragon"],
    )


@pytest.fixture
def kai_shots(kai_request: SceneRequested) -> list[ShotPlanned]:
    plan = plan_scene(kai_request, fps=4)
    return [
        ShotPlanned(
            scene_id=kai_request.scene_id,
            session_id=kai_request.session_id,
            attempt=1,
            max_attempts=3,
            quality_threshold=0.6,
            shot=shot,
            overall_mood=plan.overall_mood,
            lighting_suggestions=plan.lighting_suggestions,
        )
        for shot in plan.shots
    ]


@pytest.fixture
def api_server(tower_env: dict[str, str], tmp_path: Path) -> Iterator[ApiServer]:
    """The HTTP API as a process over this test's topics, database and media store."""
    server = start_api(tower_env, tmp_path / "api.log")
    yield server
    server.stop()
