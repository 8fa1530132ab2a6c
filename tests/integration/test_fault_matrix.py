"""The fault-injection matrix: scenes in flight through the seven stages (as processes) while a
fault is injected, on a Kafka broker and a PostgreSQL cluster of this module's own (so stopping
or crashing them disturbs no other test). For every scenario:

* every scene completes, or is failed with a reason;
* nothing is applied twice: each score is learned once, each retry issued once;
* no worker exits on its own;
* SIGTERM ends every worker within its TOWER_SHUTDOWN_TIMEOUT_S.

Each scenario adds a row (scenes in flight, completed, failed with a reason, duplicates,
redeliveries seen, dead letters) to a table printed at the end; with ``TOWER_RELIABILITY_REPORT=1``
(``make test-faults``) the table is also written to docs/RELIABILITY.md. Losing one of three
brokers is in test_cluster.py, a ComfyUI server killed mid-job in tests/comfyui.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from agents.registry import STAGE_NAMES
from eventlog.follow import SceneFailed, follow_scene, produce, scene_envelope
from events.envelope import header_map
from events.models import FrameRendered, ShotPlanned
from events.topics import PIPELINE, TOPICS, dead_letter_topic
from foundation.kafka import read_topic
from foundation.settings import Settings
from store.pool import create_database, drop_database
from tests.integration.harness import REPO
from tests.integration.test_pipeline import kai_request
from tower.testing import StageProcesses

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.kafka, pytest.mark.postgres]

KAFKACTL = str(REPO / "infra/kafka/kafkactl")
PGCTL = str(REPO / "infra/postgres/pgctl")
SCENES = 2
SHUTDOWN_TIMEOUT_S = 10
INPUTS = {"planner": ["scene.requested"], "refiner": ["shot.planned"], "renderer": ["prompt.refined"],
          "scorer": ["frame.rendered"], "learner": [spec.name for spec in TOPICS], "retrier": ["quality.scored"],
          "editor": ["quality.scored", "scene.reassemble"]}
ROWS: list[dict[str, object]] = []


def free_ports(count: int) -> list[int]:
    ports, sockets = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class Infra:
    kafka_env: dict[str, str]
    pg_env: dict[str, str]
    bootstrap: str
    postgres_url: str

    def kafka(self, *args: str) -> None:
        done = subprocess.run([KAFKACTL, *args], env=self.kafka_env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"kafkactl {' '.join(args)}: {done.stderr[-2000:]}"

    def postgres(self, *args: str) -> None:
        done = subprocess.run([PGCTL, *args], env=self.pg_env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"pgctl {' '.join(args)}: {done.stderr[-2000:]}"

    def kill_broker(self) -> None:
        pid = int((Path(self.kafka_env["TOWER_KAFKA_DATA"]) / "kafka.pid").read_text())
        os.kill(pid, 9)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.1)


@pytest.fixture(scope="module")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    kafka_port, controller_port, pg_port = free_ports(3)
    kafka_env = {**os.environ, "TOWER_KAFKA_PORT": str(kafka_port), "TOWER_KAFKA_CONTROLLER_PORT": str(controller_port),
                 "TOWER_KAFKA_DATA": str(tmp_path_factory.mktemp("faults-kafka")),
                 "TOWER_KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m", "TOWER_KAFKA_STOP_TIMEOUT": "10"}
    pg_data = Path(f"/var/tmp/tower-faults-pg-{uuid.uuid4().hex[:8]}")  # the postgres OS user must reach it
    pg_env = {**os.environ, "TOWER_PG_PORT": str(pg_port), "TOWER_PG_DATA": str(pg_data)}
    url = subprocess.run([PGCTL, "url"], env=pg_env, capture_output=True, text=True, check=True).stdout.strip()
    infra = Infra(kafka_env, pg_env, f"127.0.0.1:{kafka_port}", url)
    infra.kafka("start")
    infra.postgres("start")
    try:
        yield infra
    finally:
        subprocess.run([KAFKACTL, "stop"], env=kafka_env, capture_output=True, timeout=120)
        subprocess.run([PGCTL, "stop"], env=pg_env, capture_output=True, timeout=120)
        shutil.rmtree(pg_data, ignore_errors=True)
        report()


@dataclass
class Run:
    """One scenario's stack: its settings, database, workers and scenes."""

    infra: Infra
    settings: Settings
    env: dict[str, str]
    workers: StageProcesses
    scene_ids: list[str] = field(default_factory=list)

    async def submit(self) -> None:
        await produce(self.settings, [scene_envelope(kai_request(s, max_attempts=2)) for s in self.scene_ids])

    async def until_first_score(self) -> None:
        """Until a scene has a score: the scenes are mid-way."""
        topic = self.settings.topic("quality.scored")
        deadline = time.monotonic() + 240
        while not await read_topic(self.settings.kafka_bootstrap, topic, timeout_s=1):
            self.workers.assert_alive()
            assert time.monotonic() < deadline, f"no score within 240 s\n{self.workers.tail()}"
            await asyncio.sleep(0.5)



