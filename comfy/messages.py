"""ComfyUI's websocket messages, parsed into small typed records.

The server sends JSON text frames ``{"type": ..., "data": {...}}`` and binary frames (previews),
which we ignore. Shapes (ComfyUI 0.3.x, ``server.py``/``execution.py``/``main.py``):

* ``status``                ``{"status": {"exec_info": {"queue_remaining": n}}, "sid"?}``, to all
* ``execution_start``       ``{"prompt_id", "timestamp"}``
* ``execution_cached``      ``{"nodes": [...], "prompt_id", "timestamp"}``
* ``executing``             ``{"node": id | None, "display_node"?, "prompt_id"}``; ``node=None`` is sent
                            after the history entry is written (0.3.x), older servers omit it
* ``progress``              ``{"value", "max", "prompt_id", "node"}``
* ``executed``              ``{"node", "display_node", "output", "prompt_id"}``
* ``execution_success``     ``{"prompt_id", "timestamp"}``; may arrive before the history is written
* ``execution_error``       ``{"prompt_id", "node_id", "node_type", "exception_message",
                            "exception_type", "traceback", ...}``
* ``execution_interrupted`` ``{"prompt_id", "node_id", "node_type", "executed", "timestamp"}``

Events that are lost while the socket is down are never replayed: the job logic must poll.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One parsed server message; ``prompt_id`` is ``None`` for broadcasts such as ``status``."""

    type: str
    prompt_id: str | None
    data: dict[str, Any] = field(repr=False)
    received: float = 0.0
    """``time.monotonic()`` when the client read it."""

    @property
    def node(self) -> str | None:
        value = self.data.get("node", self.data.get("node_id"))
        return None if value is None else str(value)

    @property
    def timestamp_ms(self) -> int | None:
        """The server's wall-clock stamp (``execution_*`` events only)."""
        value = self.data.get("timestamp")
        return int(value) if isinstance(value, (int, float)) else None

    @property
    def queue_remaining(self) -> int | None:
        """For ``status``: how many prompts the server still has (queued + running)."""
        try:
            return int(self.data["status"]["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError):
            return None


#: Events after which the prompt will not produce anything more.
TERMINAL = frozenset({"execution_success", "execution_error", "execution_interrupted"})

#: A synthetic message the socket hands every follower when the connection dropped or came back:
#: events may have been lost in between, so followers must poll.
GAP = "tower_socket_gap"


def parse(raw: str | bytes, received: float = 0.0) -> Message | None:
    """Parse one websocket frame; ``None`` for binary previews and anything that is not a message."""
    if isinstance(raw, (bytes, bytearray)):
        return None
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
        return None
    data = payload.get("data")
    if not isinstance(data, dict):
        data = {}
    prompt_id = data.get("prompt_id")
    return Message(
        type=payload["type"],
        prompt_id=str(prompt_id) if prompt_id is not None else None,
        data=data,
        received=received,
    )
