"""Prometheus metrics of a worker process, served on ``TOWER_METRICS_PORT`` at ``/metrics``.

The metric names and labels are a contract with dashboards and alerts; change them additively.
Topic labels are the topics as on the broker (with ``TOWER_TOPIC_PREFIX``). :class:`StageMetrics`
keeps each label set's child once resolved, so recording costs a dict lookup and an increment per
message.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from foundation.settings import Settings

log = logging.getLogger("tower.metrics")

# Latency from a millisecond (planner) to a minute (a ComfyUI render).
HANDLER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
SCORE_BUCKETS = tuple(round(step / 10, 1) for step in range(11))  # 0.0, 0.1, ..., 1.0

EVENTS_HANDLED = Counter(
    "tower_events_handled", "Messages handled successfully (outputs acknowledged by the broker).",
    ["stage", "topic"],
)
EVENTS_FAILED = Counter(
    "tower_events_failed", "Handler failures, counted per try: kind=outage (a service unavailable, retried until "
    "it is back) or error (retried, then dead-lettered).",
    ["stage", "topic", "kind"],
)
EVENTS_DEAD_LETTERED = Counter(
    "tower_events_dead_lettered", "Messages sent to their dead-letter topic <topic>.dlq.",
    ["stage", "topic", "error_class"],
)
HANDLER_SECONDS = Histogram(
    "tower_handler_seconds", "Time to handle a message and have its outputs acknowledged (successful tries).",
    ["stage", "topic"], buckets=HANDLER_BUCKETS,
)
CONSUMER_LAG = Gauge(
    "tower_consumer_lag", "Messages behind the partition's high watermark after handling a message.",
    ["group", "topic", "partition"],
)
COMPOSITE_SCORE = Histogram(
    "tower_composite_score", "Composite quality score of every produced quality.scored event with status ok.",
    ["stage"], buckets=SCORE_BUCKETS,
)


class StageMetrics:
    """One stage's view of the metrics: its label values bound, each child resolved once."""

    def __init__(self, stage: str, group: str) -> None:
        self.stage = stage
        self.group = group
        self._handled: dict[str, tuple[Any, Any]] = {}
        self._failed: dict[tuple[str, bool], Any] = {}
        self._lag: dict[tuple[str, int], Any] = {}
        self._score = COMPOSITE_SCORE.labels(stage)

    def handled(self, topic: str, seconds: float) -> None:
        children = self._handled.get(topic)
        if children is None:
            children = self._handled[topic] = (
                EVENTS_HANDLED.labels(self.stage, topic), HANDLER_SECONDS.labels(self.stage, topic)
            )
        children[0].inc()
        children[1].observe(seconds)

    def failed(self, topic: str, outage: bool) -> None:
        child = self._failed.get((topic, outage))
        if child is None:
            child = self._failed[topic, outage] = EVENTS_FAILED.labels(self.stage, topic, "outage" if outage else "error")
        child.inc()

    def dead_lettered(self, topic: str, error_class: str) -> None:
        EVENTS_DEAD_LETTERED.labels(self.stage, topic, error_class).inc()  # rare: no cache needed

    def lag(self, topic: str, partition: int, offset: int, highwater: int | None) -> None:
        """Record the lag behind ``highwater`` (the next offset to be written) after handling ``offset``."""
        if highwater is None:
            return
        child = self._lag.get((topic, partition))
        if child is None:
            child = self._lag[topic, partition] = CONSUMER_LAG.labels(self.group, topic, str(partition))
        child.set(max(highwater - offset - 1, 0))

    def scored(self, composite: float) -> None:
        self._score.observe(composite)


def start_metrics_server(settings: Settings) -> int | None:
    """Serve this process's metrics on ``settings.metrics_host:metrics_port`` (port 0: any free
    port); the bound port. None (and nothing served) when the port is unset. A port already in use
    fails here, at start."""
    if settings.metrics_port is None:
        return None
    addr = settings.metrics_host
    try:
        server, _thread = start_http_server(settings.metrics_port, addr=addr)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot serve metrics on {addr}:{settings.metrics_port}: {exc.strerror}") from exc
    port = server.server_address[1]
    host = socket.gethostname() if addr in ("0.0.0.0", "::") else addr
    log.info("metrics on http://%s:%d/metrics", host, port)
    return port
