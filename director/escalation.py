"""The attempt budget, escalated: what each retry of a shot changes, and when a person takes over.

A shot's first attempt is the policy's choice over every modifier. A shot that scores under its
threshold is retried, each retry changing one more thing than the last:

1. ``new-seed``: the same modifier and sampler settings with another seed (was it bad luck?);
2. ``new-modifier``: an untried modifier, by Thompson sampling among those;
3. ``workflow-setting``: the best-scoring modifier so far, with more sampler steps and a lower cfg;

further retries (budgets over 4) try new modifiers again. A shot whose budget is spent under its
threshold is escalated to **human review** (``shot.review``); its best attempt is the accepted one.

Only a first attempt's score is credited to its modifier in the pattern table
(:func:`credited`). A retry is made *because* the shot already failed: crediting its score would
charge the retry's modifier for the shot's difficulty (weak modifiers would mostly be tried on
hard shots), and a ``new-seed`` or ``workflow-setting`` attempt did not choose its modifier at
all. Retries are still logged with their propensities, scores and rung, for ``tower evaluate``,
the projections and the trends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from events.models import Escalation, QualityScored, ShotPlanned, ShotReviewRequested

LADDER: tuple[Escalation, ...] = ("new-seed", "new-modifier", "workflow-setting")
ESCALATIONS: tuple[Escalation, ...] = get_args(Escalation)

# What the workflow-setting rung changes: more denoising steps, a looser prompt adherence.
WORKFLOW_STEPS_FACTOR = 1.5
WORKFLOW_CFG_DELTA = -1.0


def rung(attempt: int) -> Escalation:
    """The escalation of a shot's ``attempt`` (1-based)."""
    if attempt <= 1:
        return "initial"
    return LADDER[attempt - 2] if attempt - 2 < len(LADDER) else "new-modifier"


def credited(event: QualityScored) -> bool:
    """Whether the attempt's score is evidence about its modifier (see the module docstring)."""
    return event.attempt == 1 and event.escalation == "initial"


def outcome(event: QualityScored) -> str:
    """What happened to the attempt, in words: its score against the threshold, or its failure."""
    if event.status != "ok":
        return f"attempt {event.attempt} failed: {event.reason or 'no reason given'}"
    verdict = "at or over" if event.passed else "under"
    return f"attempt {event.attempt} scored {event.composite:.3f}, {verdict} the threshold {event.quality_threshold:.2f}"


NEXT_STEP = {
    "new-seed": "next: the same modifier with a new seed",
    "new-modifier": "next: an untried modifier",
    "workflow-setting": "next: the best modifier so far with more steps and a lower cfg",
}


def retry_of(event: QualityScored, *, best_modifier: str | None = None) -> ShotPlanned | None:
    """The next attempt at a shot that scored under its threshold, within its attempt budget.

    ``best_modifier`` is the modifier of the shot's best-scoring attempt so far (the learner
    reads it from its projections); a ``workflow-setting`` retry keeps it.
    """
    if is_final(event):
        return None
    escalation = rung(event.attempt + 1)
    keep = {"new-seed": event.prompt.modifier, "workflow-setting": best_modifier or event.prompt.modifier}
    return ShotPlanned(
        scene_id=event.scene_id,
        session_id=event.session_id,
        attempt=event.attempt + 1,
        max_attempts=event.max_attempts,
        quality_threshold=event.quality_threshold,
        shot=event.shot,
        tried_modifiers=[*event.tried_modifiers, event.prompt.modifier],
        style=event.style,
        overall_mood=event.shot.mood,
        lighting_suggestions=event.shot.lighting,
        escalation=escalation,
        retry_reason=f"{outcome(event)}; {NEXT_STEP[escalation]}",
        keep_modifier=keep.get(escalation),
        character_sheets=event.character_sheets,
        render_preset=event.render_preset,
        max_render_seconds=event.max_render_seconds,
    )


def review_of(
    event: QualityScored, *, best_attempt: int | None, best_composite: float | None
) -> ShotReviewRequested | None:
    """A review request when this attempt spent the shot's budget (of attempts, or the scene's render
    budget) without passing."""
    if event.passed or not is_final(event):
        return None
    best = (f"; the best attempt, {best_attempt} ({best_composite:.3f}), is the accepted one"
            if best_attempt is not None and best_composite is not None else "; no attempt could be scored")
    why = (f"{event.prompt.budget_stop}; attempt {event.attempt} under the threshold {event.quality_threshold:.2f}"
           if event.prompt.budget_stop and event.attempt < event.max_attempts else
           f"all {event.max_attempts} attempts under the threshold {event.quality_threshold:.2f}")
    return ShotReviewRequested(
        scene_id=event.scene_id,
        session_id=event.session_id,
        shot_number=event.shot.shot_number,
        attempts=event.attempt,
        quality_threshold=event.quality_threshold,
        best_attempt=best_attempt,
        best_composite=best_composite,
        reason=f"{why} ({outcome(event)}){best}",
    )


@dataclass(frozen=True)
class BestAttempt:
    """A shot's best-scoring attempt so far: the one accepted if its budget is spent."""

    attempt: int
    composite: float
    modifier: str


def best_of(best: BestAttempt | None, event: QualityScored) -> BestAttempt | None:
    """The shot's best attempt once ``event`` is counted: the highest composite among the attempts
    that could be scored; on a tie, the earlier attempt."""
    if event.status != "ok":
        return best
    candidate = BestAttempt(event.attempt, event.composite, event.prompt.modifier)
    if best is None or (candidate.composite, -candidate.attempt) > (best.composite, -best.attempt):
        return candidate
    return best


def follow_up(event: QualityScored, best: BestAttempt | None) -> ShotPlanned | ShotReviewRequested | None:
    """What a score decides for its shot: the retry one rung up the ladder, a review request when
    the budget is spent, or nothing (it passed). ``best`` is the shot's best attempt with this one
    counted (:func:`best_of`)."""
    if event.passed:
        return None
    if not is_final(event):
        keep = best.modifier if best and rung(event.attempt + 1) == "workflow-setting" else None
        return retry_of(event, best_modifier=keep)
    return review_of(event, best_attempt=best.attempt if best else None,
                     best_composite=best.composite if best else None)


def is_final(event: QualityScored) -> bool:
    """Whether this attempt ends its shot: accepted, its attempts spent, or the last the scene's
    render budget allowed (``prompt.budget_stop``)."""
    return event.passed or event.attempt >= event.max_attempts or event.prompt.budget_stop is not None


def budget_stop(attempt: int, max_attempts: int, budget_s: float | None, spent_s: float,
                per_attempt_s: float) -> str | None:
    """Why ``attempt`` must be the shot's last, or ``None``: when the scene's renders so far
    (``spent_s``) and one more attempt like them (``per_attempt_s``, their mean) would reach the
    scene's render budget. Decided when the attempt is refined, so the attempt is known to be final
    when it is scored, by every reader of the score."""
    if budget_s is None or attempt >= max_attempts or spent_s + per_attempt_s < budget_s:
        return None
    return (f"the scene's render budget of {budget_s:g} s is spent ({spent_s:.1f} s rendered, about "
            f"{per_attempt_s:.1f} s per attempt): no retry after attempt {attempt}")
