"""Run one prompt on one server, from submission to its history entry.

Contract of :func:`run_job`:

* It returns the prompt's history entry once the prompt succeeded, or raises a classified
  :class:`~comfy.errors.ComfyError` (see :mod:`comfy.errors` for what each means to a caller).
* It never waits past ``deadline`` (a ``time.monotonic()`` value) by more than one HTTP timeout;
  at the deadline the prompt is removed from the queue and interrupted (POST /queue delete,
  POST /interrupt with its id) and :class:`~comfy.errors.JobTimeout` is raised.
* The same cleanup runs when the job fails after submission or the calling task is cancelled, so
  a prompt we gave up on never keeps a server busy. Cleanup runs in the background, bounded.
* A submission never renders twice: the prompt id is ours, and a POST whose fate is unknown is
  looked up by id (queue, history, jobs API) before it is sent again.
* The websocket is the fast path; silence, a dropped socket or a missed event fall back to
  polling the server (``locate``), with a backoff that resets on every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from comfy.client import ComfyClient, JobState, classify_rejection
from comfy.errors import (
    AmbiguousSubmit,
    ComfyError,
    ExecutionFailed,
    HistoryUnavailable,
    Interrupted,
    JobLost,
    JobTimeout,
    OutOfMemory,
    TransportError,
    is_oom,
)
from comfy.messages import GAP, Message
from comfy.progress import ProgressCallback, ProgressEvent, emit

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobConfig:
    socket_wait: float = 1.0
    """How long to wait for the websocket before submitting anyway (then we poll)."""
    silence_poll: float = 0.5
    """Silence after which the server is polled; doubles while silent, up to ``max_poll``."""
    max_poll: float = 4.0
    done_signal_wait: float = 0.25
    """After ``execution_success``, how long to wait for ``executing(node=None)``, which 0.3.x
    sends once the history entry is written; the history is read either way."""
    history_retries: int = 8
    history_delay: float = 0.01
    """First delay between history reads; doubles up to 0.5 s (8 reads ~ 1.6 s in all)."""
    lost_after: int = 2
    """Consecutive polls that find the prompt nowhere before it is declared lost."""
    submit_checks: tuple[float, ...] = (0.05, 0.4)
    """Delays before each lookup of an ambiguous submission; all must miss before a resend."""
    resubmits: int = 1
    position_every: float = 0.5
    """Minimum interval between GET /queue calls made only to refresh the queue position."""
    cleanup_grace: float = 3.0


@dataclass(frozen=True, slots=True)
class JobResult:
    prompt_id: str
    server: str
    attempt: int
    history: dict[str, Any] = field(repr=False)
    submitted_at: float
    """``time.monotonic()`` just before POST /prompt."""
    finished_at: float
    """``time.monotonic()`` once the history entry was read."""

    @property
    def server_ms(self) -> float | None:
        """The server's own execution time, from its ``execution_start``/``execution_success``
        stamps in the history status messages (ms; ``None`` when the server did not record them)."""
        stamps: dict[str, int] = {}
        status = self.history.get("status") or {}
        for entry in status.get("messages", []) or []:
            if isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict):
                stamp = entry[1].get("timestamp")
                if isinstance(stamp, (int, float)):
                    stamps[str(entry[0])] = int(stamp)
        if "execution_start" in stamps and "execution_success" in stamps:
            return float(stamps["execution_success"] - stamps["execution_start"])
        return None


def new_prompt_id() -> str:
    """Client-side prompt ids are canonical UUID4 strings (newer servers insist on UUIDs)."""
    return str(uuid.uuid4())


def execution_error(data: dict[str, Any], server: str | None) -> ExecutionFailed:
    """Classify an ``execution_error`` payload: :class:`OutOfMemory` or :class:`ExecutionFailed`."""
    exception_type = str(data.get("exception_type") or "")
    message = str(data.get("exception_message") or "").strip()
    node_id, node_type = data.get("node_id"), data.get("node_type")
    cls = OutOfMemory if is_oom(exception_type, message) else ExecutionFailed
    first_line = message.splitlines()[0] if message else ""
    text = f"node {node_id} ({node_type}) raised {exception_type or 'an error'}: {first_line}"
    return cls(
        text.rstrip(": "),
        node_id=None if node_id is None else str(node_id),
        node_type=None if node_type is None else str(node_type),
        exception_type=exception_type or None,
        server=server,
    )


async def run_job(
    client: ComfyClient,
    workflow: dict[str, Any],
    *,
    deadline: float,
    on_progress: ProgressCallback | None = None,
    attempt: int = 1,
    prompt_id: str | None = None,
    config: JobConfig | None = None,
) -> JobResult:
    """Submit ``workflow`` to ``client``'s server and follow it to its history entry (see module)."""
    job = _Job(client, workflow, deadline, on_progress, attempt, prompt_id or new_prompt_id(), config or JobConfig())
    return await job.run()


