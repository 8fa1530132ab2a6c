"""The escalation ladder: what each retry changes, what is credited, when a person takes over."""

import pytest

from director.escalation import BestAttempt, best_of, credited, follow_up, retry_of, review_of, rung
from director.learning import fold, is_final
from director.modifiers import MODIFIERS
from director.refiner import BASE_CFG, BASE_STEPS, refine
from tests.unit.test_learning import scored


def refined(planned, **update):
    return refine(planned.model_copy(update=update), {}, width=64, height=64, workflow="w", learner_version="1").prompt


def test_the_ladder_climbs_seed_then_modifier_then_workflow_setting():
    assert [rung(a) for a in range(1, 7)] == [
        "initial", "new-seed", "new-modifier", "workflow-setting", "new-modifier", "new-modifier"]


def test_each_retry_says_why_and_what_it_changes(kai_shots):
    planned = kai_shots[0].model_copy(update={"max_attempts": 4})
    first = scored(planned, "clean-cel", 0.2)
    second = retry_of(first)
    assert second.attempt == 2 and second.escalation == "new-seed" and second.keep_modifier == "clean-cel"
    assert second.tried_modifiers == ["clean-cel"] and second.shot == planned.shot
    assert "attempt 1 scored 0.200, under the threshold" in second.retry_reason and "new seed" in second.retry_reason

    third = retry_of(scored(second, "clean-cel", 0.3, attempt=2))
    assert third.escalation == "new-modifier" and third.keep_modifier is None

    failed = scored(third, "rim-light-drama", 0.0, attempt=3, status="failed")
    fourth = retry_of(failed, best_modifier="clean-cel")
    assert fourth.escalation == "workflow-setting" and fourth.keep_modifier == "clean-cel"
    assert "attempt 3 failed" in fourth.retry_reason
    assert retry_of(scored(planned, "clean-cel", 0.95)) is None


def test_the_refiner_changes_only_what_the_rung_says(kai_shots):
    planned = kai_shots[1].model_copy(update={"max_attempts": 4})
    first = refined(planned)
    assert (first.steps, first.modifier_probability > 0) == (BASE_STEPS, True)
    assert first.cfg == round(BASE_CFG + MODIFIERS[first.modifier].cfg_delta, 2)

    again = refined(planned, attempt=2, escalation="new-seed", keep_modifier=first.modifier, tried_modifiers=[first.modifier])
    assert (again.modifier, again.steps, again.cfg, again.modifier_probability) == (first.modifier, first.steps, first.cfg, 1.0)
    assert again.seed != first.seed

    other = refined(planned, attempt=3, escalation="new-modifier", tried_modifiers=[first.modifier, first.modifier])
    assert other.modifier != first.modifier and other.steps == BASE_STEPS

    setting = refined(planned, attempt=4, escalation="workflow-setting", keep_modifier=first.modifier,
                      tried_modifiers=[first.modifier, first.modifier, other.modifier])
    assert setting.modifier == first.modifier and setting.steps > BASE_STEPS and setting.cfg < first.cfg


def test_only_first_attempts_are_credited_to_their_modifier(kai_shots):
    planned = kai_shots[0]
    first = scored(planned, "clean-cel", 0.2)
    assert credited(first) and fold({}, first)
    for attempt, escalation in ((2, "new-seed"), (3, "new-modifier"), (4, "workflow-setting")):
        retry = scored(planned.model_copy(update={"escalation": escalation, "max_attempts": 4}), "clean-cel", 0.9, attempt=attempt)
        assert not credited(retry)
        assert fold({}, retry) == {}, f"a {escalation} retry must not move the table"


def test_a_spent_budget_escalates_to_human_review_naming_the_best_attempt(kai_shots):
    planned = kai_shots[0]
    last = scored(planned, "clean-cel", 0.2, attempt=planned.max_attempts)
    assert is_final(last) and retry_of(last) is None
    review = review_of(last, best_attempt=2, best_composite=0.41)
    assert review.shot_number == planned.shot.shot_number and review.best_attempt == 2
    assert f"all {planned.max_attempts} attempts under the threshold" in review.reason and "0.410" in review.reason
    assert review_of(scored(planned, "clean-cel", 0.95, attempt=planned.max_attempts), best_attempt=3, best_composite=0.95) is None
    assert review_of(scored(planned, "clean-cel", 0.1), best_attempt=1, best_composite=0.1) is None
    nothing = review_of(last.model_copy(update={"status": "failed"}), best_attempt=None, best_composite=None)
    assert "no attempt could be scored" in nothing.reason


