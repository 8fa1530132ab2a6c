"""A FAKE ComfyUI server (aiohttp) for the unit tests: the real API's shapes, scripted behaviour.

It is not ComfyUI. It exists for what a real 0.3.75 server cannot be made to do on demand: the
newer ``/api/jobs`` endpoints, strict UUID prompt ids, a websocket that drops or goes silent
mid-job, a POST /prompt whose answer is lost, history written late, 5xx answers. Prompts "run"
in a background task that emits the same websocket messages, in the same order, as ComfyUI 0.3.x.

Each node's behaviour comes from its class_type: ``Fail`` raises, ``Oom`` runs out of memory,
``Slow`` takes ``inputs["seconds"]`` with progress steps, ``Loader`` needs ``inputs["model_name"]``
to be in :attr:`FakeComfy.models`; anything with a ``filename_prefix`` input saves ``outputs``.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image


def png_bytes(width: int = 8, height: int = 6, value: int = 120) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class Behaviour:
    jobs_api: bool = False
    strict_uuid: bool = False
    post_mode: str = "normal"
    """normal | drop_after_enqueue | drop_before_enqueue | hang_after_enqueue | error_500_after_enqueue"""
    post_mode_times: int = 1
    """How many POSTs the post_mode applies to (then normal)."""
    silent_ws: bool = False
    """Send no execution events at all (only the initial status)."""
    drop_ws_after: str | None = None
    """Close every socket right after sending this event type (once)."""
    history_lag: float = 0.0
    """Seconds between execution_success and the history entry being written."""
    no_done_signal: bool = False
    """Do not send executing(node=None) at the end (older servers)."""
    view_status: int = 200
    accept_prompt_ids: bool = True
    """False: ignore the client's prompt_id and make one up (a server that does not honour ids)."""
    status_chatter: float | None = None
    """Broadcast a queue ``status`` this often (seconds), as a server busy with other clients does."""


