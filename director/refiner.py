"""Shot -> generation prompt: style, character sheets, negative prompt, sampler settings, and a
modifier chosen by Thompson sampling over the learned patterns of the shot's context."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from director.context import PatternContext
from director.escalation import WORKFLOW_CFG_DELTA, WORKFLOW_STEPS_FACTOR
from director.learning import Choice, Posterior, decision_seed, thompson_choice
from director.modifiers import MODIFIERS, Modifier
from events.models import Escalation, PromptRefined, PromptSpec, ShotPlanned, ShotSpec

BASE_NEGATIVE = (
    "lowres, blurry, bad anatomy, extra limbs, deformed hands, watermark, text, "
    "inconsistent character design, off-model, jpeg artifacts"
)
STYLE_TOKENS = {
    "anime": "anime key visual, high quality, detailed, vibrant colours",
    "ghibli": "hand-painted anime film still, soft watercolour backgrounds",
    "cyberpunk": "neon-lit anime, cyberpunk city, high contrast",
}
CAMERA_TOKENS = {
    "wide": "wide shot, full environment visible",
    "close-up": "close-up shot, face in focus, shallow depth of field",
    "medium": "medium shot, waist-up framing",
    "low-angle": "low-angle shot, heroic perspective",
    "over-the-shoulder": "over-the-shoulder shot",
    "two-shot": "two-shot, both characters in frame",
    "pov": "point-of-view shot, first-person perspective",
    "extreme close-up": "extreme close-up, eyes and detail fill the frame",
    "high-angle": "high-angle shot, looking down on the subject",
}
BASE_STEPS = 24
MAX_STEPS = 60  # more sampler steps stop paying off long before PromptSpec's limit of 200
BASE_CFG = 7.0


def pattern_context(shot: ShotSpec, workflow: str) -> str:
    """The key of the context a pattern is learned in: shot type x mood x lighting x workflow/model
    (:class:`director.context.PatternContext`)."""
    return PatternContext(shot.camera_angle, shot.mood, shot.lighting, workflow).key


# What a name says a character is, by a word in it ("Dragon", "Shiro the wolf", "Unit-7 robot").
_KINDS = {
    **dict.fromkeys(("dragon", "serpent", "snake", "wyvern", "kaiju", "lizard"), ("creature", "scales")),
    **dict.fromkeys(("wolf", "fox", "cat", "dog", "tiger", "bear", "horse", "kitsune", "beast", "lion"),
                    ("creature", "fur")),
    **dict.fromkeys(("bird", "crow", "raven", "phoenix", "griffin", "owl", "eagle", "hawk"), ("creature", "feathers")),
    **dict.fromkeys(("monster", "demon", "oni", "yokai", "golem", "titan"), ("creature", "hide")),
    **dict.fromkeys(("robot", "android", "cyborg", "mech", "mecha", "drone", "automaton"), ("machine", "plating")),
    **dict.fromkeys(("ghost", "spirit", "phantom", "wraith"), ("spirit", "glow")),
}


_COLOURS = frozenset("red crimson scarlet black white silver golden gold blue azure green emerald jade teal violet "
                     "purple pink orange grey gray bronze copper".split())


def character_kind(name: str) -> tuple[str, str]:
    """``(kind, covering)``: ``("human", "")`` unless a word of the name says otherwise."""
    for word in re.findall(r"[a-z]+", name.lower()):
        kind = _KINDS.get(word) or _KINDS.get(word.rstrip("s"))
        if kind:
            return kind
    return "human", ""


def character_sheet(name: str, given: str | None = None) -> str:
    """The character's design in every shot: the one given (by the user, or remembered from an
    earlier scene), else a default derived from the name alone, so it is the same in every scene
    and session. A dragon gets scales, a robot plating, not hair and a school uniform."""
    if given:
        return f"{name} ({given}, consistent character design)"
    digest = hashlib.sha256(name.lower().encode()).digest()
    named = [word for word in re.findall(r"[a-z]+", name.lower()) if word in _COLOURS]
    colour = named[0] if named else ("silver", "crimson", "jet-black", "golden", "teal", "violet")[digest[0] % 6]
    eyes = ("amber", "emerald", "sapphire", "scarlet", "grey")[digest[1] % 5]
    kind, covering = character_kind(name)
    if kind == "creature":
        build = ("towering", "sleek", "massive", "lithe", "ancient")[digest[2] % 5]
        return f"{name} ({build} {colour} {covering}, {eyes} eyes, consistent creature design)"
    if kind == "machine":
        finish = ("battle-scarred", "polished", "matte", "weathered", "gleaming")[digest[2] % 5]
        return f"{name} ({finish} {colour} {covering}, glowing {eyes} optics, consistent mechanical design)"
    if kind == "spirit":
        return f"{name} (translucent {colour} {covering}, {eyes} eyes, consistent spirit design)"
    outfit = ("battle-worn cloak", "school uniform", "armoured coat", "flowing robes", "travelling clothes")[
        digest[2] % 5
    ]
    return f"{name} ({colour} hair, {eyes} eyes, {outfit}, consistent character design)"


# How far the camera moves per frame, relative to a tracking shot: the movement as a render
# parameter (the procedural renderer's pan, a video model's camera motion), not as prompt words
# an image model cannot act on.
CAMERA_MOTION = {
    "static": 0.0, "locked-off": 0.0, "slow push-in": 0.3, "slow pan": 0.4, "push-in": 0.5, "pull-back": 0.5,
    "pan": 0.6, "crane": 0.6, "dolly": 0.6, "handheld": 0.8, "orbit": 0.8, "tracking": 1.0, "whip pan": 1.5,
}
DEFAULT_CAMERA_MOTION = 0.5


def scene_continuity(shot: ShotSpec) -> str:
    """Where and when, and the scene's palette: the same words in every shot of a scene."""
    parts = [shot.setting, shot.time_of_day, f"{shot.palette} palette" if shot.palette else ""]
    return ", ".join(part for part in parts if part)