@pytest.fixture
async def run(infra: Infra, tmp_path: Path) -> Iterator[Run]:
    name = f"tower_fault_{uuid.uuid4().hex[:8]}"
    database_url = await create_database(infra.postgres_url, name)
    unique = uuid.uuid4().hex[:8]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOWER_KAFKA_BOOTSTRAP": infra.bootstrap,
           "TOWER_DATABASE_URL": database_url, "TOWER_TOPIC_PREFIX": f"f{unique}.", "TOWER_GROUP_PREFIX": f"f{unique}",
           "TOWER_MEDIA_DIR": str(tmp_path / "media"), "TOWER_STATE_DIR": str(tmp_path / "state"),
           "TOWER_RENDER_WIDTH": "96", "TOWER_RENDER_HEIGHT": "96", "TOWER_SESSION_TIMEOUT_S": "8",
           "TOWER_SCORER_DEVICE": "cpu", "TOWER_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
           # Offsets are committed rarely, so a killed worker has committed little: redelivery happens.
           "TOWER_COMMIT_INTERVAL_S": "600"}
    settings = Settings(**{k.removeprefix("TOWER_").lower(): v for k, v in env.items() if k.startswith("TOWER_")})
    (tmp_path / "logs").mkdir()
    workers = StageProcesses(env, tmp_path / "logs")
    scenario = Run(infra, settings, env, workers, [f"scene-{unique}-{i}" for i in range(SCENES)])
    try:
        yield scenario
    finally:
        workers.stop_all(timeout_s=5)
        await drop_database(infra.postgres_url, name)


# -- the faults ---------------------------------------------------------------------------------

async def worker_before_broker(run: Run) -> str | None:
    run.infra.kafka("stop")
    run.workers.start(*STAGE_NAMES)
    for stage in STAGE_NAMES:
        await run.workers.until_logged(stage, "waiting for Kafka")
    run.infra.kafka("start")
    await run.submit()
    return None


async def postgres_crash(run: Run) -> str | None:
    run.workers.start(*STAGE_NAMES)
    await run.submit()
    await run.until_first_score()
    run.infra.postgres("crash")
    await run.workers.until_logged("learner", "service unavailable")
    run.infra.postgres("start")
    return None


async def postgres_restart(run: Run) -> str | None:
    run.workers.start(*STAGE_NAMES)
    await run.submit()
    await run.until_first_score()
    run.infra.postgres("stop")
    await run.workers.until_logged("learner", "service unavailable")
    run.infra.postgres("start")
    return None


async def broker_restart(run: Run) -> str | None:
    run.workers.start(*STAGE_NAMES)
    await run.submit()
    await run.until_first_score()
    run.infra.kafka("stop")
    await asyncio.sleep(3)  # the outage itself: workers must wait through it, not exit
    run.infra.kafka("start")
    return None


async def broker_sigkill(run: Run) -> str | None:
    run.workers.start(*STAGE_NAMES)
    await run.submit()
    await run.until_first_score()
    run.infra.kill_broker()
    await asyncio.sleep(3)
    run.infra.kafka("start")
    return None


def stage_sigkill(stage: str) -> Callable[[Run], Awaitable[str | None]]:
    async def inject(run: Run) -> str | None:
        run.workers.start(*STAGE_NAMES)
        await run.submit()
        await run.until_first_score()
        run.workers.kill(stage)
        run.workers.start(stage)
        return stage  # whose redeliveries must be seen
    inject.__name__ = f"{stage}_sigkill"
    return inject


async def frame_deleted(run: Run) -> str | None:
    run.workers.start("planner", "refiner", "renderer", "learner", "retrier", "editor")
    await run.submit()
    topic = run.settings.topic("frame.rendered")
    deadline = time.monotonic() + 240
    while not (rendered := await read_topic(run.settings.kafka_bootstrap, topic, timeout_s=1)):
        assert time.monotonic() < deadline, f"nothing rendered\n{run.workers.tail()}"
        await asyncio.sleep(0.5)
    first = FrameRendered.model_validate_json(rendered[0].value)
    (run.settings.media_dir / first.frames[0].uri).unlink()
    run.workers.start("scorer")
    return None


