"""Several ComfyUI servers behind one ``run``: least-loaded choice, health, failover, retries.

Contract of :meth:`ComfyPool.run`:

* It picks the healthy server with the fewest jobs in flight (ties: round robin), never more than
  ``max_in_flight`` per server; when all are full it waits for a slot (up to the deadline).
* A server that fails (transport error, 5xx, an unresolvable ambiguous submit) is marked down and
  only tried again after a backoff (``down_for`` doubling to ``max_down``), behind a
  GET /system_stats probe. Prompt ids whose submission stayed ambiguous on a server are cancelled
  there as soon as it answers again, so they cannot render behind our back.
* Errors follow their :class:`~comfy.errors.Disposition`: FINAL is raised at once; OTHER_SERVER
  (a missing model) tries each other server once and becomes final when none is left;
  ONCE_ELSEWHERE (out of memory) gets one more try on another server (the same one if it is
  alone), then becomes final; RETRY is retried up to ``retries`` times with backoff.
* Nothing outlives ``deadline_s``: the job is interrupted at the deadline (see
  :mod:`comfy.jobs`) and waiting for servers stops there, raising a transient error that says why.
* ``finish(client, result)`` runs while the server's slot is held (it fetches the outputs); its
  transient failures retry the whole job, like any other. The history entry is deleted after it
  (in the background: :meth:`aclose` waits for such chores, bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from comfy.client import ClientConfig, ComfyClient
from comfy.errors import (
    AmbiguousSubmit,
    ComfyError,
    Disposition,
    ExecutionFailed,
    JobTimeout,
    ModelMissing,
    ModelMissingEverywhere,
    ServerBusy,
    ServersUnavailable,
    ValidationFailed,
)
from comfy.jobs import JobConfig, JobResult, cancel_on_server, run_job
from comfy.progress import ProgressCallback

log = logging.getLogger(__name__)

T = TypeVar("T")
Prepare = Callable[[ComfyClient, dict[str, Any]], Awaitable[dict[str, Any]]]
Finish = Callable[[ComfyClient, JobResult], Awaitable[T]]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    max_in_flight: int = 2
    """Jobs one server may have queued or running at once (ComfyUI runs one at a time; a second
    one queued keeps the GPU busy between jobs)."""
    retries: int = 3
    """Transient failures tolerated per ``run`` before the last one is raised."""
    backoff: float = 0.2
    """First wait before retrying a job-level transient failure; doubles, capped at 2 s."""
    down_for: float = 1.0
    """How long a failed server rests before its next probe; doubles per failure."""
    max_down: float = 4.0
    """Longest rest between probes of a down server: how soon a server that is back is noticed."""
    probe_timeout: float = 2.0
    unavailable_after: float = 5.0
    """With every server down this long, ``run`` raises :class:`ServersUnavailable` (an outage the
    caller waits out) instead of waiting for the job's deadline."""


@dataclass
class Server:
    client: ComfyClient
    in_flight: int = 0
    healthy: bool = True
    down_until: float = 0.0
    failures: int = 0
    last_error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    orphans: set[str] = field(default_factory=set)
    """Prompt ids that may sit in this server's queue without anyone following them."""

    @property
    def url(self) -> str:
        return self.client.url