@pytest.mark.parametrize("escalation", ["new-seed", "workflow-setting"])
def test_an_unknown_kept_modifier_falls_back_to_sampling(kai_shots, escalation):
    # A retry from another producer may name a modifier this version does not have.
    prompt = refined(kai_shots[0], attempt=2, escalation=escalation, keep_modifier="retired", tried_modifiers=["retired"])
    assert prompt.modifier in MODIFIERS


def test_the_retry_controller_decides_from_the_shots_best_attempt(kai_shots):
    planned = kai_shots[0].model_copy(update={"max_attempts": 4, "quality_threshold": 0.6})
    first = scored(planned, "clean-cel", 0.5)
    best = best_of(None, first)
    assert best == BestAttempt(1, 0.5, "clean-cel")
    assert best_of(best, scored(planned, "ink-wash", 0.5, attempt=2)) == best, "a tie keeps the earlier attempt"
    assert best_of(best, scored(planned, "ink-wash", 0.9, attempt=2, status="failed")) == best, "unscored: no candidate"
    assert follow_up(scored(planned, "clean-cel", 0.7), best) is None, "a pass needs nothing"

    retry = follow_up(first, best)
    assert retry.attempt == 2 and retry.escalation == "new-seed"
    third = scored(planned.model_copy(update={"escalation": "new-modifier"}), "ink-wash", 0.2, attempt=3)
    setting = follow_up(third, best_of(best, third))
    assert setting.escalation == "workflow-setting" and setting.keep_modifier == "clean-cel", "the best modifier so far"

    last = scored(planned, "ink-wash", 0.3, attempt=4)
    review = follow_up(last, best_of(best, last))
    assert review.shot_number == planned.shot.shot_number and (review.best_attempt, review.best_composite) == (1, 0.5)
    assert "no attempt could be scored" in follow_up(last.model_copy(update={"status": "failed"}), None).reason


def test_a_directed_attempt_does_as_the_person_says_and_teaches_no_pattern(kai_shots):
    from events.models import Direction

    planned = kai_shots[0].model_copy(update={
        "attempt": 4, "max_attempts": 4, "escalation": "directed", "keep_modifier": "clean-cel",
        "direction": Direction(note="Kai's scarf red", seed=77, modifier="dynamic-action")})
    prompt = refined(planned)
    assert (prompt.modifier, prompt.modifier_probability, prompt.seed) == ("dynamic-action", 1.0, 77)
    assert prompt.prompt.endswith("Kai's scarf red") and prompt.steps == BASE_STEPS
    kept = refined(planned.model_copy(update={"direction": Direction(prompt="a lone dragon at dusk")}))
    assert kept.modifier == "clean-cel" and kept.prompt == "a lone dragon at dusk", "the cut's modifier by default"

    done = scored(planned, "dynamic-action", 0.2, attempt=4)
    assert not credited(done) and fold({}, done) == {}, "a person's choice is not the policy's"
    assert is_final(done) and follow_up(done, best_of(None, done)).attempts == 4, "no retry: review if it fails"


def test_a_scenes_render_preset_rides_every_retry(kai_shots):
    planned = kai_shots[0].model_copy(update={"max_attempts": 3, "render_preset": "anime-ref"})
    second = retry_of(scored(planned, "clean-cel", 0.2))
    third = retry_of(scored(second, "clean-cel", 0.2, attempt=2))
    assert second.render_preset == third.render_preset == "anime-ref"


def test_the_scenes_render_budget_makes_an_attempt_the_last_and_says_why(kai_shots):
    from director.escalation import budget_stop, is_final

    assert budget_stop(1, 3, None, 500.0, 10.0) is None  # no budget
    assert budget_stop(1, 3, 60.0, 40.0, 10.0) is None  # 50 s of 60: another attempt still fits
    assert budget_stop(3, 3, 60.0, 80.0, 10.0) is None  # the last attempt anyway
    why = budget_stop(2, 3, 60.0, 52.5, 10.0)
    assert why == "the scene's render budget of 60 s is spent (52.5 s rendered, about 10.0 s per attempt): " \
                  "no retry after attempt 2"

    planned = kai_shots[0].model_copy(update={"max_attempts": 3, "max_render_seconds": 60.0})
    first = scored(planned, "clean-cel", 0.2)
    assert not is_final(first) and retry_of(first).max_render_seconds == 60.0
    stopped = first.model_copy(update={"prompt": first.prompt.model_copy(update={"budget_stop": why})})
    assert is_final(stopped) and retry_of(stopped) is None
    review = follow_up(stopped, BestAttempt(1, 0.2, "clean-cel"))
    assert review.reason.startswith(why + "; attempt 1 under the threshold") and review.best_attempt == 1
    assert follow_up(stopped.model_copy(update={"passed": True, "composite": 0.9}), None) is None
