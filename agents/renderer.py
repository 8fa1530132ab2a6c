"""renderer: ``prompt.refined`` -> ``frame.rendered`` through the configured render backend,
publishing ``render.progress`` while it renders."""

from __future__ import annotations

import logging
from pathlib import Path

from agents.stage import Stage
from events.envelope import Envelope
from events.models import PromptRefined, RenderProgress
from events.topics import PROMPT_REFINED
from render.backends import RenderBackend, backend_for, render
from store.projections import Origin
from tower.settings import Settings

log = logging.getLogger("tower.agents.renderer")


class Renderer(Stage):
    name = "renderer"
    inputs = (PROMPT_REFINED,)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # Built at start-up so an unknown backend or a bad template path stops the worker at once.
        self.backend: RenderBackend = backend_for(settings, on_progress=self.report)
        self._current: Envelope[PromptRefined] | None = None
        self._progress_count = 0

    async def stop(self) -> None:
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    async def report(self, progress: RenderProgress) -> None:
        """Publish progress of the attempt being handled (``concurrency=1``: one at a time)."""
        if self._current is None:
            return
        self._progress_count += 1
        try:
            await self.publish(self._current.derive(progress, source=self.source, index=self._progress_count))
        except Exception as exc:  # noqa: BLE001 - progress must never fail a render
            log.warning("render progress not published: %s", exc)

    async def handle(self, envelope: Envelope[PromptRefined], origin: Origin) -> list[Envelope]:
        self._current, self._progress_count = envelope, 0
        try:
            rendered = await render(self.backend, envelope.value, Path(self.settings.media_dir))
        finally:
            self._current = None
        return [envelope.derive(rendered, source=self.source)]
