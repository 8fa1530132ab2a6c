import itertools
import random

import numpy as np
import pytest

from director.learning import (
    MICROS,
    LearningParameters,
    Posterior,
    fold,
    fold_all,
    thompson_choice,
)
from director.refiner import refine
from events.models import QualityScored


def scored(planned, modifier: str, composite: float, *, attempt=1, status="ok", context="ctx") -> QualityScored:
    """A scored attempt of ``planned`` (its rung is the planned one's)."""
    refined = refine(planned, {}, width=64, height=64, workflow="w", learner_version="1")
    prompt = refined.prompt.model_copy(update={"modifier": modifier, "context": context})
    return QualityScored(
        **refined.model_dump(exclude={"prompt", "attempt"}),
        attempt=attempt,
        prompt=prompt,
        status=status,
        composite=composite,
        passed=composite >= planned.quality_threshold,
        scorer_version="test",
        device="cpu",
    )


def test_posterior_update_is_the_fractional_bernoulli_update():
    post = Posterior().updated(0.75)
    assert (post.alpha, post.beta, post.observations) == (1.75, 1.25, 1)
    assert post.mean == pytest.approx(1.75 / 3)
    assert 0 <= post.lower_bound < post.mean


def test_fold_is_order_independent_and_exact(kai_shots):
    rng = random.Random(7)
    events = [scored(kai_shots[0], rng.choice("abc"), rng.random(), context=rng.choice("xy")) for _ in range(60)]
    reference = fold_all(events)
    for _ in range(5):
        shuffled = events[:]
        rng.shuffle(shuffled)
        assert fold_all(shuffled) == reference  # bit-for-bit: integer micro-units
    assert sum(p.observations for p in reference.values()) == 60
    assert all(p.alpha_micros + p.beta_micros == 2 * MICROS + p.observations * MICROS for p in reference.values())


def test_failed_scores_teach_nothing(kai_shots):
    assert fold({}, scored(kai_shots[0], "a", 0.0, status="failed")) == {}


def test_thompson_choice_is_seeded_and_follows_the_evidence():
    strong = {"good": Posterior(40 * MICROS, 2 * MICROS, 40), "bad": Posterior(2 * MICROS, 40 * MICROS, 40)}
    choices = [thompson_choice(strong, ["good", "bad"], seed) for seed in range(20)]
    assert all(c.modifier == "good" for c in choices)
    assert all(c.probability > 0.95 for c in choices)
    assert thompson_choice({}, ["a", "b", "c"], 123) == thompson_choice({}, ["a", "b", "c"], 123)
    picks = {thompson_choice({}, ["a", "b", "c"], seed).modifier for seed in range(40)}
    assert picks == {"a", "b", "c"}, "with no evidence every arm gets explored"
    with pytest.raises(ValueError):
        thompson_choice({}, [], 1)


def test_refinement_is_deterministic_per_scene_shot_attempt_and_version(kai_shots):
    planned = kai_shots[1]
    one = refine(planned, {}, width=64, height=64, workflow="w", learner_version="1")
    assert one == refine(planned, {}, width=64, height=64, workflow="w", learner_version="1")
    seeds = {
        refine(planned, {}, width=64, height=64, workflow="w", learner_version=str(v)).prompt.seed
        for v in range(5)
    }
    assert len(seeds) == 5
    assert "Kai" in one.prompt.prompt and one.prompt.negative_prompt
    shot = planned.shot  # its angle, mood and lighting come from the planner
    assert one.prompt.context == f"{shot.camera_angle}|{shot.mood}|{shot.lighting}|w"


def test_every_pair_of_modifiers_can_win(kai_shots):
    names = ["a", "b"]
    for winner, loser in itertools.permutations(names):
        table = {winner: Posterior(30 * MICROS, MICROS, 30), loser: Posterior(MICROS, 30 * MICROS, 30)}
        assert thompson_choice(table, names, 5).modifier == winner


def feedback(source: str, *, rating=None, scores=None, context="ctx", modifier="clean-cel", feedback_id="f1",
             shot_number=1, scene_shots=None):
    from events.models import ExternalScores, FeedbackSubmitted

    return FeedbackSubmitted(scene_id="scene-1", session_id="s", feedback_id=feedback_id, shot_number=shot_number,
                             attempt=1, source=source, rating=rating, scores=ExternalScores(**(scores or {})),
                             context=context, modifier=modifier, scene_shots=scene_shots)