SCENARIOS = {
    "a worker started before the broker": worker_before_broker,
    "PostgreSQL crashed (immediate) and restarted": postgres_crash,
    "PostgreSQL stopped and restarted": postgres_restart,
    "the broker stopped and restarted": broker_restart,
    "the broker SIGKILLed and restarted": broker_sigkill,
    **{f"the {stage} SIGKILLed and restarted": stage_sigkill(stage) for stage in STAGE_NAMES},
    "a frame file deleted between render and score": frame_deleted,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_fault(scenario: str, run: Run):
    started = time.monotonic()
    redelivered_stage = await run.workers.watch(SCENARIOS[scenario](run))

    completed, failed = 0, []
    for scene_id in run.scene_ids:
        try:
            progress = await run.workers.watch(follow_scene(run.settings, scene_id, timeout_s=300))
            assert len(progress.finals) == progress.shot_count
            completed += 1
        except SceneFailed as exc:
            assert "dead-lettered" in str(exc)
            failed.append(str(exc))
    if redelivered_stage is not None:
        # The restarted stage may rejoin after the scenes are done (the planner is not needed by
        # then): wait until it has handled again what it handled before the kill.
        await run.workers.until_logged(redelivered_stage, " handled ", latest=True)
    run.workers.assert_alive()

    records = {spec.name: await read_topic(run.settings.kafka_bootstrap, run.settings.topic(spec.name))
               for spec in PIPELINE}
    ids = {name: {header_map(r.headers)["ce_id"] for r in rs} for name, rs in records.items()}
    conn = await asyncpg.connect(run.settings.database_url)
    try:
        # The learner has projected every event (offsets are committed rarely here, so its
        # consumer group's lag says nothing).
        deadline = time.monotonic() + 120
        # The pipeline's events only: the editor cuts a completed scene a moment after its last
        # score, and not a failed one.
        pipeline = [spec.event_type for spec in PIPELINE]
        count = "SELECT count(*) FROM event_log WHERE event_type = ANY($1::text[])"
        while await conn.fetchval(count, pipeline) < sum(map(len, ids.values())):
            run.workers.assert_alive()
            assert time.monotonic() < deadline, f"the learner has not projected every event\n{run.workers.tail()}"
            await asyncio.sleep(0.3)
        learned = await conn.fetchval("SELECT coalesce(sum(observations), 0) FROM patterns")
        ok_scores = await conn.fetchval("SELECT count(*) FROM scores WHERE status = 'ok' AND credited")
        retry_keys = await conn.fetchval("SELECT count(*) FROM attempts WHERE attempt > 1")
        projected = await conn.fetchval(count, pipeline)
    finally:
        await conn.close()
    retry_ids = {header_map(r.headers)["ce_id"] for r in records["shot.planned"]
                 if ShotPlanned.model_validate_json(r.value).attempt > 1}
    duplicates = (learned - ok_scores) + (len(retry_ids) - retry_keys)
    assert projected == sum(map(len, ids.values())), "a projection row is missing or extra"
    assert duplicates == 0, f"learned {learned} for {ok_scores} scores; {len(retry_ids)} retry ids, {retry_keys} retries"

    redeliveries = 0
    for stage, names in INPUTS.items():
        handled = sum(p.read_text(errors="replace").count(" handled ") for p in run.workers.log_dir.glob(f"{stage}.*.log"))
        distinct = sum(len(ids.get(name, ())) for name in names) if stage != "learner" else sum(map(len, ids.values()))
        redeliveries += max(0, handled - distinct)
    if redelivered_stage is not None:
        assert redeliveries > 0, f"no redelivery after killing the {redelivered_stage}"
    letters = sum([len(await read_topic(run.settings.kafka_bootstrap, dead_letter_topic(run.settings.topic(s.name)),
                                        timeout_s=3)) for s in TOPICS])
    assert letters == 0 or failed, f"{letters} dead letter(s) but no scene failed"

    stragglers = run.workers.stop_all(timeout_s=SHUTDOWN_TIMEOUT_S + 10)
    assert not stragglers, f"SIGTERM did not end {stragglers} within {SHUTDOWN_TIMEOUT_S} s"
    ROWS.append({"scenario": scenario, "scenes in flight": SCENES, "completed": completed,
                 "failed with a reason": len(failed), "duplicates": duplicates, "redeliveries seen": redeliveries,
                 "dead letters": letters, "stopped by SIGTERM": "all", "seconds": round(time.monotonic() - started)})


def report() -> None:
    if not ROWS:
        return
    columns = list(ROWS[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in ROWS]
    table = "\n".join(lines)
    print("\n" + table)
    if os.environ.get("TOWER_RELIABILITY_REPORT"):
        (REPO / "docs" / "RELIABILITY.md").write_text(
            "# Reliability: the fault-injection matrix\n\n"
            f"Written by `make test-faults` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
            "(tests/integration/test_fault_matrix.py; what each column means is in its docstring).\n"
            "Two scenes (a Kai fight, up to 2 attempts per shot) in flight per scenario, on a broker and a "
            "PostgreSQL of the suite's own; offsets committed every 10 minutes so killed workers are "
            "redelivered what they had handled. Losing one of three brokers: tests/integration/test_cluster.py; "
            "a ComfyUI server killed mid-job: tests/comfyui/test_real_server.py; 5,000 fuzzed events: "
            "tests/integration/test_fuzz_events.py.\n\n" + table + "\n")
