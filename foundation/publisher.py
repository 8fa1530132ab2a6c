"""The one way Tower writes to Kafka: the workers (``agents/runtime.py``: outputs, side events,
dead letters), the API, the CLI and dead-letter redrive all use :class:`Publisher`.

Every producer is configured the same (:func:`producer_settings`): idempotent (a retried send is
not written twice), ``acks=all`` (a send is done once every in-sync replica has it), the broker's
message size limit (``TOWER_MAX_MESSAGE_BYTES``), and each envelope's CloudEvents attributes as
headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from events.envelope import Envelope
from events.topics import EVENT_TYPES
from foundation.settings import Settings


def producer_settings(settings: Settings) -> dict[str, Any]:
    """The producer configuration every Tower producer shares (aiokafka's argument names)."""
    return {"bootstrap_servers": settings.kafka_bootstrap, "acks": "all", "enable_idempotence": True,
            "max_request_size": settings.max_message_bytes}


class Publisher:
    """Publishes envelopes to their topics (and raw records, for dead letters), each call
    returning once the broker has everything it was given. Use as ``async with Publisher(...)``,
    or :meth:`start` / :meth:`stop`."""

    def __init__(self, settings: Settings, *, client_id: str, linger_ms: int = 1,
                 request_timeout_ms: int = 30_000) -> None:
        self.settings = settings
        self._producer = AIOKafkaProducer(**producer_settings(settings), client_id=client_id, linger_ms=linger_ms,
                                          request_timeout_ms=request_timeout_ms)

    @property
    def client(self) -> Any:
        """The underlying client (metadata checks)."""
        return self._producer.client

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def topic_of(self, envelope: Envelope) -> str:
        return self.settings.topic(EVENT_TYPES[type(envelope.value)].name)

    async def enqueue(self, envelope: Envelope) -> asyncio.Future[RecordMetadata]:
        """Queue ``envelope`` for sending; the future resolves once the broker has it."""
        return await self._producer.send(self.topic_of(envelope), envelope.encode_value(), key=envelope.key,
                                         headers=envelope.headers())

    async def publish(self, envelopes: Sequence[Envelope]) -> list[RecordMetadata]:
        """Send ``envelopes`` in order (one key's envelopes stay in order in their partition) and
        wait until the broker has every one."""
        deliveries = [await self.enqueue(e) for e in envelopes]
        return list(await asyncio.gather(*deliveries))

    async def publish_raw(self, topic: str, value: bytes | None, *, key: bytes | None,
                          headers: Sequence[tuple[str, bytes]]) -> RecordMetadata:
        """Send one record as it is (a dead letter, a redriven one) and wait until the broker has it."""
        return await self._producer.send_and_wait(topic, value, key=key, headers=list(headers))
