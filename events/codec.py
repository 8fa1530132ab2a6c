"""The codec Faust uses for each topic's values.

It never raises: a value that is not valid JSON for its model decodes to :class:`Malformed`,
which the agent sends to the dead-letter topic with the reason. (Faust itself would log a
decode error, throw it into the agent and commit past the message: the message would be lost.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.serializers.codecs import Codec
from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class Malformed:
    """A value that could not be decoded; ``raw`` is kept byte for byte for the dead letter."""

    raw: bytes
    error_class: str
    reason: str


def decode_value(model: type[BaseModel], raw: bytes | None) -> BaseModel | Malformed:
    if raw is None:
        return Malformed(b"", "EmptyValue", "the message has no value (a tombstone?)")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_url=False)[:5]
        )
        return Malformed(raw, "ValidationError", f"invalid {model.__name__}: {problems}")


class EventCodec(Codec):
    """``bytes <-> model`` for one event model (compact JSON, UTF-8)."""

    def __init__(self, model: type[BaseModel], **kwargs: Any) -> None:
        self.model = model
        super().__init__(model=model, **kwargs)

    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, bytes):
            return obj
        return obj.model_dump_json().encode()

    def _loads(self, s: bytes) -> BaseModel | Malformed:
        return decode_value(self.model, s)
