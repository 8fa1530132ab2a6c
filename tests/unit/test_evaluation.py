"""Off-policy evaluation against logs whose truth is known."""

import math
import random

import pytest

from director.evaluation import (
    PROPENSITY_FLOOR,
    FixedPolicy,
    LoggedDecision,
    evaluate,
    evaluate_all,
    logged_mean,
    standard_policies,
)

TRUTH = {"a": 0.8, "b": 0.5, "c": 0.2}


def logged(n: int, logging: dict[str, float], seed: int = 3) -> list[LoggedDecision]:
    """Decisions of a stochastic logging policy in one context; rewards are the truth plus noise."""
    rng = random.Random(seed)
    names = list(logging)
    out = []
    for _ in range(n):
        name = rng.choices(names, weights=[logging[m] for m in names])[0]
        reward = min(1.0, max(0.0, TRUTH[name] + rng.uniform(-0.2, 0.2)))
        out.append(LoggedDecision("ctx", name, logging[name], reward))
    return out


@pytest.mark.parametrize("target", ["a", "b", "c"])
def test_ips_and_snips_recover_a_fixed_policy_from_a_skewed_log(target):
    decisions = logged(6000, {"a": 0.7, "b": 0.2, "c": 0.1})
    estimate = evaluate(decisions, FixedPolicy(target), f"fixed:{target}")
    for value, (low, high) in ((estimate.ips, estimate.ips_interval), (estimate.snips, estimate.snips_interval)):
        assert value == pytest.approx(TRUTH[target], abs=0.05)
        assert low < TRUTH[target] < high, "the 95% interval covers the truth"
    # The naive answer (the log's own mean) is wrong for every target but the favoured one.
    assert abs(logged_mean(decisions) - TRUTH["c"]) > 0.3


def test_greedy_beats_uniform_and_uniform_is_the_average():
    decisions = logged(3000, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    by_name = {e.policy: e for e in evaluate_all(decisions, standard_policies(list(TRUTH)))}
    assert set(by_name) == {"fixed:a", "fixed:b", "fixed:c", "uniform", "greedy"}
    assert by_name["uniform"].snips == pytest.approx(sum(TRUTH.values()) / 3, abs=0.03)
    assert by_name["greedy"].snips > by_name["uniform"].snips + 0.2
    assert by_name["greedy"].snips == pytest.approx(TRUTH["a"], abs=0.05)
    assert by_name["uniform"].effective_sample_size == pytest.approx(3000)


def test_greedy_is_judged_progressively_not_by_a_table_that_saw_the_reward():
    # One decision: a greedy policy with hindsight would pick the logged modifier; asked before
    # the reward, it knows nothing and takes the first modifier by name.
    decisions = [LoggedDecision("ctx", "c", 1 / 3, 1.0)]
    estimate = evaluate(decisions, standard_policies(list(TRUTH))["greedy"](), "greedy")
    assert estimate.matched == 0 and estimate.ips == 0.0


def test_a_target_that_never_agrees_with_the_log_has_no_snips_estimate():
    decisions = logged(50, {"a": 1.0, "b": 0.0, "c": 0.0})
    estimate = evaluate(decisions, FixedPolicy("c"), "fixed:c")
    assert estimate.matched == 0 and estimate.ips == 0.0 and math.isnan(estimate.snips)
    assert estimate.effective_sample_size == 0.0


def test_a_zero_logged_propensity_is_floored_not_divided_by():
    estimate = evaluate([LoggedDecision("ctx", "a", 0.0, 0.5)], FixedPolicy("a"), "fixed:a")
    assert estimate.ips == pytest.approx(0.5 / PROPENSITY_FLOOR)


def test_nothing_logged_is_a_clear_error():
    with pytest.raises(ValueError, match="no logged first attempts"):
        evaluate([], FixedPolicy("a"), "fixed:a")
