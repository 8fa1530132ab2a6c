"""The HTTP side of one ComfyUI server, plus its long-lived websocket (:mod:`comfy.socket`).

Contract of every method: success returns parsed data; a transport failure (connect, reset,
timeout) or a 5xx raises :class:`~comfy.errors.TransportError`; 4xx answers raise the specific
error the endpoint documents. Nothing here retries: retry policy lives in :mod:`comfy.jobs` and
:mod:`comfy.pool`, which know whether a retry is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from comfy.errors import (
    AmbiguousSubmit,
    ComfyError,
    IdsNotHonoured,
    ModelMissing,
    OutputError,
    TransportError,
    ValidationFailed,
)
from comfy.socket import ComfySocket

log = logging.getLogger(__name__)

#: Inputs whose "value not in list" means "this server lacks the file", not "the graph is wrong".
_MEDIA_INPUTS = frozenset({"image", "video", "audio", "mask", "upload", "file"})


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Timeouts in seconds. ``submit`` is long because ComfyUI validates the graph (and lists model
    folders) before it answers POST /prompt."""

    connect: float = 3.0
    request: float = 15.0
    submit: float = 30.0
    view: float = 60.0
    socket_open: float = 3.0
    socket_ping: float = 10.0


@dataclass(frozen=True, slots=True)
class Submitted:
    prompt_id: str
    number: float | None
    node_errors: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """``GET /queue``: (number, prompt_id) of the running and pending prompts, pending in run order."""

    running: list[tuple[float, str]]
    pending: list[tuple[float, str]]

    def position(self, prompt_id: str) -> int | None:
        """Prompts that will run before ``prompt_id`` (running ones included); ``None`` if absent."""
        if any(pid == prompt_id for _, pid in self.running):
            return 0
        for index, (_, pid) in enumerate(self.pending):
            if pid == prompt_id:
                return len(self.running) + index
        return None

    def __contains__(self, prompt_id: object) -> bool:
        return any(pid == prompt_id for _, pid in self.running + self.pending)


JobStatus = Literal["queued", "running", "done", "unknown"]


@dataclass(frozen=True, slots=True)
class JobState:
    """Where a prompt is on one server. ``history`` is the entry when ``status == "done"`` (``None``
    when the server says finished but the entry is not written yet)."""

    status: JobStatus
    position: int | None = None
    history: dict[str, Any] | None = None


