"""editor: ``quality.scored`` -> ``scene.assembled`` once every shot of a scene is final.

It keeps every score it reads (:mod:`store.editing`), and when a score makes the last shot of
its scene final, cuts the scene (:func:`director.editing.edit_plan`: the passing or best attempt
of each shot, each lasting its planned duration) into a video, a storyboard and a timeline in the
media store (:mod:`render.editing`), and publishes what it made. The same inputs give the same
files and the same event id, so a redelivery changes nothing; a new attempt of a shot that is cut
in (a regenerated shot) gives a new cut, new files and a new event. ``scene.reassemble`` asks
for a scene's files again (lost, or a media store moved): what is missing is written again, the
same bytes, and the same event is sent again; a request is answered once (``editor_requests``),
so a replay of the requests writes and sends nothing.
"""

from __future__ import annotations

import asyncio
import logging

from agents.stage import DatabaseStage
from director.editing import Take, edit_plan
from events.envelope import Envelope
from events.models import QualityScored, ReassemblyRequested, SceneAssembled
from events.topics import QUALITY_SCORED, SCENE_REASSEMBLE
from foundation.settings import Settings
from render.editing import EditOptions, assemble
from store.editing import mark_answered, mark_sent, record_take, scene_takes, was_answered, was_sent
from store.projections import Origin

log = logging.getLogger("tower.agents")


class Editor(DatabaseStage):
    name = "editor"
    inputs = (QUALITY_SCORED, SCENE_REASSEMBLE)

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.max_in_flight = settings.edit_in_flight
        self.options = EditOptions(crossfade_frames=settings.editor_crossfade_frames,
                                   continuity_threshold=settings.editor_continuity_threshold)

    async def handle(self, envelope: Envelope[QualityScored | ReassemblyRequested], origin: Origin) -> list[Envelope]:
        asked = isinstance(envelope.value, ReassemblyRequested)
        if asked and await was_answered(self.pool, envelope.id):
            return []
        scores = await (scene_takes(self.pool, envelope.scene_id) if asked else record_take(self.pool, envelope))
        plan = edit_plan(envelope.value.scene_id, envelope.value.session_id, map(Take.of, scores),
                         self.options.as_digest_input())
        if plan is None:
            if asked:
                log.warning("not reassembled: not every shot of the scene is final yet",
                            extra={"scene_id": envelope.scene_id, "event_id": envelope.id})
            return []
        # A request writes what is missing and sends the same event again; a score, only once.
        if not asked and await was_sent(self.pool, plan.scene_id, plan.inputs_sha256):
            return []
        assembled = await asyncio.to_thread(assemble, self.settings.media_dir, plan, self.options)
        return [envelope.derive(assembled, source=self.source, basis=f"{plan.scene_id}/{plan.inputs_sha256}")]

    async def on_produced(self, envelope: Envelope[QualityScored | ReassemblyRequested], outputs: list[Envelope]) -> None:
        for output in outputs:
            assembled: SceneAssembled = output.value
            await mark_sent(self.pool, assembled.scene_id, assembled.inputs_sha256, output.id)
        if isinstance(envelope.value, ReassemblyRequested):
            await mark_answered(self.pool, envelope.id, envelope.scene_id)
