"""The editor's decisions: when a scene can be cut, which attempt of each shot goes in, and where.

Pure: the editor stage (:mod:`agents.editor`) gives it the scores it has kept, and
:mod:`render.editing` writes the files the plan describes. A shot is final once an attempt
passed or its budget is spent (:func:`director.escalation.is_final`); the attempt cut in is the
passing one, else the best scored (the shot needs review), else none (a slate: no attempt could
be scored). Each shot lasts its planned duration at the scene's frame rate, whatever number of
frames its attempt rendered (:func:`retime`). A shot a person regenerated (a ``directed``
attempt) is cut from the latest such attempt that could be scored: they asked for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from director.escalation import is_final
from events.models import FrameRef, QualityScored, ShotSpec

# Part of every assembly's digest: a change to how scenes are cut gives new files and event ids.
ASSEMBLY_VERSION = "editor-v1"

Outcome = Literal["accepted", "needs_review", "missing"]


@dataclass(frozen=True)
class Take:
    """One scored attempt of a shot, as the editor keeps it."""

    shot: ShotSpec
    attempt: int
    ok: bool  # it could be scored
    passed: bool
    final: bool
    directed: bool  # a person regenerated the shot: the take they asked for is the one cut in
    composite: float
    modifier: str
    metrics: dict[str, float]
    frames: tuple[FrameRef, ...]

    @classmethod
    def of(cls, scored: QualityScored) -> Take:
        return cls(scored.shot, scored.attempt, scored.status == "ok", scored.passed, is_final(scored),
                   scored.escalation == "directed", scored.composite, scored.prompt.modifier, dict(scored.metrics),
                   tuple(sorted(scored.frames, key=lambda frame: frame.index)))


@dataclass(frozen=True)
class Cut:
    """A shot as cut into the scene: the take used (``None``: a slate), and its place in frames."""

    shot: ShotSpec
    take: Take | None
    outcome: Outcome
    start_frame: int
    frame_count: int


@dataclass(frozen=True)
class EditPlan:
    """What the scene's video, storyboard and timeline are made of."""

    scene_id: str
    session_id: str
    fps: int
    cuts: tuple[Cut, ...]
    inputs_sha256: str  # the same inputs (and options) give the same digest, files and event id

    @property
    def frame_count(self) -> int:
        return sum(cut.frame_count for cut in self.cuts)

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


def kept_take(takes: Iterable[Take]) -> tuple[Take | None, Outcome] | None:
    """The attempt of one shot to cut in, and why; ``None`` while the shot is not final."""
    takes = list(takes)
    if not any(take.final for take in takes):
        return None
    directed = [t for t in takes if t.directed and t.ok and t.frames]
    if directed:  # the latest regeneration a person asked for, whatever its score
        latest = max(directed, key=lambda t: t.attempt)
        return latest, "accepted" if latest.passed else "needs_review"
    passed = [t for t in takes if t.passed]
    if passed:
        return max(passed, key=_rank), "accepted"
    scored = [t for t in takes if t.ok and t.frames]
    if scored:
        return max(scored, key=_rank), "needs_review"
    return None, "missing"


def _rank(take: Take) -> tuple[float, int]:
    """The higher score first; on a tie, the earlier attempt."""
    return take.composite, -take.attempt


def edit_plan(scene_id: str, session_id: str, takes: Iterable[Take], options: dict[str, object] | None = None) -> EditPlan | None:
    """The scene's cut once every planned shot is final, else ``None``. ``options`` (how the files
    are made: cross-fades, thresholds) go into the digest with the inputs."""
    by_shot: dict[int, list[Take]] = {}
    for take in takes:
        by_shot.setdefault(take.shot.shot_number, []).append(take)
    if not by_shot:
        return None
    shot_count = max(take.shot.shot_count for shot in by_shot.values() for take in shot)
    if set(by_shot) != set(range(1, shot_count + 1)):
        return None
    fps = by_shot[1][0].shot.fps  # the planner gives every shot of a scene one rate
    cuts: list[Cut] = []
    start = 0
    for number in range(1, shot_count + 1):
        kept = kept_take(by_shot[number])
        if kept is None:
            return None
        take, outcome = kept
        shot = take.shot if take is not None else by_shot[number][0].shot
        frames = max(1, round(shot.duration * fps))
        cuts.append(Cut(shot, take, outcome, start, frames))
        start += frames
    return EditPlan(scene_id, session_id, fps, tuple(cuts), _digest(scene_id, fps, cuts, options or {}))


def retime(source: int, target: int) -> list[int]:
    """Which of ``source`` frames shows at each of ``target`` frames: the attempt's frames spread
    evenly over the shot's planned length, each held or skipped as needed, never blended."""
    if source <= 0:
        return []
    return [min(source - 1, i * source // target) for i in range(target)]


def _digest(scene_id: str, fps: int, cuts: list[Cut], options: dict[str, object]) -> str:
    inputs = {
        "version": ASSEMBLY_VERSION, "scene": scene_id, "fps": fps, "options": options,
        "cuts": [{"shot": cut.shot.model_dump(mode="json"), "outcome": cut.outcome, "frames": cut.frame_count,
                  "attempt": cut.take.attempt if cut.take else None,
                  "composite": cut.take.composite if cut.take else None,
                  "sources": [frame.sha256 for frame in cut.take.frames] if cut.take else []} for cut in cuts],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