class ComfyClient:
    """One ComfyUI server: HTTP calls and a websocket, both kept open for the client's life.

    ``client_id`` is stable for the client's life (it names our websocket session, and the server
    addresses a prompt's events to the client id it was submitted with); give one to keep it
    across process restarts.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str | None = None,
        config: ClientConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.config = config or ClientConfig()
        timeout = httpx.Timeout(self.config.request, connect=self.config.connect)
        # trust_env=False: ComfyUI servers sit on the render network; a proxy from the environment
        # would only add a hop (and break loopback test servers).
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport, trust_env=False)
        ws_url = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        self.socket = ComfySocket(
            f"{ws_url}/ws?clientId={self.client_id}",
            open_timeout=self.config.socket_open,
            ping_interval=self.config.socket_ping,
        )
        self._jobs_api: bool | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a best-effort chore (cancelling or cleaning up a job) without making a caller wait;
        :meth:`aclose` gives the chores a bounded time to finish."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self, grace: float = 2.0) -> None:
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=grace)
            for task in pending:
                task.cancel()
        await self.socket.close()
        await self._http.aclose()

    # -- plumbing -------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}", server=self.url) from exc
        if response.status_code >= 500:
            raise TransportError(
                f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}", server=self.url
            )
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}", server=self.url)
        try:
            return response.json()
        except ValueError as exc:
            raise TransportError(f"{method} {path}: not JSON: {response.text[:200]}", server=self.url) from exc

    # -- jobs -----------------------------------------------------------------------------------

    async def submit(self, workflow: dict[str, Any], prompt_id: str) -> Submitted:
        """POST /prompt with our ``prompt_id`` and ``client_id``.

        Raises :class:`AmbiguousSubmit` when the request may have reached the queue but we got no
        answer (timeout or reset after sending, or a 5xx): the caller must look the id up before
        sending it again. A failure to connect at all is a plain :class:`TransportError` (nothing
        was sent). A 400 raises :class:`ValidationFailed` or, when the only problem is a model this
        server lacks, :class:`ModelMissing`.
        """
        body = {"prompt": workflow, "prompt_id": prompt_id, "client_id": self.client_id}
        try:
            response = await self._http.post("/prompt", json=body, timeout=self._timeout(self.config.submit))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TransportError(f"POST /prompt: cannot connect: {exc}", server=self.url) from exc
        except httpx.HTTPError as exc:
            raise AmbiguousSubmit(
                f"POST /prompt: {type(exc).__name__} after sending", prompt_id=prompt_id, server=self.url
            ) from exc
        if response.status_code >= 500:
            raise AmbiguousSubmit(f"POST /prompt: HTTP {response.status_code}", prompt_id=prompt_id, server=self.url)
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code == 400:
            raise classify_rejection(payload, server=self.url)
        if response.status_code != 200:
            raise ComfyError(f"POST /prompt: HTTP {response.status_code}: {response.text[:200]}", server=self.url)
        returned = str(payload.get("prompt_id", prompt_id))
        if returned != prompt_id:
            # A server that ignores client-chosen ids would defeat the duplicate check; refuse it,
            # and stop what it queued (an idle server starts it at once, so dequeue and interrupt).
            with contextlib.suppress(ComfyError):
                await self.delete_queued([returned])
                await self.interrupt(returned)
            raise IdsNotHonoured(
                f"server replaced prompt id {prompt_id} with {returned}; it does not honour client ids",
                server=self.url,
            )
        number = payload.get("number")
        return Submitted(
            prompt_id=returned,
            number=float(number) if isinstance(number, (int, float)) else None,
            node_errors=payload.get("node_errors") or {},
        )

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """GET /history/{id}: the entry, or ``None`` when the server has none (yet, or ever)."""
        payload = await self._json("GET", f"/history/{prompt_id}")
        entry = payload.get(prompt_id) if isinstance(payload, dict) else None
        return entry if isinstance(entry, dict) else None

    async def queue(self) -> QueueSnapshot:
        payload = await self._json("GET", "/queue")

        def items(key: str) -> list[tuple[float, str]]:
            out = []
            for item in payload.get(key, []) or []:
                if isinstance(item, list) and len(item) >= 2:
                    out.append((float(item[0]), str(item[1])))
            return sorted(out)

        return QueueSnapshot(running=items("queue_running"), pending=items("queue_pending"))

    async def supports_jobs_api(self) -> bool:
        """Whether the server has ComfyUI's newer ``/api/jobs`` endpoints (probed once)."""
        if self._jobs_api is None:
            response = await self._request("GET", "/api/jobs", params={"limit": 1})
            self._jobs_api = response.status_code == 200 and "jobs" in _safe_json(response)
        return self._jobs_api

    async def locate(self, prompt_id: str) -> JobState:
        """Where ``prompt_id`` is: queued (with position), running, done (with history) or unknown.

        ``/history/{id}`` alone cannot tell "unknown" from "not finished": both are ``{}``. With the
        jobs API one call answers; otherwise /queue is read BEFORE /history: ComfyUI moves a prompt
        from running to history atomically, so a prompt absent from the queue at that moment is in
        the history afterwards, or was never (or is no longer) known.
        """
        if await self.supports_jobs_api():
            response = await self._request("GET", f"/api/jobs/{prompt_id}")
            if response.status_code == 404:
                return JobState("unknown")
            job = _safe_json(response)
            status = job.get("status")
            if status == "pending":
                return JobState("queued", position=_int(job.get("queue_position")))
            if status == "in_progress":
                return JobState("running", position=0)
            if status in ("completed", "failed", "cancelled"):
                # history=None: finished, entry not readable yet; the caller retries the history.
                return JobState("done", history=await self.history(prompt_id))
            return JobState("unknown")
        snapshot = await self.queue()
        position = snapshot.position(prompt_id)
        if position is not None:
            return JobState("running" if position == 0 and _running(snapshot, prompt_id) else "queued", position)
        entry = await self.history(prompt_id)
        if entry is not None:
            return JobState("done", history=entry)
        return JobState("unknown")

    async def interrupt(self, prompt_id: str) -> None:
        """POST /interrupt for this prompt only (a server that ignores the id interrupts whatever
        runs, which is why we also check the prompt is ours before calling it)."""
        await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def delete_queued(self, prompt_ids: list[str]) -> None:
        await self._request("POST", "/queue", json={"delete": prompt_ids})

    async def delete_history(self, prompt_ids: list[str]) -> None:
        await self._request("POST", "/history", json={"delete": prompt_ids})

    # -- files ----------------------------------------------------------------------------------

    async def view(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        """GET /view: the bytes of one output file (as stored, no preview conversion)."""
        response = await self._request(
            "GET",
            "/view",
            params={"filename": filename, "subfolder": subfolder, "type": folder_type},
            timeout=self._timeout(self.config.view),
        )
        if response.status_code != 200 or not response.content:
            raise OutputError(
                f"GET /view {subfolder}/{filename} ({folder_type}): HTTP {response.status_code}", server=self.url
            )
        return response.content

    async def upload_image(self, data: bytes, name: str, *, subfolder: str = "tower") -> str:
        """POST /upload/image (multipart) into the input folder; returns the value a ``LoadImage``
        node takes (``subfolder/name``). ``overwrite`` so re-uploading the same name is idempotent."""
        response = await self._request(
            "POST",
            "/upload/image",
            files={"image": (name, data, "application/octet-stream")},
            data={"type": "input", "subfolder": subfolder, "overwrite": "true"},
        )
        if response.status_code != 200:
            raise ComfyError(f"POST /upload/image: HTTP {response.status_code}", server=self.url)
        payload = _safe_json(response)
        stored, folder = str(payload.get("name", name)), str(payload.get("subfolder", subfolder))
        return f"{folder}/{stored}" if folder else stored

    # -- server ---------------------------------------------------------------------------------

    async def object_info(self) -> dict[str, Any]:
        return await self._json("GET", "/object_info", timeout=self._timeout(self.config.view))

    async def models(self, folder: str) -> list[str]:
        """GET /models/{folder}: the file names ComfyUI lists in a models folder (sub-folders with
        ``/``); empty for a folder this server does not know (HTTP 404)."""
        response = await self._request("GET", f"/models/{folder}")
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise ComfyError(f"GET /models/{folder}: HTTP {response.status_code}", server=self.url)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, list):
            raise TransportError(f"GET /models/{folder}: not a list of files", server=self.url)
        return [str(name) for name in payload]

    async def system_stats(self) -> dict[str, Any]:
        """GET /system_stats; used as the health check."""
        payload = await self._json("GET", "/system_stats")
        if not isinstance(payload, dict) or "system" not in payload:
            raise TransportError("GET /system_stats: not a ComfyUI answer", server=self.url)
        return payload

    def _timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(read, connect=self.config.connect)


