"""scorer: ``frame.rendered`` -> ``quality.scored`` with the scoring library (GPU when present)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.stage import Stage
from events.envelope import Envelope
from events.models import FrameRendered, QualityScored
from events.topics import FRAME_RENDERED
from foundation.settings import Settings
from render.media import verified
from scoring import SCORER_VERSION, CompositeWeights, Scorer, ScorerConfig, ShotInput, ShotScore
from scoring.signature import VERSION as SIGNATURE_VERSION
from scoring.signature import signature_of_file
from store.projections import Origin


def scored_event(rendered: FrameRendered, score: ShotScore, signature: list[float] | None = None) -> QualityScored:
    passed = score.status == "ok" and score.composite >= rendered.quality_threshold
    look = signature if score.status == "ok" else None
    return QualityScored(
        **rendered.model_dump(exclude={"status", "reason", "backend", "frames", "render_ms"}),
        status=score.status,
        reason=score.reason,
        composite=score.composite,
        passed=passed,
        metrics=score.metrics,
        frame_count=len(rendered.frames),
        scorer_version=score.scorer_version,
        device=score.device,
        frames=rendered.frames if score.status == "ok" else [],
        signature=look,
        signature_version=SIGNATURE_VERSION if look is not None else None,
    )


def unscored_event(rendered: FrameRendered, reason: str, device: str) -> QualityScored:
    """A failed score for frames that could not be scored at all (the render failed)."""
    return QualityScored(
        **rendered.model_dump(exclude={"status", "reason", "backend", "frames", "render_ms"}),
        status="failed",
        reason=reason,
        frame_count=len(rendered.frames),
        scorer_version=SCORER_VERSION,
        device=device,
    )


class ScorerStage(Stage):
    name = "scorer"
    inputs = (FRAME_RENDERED,)
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        # Built here, not on the first event: `TOWER_SCORER_DEVICE=cuda` without CUDA must stop
        # the worker at start, not dead-letter every frame.
        self.max_in_flight = settings.score_in_flight
        self.scorer = Scorer(
            ScorerConfig(device=settings.scorer_device, weights=CompositeWeights(**settings.scorer_weights))
        )

    async def stop(self) -> None:
        self.scorer.close()

    async def handle(self, envelope: Envelope[FrameRendered], origin: Origin) -> list[Envelope]:
        rendered = envelope.value
        device = str(self.scorer.device)
        if rendered.status != "ok":
            failed = unscored_event(rendered, f"render failed: {rendered.reason}", device)
            return [envelope.derive(failed, source=self.source)]
        root = Path(self.settings.media_dir)
        try:
            paths = await asyncio.to_thread(
                lambda: [verified(root, frame) for frame in sorted(rendered.frames, key=lambda f: f.index)]
            )
        except ValueError as exc:
            return [envelope.derive(unscored_event(rendered, str(exc), device), source=self.source)]
        shot = ShotInput(frames=paths, expected_motion=rendered.shot.expected_motion)
        [score] = await asyncio.to_thread(self.scorer.score_shots, [shot])
        # The middle frame, as the memory shows it (store.memory.remember).
        signature = await asyncio.to_thread(signature_of_file, paths[len(paths) // 2]) if paths else None
        return [envelope.derive(scored_event(rendered, score, signature), source=self.source)]

