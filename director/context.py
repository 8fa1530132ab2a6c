"""The context a prompt pattern is learned in, as a typed value: camera angle x mood x lighting x
workflow (the render model and graph: a model's response to a prompt is its own).

A context is stored and sent as one key string (the pattern table's key, ``PromptSpec.context``),
``camera|mood|lighting|workflow`` with ``\\`` and ``|`` inside a label escaped by ``\\``, so any label
(a planner's "neon | rain", a user's workflow name) reads back as itself. Only this module writes
or reads that form; SQL never splits it (scores keep their workflow in a column of their own).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SEPARATOR = "|"
ESCAPE = "\\"


@dataclass(frozen=True)
class PatternContext:
    camera_angle: str
    mood: str
    lighting: str
    workflow: str

    @property
    def key(self) -> str:
        return SEPARATOR.join(escape_label(field) for field in (self.camera_angle, self.mood, self.lighting, self.workflow))

    @classmethod
    def parse(cls, key: str) -> PatternContext:
        """The context of ``key``. A key written before labels were escaped, with a ``|`` inside a
        label, reads as it always did: the first field is the camera, the last the workflow, the
        mood up to the next ``|``."""
        fields = _split(key)
        if len(fields) == 4:
            return cls(*fields)
        camera, _, rest = key.partition(SEPARATOR)
        rest, _, workflow = rest.rpartition(SEPARATOR)
        mood, _, lighting = rest.partition(SEPARATOR)
        return cls(camera, mood, lighting, workflow)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def escape_label(label: str) -> str:
    """``label`` as it stands in a key."""
    return label.replace(ESCAPE, ESCAPE * 2).replace(SEPARATOR, ESCAPE + SEPARATOR)


def _split(key: str) -> list[str]:
    fields, current, escaped = [], [], False
    for char in key:
        if escaped:
            current.append(char)
            escaped = False
        elif char == ESCAPE:
            escaped = True
        elif char == SEPARATOR:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields
