"""The envelope: CloudEvents binary-mode headers around a model, keyed by scene id.

Headers on every message (values UTF-8):

==================  ==========================================================
``ce_specversion``  ``1.0``
``ce_id``           event id (UUID); with ``ce_source`` the idempotency key
``ce_source``       producer, e.g. ``tower/planner`` or ``tower/cli``
``ce_type``         versioned type, e.g. ``tower.shot.planned.v1``
``ce_time``         RFC 3339 production time
``ce_subject``      the scene id (the message key is the scene id, or ``scene_id/shot_number``
                    for an event about one shot: see :func:`message_key`)
``ce_correlationid``  the scene id: every event of one scene shares it
``ce_sessionid``    the creative session
``ce_causationid``  id of the event this one was derived from (absent for a root event)
``content-type``    ``application/json``
==================  ==========================================================

Derived event ids are deterministic (:func:`derive_event_id`): an agent that handles the same
input twice (at-least-once delivery, a restart) produces the same ids, so every consumer's
"keyed by event id" dedup recognises the repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
# A fixed namespace so derived ids are stable across processes, hosts and versions.
TOWER_NAMESPACE = uuid.UUID("6f1d3c2e-2b7a-5c8e-9a41-7d0b5e3f6a10")

M = TypeVar("M", bound=BaseModel)
RawHeaders = Iterable[tuple[str, bytes]] | Mapping[str, bytes]


class EnvelopeError(ValueError):
    """The headers of a message are missing or malformed."""


def derive_event_id(causation_id: str, event_type: str, index: int = 0) -> str:
    """The id of the ``index``-th event of ``event_type`` caused by ``causation_id``."""
    return str(uuid.uuid5(TOWER_NAMESPACE, f"{causation_id}/{event_type}/{index}"))


def shot_number_of(value: object) -> int | None:
    """The shot an event is about (``shot.shot_number`` or ``shot_number``), ``None`` for a scene's."""
    shot = getattr(value, "shot", None)
    number = getattr(shot, "shot_number", None) if shot is not None else getattr(value, "shot_number", None)
    return number if isinstance(number, int) else None


def message_key(scene_id: str, shot_number: int | None = None) -> bytes:
    """The Kafka key: ``scene_id`` for a scene's events, ``scene_id/shot_number`` for a shot's.

    Every attempt of a shot has the same key, so the attempts of one shot stay in one partition,
    in order; the shots of a scene spread over the partitions and are worked on in parallel.
    Scene ids cannot contain ``/`` (see ``events.models.SceneId``).
    """
    return (scene_id if shot_number is None else f"{scene_id}/{shot_number}").encode()


def scene_of_key(key: bytes | None) -> str:
    """The scene id of a message key (either form of :func:`message_key`)."""
    return (key or b"").split(b"/", 1)[0].decode(errors="replace")


def new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Envelope(Generic[M]):
    """An event: its CloudEvents attributes and its typed value."""

    id: str
    source: str
    type: str
    scene_id: str
    session_id: str
    value: M
    causation_id: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def key(self) -> bytes:
        return message_key(self.scene_id, shot_number_of(self.value))

    def encode_value(self) -> bytes:
        return self.value.model_dump_json().encode()

    def headers(self) -> list[tuple[str, bytes]]:
        pairs = [
            ("ce_specversion", SPEC_VERSION),
            ("ce_id", self.id),
            ("ce_source", self.source),
            ("ce_type", self.type),
            ("ce_time", self.time.isoformat().replace("+00:00", "Z")),
            ("ce_subject", self.scene_id),
            ("ce_correlationid", self.scene_id),
            ("ce_sessionid", self.session_id),
            ("content-type", CONTENT_TYPE),
        ]
        if self.causation_id:
            pairs.append(("ce_causationid", self.causation_id))
        return [(name, value.encode()) for name, value in pairs]

    def derive(self, value: BaseModel, *, source: str, index: int = 0, basis: str | None = None) -> Envelope:
        """A child event of this one: same scene and session, causation = this event.

        Its id is derived from this event's id, the child's type and ``index`` (the position
        among this event's children of that type), so handling this event again yields the
        same child ids. An event that any of several inputs may cause (a scene's assembly, by
        whichever shot finished last) derives its id from ``basis`` instead: what it is made of.
        """
        from events.topics import EVENT_TYPES  # topics imports models; keep this module leaf-level

        event_type = EVENT_TYPES[type(value)].event_type
        return Envelope(
            id=derive_event_id(basis if basis is not None else self.id, event_type, index),
            source=source,
            type=event_type,
            scene_id=self.scene_id,
            session_id=self.session_id,
            value=value,
            causation_id=self.id,
        )


def header_map(headers: RawHeaders | None) -> dict[str, str]:
    """Headers as a ``str -> str`` dict (the last value wins for a repeated name)."""
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    result: dict[str, str] = {}
    for name, value in items:
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", errors="replace")
        result[str(name)] = "" if value is None else str(value)
    return result


def open_envelope(value: M, headers: RawHeaders | None, *, expected_type: str) -> Envelope[M]:
    """Wrap a decoded value in its envelope; :class:`EnvelopeError` says what is wrong."""
    attrs = header_map(headers)
    missing = [name for name in ("ce_id", "ce_source", "ce_type") if not attrs.get(name)]
    if missing:
        raise EnvelopeError(f"missing CloudEvents header(s): {', '.join(missing)}")
    if attrs["ce_type"] != expected_type:
        raise EnvelopeError(f"ce_type {attrs['ce_type']!r} is not {expected_type!r} on this topic")
    scene_id = getattr(value, "scene_id")
    if attrs.get("ce_subject", scene_id) != scene_id:
        raise EnvelopeError(f"ce_subject {attrs['ce_subject']!r} differs from scene_id {scene_id!r}")
    try:
        time = datetime.fromisoformat(attrs["ce_time"]) if attrs.get("ce_time") else datetime.now(UTC)
    except ValueError as exc:
        raise EnvelopeError(f"ce_time is not RFC 3339: {attrs['ce_time']!r}") from exc
    return Envelope(
        id=attrs["ce_id"],
        source=attrs["ce_source"],
        type=attrs["ce_type"],
        scene_id=scene_id,
        session_id=getattr(value, "session_id"),
        value=value,
        causation_id=attrs.get("ce_causationid") or None,
        time=time,
    )
