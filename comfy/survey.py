"""Which presets each ComfyUI server can run: its model folders against every preset's files.

:func:`survey` asks each server ``GET /models/{folder}`` for the folders the presets load from
(ComfyUI's own listing, which follows its ``extra_model_paths.yaml``), and answers per server
either why it could not be asked or, per preset, the files it lacks (none: the preset can run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfy.client import ClientConfig, ComfyClient
from comfy.errors import ComfyError
from comfy.presets import PRESETS, ModelFile, missing_files


@dataclass
class ServerSurvey:
    url: str
    error: str | None = None
    #: preset name -> the files this server lacks for it (empty: it can run the preset)
    missing: dict[str, list[ModelFile]] = field(default_factory=dict)

    def ready(self, preset: str) -> bool:
        return self.error is None and not self.missing.get(preset)

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"url": self.url, "answers": False, "error": self.error}
        return {"url": self.url, "answers": True,
                "presets": {name: {"ready": not files, "missing": [f.as_dict() for f in files]}
                            for name, files in self.missing.items()}}


async def survey_server(url: str, model_names: Mapping[str, str] | None = None, *,
                        timeout_s: float = 5.0) -> ServerSurvey:
    files = {name: p.files(model_names) for name, p in PRESETS.items()}
    folders = sorted({f.folder for preset_files in files.values() for f in preset_files})
    client = ComfyClient(url, config=ClientConfig(request=timeout_s, connect=timeout_s))
    try:
        listings = {folder: await client.models(folder) for folder in folders}
    except ComfyError as exc:
        return ServerSurvey(url, error=str(exc))
    finally:
        await client.aclose()
    return ServerSurvey(url, missing={name: missing_files(preset_files, listings) for name, preset_files in files.items()})


async def survey(urls: list[str], model_names: Mapping[str, str] | None = None, *,
                 timeout_s: float = 5.0) -> list[ServerSurvey]:
    """Every server's answer, asked at once, in the order of ``urls``."""
    return list(await asyncio.gather(*(survey_server(url, model_names, timeout_s=timeout_s) for url in urls)))
