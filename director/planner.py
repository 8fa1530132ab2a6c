"""Scene -> shot plan, offline and deterministic: the same request always gives the same plan.

The planner reads the description the way a storyboard artist would:

1. It splits the text into *beats*: sentences, then clauses joined by "then", "while", "as",
   "when", "after" (reordered: "A after B" plays B first), commas between actions, and "and"
   between actions of different kinds. At most :data:`MAX_BEATS` beats are planned.
2. It finds the characters: the request's, capitalised names in the text that are not sentence
   starters or common words, and creature/role nouns ("the dragon", "a stranger"). Those not in
   the request are reported (:attr:`ScenePlan.detected_characters`, :attr:`ScenePlan.notes`).
3. It classifies each beat (action, dialogue, reveal, chase, calm) and covers it by film grammar:
   an establishing shot first; action as wide -> medium -> close-up with an impact and a reaction
   shot; dialogue as a two-shot, shot / reverse shot over the shoulder and a reaction; a reveal
   as a slow push-in; a chase with tracking shots and a POV. Each coverage shot has a priority,
   so a busy scene keeps the essential shot of every beat within :data:`MAX_SHOTS`.
4. Time of day and place come from the text ("at night", "in the ruins") and carry forward;
   each shot's continuity notes keep the 180° line (who is screen-left / screen-right), the time
   and the place. Mood and lighting follow the beat, so a scene can go calm -> intense.
5. Durations sit on the render grid (multiples of 0.5 s and whole frames at ``fps``, at least
   1 s); with ``target_duration_s`` they sum to the target within 0.5 s.

Text that is not English gets a generic plan (establishing, medium, close-up per sentence, with a
few non-English action/chase/dialogue/reveal words recognised) and a note saying so.

Three modules: :mod:`director.lexicon` (the words, as data), :mod:`director.clauses` (steps 1, 2
and 4: reading the text into beats) and this one (steps 3 and 5: the film grammar).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import replace as _replace

from director.clauses import (
    LEADING_PHRASES,
    MAX_BEATS,
    MAX_DETECTED,
    QUOTE,
    WORD,
    Beat,
    Reader,
    base_word,
    beat_lighting,
    capitalised,
    joined_names,
    possessive,
    read_beats,
    words_of,
)
from director.lexicon import BLOW, DEFAULT_PLACE, DEFAULT_TIME, ENTRANCE, INTENSITY, KIND_OF, MOVING, PALETTES, SIDES
from events.models import SceneRequested, ShotSpec

DURATION_STEP_S = 0.5
MIN_SHOT_S = 1.0
MAX_SHOT_S = 60.0
MAX_SHOT_FRAMES = 600
MAX_SHOTS = 12
EXTRA_RANK = 5  # coverage used only to fill a long target duration
COMFORTABLE_SHOT_S = 6.0
# --- public helpers ----------------------------------------------------------------------------

def scene_text(description: str) -> str:
    """The request without "Create a scene where"-style lead-ins."""
    text = LEADING_PHRASES.sub("", description, count=1).strip(" .!")
    return text or description.strip()


def duration_step(fps: int) -> float:
    """The render grid: the smallest multiple of 0.5 s that is a whole number of frames at ``fps``."""
    return DURATION_STEP_S if (DURATION_STEP_S * fps).is_integer() else 2 * DURATION_STEP_S


def shot_limits(fps: int) -> tuple[float, float]:
    """Shortest and longest shot on the grid: at least 1 s and 2 frames; at most 60 s and 600 frames."""
    step = duration_step(fps)
    shortest = math.ceil(max(MIN_SHOT_S, 2 / fps) / step - 1e-9) * step
    longest = math.floor(min(MAX_SHOT_S, MAX_SHOT_FRAMES / fps) / step + 1e-9) * step
    return shortest, max(shortest, longest)


def snap_duration(seconds: float, fps: int) -> tuple[float, int]:
    """Snap to the render grid (:func:`duration_step`, within :func:`shot_limits`): (seconds, frames)."""
    step = duration_step(fps)
    shortest, longest = shot_limits(fps)
    snapped = min(longest, max(shortest, math.floor(seconds / step + 0.5) * step))
    return snapped, round(snapped * fps)


# --- the plan -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScenePlan:
    shots: tuple[ShotSpec, ...]
    overall_mood: str
    lighting_suggestions: str
    genre: str
    notes: tuple[str, ...] = ()
    detected_characters: tuple[str, ...] = ()
    characters: tuple[str, ...] = ()
    beats: tuple[Beat, ...] = ()
    target_duration_s: float | None = None

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.shots)


@dataclass(frozen=True)
class _Cov:
    """One coverage shot before numbering and timing."""

    beat: int  # -1: the establishing shot
    order: float
    rank: int  # 0 essential; higher ranks are dropped first
    angle: str
    movement: str
    duration: float
    action: str
    characters: tuple[str, ...]
    motion: float
    mood: str
    lighting: str
    note: str = ""


# --- coverage -----------------------------------------------------------------------------------

def _quote(text: str) -> str | None:
    match = QUOTE.search(text)
    return match.group() if match else None


def _after_verb(text: str, verb: str) -> str:
    """The words after the clause's verb ("Kai finds a hidden door" -> "a hidden door")."""
    for match in WORD.finditer(text):
        if KIND_OF.get(base_word(match.group()), ("", ""))[1] == verb:
            rest = text[match.end():].strip(" ,;:")
            return " ".join(rest.split()[:8])
    return ""


