"""Running stages: one stage per process (`tower worker planner`), or all of them for development."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Sequence

import faust

from agents.registry import stage_class
from agents.runtime import build_app
from foundation.kafka import ensure_topics
from foundation.metrics import start_metrics_server
from foundation.settings import Settings

log = logging.getLogger("tower.worker")


def run_stages(names: Sequence[str], settings: Settings) -> None:
    """Run the stages' Faust apps in this process until stopped (SIGINT/SIGTERM).

    One name is production's shape (`tower worker planner`). Several run as separate Faust apps,
    each still its own consumer group, on one event loop: the development mode of `tower worker all`.
    With ``TOWER_METRICS_PORT`` set, the process serves its Prometheus metrics (all its stages) there.
    """
    use_event_loop(settings)
    wait_for_kafka(settings)
    apps = [build_app(stage_class(name)(settings), settings) for name in names]
    start_metrics_server(settings)
    worker = BoundedWorker(*apps, loglevel=settings.log_level, quiet=True, override_logging=False,
                           shutdown_timeout_s=settings.shutdown_timeout_s)
    worker.spinner = None  # a terminal spinner only garbles logs that go to files and collectors
    worker.execute_from_commandline()


def use_event_loop(settings: Settings) -> None:
    """Make the loops created from now on uvloop's when ``TOWER_UVLOOP`` says so (the consumer
    thread Faust starts gets one too); asyncio's own otherwise."""
    if settings.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class BoundedWorker(faust.Worker):
    """A Faust worker whose stop, once signalled, ends within ``shutdown_timeout_s`` in every
    state: if the orderly stop (close the stages, leave the group) takes longer, the process exits
    anyway. Nothing is lost: offsets are committed only past handled events."""

    def __init__(self, *apps: faust.App, shutdown_timeout_s: float, **kwargs: object) -> None:
        super().__init__(*apps, **kwargs)
        self.shutdown_timeout_s = shutdown_timeout_s

    _watchdog: threading.Timer | None = None

    async def stop(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.shutdown_timeout_s, self._exit_now)
            self._watchdog.daemon = True
            self._watchdog.start()
        await super().stop()

    def _exit_now(self) -> None:
        log.error("still stopping %.0fs after the stop began (TOWER_SHUTDOWN_TIMEOUT_S); exiting now, "
                  "in-flight events will be redelivered", self.shutdown_timeout_s)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)


# The exit status of a worker that had to be stopped by its shutdown timeout (EX_SOFTWARE).
EXIT_SHUTDOWN_TIMEOUT = 70


def wait_for_kafka(settings: Settings, *, max_delay_s: float = 5.0) -> None:
    """Create the topics, waiting for the broker with backoff (a line in the log each try) when it
    is not up yet: a worker started before Kafka waits for it, as a running one does."""
    delay = 0.5
    while True:
        try:
            asyncio.run(ensure_topics(settings, timeout_s=10))
            return
        except ConnectionError as exc:
            log.warning("waiting for Kafka: %s (retrying in %.0fs)", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay_s)