class ComfyPool:
    def __init__(
        self,
        urls: list[str],
        *,
        config: PoolConfig | None = None,
        job_config: JobConfig | None = None,
        client_config: ClientConfig | None = None,
        client_id: str | None = None,
    ) -> None:
        if not urls:
            raise ValueError("a ComfyUI pool needs at least one server URL")
        self.config = config or PoolConfig()
        self.job_config = job_config or JobConfig()
        self.servers = [Server(ComfyClient(url, client_id=client_id, config=client_config)) for url in urls]
        self._changed = asyncio.Condition()
        self._turn = itertools.count()

    @classmethod
    def from_urls(cls, urls: str, **kwargs: Any) -> ComfyPool:
        """``urls`` as in ``TOWER_COMFY_URLS``: comma-separated base URLs."""
        return cls([u.strip() for u in urls.split(",") if u.strip()], **kwargs)

    async def start(self) -> None:
        """Probe every server once and open the websockets of those that answer."""
        await asyncio.gather(*(self._probe(server) for server in self.servers))

    async def aclose(self) -> None:
        await asyncio.gather(*(server.client.aclose() for server in self.servers))

    def status(self) -> list[dict[str, Any]]:
        """A snapshot for logs and health endpoints."""
        now = time.monotonic()
        return [
            {
                "url": s.url,
                "healthy": s.healthy,
                "in_flight": s.in_flight,
                "failures": s.failures,
                "retry_in_s": round(max(0.0, s.down_until - now), 3) if not s.healthy else 0.0,
                "last_error": s.last_error,
                "orphans": len(s.orphans),
            }
            for s in self.servers
        ]

    # -- running --------------------------------------------------------------------------------

    async def run(
        self,
        workflow: dict[str, Any],
        *,
        finish: Finish[T],
        deadline_s: float,
        on_progress: ProgressCallback | None = None,
        prepare: Prepare | None = None,
    ) -> T:
        """Run ``workflow`` on some server and return ``finish``'s value (see the module doc)."""
        deadline = time.monotonic() + deadline_s
        excluded: set[str] = set()
        oom_retried = False
        transient = 0
        attempt = 0
        last: ComfyError | None = None
        while True:
            attempt += 1
            server = await self._acquire(excluded, deadline, last)
            try:
                graph = await prepare(server.client, workflow) if prepare else workflow
                result = await run_job(
                    server.client,
                    graph,
                    deadline=deadline,
                    on_progress=on_progress,
                    attempt=attempt,
                    config=self.job_config,
                )
                try:
                    # Collecting outputs counts against the same deadline as the render.
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        value = await finish(server.client, result)
                except TimeoutError as exc:
                    raise JobTimeout(
                        f"collecting the outputs of {result.prompt_id} ran past the deadline", server=server.url
                    ) from exc
                # Outputs are collected: the entry can go. In the background, because the caller
                # does not need to wait for housekeeping (a failure only leaves an entry behind).
                server.client.spawn(_forget(server.client, result.prompt_id))
                self._mark_ok(server)
                return value
            except ComfyError as exc:
                last = exc
                if exc.disposition is Disposition.FINAL:
                    raise
                if exc.disposition is Disposition.OTHER_SERVER:
                    excluded.add(server.url)
                    if not self._others(excluded):
                        if isinstance(exc, ModelMissing):
                            raise ModelMissingEverywhere(f"no ComfyUI server can run it: {exc}", error=exc.error,
                                                         node_errors=exc.node_errors, server=server.url) from exc
                        raise ValidationFailed(f"no ComfyUI server can run it: {exc}", server=server.url) from exc
                    log.warning("comfy: %s on %s; trying another server", exc, server.url)
                    continue
                if exc.disposition is Disposition.ONCE_ELSEWHERE:
                    if oom_retried:
                        raise ExecutionFailed(f"out of memory twice: {exc}", server=server.url) from exc
                    oom_retried = True
                    if self._others(excluded | {server.url}):
                        excluded.add(server.url)
                    log.warning("comfy: %s on %s; one retry elsewhere", exc, server.url)
                    continue
                # Recorded before the deadline check, so the prompt is cancelled once the server answers.
                if isinstance(exc, AmbiguousSubmit) and getattr(exc, "server_fault", False):
                    server.orphans.add(exc.prompt_id)
                if isinstance(exc, JobTimeout) or time.monotonic() >= deadline:
                    raise
                if getattr(exc, "server_fault", False):
                    self._mark_down(server, exc)
                transient += 1
                if transient > self.config.retries:
                    raise
                log.warning("comfy: %s (attempt %d on %s); retrying", exc, attempt, server.url)
                if not getattr(exc, "server_fault", False):
                    delay = min(2.0, self.config.backoff * 2 ** (transient - 1))
                    await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            finally:
                await self._release(server)

    # -- selection ------------------------------------------------------------------------------

    def _others(self, excluded: set[str]) -> bool:
        return any(s.url not in excluded for s in self.servers)

    async def _acquire(self, excluded: set[str], deadline: float, last: ComfyError | None) -> Server:
        all_down_since: float | None = None
        while True:
            now = time.monotonic()
            candidates = [s for s in self.servers if s.url not in excluded]
            due = [s for s in candidates if not s.healthy and s.down_until <= now]
            if due:
                await asyncio.gather(*(self._probe(s) for s in due))
                continue
            ready = [s for s in candidates if s.healthy and s.in_flight < self.config.max_in_flight]
            if ready:
                turn = next(self._turn)
                ready.sort(key=lambda s: (s.in_flight, (self.servers.index(s) - turn) % len(self.servers)))
                chosen = ready[0]
                chosen.in_flight += 1
                return chosen
            states = ", ".join(f"{s.url} {'full' if s.healthy else 'down: ' + str(s.last_error)}" for s in candidates)
            if any(s.healthy for s in candidates):
                all_down_since = None
            else:
                all_down_since = now if all_down_since is None else all_down_since
                if now - all_down_since >= self.config.unavailable_after:
                    raise ServersUnavailable(f"no ComfyUI server answers ({states})")
            if now >= deadline:
                why = f"; last error: {last}" if last else ""
                raise ServerBusy(f"no ComfyUI server available before the deadline ({states}){why}")
            # Sleep until a slot frees (notified) or the next down server is due, or the deadline.
            wake = min([s.down_until for s in candidates if not s.healthy] + [deadline])
            if all_down_since is not None:
                wake = min(wake, all_down_since + self.config.unavailable_after)
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=max(0.01, wake - now))

    async def _release(self, server: Server) -> None:
        server.in_flight -= 1
        async with self._changed:
            self._changed.notify_all()

    # -- health ---------------------------------------------------------------------------------

    async def _probe(self, server: Server) -> None:
        try:
            async with asyncio.timeout(self.config.probe_timeout):
                server.stats = await server.client.system_stats()
        except (ComfyError, TimeoutError) as exc:
            self._mark_down(server, exc)
            return
        server.client.socket.start()
        self._mark_ok(server)
        for prompt_id in list(server.orphans):
            # An ambiguous submission may have been queued: cancel it before it renders twice.
            server.orphans.discard(prompt_id)
            server.client.spawn(cancel_on_server(server.client, prompt_id, self.job_config.cleanup_grace))
        async with self._changed:
            self._changed.notify_all()

    def _mark_ok(self, server: Server) -> None:
        server.healthy = True
        server.failures = 0
        server.down_until = 0.0

    def _mark_down(self, server: Server, exc: BaseException) -> None:
        server.failures += 1
        server.healthy = False
        server.last_error = f"{type(exc).__name__}: {exc}"
        rest = min(self.config.max_down, self.config.down_for * 2 ** (server.failures - 1))
        server.down_until = time.monotonic() + rest
        log.warning("comfy: server %s marked down for %.1fs: %s", server.url, rest, server.last_error)


async def _forget(client: ComfyClient, prompt_id: str) -> None:
    with contextlib.suppress(ComfyError):
        await client.delete_history([prompt_id])