def _coverage(index: int, beat: Beat, display: dict[str, str], sides: dict[str, str], first: bool,
              place_changed: bool) -> list[_Cov]:
    """The shots that cover one beat, each with its order in the beat and its priority."""
    a, b = beat.subject, beat.other
    name_a = display.get(a, a) if a else "the hero"
    name_b = display.get(b, b) if b else None
    clause = capitalised(beat.text)
    both = tuple(c for c in (a, b) if c)
    covs: list[_Cov] = []

    def add(order: float, rank: int, angle: str, movement: str, duration: float, action: str,
            characters: Iterable[str | None], motion: float, note: str = "") -> None:
        covs.append(_Cov(index, order, rank, angle, movement, duration, capitalised(action),
                         tuple(dict.fromkeys(c for c in characters if c)), motion, beat.mood, beat.lighting, note))

    if place_changed:
        add(-1, 1, "wide", "slow pan", 2.0, f"Establishing: {beat.place}", beat.characters, 0.2, "new place")
    if beat.kind == "action":
        verb = beat.verb or "fight"
        blow = BLOW.get(verb, "blow")
        if not first:
            add(0, 4, "wide", "tracking", 2.0, f"Wide on the clash: {clause}", beat.characters[:4], 0.7)
        add(1, 0, "medium", "tracking", 2.0, clause, beat.characters[:4], 0.85)
        add(2, 3, "close-up", "handheld", 1.5,
            f"Close on {name_a} mid-{verb}" + (f", eyes on {name_b}" if name_b else ""), (a,), 0.8)
        add(3, 1, "low-angle", "handheld", 1.0,
            f"Impact: {possessive(name_a)} {blow} " + (f"hits {name_b}" if name_b else "lands"), both, 1.0)
        add(4, 2, "close-up", "static", 1.5,
            f"{name_b} reels from the {blow}" if name_b else f"{name_a} recovers, breathing hard", (b or a,), 0.4)
    elif beat.kind == "dialogue":
        quote = _quote(beat.text)
        if b:
            add(1, 0, "two-shot", "static", 2.5, f"Two-shot: {beat.text}", both, 0.15)
            add(2, 1, "over-the-shoulder", "static", 2.0,
                f"Over {possessive(name_b)} shoulder on {name_a}, speaking" + (f": {quote}" if quote else ""), both, 0.15,
                f"camera behind {b}, eyelines matched")
            add(3, 1, "over-the-shoulder", "static", 2.0, f"Reverse over {possessive(name_a)} shoulder on {name_b}, listening",
                both, 0.1, f"reverse angle behind {a}, same side of the line")
            add(4, 2, "close-up", "slow push-in", 1.5, f"Close on {name_b} reacting to {possessive(name_a)} words", (b,), 0.1)
        else:
            add(1, 0, "medium", "static", 2.5, clause, beat.characters, 0.15)
            add(2, 2, "close-up", "slow push-in", 1.5, f"Close on {name_a} as the words land", (a,), 0.1)
    elif beat.kind == "reveal":
        if beat.verb in ENTRANCE or not a:
            add(1, 0, "medium", "slow push-in", 2.5, f"Reveal: {beat.text}", (a,), 0.3)
            if b:
                add(2, 2, "close-up", "static", 1.5, f"Close on {name_b} as {name_a} appears", (b,), 0.1)
            elif a:
                add(2, 2, "close-up", "slow push-in", 1.5, f"Close on {name_a}", (a,), 0.15)
        else:
            revealed = name_b or _after_verb(beat.text, beat.verb) or "what lies ahead"
            add(0, 1, "close-up", "static", 1.5, f"Close on {name_a} noticing something", (a,), 0.1)
            add(1, 0, "wide" if not b else "medium", "slow push-in", 2.5, f"Reveal: slow push-in on {revealed}",
                (b,) if b else (a,), 0.3, f"{a}'s eyeline")
            add(2, 2, "close-up", "static", 1.5, f"{name_a} reacts", (a,), 0.1)
    elif beat.kind == "chase":
        if a:
            # The pursuer stays behind: moving away from their side of the frame.
            direction = "right to left" if sides.get(a, "").startswith("screen-right") else "left to right"
            add(0, 0, "wide", "tracking", 2.0, clause, beat.characters[:4], 0.85, f"{a} moving {direction} across cuts")
            fleeing = beat.verb in ("flee", "escape", "run")
            if fleeing and name_b:
                pov = f"{possessive(name_a)} POV, looking back: {name_b} closing in"
                last, last_in = f"{name_a} glances back at {name_b}, still running", a
            else:
                pov = f"{possessive(name_a)} POV: {name_b} ahead" if name_b else (
                    f"{possessive(name_a)} POV, rushing through {beat.place}")
                last = f"{name_b} glances back, still running" if name_b else f"{name_a} runs, breathing hard"
                last_in = b or a
            add(1, 1, "pov", "handheld", 1.5, pov, (b,), 0.9, f"{a}'s eyeline, {direction}")
            add(2, 2, "medium", "tracking", 1.5, last, (last_in,), 0.85, f"moving {direction}")
        else:
            add(0, 0, "wide", "tracking", 2.0, clause, (), 0.85)
            add(1, 1, "pov", "handheld", 1.5, f"POV, rushing through {beat.place}", (), 0.9)
    else:
        moving = any(t in MOVING for t in words_of(beat.text))
        if not beat.characters:
            if not first:
                add(1, 0, "wide", "slow pan", 2.5, clause, (), 0.2)
            add(2, 2, "close-up", "slow pan", 2.0, f"Detail: {beat.text}", (), 0.15)
        else:
            add(1, 0, "medium", "tracking" if moving else "static", 2.5, clause, beat.characters[:4],
                0.35 if moving else 0.15)
            expression = {"melancholic": "eyes downcast", "mysterious": "eyes searching the dark",
                          "tender": "a soft smile", "tense": "jaw set"}.get(beat.mood, "a quiet moment")
            add(2, 2, "close-up", "slow push-in", 2.0, f"Close on {name_a}, {expression}", (a,), 0.1)
    # Extra coverage, used only when a target duration asks for more screen time.
    if beat.kind == "action":
        add(1.5, 5, "extreme close-up", "static", 1.0, f"Extreme close-up: {possessive(name_a)} eyes", (a,), 0.3)
        add(5, 6, "high-angle", "slow pan", 2.0, f"High angle over the fight: {clause}", beat.characters[:4], 0.6)
    elif beat.kind == "dialogue":
        add(3.5, 5, "medium", "static", 2.0, f"Medium on {name_b or name_a}, listening", (b or a,), 0.1)
        add(5, 6, "extreme close-up", "static", 1.5, f"Extreme close-up: {possessive(name_a)} eyes", (a,), 0.05)
    elif beat.kind == "reveal":
        add(1.5, 5, "extreme close-up", "slow push-in", 1.5, f"Extreme close-up: {beat.text}", (b or a,), 0.1)
        add(5, 6, "high-angle", "static", 2.0, f"High angle: {name_a} before what was revealed", (a,), 0.15)
    elif beat.kind == "chase":
        add(1.5, 5, "low-angle", "tracking", 1.5, f"Low angle, feet pounding {beat.place}", beat.characters[:4], 0.9)
        add(5, 6, "high-angle", "tracking", 2.0, f"High angle: the chase across {beat.place}", beat.characters[:4],
            0.8)
    else:
        add(0.5, 5, "wide", "slow pan", 2.5, f"Wide: {beat.text}", beat.characters[:4], 0.2)
        add(5, 6, "extreme close-up", "static", 1.5, f"Detail: {beat.text}", (), 0.1)
    if beat.simultaneous:
        covs = [c if c.note else _replace(c, note="at the same moment as the previous beat (intercut)") for c in covs]
    return covs


