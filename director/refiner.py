"""Shot -> generation prompt: style, character sheets, negative prompt, sampler settings, and a
modifier chosen by Thompson sampling over the learned patterns of the shot's context."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

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
    """The context a pattern is learned in: shot type x mood x lighting x workflow/model."""
    return f"{shot.camera_angle}|{shot.mood}|{shot.lighting}|{workflow}"


def character_sheet(name: str) -> str:
    """A stable per-character description, so every shot draws the same design."""
    digest = hashlib.sha256(name.lower().encode()).digest()
    hair = ("silver", "crimson", "jet-black", "golden", "teal", "violet")[digest[0] % 6]
    eyes = ("amber", "emerald", "sapphire", "scarlet", "grey")[digest[1] % 5]
    outfit = ("battle-worn cloak", "school uniform", "armoured coat", "flowing robes", "scaled hide")[
        digest[2] % 5
    ]
    return f"{name} ({hair} hair, {eyes} eyes, {outfit}, consistent character design)"


def candidate_modifiers(tried: list[str]) -> list[str]:
    """Untried modifiers first; once every one was tried, all are candidates again."""
    fresh = [name for name in MODIFIERS if name not in tried]
    return fresh or list(MODIFIERS)


def choose_modifier(planned: ShotPlanned, posteriors: Mapping[str, Posterior], seed: int) -> Choice:
    """The attempt's modifier, by its rung of the escalation ladder.

    A first attempt samples every modifier; a ``new-modifier`` retry samples the untried ones;
    ``new-seed`` and ``workflow-setting`` keep the modifier the learner named (probability 1).
    """
    if planned.escalation in ("new-seed", "workflow-setting") and planned.keep_modifier in MODIFIERS:
        return Choice(planned.keep_modifier, 1.0, {})
    tried = planned.tried_modifiers if planned.attempt > 1 else []
    return thompson_choice(posteriors, candidate_modifiers(tried), seed)


def sampler_settings(modifier: Modifier, escalation: Escalation) -> tuple[int, float]:
    """Steps and cfg: the base, moved by the modifier's cfg; the ``workflow-setting`` rung alone
    changes them further, so a modifier's credited scores never mix in the attempt number."""
    steps, cfg = BASE_STEPS, BASE_CFG + modifier.cfg_delta
    if escalation == "workflow-setting":
        steps, cfg = round(BASE_STEPS * WORKFLOW_STEPS_FACTOR), cfg + WORKFLOW_CFG_DELTA
    return min(steps, MAX_STEPS), round(max(1.0, cfg), 2)


def refine(
    planned: ShotPlanned,
    posteriors: Mapping[str, Posterior],
    *,
    width: int,
    height: int,
    workflow: str,
    learner_version: str,
) -> PromptRefined:
    shot = planned.shot
    seed = decision_seed(planned.scene_id, shot.shot_number, planned.attempt, learner_version)
    choice = choose_modifier(planned, posteriors, seed)
    modifier = MODIFIERS[choice.modifier]
    steps, cfg = sampler_settings(modifier, planned.escalation)
    prompt = ", ".join(
        part
        for part in (
            STYLE_TOKENS.get(planned.style, f"{planned.style} style"),
            CAMERA_TOKENS.get(shot.camera_angle, f"{shot.camera_angle} shot"),
            f"{shot.camera_movement} camera",
            shot.action,
            *(character_sheet(c) for c in shot.characters),
            f"{shot.mood} mood",
            shot.lighting,
            modifier.prompt_text,
        )
        if part
    )
    spec = PromptSpec(
        prompt=prompt,
        negative_prompt=f"{BASE_NEGATIVE}, {modifier.negative_text}",
        seed=seed % 2**32,
        steps=steps,
        cfg=cfg,
        sampler="euler_ancestral",
        width=width,
        height=height,
        context=pattern_context(shot, workflow),
        modifier=modifier.name,
        modifier_probability=round(choice.probability, 4),
        learner_version=learner_version,
    )
    return PromptRefined(
        **planned.model_dump(exclude={"overall_mood", "lighting_suggestions"}), prompt=spec
    )
