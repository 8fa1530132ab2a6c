"""learner: projects every topic into PostgreSQL (the read models behind the API and the CLI) and
folds ``quality.scored`` and ``feedback.submitted`` into the pattern table. It decides no retries
(the retry controller, :mod:`agents.retrier`, does); what it publishes is a workflow version's
regression alert, which its fold detects. With ``TOWER_MEMORY_EMBEDDER=server`` it also embeds
each remembered attempt with the server, in the background (:meth:`Learner._embed_with_server`), so
a slow or absent embedding server never holds the pattern table back."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from agents.stage import DatabaseStage
from director.embedding_server import EmbedderUnavailable
from director.escalation import credited
from director.memory import Embedder
from events.envelope import Envelope
from events.models import QualityScored
from events.topics import TOPICS
from foundation.settings import Settings
from store.memory import configured_embedder, embed_missing
from store.projections import Origin, apply_dead_letter, apply_event, apply_score, regression_alert

log = logging.getLogger("tower.agents.learner")
EMBED_RETRY_S = 30.0  # how long the learner waits before asking an unavailable embedding server again


class Learner(DatabaseStage):
    name = "learner"
    inputs = TOPICS
    reads_dead_letters = True  # a scene whose event is dead-lettered is marked failed

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_in_flight = settings.learn_in_flight
        self._remembered = asyncio.Event()  # set: there may be attempts the server has not embedded
        self._embedding: asyncio.Task | None = None

    async def start(self) -> None:
        await super().start()
        if self.settings.memory_embedder == "server":
            self._remembered.set()  # catch up with what was remembered while it was not running
            self._embedding = asyncio.create_task(self._embed_with_server(), name="learner-embeddings")

    async def stop(self) -> None:
        if self._embedding is not None:
            self._embedding.cancel()
            await asyncio.gather(self._embedding, return_exceptions=True)
            self._embedding = None
        await super().stop()

    async def _embed_with_server(self) -> None:
        """Whenever attempts were remembered, embed those the server has no vector for. An
        unavailable server is asked again after :data:`EMBED_RETRY_S`; nothing is lost meanwhile
        (the built-in rows hold the texts, and `tower memory reembed` does the same)."""
        embedder: Embedder | None = None
        while True:
            await self._remembered.wait()
            self._remembered.clear()
            try:
                embedder = embedder or await configured_embedder(self.settings)
                added = await embed_missing(self.pool, embedder)
                if added:
                    log.info("memory: embedded %d attempt(s) with %s", added, embedder.name, extra={"stage": self.name})
            except (EmbedderUnavailable, OSError, asyncpg.PostgresError) as exc:
                log.warning("memory: cannot embed with the server now, trying again in %.0f s: %s", EMBED_RETRY_S,
                            exc, extra={"stage": self.name})
                await asyncio.sleep(EMBED_RETRY_S)
                self._remembered.set()

    async def handle(self, envelope: Envelope, origin: Origin) -> list[Envelope]:
        scored = envelope.value
        async with self.pool.acquire() as conn:
            if not isinstance(scored, QualityScored):
                await apply_event(conn, envelope, origin)
                return []
            applied = await apply_score(conn, envelope, origin)
            self._remembered.set()
            if not (self.settings.learner_emits_alerts and credited(scored)):
                return []
            alert = await regression_alert(conn, envelope, applied.workflow)
        return [envelope.derive(alert, source=self.source)] if alert is not None else []

    async def on_dead_letter(self, key: bytes | None, headers: dict[str, str], origin: Origin) -> None:
        async with self.pool.acquire() as conn:
            await apply_dead_letter(conn, key, headers, origin)

    async def on_produced(self, envelope: Envelope, outputs: list[Envelope]) -> None:
        for output in outputs:  # a regression alert: sent once the broker has it
            await self.pool.execute("UPDATE regression_alerts SET sent = true WHERE workflow = $1",
                                    output.value.workflow)
