"""What can go wrong talking to ComfyUI, classified by what the caller should do about it.

Every error carries a :class:`Disposition`; the pool (:mod:`comfy.pool`) acts on it and the render
backend turns the final ones into :class:`render.backends.RenderError`:

========================  =====================================================================
``FINAL``                 the workflow can never render (validation, a node that raises, a bad
                          template): retrying anywhere gives the same answer.
``OTHER_SERVER``          this server cannot run it (a model it lacks); another server may.
``ONCE_ELSEWHERE``        out of memory: one more try on another server, then final.
``RETRY``                 transport trouble, 5xx, a stalled or lost job: retry with backoff, on
                          this server or another.
========================  =====================================================================

Errors that mean "the render service is unavailable", not "this workflow is bad", also derive
from :class:`ConnectionError` (:class:`ServerBusy`, :class:`ServersUnavailable`): callers that
wait out outages (the agents' runtime) recognise them without knowing this module.
"""

from __future__ import annotations

import enum
import re
from typing import Any

# "OOM" as a word only: "room" or "bloom" in a message must not read as out of memory.
_OOM = re.compile(r"out ?of ?memory|\boom\b|allocation on device|memoryerror", re.IGNORECASE)


class Disposition(enum.Enum):
    FINAL = "final"
    OTHER_SERVER = "other_server"
    ONCE_ELSEWHERE = "once_elsewhere"
    RETRY = "retry"


class ComfyError(Exception):
    """Base of every ComfyUI error; ``disposition`` says whether and where to retry."""

    disposition: Disposition = Disposition.RETRY

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.server = server

    @property
    def final(self) -> bool:
        return self.disposition is Disposition.FINAL


class IdsNotHonoured(ComfyError):
    """The server replaced our client-chosen prompt id: the duplicate check cannot work there."""

    disposition = Disposition.OTHER_SERVER


class TransportError(ComfyError):
    """The server could not be reached or broke the exchange (connect, reset, timeout, 5xx)."""

    disposition = Disposition.RETRY
    server_fault = True
    """The server itself failed (the pool marks it down); False for a job-level trouble on a
    server that answered."""


class AmbiguousSubmit(TransportError):
    """A POST /prompt that may or may not have reached the queue, and the server cannot tell us.

    The prompt id is kept so the pool can cancel it if the server comes back (no duplicate render).
    """

    def __init__(self, message: str, *, prompt_id: str, server: str | None = None) -> None:
        super().__init__(message, server=server)
        self.prompt_id = prompt_id


class ServerBusy(TransportError, ConnectionError):
    """No server had room before the deadline: an outage of the render service, not a bad job."""

    server_fault = False


class ServersUnavailable(ServerBusy):
    """No server has answered its health check for a while (``PoolConfig.unavailable_after``):
    raised in seconds rather than at the job's deadline, so the caller can wait the outage out."""


class JobLost(TransportError):
    """The server no longer knows the job: not queued, not running, no history (a restart)."""

    server_fault = False


class JobTimeout(TransportError):
    """The job did not finish before its deadline; it was interrupted and removed from the queue.

    The server answered all along (a down server fails fast as :class:`ServersUnavailable`), so
    the job itself is too slow for ``TOWER_COMFY_TIMEOUT_S``: the render backend makes it a failed
    render of this attempt rather than something to retry for another deadline."""

    server_fault = False


class Interrupted(TransportError):
    """Someone else interrupted the job on the server (we did not ask for it)."""

    server_fault = False


class HistoryUnavailable(TransportError):
    """The job ended but its history entry never appeared within the bounded retries."""

    server_fault = False


class OutputError(TransportError):
    """An output file could not be fetched (GET /view failed or returned nothing)."""

    server_fault = False


class ValidationFailed(ComfyError):
    """POST /prompt answered 400: the graph is invalid. ``node_errors`` is ComfyUI's per-node detail."""

    disposition = Disposition.FINAL

    def __init__(
        self,
        message: str,
        *,
        error: dict[str, Any] | None = None,
        node_errors: dict[str, Any] | None = None,
        server: str | None = None,
    ) -> None:
        super().__init__(message, server=server)
        self.error = error or {}
        self.node_errors = node_errors or {}


class ModelMissing(ValidationFailed):
    """Validation failed only because a loader node names a model this server does not have."""

    disposition = Disposition.OTHER_SERVER


class ModelMissingEverywhere(ModelMissing):
    """No server of the pool has the model: final (still a :class:`ModelMissing`, so callers can
    tell a missing model from a broken graph)."""

    disposition = Disposition.FINAL


class ExecutionFailed(ComfyError):
    """A node raised during execution (``execution_error``); deterministic, so final."""

    disposition = Disposition.FINAL

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str | None = None,
        server: str | None = None,
    ) -> None:
        super().__init__(message, server=server)
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type


class OutOfMemory(ExecutionFailed):
    """An ``execution_error`` whose exception type or message says out of memory."""

    disposition = Disposition.ONCE_ELSEWHERE


class WorkflowError(ComfyError):
    """A template or UI export we cannot use: unsupported features, missing slots, bad JSON."""

    disposition = Disposition.FINAL


def is_oom(exception_type: str | None, message: str | None) -> bool:
    """True when ComfyUI's error names an out-of-memory condition (CUDA, MPS, CPU allocator).

    ComfyUI reports OOM as an ordinary ``execution_error``; only the text tells them apart.
    """
    return bool(_OOM.search(f"{exception_type or ''} {message or ''}"))
