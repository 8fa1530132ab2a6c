"""renderer: ``prompt.refined`` -> ``frame.rendered`` through the configured render backend."""

from __future__ import annotations

from pathlib import Path

from agents.stage import Stage
from events.envelope import Envelope
from events.models import PromptRefined
from events.topics import PROMPT_REFINED
from render.backends import RenderBackend, backend_for, render
from store.projections import Origin


class Renderer(Stage):
    name = "renderer"
    inputs = (PROMPT_REFINED,)
    backend: RenderBackend | None = None

    async def start(self) -> None:
        self.backend = backend_for(self.settings)

    async def stop(self) -> None:
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    async def handle(self, envelope: Envelope[PromptRefined], origin: Origin) -> list[Envelope]:
        assert self.backend is not None, "Renderer.start() builds the backend before the first event"
        rendered = await render(self.backend, envelope.value, Path(self.settings.media_dir))
        return [envelope.derive(rendered, source=self.source)]