@dataclass
class FakeComfy:
    behaviour: Behaviour = field(default_factory=Behaviour)
    models: set[str] = field(default_factory=set)
    files: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    submissions: list[str] = field(default_factory=list)
    """Every prompt id that reached the queue (duplicates would show here)."""
    requests: list[str] = field(default_factory=list)
    interrupts: list[str] = field(default_factory=list)
    deleted_queue: list[str] = field(default_factory=list)
    deleted_history: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The graph of every queued prompt id, as the client sent it."""
    history: dict[str, Any] = field(default_factory=dict)
    pending: list[tuple[int, str, dict[str, Any], str | None]] = field(default_factory=list)
    running: tuple[int, str] | None = None
    output_bytes: bytes = field(default_factory=png_bytes)
    url: str = ""

    def __post_init__(self) -> None:
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._number = 0
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._worker: asyncio.Task[None] | None = None
        self._dropped_ws = False
        self._post_count = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/prompt", self._post_prompt)
        app.router.add_get("/queue", self._get_queue)
        app.router.add_post("/queue", self._post_queue)
        app.router.add_get("/history/{pid}", self._get_history)
        app.router.add_post("/history", self._post_history)
        app.router.add_post("/interrupt", self._post_interrupt)
        app.router.add_get("/view", self._view)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_get("/system_stats", self._stats)
        app.router.add_get("/object_info", self._object_info)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/jobs", self._jobs)
        app.router.add_get("/api/jobs/{pid}", self._job)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._worker = asyncio.create_task(self._work())
        return self.url

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
        if getattr(self, "_chatter_task", None):
            self._chatter_task.cancel()
        for ws in list(self._sockets.values()):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    # -- HTTP -----------------------------------------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append("POST /prompt")
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        if not self.behaviour.accept_prompt_ids:
            prompt_id = str(uuid.uuid4())
        if self.behaviour.strict_uuid:
            try:
                if str(uuid.UUID(prompt_id)) != prompt_id:
                    raise ValueError
            except ValueError:
                return web.json_response({"error": {"type": "invalid_prompt_id", "message": "prompt_id must be a UUID"}, "node_errors": {}}, status=400)
        graph = body["prompt"]
        node_errors = {}
        for node_id, node in graph.items():
            if node["class_type"] == "Invalid":
                node_errors[node_id] = {"errors": [{"type": "required_input_missing", "message": "Required input is missing", "details": "images", "extra_info": {"input_name": "images"}}], "class_type": "Invalid", "dependent_outputs": []}
            if node["class_type"] == "Loader" and node["inputs"].get("model_name") not in self.models:
                node_errors[node_id] = {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": f"model_name: '{node['inputs'].get('model_name')}' not in {sorted(self.models)}", "extra_info": {"input_name": "model_name"}}], "class_type": "Loader", "dependent_outputs": []}
        if node_errors:
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": ""}, "node_errors": node_errors}, status=400)
        mode = self.behaviour.post_mode if self._post_count < self.behaviour.post_mode_times else "normal"
        self._post_count += 1
        if mode == "drop_before_enqueue":
            request.transport.close()  # type: ignore[union-attr]
            return web.Response()
        self._number += 1
        self.pending.append((self._number, prompt_id, graph, body.get("client_id")))
        self.submissions.append(prompt_id)
        self.graphs[prompt_id] = graph
        self._wake.set()
        await self._broadcast("status", {"status": {"exec_info": {"queue_remaining": self._remaining()}}})
        if self.behaviour.status_chatter and not getattr(self, "_chatter_task", None):
            self._chatter_task = asyncio.create_task(self._chatter(self.behaviour.status_chatter))
        if mode == "drop_after_enqueue":
            request.transport.close()  # type: ignore[union-attr]
            return web.Response()
        if mode == "hang_after_enqueue":
            await asyncio.sleep(1.0)  # past the tests' 0.5 s submit timeout
        if mode == "error_500_after_enqueue":
            return web.Response(status=500, text="boom")
        return web.json_response({"prompt_id": prompt_id, "number": self._number, "node_errors": {}})

    async def _chatter(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            await self._broadcast("status", {"status": {"exec_info": {"queue_remaining": self._remaining()}}})

    def _remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    async def _get_queue(self, request: web.Request) -> web.Response:
        self.requests.append("GET /queue")
        running = [[self.running[0], self.running[1], {}, {}, []]] if self.running else []
        pending = [[n, pid, {}, {}, []] for n, pid, _, _ in self.pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        for pid in body.get("delete", []):
            self.deleted_queue.append(pid)
            self.pending = [p for p in self.pending if p[1] != pid]
        return web.Response()

    async def _get_history(self, request: web.Request) -> web.Response:
        self.requests.append("GET /history")
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        for pid in body.get("delete", []):
            self.deleted_history.append(pid)
            self.history.pop(pid, None)
        return web.Response()

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await request.json()
        pid = body.get("prompt_id")
        self.interrupts.append(pid)
        if self.running and self.running[1] == pid:
            self._interrupt.set()
        return web.Response()

    async def _view(self, request: web.Request) -> web.Response:
        key = (request.query["filename"], request.query.get("subfolder", ""), request.query.get("type", "output"))
        if self.behaviour.view_status != 200 or key not in self.files:
            return web.Response(status=404 if self.behaviour.view_status == 200 else self.behaviour.view_status)
        return web.Response(body=self.files[key])

    async def _upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post["image"]
        name = image.filename  # type: ignore[union-attr]
        self.uploads.append(name)
        return web.json_response({"name": name, "subfolder": post.get("subfolder", ""), "type": "input"})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"comfyui_version": "fake"}, "devices": []})

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _jobs(self, request: web.Request) -> web.Response:
        if not self.behaviour.jobs_api:  # like 0.3.75: no such route
            return web.Response(status=404, text="404: Not Found")
        return web.json_response({"jobs": [], "pagination": {"offset": 0, "limit": 1, "total": 0, "has_more": False}})

    async def _job(self, request: web.Request) -> web.Response:
        if not self.behaviour.jobs_api:
            return web.Response(status=404, text="404: Not Found")
        self.requests.append("GET /api/jobs/{id}")
        pid = request.match_info["pid"]
        if pid in self.history:
            status = self.history[pid]["status"]["status_str"]
            return web.json_response({"id": pid, "status": "completed" if status == "success" else "failed"})
        if self.running and self.running[1] == pid:
            return web.json_response({"id": pid, "status": "in_progress"})
        if any(p[1] == pid for p in self.pending):
            return web.json_response({"id": pid, "status": "pending"})
        return web.json_response({"error": "Job not found"}, status=404)

    # -- websocket ------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        self._sockets[sid] = ws
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": self._remaining()}}, "sid": sid}})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self._sockets.get(sid) is ws:
                del self._sockets[sid]
        return ws

    async def _broadcast(self, kind: str, data: dict[str, Any]) -> None:
        for ws in list(self._sockets.values()):
            if not ws.closed:
                await ws.send_json({"type": kind, "data": data})

    async def _send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        if self.behaviour.silent_ws:
            return
        ws = self._sockets.get(client_id or "")
        if ws is not None and not ws.closed:
            await ws.send_json({"type": kind, "data": data})
        if self.behaviour.drop_ws_after == kind and not self._dropped_ws:
            self._dropped_ws = True
            for sock in list(self._sockets.values()):
                await sock.close()

    # -- execution ------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            self.pending.sort()
            number, pid, graph, client_id = self.pending.pop(0)
            self.running = (number, pid)
            self._interrupt.clear()
            try:
                await self._execute(pid, graph, client_id)
            finally:
                self.running = None
                await self._broadcast("status", {"status": {"exec_info": {"queue_remaining": self._remaining()}}})

    async def _execute(self, pid: str, graph: dict[str, Any], client_id: str | None) -> None:
        messages: list[Any] = []

        async def note(kind: str, data: dict[str, Any]) -> None:
            data = {**data, "prompt_id": pid, "timestamp": int(time.time() * 1000)}
            messages.append([kind, data])
            await self._send(client_id, kind, data)

        await note("execution_start", {})
        await note("execution_cached", {"nodes": []})
        outputs: dict[str, Any] = {}
        status = "success"
        for node_id in sorted(graph, key=int):
            node = graph[node_id]
            kind = node["class_type"]
            await self._send(client_id, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
            if kind == "Slow":
                steps = 10
                for step in range(steps):
                    try:
                        await asyncio.wait_for(self._interrupt.wait(), node["inputs"].get("seconds", 1.0) / steps)
                    except TimeoutError:
                        await self._send(client_id, "progress", {"value": step + 1, "max": steps, "prompt_id": pid, "node": node_id})
                        continue
                    await note("execution_interrupted", {"node_id": node_id, "node_type": kind, "executed": []})
                    status = "error"
                    break
            elif kind in ("Fail", "Oom"):
                text = "CUDA out of memory. Tried to allocate 2 GiB" if kind == "Oom" else "boom"
                etype = "torch.OutOfMemoryError" if kind == "Oom" else "ValueError"
                await note("execution_error", {"node_id": node_id, "node_type": kind, "exception_message": text, "exception_type": etype, "traceback": [], "executed": []})
                status = "error"
            if status == "error":
                break
            if "filename_prefix" in node["inputs"]:
                name = f"{node['inputs']['filename_prefix']}_{len(self.files):05d}_.png"
                self.files[(name, "", "output")] = self.output_bytes
                outputs[node_id] = {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
                await self._send(client_id, "executed", {"node": node_id, "output": outputs[node_id], "prompt_id": pid})
        if status == "success":
            await note("execution_success", {})
        if self.behaviour.history_lag:
            await asyncio.sleep(self.behaviour.history_lag)
        self.history[pid] = {
            "prompt": [0, pid, graph, {}, []],
            "outputs": outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {},
        }
        if not self.behaviour.no_done_signal:
            await self._send(client_id, "executing", {"node": None, "prompt_id": pid})