def _establishing(beats: list[Beat]) -> _Cov:
    first = beats[0]
    charged = first.kind in ("action", "chase")
    mood = "tense" if charged else first.mood
    lighting = first.lighting
    if first.time_given and charged:
        lighting = beat_lighting("calm", mood, first.time, True, set(words_of(first.text)))
    return _Cov(-1, 0, -1, "wide", "slow pan", 3.0, "", first.characters, 0.25 if charged else 0.2, mood, lighting)


def _establishing_action(cov: _Cov, beats: list[Beat], display: dict[str, str]) -> str:
    first = beats[0]
    if not cov.characters:
        if first.kind == "calm" and not first.characters:
            return f"Establishing: {first.text}"
        return f"Establishing: {first.place}"
    names = joined_names(display.get(c, c) for c in cov.characters)
    verb = " face off" if first.kind == "action" and len(cov.characters) > 1 else ""
    prep, _, place = first.where.partition(" ")
    if prep in ("through", "across", "into", "along", "around", "throughout", "among", "over", "onto"):
        prep = "on" if place.endswith(("rooftops", "roof", "bridge", "street", "streets", "road")) else "in"
    return capitalised(f"establishing: {names}{verb} {prep} {place}")


def _fit(durations: list[float], target: float, fps: int) -> tuple[list[float], bool]:
    """Durations on the grid, each within the shot limits, summing to ``target`` (±half a step).

    Returns (durations, whether the target was reachable)."""
    step = duration_step(fps)
    shortest, longest = shot_limits(fps)
    low, high = round(shortest / step), round(longest / step)
    wanted = max(1, math.floor(target / step + 0.5))
    total = sum(durations)
    ideal = [d * wanted / total for d in durations]
    units = [min(high, max(low, math.floor(x))) for x in ideal]
    diff = wanted - sum(units)
    while diff:
        if diff > 0:
            candidates = [i for i, u in enumerate(units) if u < high]
            if not candidates:
                break
            pick = max(candidates, key=lambda i: (ideal[i] - units[i], -i))
            units[pick] += 1
            diff -= 1
        else:
            candidates = [i for i, u in enumerate(units) if u > low]
            if not candidates:
                break
            pick = max(candidates, key=lambda i: (units[i] - ideal[i], -i))
            units[pick] -= 1
            diff += 1
    return [u * step for u in units], diff == 0