class _Job:
    def __init__(
        self,
        client: ComfyClient,
        workflow: dict[str, Any],
        deadline: float,
        on_progress: ProgressCallback | None,
        attempt: int,
        prompt_id: str,
        config: JobConfig,
    ) -> None:
        self.client = client
        self.workflow = workflow
        self.deadline = deadline
        self.on_progress = on_progress
        self.attempt = attempt
        self.prompt_id = prompt_id
        self.config = config
        self.submitted = False
        self.finished = False
        self.we_interrupted = False
        self.started = False
        self.position: int | None = None
        self.position_at = 0.0
        self.misses = 0
        self.running_node: str | None = None
        self.done_nodes: set[str] = set()

    # -- top level ------------------------------------------------------------------------------

    async def run(self) -> JobResult:
        socket = self.client.socket
        await socket.wait_connected(max(0.0, min(self.config.socket_wait, self._remaining())))
        follower = socket.follow(self.prompt_id)
        submitted_at = time.monotonic()
        try:
            await self._submit()
            await self._emit("queued", queue_position=self.position)
            entry = await self._follow(follower)
            self.finished = True
            await self._emit("finished")
            return JobResult(
                prompt_id=self.prompt_id,
                server=self.client.url,
                attempt=self.attempt,
                history=entry,
                submitted_at=submitted_at,
                finished_at=time.monotonic(),
            )
        except BaseException as exc:
            if self.submitted and not self.finished:
                # Interrupt only what may still run; an ended prompt just leaves its history.
                ended = isinstance(exc, ExecutionFailed | Interrupted)
                self.client.spawn(cancel_on_server(self.client, self.prompt_id, self.config.cleanup_grace, ended))
            raise
        finally:
            socket.unfollow(self.prompt_id)

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _check_deadline(self) -> None:
        if self._remaining() <= 0:
            self.we_interrupted = True
            raise JobTimeout(
                f"prompt {self.prompt_id} not finished before its deadline; interrupted and dequeued",
                server=self.client.url,
            )

    # -- submission -----------------------------------------------------------------------------

    async def _submit(self) -> None:
        last: AmbiguousSubmit | None = None
        for _ in range(1 + self.config.resubmits):
            self._check_deadline()
            try:
                submitted = await self.client.submit(self.workflow, self.prompt_id)
            except AmbiguousSubmit as exc:
                last = exc
                self.submitted = True  # maybe: cleanup must consider it from now on
                if await self._known_after_ambiguity(exc):
                    log.info("comfy: prompt %s was queued despite %s; following it", self.prompt_id, exc)
                    return
                self.submitted = False
                log.info("comfy: prompt %s not on %s after %s; sending it again", self.prompt_id, self.client.url, exc)
                continue
            self.submitted = True
            if submitted.node_errors:
                # 200 with node_errors: some outputs were dropped. A template that half-renders
                # is a broken template, so we refuse it rather than return fewer frames.
                raise classify_rejection(
                    {"error": {"message": "some outputs failed validation"}, "node_errors": submitted.node_errors},
                    server=self.client.url,
                )
            return
        assert last is not None
        raise last

    async def _known_after_ambiguity(self, exc: AmbiguousSubmit) -> bool:
        """Look the prompt id up; True if the server has it. Unreachable server: re-raise ``exc``
        (we cannot know, so the pool must not resend it anywhere without recording it)."""
        for delay in self.config.submit_checks:
            await asyncio.sleep(min(delay, max(0.0, self._remaining())))
            try:
                state = await self.client.locate(self.prompt_id)
            except TransportError:
                raise exc from None
            if state.status != "unknown":
                self.position = state.position
                return True
        return False

    # -- following ------------------------------------------------------------------------------

    async def _follow(self, follower: Any) -> dict[str, Any]:
        wait = self.config.silence_poll
        # Silence is measured since the last event about a prompt: queue-wide ``status`` broadcasts
        # (other clients' work on a busy server) must not keep postponing the polling fallback.
        heard = time.monotonic()
        while True:
            self._check_deadline()
            quiet_for = time.monotonic() - heard
            message = await follower.get(max(0.0, min(wait - quiet_for, self._remaining())))
            silent = message is None or (message.type == "status" and time.monotonic() - heard >= wait)
            if silent or message.type == GAP:
                if message is not None and message.type == "status":
                    await self._handle(message, follower)
                entry = await self._poll()
                if entry is not None:
                    return entry
                wait = min(self.config.max_poll, wait * 2) if silent else self.config.silence_poll
                heard = time.monotonic()
                continue
            if message.type != "status":
                wait = self.config.silence_poll
                heard = time.monotonic()
            entry = await self._handle(message, follower)
            if entry is not None:
                return entry

    async def _handle(self, message: Message, follower: Any) -> dict[str, Any] | None:
        kind = message.type
        if kind == "status":
            if not self.started:
                await self._refresh_position(message.queue_remaining)
        elif kind == "execution_start":
            self.started = True
            self.position = 0
            await self._emit("started")
        elif kind == "execution_cached":
            self.done_nodes.update(str(node) for node in message.data.get("nodes", []) or [])
            await self._emit("cached")
        elif kind == "executing":
            node = message.node
            if node is None:
                # 0.3.x sends this after writing the history: the cheapest reliable end signal.
                return await self._finish_from_history()
            self.started = True
            if self.running_node is not None:
                self.done_nodes.add(self.running_node)
            self.running_node = node
            await self._emit("executing", node=node, node_type=self._class_type(node))
        elif kind == "progress":
            node = message.node
            await self._emit(
                "progress",
                node=node,
                node_type=self._class_type(node),
                value=_as_int(message.data.get("value")),
                max=_as_int(message.data.get("max")),
            )
        elif kind == "execution_success":
            await self._await_done_signal(follower)
            return await self._finish_from_history()
        elif kind == "execution_error":
            raise execution_error(message.data, self.client.url)
        elif kind == "execution_interrupted":
            raise self._interrupted()
        return None

    async def _await_done_signal(self, follower: Any) -> None:
        end = time.monotonic() + self.config.done_signal_wait
        while (left := end - time.monotonic()) > 0:
            message = await follower.get(left)
            if message is None or message.type == GAP:
                return
            if message.type == "executing" and message.node is None:
                return

    async def _poll(self) -> dict[str, Any] | None:
        state: JobState = await self.client.locate(self.prompt_id)
        if state.status == "unknown":
            self.misses += 1
            if self.misses >= self.config.lost_after:
                raise JobLost(
                    f"prompt {self.prompt_id} is neither queued, running nor in the history", server=self.client.url
                )
            return None
        self.misses = 0
        if state.status == "done":
            entry = state.history if state.history is not None else await self._read_history()
            return self._check_entry(entry)
        if state.status == "running" and not self.started:
            self.started = True
            await self._emit("started")
        elif state.status == "queued" and state.position != self.position:
            self.position = state.position
            await self._emit("queued", queue_position=state.position)
        return None

    async def _refresh_position(self, queue_remaining: int | None) -> None:
        if queue_remaining is not None and queue_remaining <= 1:
            position = 0  # ours is the only prompt left: no need to ask
        else:
            now = time.monotonic()
            if now - self.position_at < self.config.position_every:
                return
            self.position_at = now
            position = (await self.client.queue()).position(self.prompt_id)
            if position is None:
                return
        if position != self.position:
            self.position = position
            await self._emit("queued", queue_position=position)

    async def _finish_from_history(self) -> dict[str, Any]:
        return self._check_entry(await self._read_history())

    async def _read_history(self) -> dict[str, Any]:
        """The history entry, read with bounded retries: ComfyUI announces success before it
        writes the entry, and ``{}`` means both "unknown" and "not yet"."""
        delay = self.config.history_delay
        for _ in range(self.config.history_retries):
            entry = await self.client.history(self.prompt_id)
            if entry is not None:
                return entry
            self._check_deadline()
            await asyncio.sleep(min(delay, max(0.0, self._remaining())))
            delay = min(0.5, delay * 2)
        raise HistoryUnavailable(
            f"prompt {self.prompt_id} ended but its history entry never appeared", server=self.client.url
        )

    def _check_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        status = entry.get("status") or {}
        if status.get("status_str") != "error":
            return entry
        for item in status.get("messages", []) or []:
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], dict)):
                continue
            if item[0] == "execution_error":
                raise execution_error(item[1], self.client.url)
            if item[0] == "execution_interrupted":
                raise self._interrupted()
        raise ExecutionFailed(f"prompt {self.prompt_id} failed without an error message", server=self.client.url)

    def _interrupted(self) -> ComfyError:
        if self.we_interrupted:
            return JobTimeout(f"prompt {self.prompt_id} interrupted at its deadline", server=self.client.url)
        return Interrupted(f"prompt {self.prompt_id} was interrupted on the server", server=self.client.url)

    # -- progress -------------------------------------------------------------------------------

    def _class_type(self, node: str | None) -> str | None:
        spec = self.workflow.get(node) if node is not None else None
        return spec.get("class_type") if isinstance(spec, dict) else None

    async def _emit(self, kind: Any, **fields: Any) -> None:
        if self.on_progress is None:
            return
        await emit(
            self.on_progress,
            ProgressEvent(
                kind=kind,
                prompt_id=self.prompt_id,
                server=self.client.url,
                attempt=self.attempt,
                nodes_done=len(self.workflow) if kind == "finished" else len(self.done_nodes),
                nodes_total=len(self.workflow),
                **fields,
            ),
        )


async def cancel_on_server(client: ComfyClient, prompt_id: str, grace: float, ended: bool = False) -> None:
    """Best effort, bounded by ``grace`` seconds: dequeue and interrupt ``prompt_id``, then delete
    its history entry once it appears (an interrupted prompt still gets one)."""
    end = time.monotonic() + grace
    with contextlib.suppress(ComfyError, asyncio.TimeoutError):
        async with asyncio.timeout(grace):
            if not ended:
                # Dequeue first: a pending prompt cannot then start between the two calls.
                await client.delete_queued([prompt_id])
                await client.interrupt(prompt_id)
            while time.monotonic() < end:
                state = await client.locate(prompt_id)
                if state.status == "done":
                    await client.delete_history([prompt_id])
                    return
                if state.status == "unknown":
                    return
                await asyncio.sleep(0.1)


def _as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None
