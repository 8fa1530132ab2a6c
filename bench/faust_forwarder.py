"""Faust's own floor: a bare Faust agent that forwards each message of one topic to another and
awaits the broker's acknowledgement, run like a Tower worker (its own process, the event loop
``TOWER_UVLOOP`` picks, a consumer group, ``acks=all``) but with nothing of Tower's in between.
``python -m bench.faust_forwarder IN OUT BOOTSTRAP``; ``bench.drain`` starts and stops it."""

from __future__ import annotations

import sys
import tempfile

import faust

from foundation.settings import Settings
from tower.worker import use_event_loop


def forwarder_app(source: str, sink: str, bootstrap: str) -> faust.App:
    app = faust.App(f"bench-faust-forward-{source}", broker=f"kafka://{bootstrap}", value_serializer="raw",
                    key_serializer="raw", store="memory://", web_enabled=False, topic_disable_leader=True,
                    topic_allow_declare=False, consumer_auto_offset_reset="earliest", producer_acks=-1,
                    autodiscover=False, datadir=tempfile.mkdtemp(prefix="tower-bench-faust-"))
    inputs = app.topic(source, key_serializer="raw", value_serializer="raw")
    outputs = app.topic(sink, key_serializer="raw", value_serializer="raw")

    @app.agent(inputs, concurrency=1)
    async def forward(stream: faust.StreamT) -> None:
        async for event in stream.events():
            await (await outputs.send(key=event.message.key, value=event.value, force=True))

    return app


if __name__ == "__main__":
    use_event_loop(Settings())
    faust.Worker(forwarder_app(*sys.argv[1:4]), loglevel="WARNING", quiet=True).execute_from_commandline()
