"""renderer: ``prompt.refined`` -> ``frame.rendered`` through the configured render backend,
publishing ``render.progress`` while it renders."""

from __future__ import annotations

import logging
from pathlib import Path

from agents.stage import Stage
from events.envelope import Envelope
from events.models import PromptRefined, RenderProgress
from events.topics import PROMPT_REFINED
from foundation.settings import Settings
from render.backends import RenderBackend, backend_for, render, render_in_flight
from store.projections import Origin

log = logging.getLogger("tower.agents.renderer")


class Renderer(Stage):
    name = "renderer"
    inputs = (PROMPT_REFINED,)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # Built at start-up so an unknown backend or a bad template path stops the worker at once.
        self.backend: RenderBackend = backend_for(settings, on_progress=self.report)
        self.max_in_flight = render_in_flight(settings)
        # The attempts being rendered (several when max_in_flight > 1), with their progress count.
        self._current: dict[tuple[str, int, int], tuple[Envelope[PromptRefined], int]] = {}

    async def stop(self) -> None:
        close = getattr(self.backend, "aclose", None)
        if close is not None:
            await close()

    async def report(self, progress: RenderProgress) -> None:
        """Publish progress of an attempt being rendered."""
        attempt = (progress.scene_id, progress.shot_number, progress.attempt)
        if attempt not in self._current:
            return
        envelope, count = self._current[attempt]
        self._current[attempt] = envelope, count + 1
        try:
            await self.publish(envelope.derive(progress, source=self.source, index=count + 1))
        except Exception as exc:  # noqa: BLE001 - progress must never fail a render
            log.warning("render progress not published: %s", exc)

    async def handle(self, envelope: Envelope[PromptRefined], origin: Origin) -> list[Envelope]:
        attempt = (envelope.scene_id, envelope.value.shot.shot_number, envelope.value.attempt)
        self._current[attempt] = envelope, 0
        try:
            rendered = await render(self.backend, envelope.value, Path(self.settings.media_dir))
        finally:
            self._current.pop(attempt, None)
        return [envelope.derive(rendered, source=self.source)]