def test_a_human_rating_counts_twice_on_the_reward_scale():
    from director.learning import HUMAN_RATING_WEIGHT, rating_reward

    assert [rating_reward(r) for r in range(1, 6)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    table = fold({}, feedback("human", rating=5))
    post = table[("ctx", "clean-cel")]
    assert HUMAN_RATING_WEIGHT == 2
    assert (post.alpha, post.beta, post.observations) == (3.0, 1.0, 1)
    assert fold({}, feedback("human", rating=1))[("ctx", "clean-cel")].beta == 3.0


def test_external_scores_teach_their_mean_once():
    post = fold({}, feedback("external", scores={"ssim": 0.85, "consistency": 0.9}))[("ctx", "clean-cel")]
    assert (post.alpha, post.beta, post.observations) == (1.875, 1.125, 1)


def test_feedback_and_scores_fold_into_the_same_posterior_in_any_order(kai_shots):
    events = [scored(kai_shots[0], "clean-cel", 0.4), feedback("human", rating=4),
              feedback("external", scores={"optical_flow": 0.3}), scored(kai_shots[1], "clean-cel", 0.9, attempt=1)]
    tables = {tuple(sorted(fold_all(order).items())) for order in itertools.permutations(events)}
    assert len(tables) == 1
    post = fold_all(events)[("ctx", "clean-cel")]
    assert post.observations == 4
    assert post.alpha_micros == MICROS + 400_000 + 2 * 750_000 + 300_000 + 900_000


SEED_SCORES = {"ssim": 0.85, "consistency": 0.90}  # the seed client's quality_scores: reward 0.875


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_scene_feedback_over_n_shots_moves_a_pattern_by_one_nth_of_a_shots(n):
    key = ("ctx", "clean-cel")
    whole = fold({}, feedback("external", scores=SEED_SCORES))[key]
    one_shot = fold({}, feedback("external", scores=SEED_SCORES, scene_shots=n))[key]
    assert one_shot.alpha_micros - MICROS == round(875_000 / n) and one_shot.beta_micros - MICROS == round(125_000 / n)
    # Every accepted shot of the scene on the same pattern: the scene counts once, up to a micro-unit per shot.
    spread = fold_all(feedback("external", scores=SEED_SCORES, scene_shots=n, shot_number=k) for k in range(1, n + 1))[key]
    assert abs(spread.alpha_micros - whole.alpha_micros) <= n and abs(spread.beta_micros - whole.beta_micros) <= n
    assert spread.observations == n
    human = fold({}, feedback("human", rating=5, scene_shots=n))[key]
    assert human.alpha_micros - MICROS == round(2 * MICROS / n), "a rating's weight 2 is divided too"


def test_whole_weights_give_the_same_integers_as_before_fractional_ones():
    from director.learning import increments, square_micros

    rng = random.Random(11)
    for reward in [0.0, 1.0, 0.5, 0.875, 1 / 3] + [rng.random() for _ in range(200)]:
        r = round(reward * MICROS)
        for weight in (1, 2, 5):
            assert increments(reward, weight) == (weight * r, weight * (MICROS - r), weight * square_micros(r))


def test_the_learners_sql_adds_the_same_integers_as_the_fold():
    from director.learning import evidence_of
    from store.projections import _learn_values

    for event in (feedback("human", rating=4), feedback("external", scores=SEED_SCORES, scene_shots=3),
                  feedback("human", rating=2, scene_shots=7)):
        evidence = evidence_of(event)
        _, _, prior, alpha, beta, square, _, weight, _ = _learn_values(evidence)
        folded = fold({}, event)[evidence.key]
        assert (prior + alpha, prior + beta, square) == (folded.alpha_micros, folded.beta_micros, folded.square_micros)
        assert all(isinstance(value, int) for value in (alpha, beta, square))
        assert weight == evidence.weight == (2 if event.source == "human" else 1) / (event.scene_shots or 1)


def test_fractional_weights_fold_in_any_order_to_the_same_table(kai_shots):
    events = [scored(kai_shots[0], "clean-cel", 0.4), feedback("human", rating=4, scene_shots=3),
              feedback("external", scores={"ssim": 0.3}, scene_shots=7, shot_number=2),
              feedback("external", scores=SEED_SCORES, scene_shots=3, shot_number=3)]
    tables = {tuple(sorted(fold_all(order).items())) for order in itertools.permutations(events)}
    assert len(tables) == 1


def test_feedback_must_judge_something():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs a rating"):
        feedback("human")
    with pytest.raises(ValidationError, match="at least one of"):
        feedback("external", rating=3)


def test_recommendations_pick_a_confident_best_and_drop_the_hopeless():
    from director.learning import recommend

    strong = Posterior()
    for _ in range(40):
        strong = strong.updated(0.9)
    weak = Posterior()
    for _ in range(40):
        weak = weak.updated(0.2)
    lucky = Posterior().updated(1.0)  # one great score: a high mean, a low lower bound
    posteriors = {"clean-cel": strong, "painterly-detail": weak, "rim-light-drama": lucky}
    rec = recommend("ctx", posteriors, ["clean-cel", "painterly-detail", "rim-light-drama", "dynamic-action"])
    assert rec.best == "clean-cel" and rec.best_lower_bound == pytest.approx(strong.lower_bound, abs=1e-4)
    assert "painterly-detail" in rec.stop and "clean-cel" not in rec.stop
    assert "dynamic-action" not in rec.stop  # untried: still might be best
    assert sum(rec.probability_best.values()) == pytest.approx(1.0, abs=1e-3)
    assert recommend("ctx", posteriors, list(posteriors)) == recommend("ctx", posteriors, list(posteriors))


def test_a_new_context_borrows_a_bounded_prior_from_related_contexts():
    from director.learning import beliefs, related

    ctx = "close-up|tense|night|wf-1"
    assert related(ctx, "close-up|calm|day|wf-1") and related(ctx, "wide|tense|day|wf-1")
    assert not related(ctx, "wide|calm|night|wf-1"), "only the lighting in common"
    assert not related(ctx, "close-up|tense|night|wf-2"), "another workflow's response is its own"
    evidence = {("close-up|calm|day|wf-1", "a"): (18.0, 2.0, 18.0), ("wide|tense|day|wf-1", "b"): (2.0, 18.0, 2.0),
                ("close-up|tense|night|wf-2", "b"): (50.0, 0.0, 50.0)}
    plain = LearningParameters(borrowed_strength=4, max_score_precision=1)
    known = beliefs(ctx, evidence, ["a", "b", "c"], plain)
    assert known["a"].mean > 0.75 and known["b"].mean < 0.3 and known["c"].mean == 0.5
    assert known["a"].borrowed == pytest.approx(4) and known["a"].own == 0, "20 observations lend 4"
    # The context's own evidence takes over.
    mine = {**evidence, (ctx, "a"): (0.0, 30.0, 0.0)}
    assert beliefs(ctx, mine, ["a"], plain)["a"].mean < 0.2
    # Strength 0: the plain posterior.
    assert beliefs(ctx, evidence, ["a"], LearningParameters(borrowed_strength=0))["a"].mean == 0.5


def sums(scores: list[float]) -> tuple[float, float, float]:
    return sum(scores), sum(1 - s for s in scores), sum(s * s for s in scores)


def test_steady_scores_count_as_several_coin_flips_and_noisy_ones_as_one():
    from director.learning import score_precision

    steady = {("c|m|l|wf", "a"): sums([0.50, 0.52, 0.48, 0.51, 0.49, 0.50]),
              ("c|m|l|wf", "b"): sums([0.20, 0.22, 0.18, 0.21, 0.19, 0.20])}
    # sd 0.014 around each modifier's own mean: 1 / (4 * 0.014^2) is far above the cap.
    assert score_precision(steady, max_precision=8) == 8
    assert score_precision(steady, max_precision=1) == 1, "1 turns it off"
    coin_flips = {("c|m|l|wf", "a"): sums([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])}
    assert score_precision(coin_flips, max_precision=8) == 1, "variance 0.29: no more than a flip"
    medium = {("c|m|l|wf", "a"): sums([0.3, 0.5, 0.7, 0.3, 0.5, 0.7, 0.4, 0.6])}  # SS 0.18 over 7 dof
    assert score_precision(medium, max_precision=100) == pytest.approx(0.25 / (0.18 / 7))
    few = {("c|m|l|wf", "a"): sums([0.5, 0.5, 0.5])}
    assert score_precision(few, max_precision=8) == 1, "two degrees of freedom are not enough to trust"


def test_precise_scores_settle_a_context_sooner():
    from director.learning import beliefs

    ctx = "wide|calm|day|wf"
    evidence = {(ctx, "good"): sums([0.50, 0.52, 0.48, 0.51]), (ctx, "bad"): sums([0.10, 0.12, 0.08, 0.11])}
    plain = beliefs(ctx, evidence, ["good", "bad"], LearningParameters(borrowed_strength=0, max_score_precision=1))
    precise = beliefs(ctx, evidence, ["good", "bad"], LearningParameters(borrowed_strength=0, max_score_precision=8))
    assert precise["good"].precision == 8 and plain["good"].precision == 1
    # Same means (up to the prior's weight), a far narrower posterior: "bad" is rarely sampled above "good".
    assert abs(precise["good"].mean - plain["good"].mean) < 0.02
    assert precise["good"].alpha + precise["good"].beta == pytest.approx(1 + 1 + 8 * 4)

    def chance_bad_wins(known) -> float:
        rng = np.random.default_rng(0)
        draws = {m: rng.beta(b.alpha, b.beta, 20_000) for m, b in known.items()}
        return float(np.mean(draws["bad"] > draws["good"]))

    assert chance_bad_wins(plain) > 0.05 and chance_bad_wins(precise) < 0.001
    # Another workflow's scores say nothing about this one's noise.
    elsewhere = {("wide|calm|day|other", "x"): sums([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])}
    assert beliefs(ctx, {**elsewhere, (ctx, "good"): sums([0.5])}, ["good"])["good"].precision == 1


def test_context_parts_reads_the_refiner_format():
    from director.learning import context_parts

    assert context_parts("low-angle|epic|golden hour|comfyui-abc") == {
        "camera_angle": "low-angle", "mood": "epic", "lighting": "golden hour", "workflow": "comfyui-abc"}


def test_every_shot_of_a_scene_says_where_when_and_its_palette_and_not_the_camera_words(kai_request):
    from director.planner import plan_scene
    from director.refiner import CAMERA_MOTION
    from events.models import ShotPlanned

    request = kai_request.model_copy(update={"description": "Kai walks into the misty forest at dawn, then the dragon lands"})
    plan = plan_scene(request, fps=4)
    prompts = [refine(ShotPlanned(scene_id="s", session_id="s", attempt=1, max_attempts=3, quality_threshold=0.6, shot=shot,
                                  overall_mood=plan.overall_mood, lighting_suggestions=plan.lighting_suggestions),
                      {}, width=64, height=64, workflow="w", learner_version="1").prompt for shot in plan.shots]
    assert len({shot.palette for shot in plan.shots}) == 1 and plan.shots[0].palette
    for shot, prompt in zip(plan.shots, prompts, strict=True):
        assert "misty forest" in prompt.prompt and "dawn" in prompt.prompt and shot.palette in prompt.prompt
        assert f"{shot.camera_movement} camera" not in prompt.prompt
        assert prompt.camera_motion == CAMERA_MOTION[shot.camera_movement]
        assert 0 <= prompt.motion_strength <= 1


def test_character_sheets_given_remembered_or_by_kind(kai_shots):
    from director.refiner import character_sheet

    dragon = character_sheet("Dragon")
    assert "scales" in dragon and "hair" not in dragon and "uniform" not in dragon
    assert "plating" in character_sheet("Unit-7 robot") and "fur" in character_sheet("Shiro the wolf")
    assert "crimson" in character_sheet("the Crimson Dragon"), "a colour in the name is the colour"
    assert character_sheet("Kai") == character_sheet("Kai"), "the same design in every scene and session"
    planned = kai_shots[1].model_copy(update={"character_sheets": {"Kai": "tall, silver hair, red scarf"}})
    prompt = refine(planned, {}, {"dragon": "a tiny green dragon"}, width=64, height=64, workflow="w",
                    learner_version="1").prompt.prompt
    if "Kai" in planned.shot.characters:
        assert "Kai (tall, silver hair, red scarf" in prompt
    if "Dragon" in planned.shot.characters:
        assert "Dragon (a tiny green dragon" in prompt


@pytest.mark.parametrize("alphas, betas", [
    ([1, 1, 1, 1, 1], [1, 1, 1, 1, 1]),
    ([3, 2, 5, 1, 1], [2, 3, 1, 1, 1]),
    ([300, 280, 50, 10, 1], [200, 220, 450, 5, 1]),
    ([30_000, 29_900, 500, 1, 1], [20_000, 20_100, 500, 1, 1]),  # narrow posteriors, far from the prior
])
def test_the_logged_probability_matches_a_large_monte_carlo_estimate(alphas, betas):
    from director.learning import win_probability

    a, b = np.array(alphas, dtype=float), np.array(betas, dtype=float)
    wins = np.argmax(np.random.default_rng(7).beta(a[:, None], b[:, None], size=(len(a), 400_000)), axis=0)
    exact = [win_probability(a, b, arm) for arm in range(len(a))]
    assert sum(exact) == pytest.approx(1.0, abs=1e-3)
    for arm, p in enumerate(exact):
        # 400,000 draws: a standard error of at most 0.0008.
        assert p == pytest.approx(float(np.mean(wins == arm)), abs=0.004), f"arm {arm}"