def candidate_modifiers(tried: list[str]) -> list[str]:
    """Untried modifiers first; once every one was tried, all are candidates again."""
    fresh = [name for name in MODIFIERS if name not in tried]
    return fresh or list(MODIFIERS)


POLICIES = ("thompson", "uniform", *(f"fixed:{name}" for name in MODIFIERS))


def choose_modifier(planned: ShotPlanned, posteriors: Mapping[str, Posterior], seed: int,
                    policy: str = "thompson") -> Choice:
    """The attempt's modifier, by its rung of the escalation ladder and the policy.

    A first attempt chooses among every modifier; a ``new-modifier`` retry among the untried
    ones; ``new-seed`` and ``workflow-setting`` keep the modifier the learner named
    (probability 1). The policy is Thompson sampling over the patterns (the default), uniform
    at random, or ``fixed:<modifier>`` (that one whenever it is a candidate, else uniform): the
    baselines a learning policy is compared with. The probability of the choice is logged.
    """
    if planned.escalation in ("new-seed", "workflow-setting") and planned.keep_modifier in MODIFIERS:
        return Choice(planned.keep_modifier, 1.0, {})
    if planned.escalation == "directed":  # a person's choice, not the policy's: logged with probability 1
        named = planned.direction.modifier if planned.direction else None
        for modifier in (named, planned.keep_modifier):
            if modifier in MODIFIERS:
                return Choice(modifier, 1.0, {})
    tried = planned.tried_modifiers if planned.attempt > 1 else []
    candidates = candidate_modifiers(tried)
    if policy.startswith("fixed:") and policy.removeprefix("fixed:") in candidates:
        return Choice(policy.removeprefix("fixed:"), 1.0, {})
    if policy != "thompson":
        pick = sorted(candidates)[int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:8], "big") % len(candidates)]
        return Choice(pick, 1.0 / len(candidates), {})
    return thompson_choice(posteriors, candidates, seed)


def sampler_settings(modifier: Modifier, escalation: Escalation, max_steps: int = MAX_STEPS) -> tuple[int, float]:
    """Steps and cfg: the base, moved by the modifier's cfg; the ``workflow-setting`` rung alone
    changes them further, so a modifier's credited scores never mix in the attempt number.
    ``max_steps`` caps the steps (a draft, or a model run on CPU)."""
    steps, cfg = BASE_STEPS, BASE_CFG + modifier.cfg_delta
    if escalation == "workflow-setting":
        steps, cfg = round(BASE_STEPS * WORKFLOW_STEPS_FACTOR), cfg + WORKFLOW_CFG_DELTA
    return min(steps, MAX_STEPS, max_steps), round(max(1.0, cfg), 2)


def refine(
    planned: ShotPlanned,
    posteriors: Mapping[str, Posterior],
    sheets: Mapping[str, str] | None = None,
    *,
    width: int,
    height: int,
    workflow: str,
    learner_version: str,
    policy: str = "thompson",
    max_steps: int = MAX_STEPS,
) -> PromptRefined:
    shot = planned.shot
    direction = planned.direction if planned.escalation == "directed" else None
    seed = decision_seed(planned.scene_id, shot.shot_number, planned.attempt, learner_version)
    choice = choose_modifier(planned, posteriors, seed, policy)
    modifier = MODIFIERS[choice.modifier]
    steps, cfg = sampler_settings(modifier, planned.escalation, max_steps)
    prompt = ", ".join(
        part
        for part in (
            STYLE_TOKENS.get(planned.style, f"{planned.style} style"),
            CAMERA_TOKENS.get(shot.camera_angle, f"{shot.camera_angle} shot"),
            shot.action,
            *(character_sheet(c, planned.character_sheets.get(c) or (sheets or {}).get(c.lower()))
              for c in shot.characters),
            scene_continuity(shot),
            f"{shot.mood} mood",
            shot.lighting,
            modifier.prompt_text,
        )
        if part
    )
    if direction is not None and direction.prompt:
        prompt = direction.prompt
    if direction is not None and direction.note:
        prompt = f"{prompt}, {direction.note}"
    spec = PromptSpec(
        prompt=prompt,
        negative_prompt=f"{BASE_NEGATIVE}, {modifier.negative_text}",
        seed=direction.seed if direction is not None and direction.seed is not None else seed % 2**32,
        steps=steps,
        cfg=cfg,
        sampler="euler_ancestral",
        width=width,
        height=height,
        context=pattern_context(shot, workflow),
        camera_motion=CAMERA_MOTION.get(shot.camera_movement, DEFAULT_CAMERA_MOTION),
        motion_strength=round(min(1.0, max(0.0, shot.expected_motion * modifier.motion_gain)), 4),
        modifier=modifier.name,
        modifier_probability=round(choice.probability, 4),
        learner_version=learner_version,
    )
    return PromptRefined(
        **planned.model_dump(exclude={"overall_mood", "lighting_suggestions"}), prompt=spec
    )
