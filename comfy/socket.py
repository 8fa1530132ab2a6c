"""One long-lived websocket per ComfyUI server, fanned out to the jobs that follow prompt ids.

Contract:

* :meth:`ComfySocket.follow` registers a prompt id BEFORE it is submitted (our ids are chosen by
  the client), so no event of that prompt can be missed while the socket is up.
* Messages carrying a ``prompt_id`` go to that prompt's follower; ``status`` broadcasts go to every
  follower; the few messages old servers send without a ``prompt_id`` go to the prompt the server
  said it was executing for us.
* ComfyUI never replays events. Whenever the connection drops, and again when it is back, every
  follower receives a synthetic :data:`comfy.messages.GAP` message: the job must then ask the
  server (history/queue) what it missed.
* The socket reconnects by itself with capped exponential backoff until :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import websockets
from websockets.asyncio.client import connect

from comfy.messages import GAP, Message, parse

log = logging.getLogger(__name__)


class Follower:
    """The events of one prompt, in arrival order."""

    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self._queue: asyncio.Queue[Message] = asyncio.Queue()

    def put(self, message: Message) -> None:
        self._queue.put_nowait(message)

    async def get(self, timeout: float) -> Message | None:
        """The next message, or ``None`` after ``timeout`` seconds of silence."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            return await asyncio.wait_for(self._queue.get(), timeout=max(0.0, timeout))
        except TimeoutError:
            return None


class ComfySocket:
    def __init__(
        self,
        url: str,
        *,
        open_timeout: float = 3.0,
        ping_interval: float = 10.0,
        max_backoff: float = 2.0,
    ) -> None:
        self.url = url
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._followers: dict[str, Follower] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._current: str | None = None
        self.connections = 0
        """How many times a connection was opened (1 = never dropped)."""

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Start the connection loop (idempotent)."""
        if self._task is None or self._task.done():
            self._closing = False
            self._task = asyncio.create_task(self._run(), name=f"comfy-socket {self.url}")

    async def wait_connected(self, timeout: float) -> bool:
        self.start()
        if self._connected.is_set():
            return True
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def follow(self, prompt_id: str) -> Follower:
        follower = Follower(prompt_id)
        self._followers[prompt_id] = follower
        return follower

    def unfollow(self, prompt_id: str) -> None:
        self._followers.pop(prompt_id, None)
        if self._current == prompt_id:
            self._current = None

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._connected.clear()

    # -- internals ------------------------------------------------------------------------------

    def _gap(self, why: str) -> None:
        message = Message(type=GAP, prompt_id=None, data={"reason": why}, received=time.monotonic())
        for follower in list(self._followers.values()):
            follower.put(message)

    def _dispatch(self, message: Message) -> None:
        if message.type == "status":
            for follower in list(self._followers.values()):
                follower.put(message)
            return
        prompt_id = message.prompt_id
        if prompt_id is None:
            prompt_id = self._current
        elif message.type == "execution_start":
            self._current = prompt_id
        if message.type == "executing" and message.data.get("node") is None and prompt_id == self._current:
            self._current = None
        follower = self._followers.get(prompt_id) if prompt_id is not None else None
        if follower is not None:
            follower.put(message)

    async def _run(self) -> None:
        delay = 0.05
        opened = time.monotonic()
        while not self._closing:
            try:
                # compression off: messages are small and latency matters more than bytes;
                # proxy off: the servers are on the render network (same reason as the HTTP client).
                async with connect(
                    self.url,
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_interval,
                    close_timeout=1.0,
                    compression=None,
                    proxy=None,
                    max_size=64 * 2**20,
                ) as ws:
                    self.connections += 1
                    self._connected.set()
                    opened = time.monotonic()
                    # Every (re)connect may have missed messages, the first one too (a job can be
                    # submitted before it): followers re-check by polling.
                    self._gap("connected" if self.connections == 1 else "reconnected")
                    async for raw in ws:
                        message = parse(raw, time.monotonic())
                        if message is not None:
                            self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                log.debug("comfy socket %s: %s: %s", self.url, type(exc).__name__, exc)
            except Exception:
                log.exception("comfy socket %s: unexpected error", self.url)
            if self._connected.is_set():
                self._connected.clear()
                self._gap("disconnected")
            if self._closing:
                break
            # The backoff restarts only after a connection that lasted: a server that accepts and
            # drops at once is not hammered with reconnects.
            if self.connections and time.monotonic() - opened > 5.0:
                delay = 0.05
            await asyncio.sleep(delay)
            delay = min(self._max_backoff, delay * 2)
