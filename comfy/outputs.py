"""Output files of a finished prompt: listing them from its history entry and fetching them.

A history entry's ``outputs`` maps an output node id to its UI result, e.g.
``{"9": {"images": [{"filename", "subfolder", "type"}], "animated": [true]}}``. The list keys vary
by node: ``images`` (SaveImage, SaveAnimatedWEBP/PNG and, in 0.3.x, SaveVideo), ``gifs`` (Video
Helper Suite), ``video``/``videos``, ``audio``...; ``animated`` is a flag, not files. We take every
list of file records, whatever its key, and decide what a file is from its bytes, not its name.

Names and folders from the server are used only to ask GET /view for the file; nothing here
writes to disk (the render backend stores the bytes under names it chooses).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from comfy.client import ComfyClient
from comfy.errors import WorkflowError

#: UI keys that hold something other than files.
_NOT_FILES = frozenset({"animated", "text"})


@dataclass(frozen=True, slots=True)
class OutputFile:
    node_id: str
    key: str
    """The UI key it came under (``images``, ``gifs``, ...)."""
    index: int
    filename: str
    subfolder: str
    folder_type: str
    """``output`` (saved) or ``temp`` (previews)."""
    animated: bool
    server_format: str | None = None
    """The MIME type some nodes report (``format``); informational only."""


def output_files(entry: dict[str, Any], *, previews: bool | None = None) -> list[OutputFile]:
    """Every output file record of a history entry, in a stable order (node id, then position).

    ``previews=None`` takes saved files (``type == "output"``) and falls back to temp previews only
    when a prompt saved nothing, so a graph with both SaveImage and PreviewImage is not doubled.
    """
    found: list[OutputFile] = []
    outputs = entry.get("outputs") or {}
    for node_id in sorted(outputs, key=_node_order):
        ui = outputs[node_id]
        if not isinstance(ui, dict):
            continue
        animated = any(bool(flag) for flag in ui.get("animated", []) or [])
        for key, items in ui.items():
            if key in _NOT_FILES or not isinstance(items, list):
                continue
            for index, item in enumerate(items):
                if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                    continue
                found.append(
                    OutputFile(
                        node_id=str(node_id),
                        key=key,
                        index=index,
                        filename=item["filename"],
                        subfolder=str(item.get("subfolder") or ""),
                        folder_type=str(item.get("type") or "output"),
                        animated=animated,
                        server_format=item.get("format") if isinstance(item.get("format"), str) else None,
                    )
                )
    if previews is None:
        saved = [f for f in found if f.folder_type == "output"]
        return saved or found
    return found if previews else [f for f in found if f.folder_type == "output"]


async def fetch(client: ComfyClient, files: list[OutputFile], *, concurrency: int = 4) -> list[bytes]:
    """The bytes of ``files`` (same order) through GET /view, a few at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: OutputFile) -> bytes:
        async with gate:
            return await client.view(item.filename, item.subfolder, item.folder_type)

    if not files:
        # Deterministic: the graph has no node that saves a file, so no retry can help.
        raise WorkflowError("the prompt finished without any output file (no Save node?)", server=client.url)
    return list(await asyncio.gather(*(one(item) for item in files)))


def _node_order(node_id: str) -> tuple[int, tuple[int, ...], str]:
    # Node ids are usually integers ("9"); expanded subgraph ids look like "12:3".
    text = str(node_id)
    if re.fullmatch(r"\d+(:\d+)*", text):
        return (0, tuple(int(p) for p in text.split(":")), "")
    return (1, (), text)
