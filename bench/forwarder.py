"""The yardstick stage: a bare aiokafka consumer-group loop that forwards each message of one
topic to another and awaits the broker's acknowledgement, as a separate process like a Tower
worker. ``python -m bench.forwarder IN OUT BOOTSTRAP``; ``bench.drain`` starts and stops it."""

from __future__ import annotations

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def forward(source: str, sink: str, bootstrap: str) -> None:
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"bench-forward-{source}",
                                auto_offset_reset="earliest", enable_auto_commit=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    try:
        async for record in consumer:
            await (await producer.send(sink, record.value, key=record.key))
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(forward(*sys.argv[1:4]))
