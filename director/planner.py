"""Scene -> shot plan, offline and deterministic: the same request always gives the same plan.

The plan has the seed's shape (``shot_list`` of shot_number, camera_angle, duration; scene-level
``overall_mood`` and ``lighting_suggestions``) plus what rendering and scoring need: camera
movement, characters, mood, lighting, action, continuity notes and the expected motion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from events.models import SceneRequested, ShotSpec

DURATION_STEP_S = 0.5
_LEADING_PHRASES = re.compile(
    r"^\s*(please\s+)?(create|make|generate|render|show|draw)\s+(me\s+)?(an?\s+|the\s+)?"
    r"(anime\s+)?(scene|shot|sequence|clip)?\s*(where|in which|of|with|showing)?\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Genre:
    name: str
    keywords: frozenset[str]
    overall_mood: str
    lighting: str
    # (camera_angle, camera_movement, duration_s, action template, expected_motion)
    beats: tuple[tuple[str, str, float, str, float], ...]


GENRES: tuple[Genre, ...] = (
    Genre(
        "action",
        frozenset({"fight", "fights", "battle", "battles", "attack", "attacks", "duel", "clash",
                   "chase", "chases", "strike", "strikes", "war", "explodes", "fighting", "slays"}),
        "intense",
        "dramatic shadows",
        (
            ("wide", "slow pan", 3.0, "establishing: {all} face each other in {place}", 0.25),
            ("close-up", "static", 2.0, "{lead} steels themself, eyes narrowing", 0.15),
            ("medium", "tracking", 2.5, "{lead} charges at {foe}", 0.85),
            ("low-angle", "handheld", 2.0, "{foe} strikes back; the blow lands hard", 1.0),
        ),
    ),
    Genre(
        "emotional",
        frozenset({"talk", "talks", "confess", "confesses", "hug", "hugs", "cry", "cries",
                   "goodbye", "meet", "meets", "remember", "remembers", "apologizes"}),
        "melancholic",
        "soft warm backlight",
        (
            ("wide", "static", 3.0, "establishing: {all} in {place}", 0.1),
            ("medium", "slow dolly in", 2.5, "{lead} turns to {foe}", 0.3),
            ("close-up", "static", 2.0, "{lead}'s expression softens", 0.1),
        ),
    ),
    Genre(
        "mystery",
        frozenset({"sneak", "sneaks", "explore", "explores", "search", "searches", "hide",
                   "hides", "shadow", "night", "investigate", "investigates", "ruins"}),
        "tense",
        "low-key moonlight",
        (
            ("wide", "slow pan", 3.0, "establishing: {place} under a dark sky", 0.2),
            ("over-the-shoulder", "tracking", 2.5, "{lead} moves carefully forward", 0.5),
            ("close-up", "static", 2.0, "{lead} notices something", 0.15),
        ),
    ),
)
CALM = Genre(
    "calm",
    frozenset(),
    "serene",
    "golden hour",
    (
        ("wide", "slow pan", 3.0, "establishing: {all} in {place}", 0.2),
        ("medium", "static", 2.5, "{lead} takes in the view", 0.15),
        ("close-up", "slow dolly in", 2.0, "{lead} smiles", 0.1),
    ),
)


@dataclass(frozen=True)
class ScenePlan:
    shots: tuple[ShotSpec, ...]
    overall_mood: str
    lighting_suggestions: str
    genre: str


def scene_text(description: str) -> str:
    """The request without "Create a scene where"-style lead-ins."""
    text = _LEADING_PHRASES.sub("", description, count=1).strip(" .!")
    return text or description.strip()


_NOT_NAMES = frozenset(
    "A An The In On At Later Then When While After Before Suddenly Meanwhile Once Finally Create Make".split()
)


def infer_characters(text: str) -> list[str]:
    """Capitalised words that are not sentence starters: a fallback when no characters are given."""
    words = re.findall(r"[A-Za-z][\w'-]*", text)
    return list(dict.fromkeys(w for w in words if w[0].isupper() and w not in _NOT_NAMES))[:4]


def detect_genre(text: str) -> Genre:
    tokens = set(re.findall(r"[a-z]+", text.lower()))
    best = max(GENRES, key=lambda g: len(g.keywords & tokens))
    return best if best.keywords & tokens else CALM


def snap_duration(seconds: float, fps: int) -> tuple[float, int]:
    """Snap to the render grid: a multiple of 0.5 s and a whole number of frames (at least 2)."""
    snapped = max(DURATION_STEP_S, round(seconds / DURATION_STEP_S) * DURATION_STEP_S)
    return snapped, max(2, round(snapped * fps))


def plan_scene(request: SceneRequested, *, fps: int) -> ScenePlan:
    text = scene_text(request.description)
    genre = detect_genre(text)
    characters = list(request.characters) or infer_characters(text) or ["the hero"]
    lead, foe = characters[0], (characters[1] if len(characters) > 1 else "the unknown")
    place_match = re.search(r"\b(?:in|at|on|inside|across)\s+(?:the\s+)?([a-z][\w\s-]{2,40})$", text, re.I)
    place = place_match.group(1) if place_match else "a stylised anime landscape"
    words = {"lead": lead, "foe": foe, "all": " and ".join(characters), "place": place}

    shots = []
    for number, (angle, movement, duration, action, motion) in enumerate(genre.beats, start=1):
        snapped, frames = snap_duration(duration, fps)
        in_frame = characters if "{all}" in action or angle == "wide" else [
            c for c in characters if c in action.format(**words)
        ] or [lead]
        shots.append(
            ShotSpec(
                shot_number=number,
                shot_count=len(genre.beats),
                camera_angle=angle,
                camera_movement=movement,
                duration=snapped,
                fps=fps,
                frame_count=frames,
                characters=in_frame,
                mood=genre.overall_mood,
                lighting=genre.lighting,
                action=action.format(**words),
                description=f"{text} — {action.format(**words)}",
                continuity_notes=(
                    "keep character designs, palette and screen direction from shot 1"
                    if number > 1 else "sets palette, character designs and screen direction"
                ),
                expected_motion=motion,
            )
        )
    return ScenePlan(tuple(shots), genre.overall_mood, genre.lighting, genre.name)