def classify_rejection(payload: dict[str, Any], *, server: str | None = None) -> ValidationFailed:
    """Turn a 400 from POST /prompt into :class:`ModelMissing` or :class:`ValidationFailed`.

    It is :class:`ModelMissing` only when every reported problem is ``value_not_in_list`` on a
    model-name input (``ckpt_name``, ``lora_name``...) of a node: another server may have that file.
    """
    error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    node_errors = payload.get("node_errors") if isinstance(payload.get("node_errors"), dict) else {}
    problems: list[tuple[str, str, dict[str, Any]]] = []
    for node_id, detail in node_errors.items():
        for item in (detail or {}).get("errors", []) or []:
            problems.append((str(node_id), str((detail or {}).get("class_type", "?")), item or {}))
    message = _describe(error, problems)
    missing_model = bool(problems) and all(
        item.get("type") == "value_not_in_list" and _is_model_input(class_type, item)
        for _, class_type, item in problems
    )
    cls = ModelMissing if missing_model else ValidationFailed
    return cls(message, error=error, node_errors=node_errors, server=server)


def _is_model_input(class_type: str, item: dict[str, Any]) -> bool:
    name = str((item.get("extra_info") or {}).get("input_name", ""))
    if name in _MEDIA_INPUTS:
        return False
    return name.endswith("_name") or "loader" in class_type.lower()


def _describe(error: dict[str, Any], problems: list[tuple[str, str, dict[str, Any]]]) -> str:
    head = str(error.get("message") or "workflow rejected")
    details = [
        f"node {node_id} ({class_type}): {item.get('message', '?')}: {item.get('details', '')}".rstrip(": ")
        for node_id, class_type, item in problems[:5]
    ]
    if not details and error.get("details"):
        details = [str(error["details"])]
    more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"{head}: {'; '.join(details)}{more}" if details else head


def _running(snapshot: QueueSnapshot, prompt_id: str) -> bool:
    return any(pid == prompt_id for _, pid in snapshot.running)


def _safe_json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None