def _sides(order: list[str]) -> dict[str, str]:
    """Where each character stands, by order of appearance: the first two set the 180° line."""
    return {name: SIDES[min(i, len(SIDES) - 1)] for i, name in enumerate(order)}


def _continuity(cov: _Cov, beat: Beat, order: list[str], number: int) -> str:
    side = _sides(order)
    in_frame = [c for c in order if c in cov.characters]
    parts = []
    if in_frame:
        parts.append(("sets the 180° line: " if number == 1 else "180° line: ")
                     + ", ".join(f"{c} {side[c]}" for c in in_frame))
    else:
        parts.append("no characters in frame" if number == 1 else "keep the 180° line of shot 1")
    parts.append(f"time: {beat.time}" + ("" if beat.time_given else " (assumed)"))
    parts.append(f"place: {beat.place}" + ("" if beat.place_given else " (assumed)"))
    if cov.note:
        parts.append(cov.note)
    parts.append("sets palette and character designs" if number == 1 else "match designs and palette of shot 1")
    return "; ".join(parts)


def _genre(beat: Beat) -> str:
    if beat.kind in ("action", "chase"):
        return "action"
    if beat.kind == "reveal" or beat.mood == "mysterious":
        return "mystery"
    if beat.kind == "dialogue" or beat.mood in ("melancholic", "tender"):
        return "emotional"
    return "calm"


