"""JSON Schemas of the event values, for services that produce or validate Tower's events."""

from __future__ import annotations

import json
from pathlib import Path

from events.topics import SIDE_TOPICS, TOPICS


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<ce_type>.schema.json`` per topic into ``directory``; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in TOPICS + SIDE_TOPICS:
        schema = spec.model.model_json_schema()
        schema["$id"] = f"urn:tower:{spec.event_type}"
        schema["title"] = spec.model.__name__
        schema["x-topic"] = spec.name
        schema["x-ce-type"] = spec.event_type
        path = directory / f"{spec.event_type}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