def plan_scene(request: SceneRequested, *, fps: int) -> ScenePlan:
    """Plan the scene into shots (see the module docstring). Raises ValueError for a blank description."""
    if not request.description or not request.description.strip():
        raise ValueError("the scene description is blank: say what happens, e.g. 'Kai fights the dragon'")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    text = scene_text(request.description)
    reader = Reader(text, list(request.characters))
    beats, total_beats = read_beats(reader)
    if not beats:
        beats = [Beat(text=text, kind="calm", characters=tuple(reader.order), subject=None, other=None,
                      mood="serene", lighting="golden hour", time=DEFAULT_TIME, place=DEFAULT_PLACE)]
    display = reader.display
    target = getattr(request, "target_duration_s", None)
    notes: list[str] = []
    if not reader.english:
        notes.append("the description does not look like English: generic coverage, one beat per sentence")
    if reader.detected:
        notes.append(f"characters found in the description (not in the request): {', '.join(reader.detected)}")
    if reader.truncated_characters:
        notes.append(f"more than {MAX_DETECTED} characters found; the first {MAX_DETECTED} are used")
    if total_beats > MAX_BEATS:
        notes.append(f"the description has {total_beats} beats; the plan covers the first {MAX_BEATS}")

    # Coverage, by priority: the establishing shot, each beat's essential shot, then the rest.
    sides = _sides(reader.order)
    opening = _establishing(beats)
    covs = [opening, _replace(opening, order=1, rank=EXTRA_RANK, angle="high-angle", duration=2.5, characters=(),
                              action=f"High angle over {beats[0].place}", motion=0.15)]
    for index, beat in enumerate(beats):
        changed = index > 0 and beat.place != beats[index - 1].place
        covs.extend(_coverage(index, beat, display, sides, index == 0, changed))
    essential = [c for c in covs if c.rank <= 0]
    optional = sorted((c for c in covs if 0 < c.rank < EXTRA_RANK), key=lambda c: (c.rank, c.beat, c.order))
    extra = sorted((c for c in covs if c.rank >= EXTRA_RANK), key=lambda c: (c.rank, c.beat, c.order))
    room = max(0, MAX_SHOTS - len(essential))
    if len(optional) > room and target is None:
        notes.append(f"coverage trimmed to {MAX_SHOTS} shots ({len(optional) - room} more were possible)")
    chosen = essential[:MAX_SHOTS] + optional[:room]
    spare = optional[room:] + extra

    step = duration_step(fps)
    shortest, longest = shot_limits(fps)
    if target is not None:
        units = max(1, math.floor(target / step + 0.5))
        most = max(1, units // round(shortest / step))
        if most < len(chosen) and most <= len(beats) and chosen[0].beat == -1:
            chosen.pop(0)  # too short for an establishing shot: the beats come first
        while len(chosen) > most:
            chosen.pop()
        while len(chosen) > 1 and chosen[-1].rank > 0 and sum(c.duration for c in chosen) > 1.6 * target:
            chosen.pop()
        # A long target gets more coverage rather than very long shots.
        while spare and len(chosen) < MAX_SHOTS and (
                target / len(chosen) > COMFORTABLE_SHOT_S or len(chosen) * longest < target):
            chosen.append(spare.pop(0))
        repeats = [c for c in chosen if c.beat >= 0]
        while repeats and len(chosen) < MAX_SHOTS and len(chosen) * longest < target:
            again = repeats[(len(chosen) - 1) % len(repeats)]  # as a last resort, hold a shot longer
            chosen.append(_replace(again, order=again.order + 0.01 * len(chosen), rank=EXTRA_RANK + 2,
                                   action=f"{again.action} (continued)"))
        covered = {c.beat for c in chosen}
        if len(covered - {-1}) < len(beats):
            notes.append(f"target {target:g} s is too short to show every beat: "
                         f"{len(beats) - len(covered - {-1})} beat(s) left out")
    chosen.sort(key=lambda c: (c.beat, c.order))

    # Every character is seen: those in no shot join the establishing shot.
    seen = {name for c in chosen for name in c.characters}
    missing = [name for name in reader.order if name not in seen]
    if missing:
        first = chosen[0]
        chosen[0] = _replace(first, characters=first.characters + tuple(missing))
        notes.append(f"not seen in any beat, so placed in the establishing shot: {', '.join(missing)}")
    if chosen[0].beat == -1 and chosen[0].order == 0:
        chosen[0] = _replace(chosen[0], action=_establishing_action(chosen[0], beats, display))

    if target is None:
        durations = [snap_duration(c.duration, fps)[0] for c in chosen]
    else:
        durations, reachable = _fit([c.duration for c in chosen], target, fps)
        if not reachable:
            notes.append(f"target {target:g} s cannot be met with {len(chosen)} shot(s) of "
                         f"{shortest:g}-{shot_limits(fps)[1]:g} s; the plan runs {sum(durations):g} s")
        else:
            notes.append(f"target {target:g} s: {sum(durations):g} s over {len(chosen)} shot(s)")
    if not any(b.time_given for b in beats):
        notes.append(f"no time of day in the description: assumed {DEFAULT_TIME}")
    if not any(b.place_given for b in beats):
        notes.append(f"no place in the description: assumed {DEFAULT_PLACE}")

    # One palette for the whole scene, set by its opening: shots cut together must match.
    palette = PALETTES.get(beats[0].time, PALETTES[DEFAULT_TIME])
    shots = []
    for number, (cov, duration) in enumerate(zip(chosen, durations, strict=True), start=1):
        beat = beats[max(0, cov.beat)]
        shots.append(ShotSpec(
            shot_number=number,
            shot_count=len(chosen),
            camera_angle=cov.angle,
            camera_movement=cov.movement,
            duration=duration,
            fps=fps,
            frame_count=round(duration * fps),
            characters=list(cov.characters),
            mood=cov.mood,
            lighting=cov.lighting,
            action=cov.action,
            description=f"beat {max(0, cov.beat) + 1}/{len(beats)} ({beat.kind}): {beat.text}",
            continuity_notes=_continuity(cov, beat, reader.order, number),
            setting=beat.place,
            time_of_day=beat.time,
            palette=palette,
            expected_motion=cov.motion,
        ))

    overall = max((s.mood for s in shots), key=INTENSITY.index)
    climax = next(b for b in beats if b.mood == overall) if any(b.mood == overall for b in beats) else beats[0]
    lightings = list(dict.fromkeys(s.lighting for s in shots))
    suggestion = " → ".join(lightings)
    if beats[0].time_given:
        suggestion += f" ({beats[0].time})"
    return ScenePlan(
        shots=tuple(shots),
        overall_mood=overall,
        lighting_suggestions=suggestion,
        genre=_genre(climax),
        notes=tuple(notes),
        detected_characters=tuple(reader.detected),
        characters=tuple(reader.order),
        beats=tuple(beats),
        target_duration_s=target,
    )

