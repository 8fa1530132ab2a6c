"""Off-policy evaluation: how another prompt policy would have scored, estimated from the log.

The refiner logs, with every first attempt, the probability that Thompson sampling picks the
modifier it picked (``modifier_probability``, the propensity). Reweighting each logged reward by
``target(modifier | context) / propensity`` gives an unbiased estimate of the target policy's
mean score (inverse propensity scoring, IPS); dividing by the sum of the weights instead of
their count trades a little bias for much less variance (self-normalised IPS, SNIPS).

Only first attempts are evaluated: their candidates were every modifier, so every target policy
over the modifiers is covered; a retry's candidates depend on what failed before it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from director.learning import Posterior

# Importance weights are capped at 4096 (propensities floored): one decision made against
# long odds must not swamp an estimate, and logs from before Tower computed the propensity by
# quadrature (it was estimated from 4096 draws) may hold a 0 for a modifier that was chosen.
PROPENSITY_FLOOR = 1 / 4096
Z_95 = 1.959964


@dataclass(frozen=True)
class LoggedDecision:
    """One logged first attempt: where, what was chosen, with what probability, how it scored."""

    context: str
    modifier: str
    propensity: float
    reward: float


class Policy(ABC):
    """A target policy: the probability of each modifier in a context. It sees each logged
    decision *after* being asked about it (``observe``), so a learning policy is judged
    progressively, never by a table that already saw the reward it is asked to predict."""

    @abstractmethod
    def probabilities(self, context: str) -> Mapping[str, float]:
        """Each modifier's probability in ``context`` (absent: 0)."""

    def observe(self, decision: LoggedDecision) -> None:  # noqa: B027 - a fixed policy learns nothing
        """Called with each logged decision once it has been evaluated."""


class FixedPolicy(Policy):
    """Always the same modifier."""

    def __init__(self, modifier: str) -> None:
        self.modifier = modifier

    def probabilities(self, context: str) -> Mapping[str, float]:
        return {self.modifier: 1.0}


class UniformPolicy(Policy):
    """Every modifier with equal probability."""

    def __init__(self, modifiers: Sequence[str]) -> None:
        self.shares = {name: 1.0 / len(modifiers) for name in modifiers}

    def probabilities(self, context: str) -> Mapping[str, float]:
        return self.shares


class GreedyPolicy(Policy):
    """The modifier with the highest posterior mean in the context, from the decisions before
    this one; ties and unseen contexts go to the first modifier by name."""

    def __init__(self, modifiers: Sequence[str]) -> None:
        self.modifiers = sorted(modifiers)
        self.table: dict[tuple[str, str], Posterior] = {}

    def probabilities(self, context: str) -> Mapping[str, float]:
        best = max(self.modifiers, key=lambda name: self.table.get((context, name), Posterior()).mean)
        return {best: 1.0}

    def observe(self, decision: LoggedDecision) -> None:
        key = (decision.context, decision.modifier)
        self.table[key] = self.table.get(key, Posterior()).updated(decision.reward)


@dataclass(frozen=True)
class Estimate:
    """A policy's estimated mean score with 95% confidence intervals (normal approximation)."""

    policy: str
    decisions: int
    ips: float
    ips_interval: tuple[float, float]
    snips: float
    snips_interval: tuple[float, float]
    effective_sample_size: float  # (sum w)^2 / sum w^2: how many decisions the estimate rests on
    matched: int  # decisions where the target gives the logged modifier a positive probability


def evaluate(decisions: Sequence[LoggedDecision], policy: Policy, name: str) -> Estimate:
    """IPS and SNIPS estimates of ``policy``'s mean reward over the logged ``decisions`` (in
    the order they were made)."""
    if not decisions:
        raise ValueError("no logged first attempts to evaluate: run some scenes first")
    weights, rewards = [], []
    for d in decisions:
        target = policy.probabilities(d.context).get(d.modifier, 0.0)
        policy.observe(d)
        weights.append(target / max(d.propensity, PROPENSITY_FLOOR))
        rewards.append(d.reward)
    n = len(decisions)
    weighted = [w * r for w, r in zip(weights, rewards, strict=True)]
    ips = sum(weighted) / n
    ips_se = math.sqrt(sum((x - ips) ** 2 for x in weighted) / max(n - 1, 1) / n)
    total = sum(weights)
    if total > 0:
        snips = sum(weighted) / total
        snips_se = math.sqrt(sum((w * (r - snips)) ** 2 for w, r in zip(weights, rewards, strict=True))) / total
    else:  # the target never agrees with the log: nothing to estimate from
        snips, snips_se = math.nan, math.nan
    squares = sum(w * w for w in weights)
    return Estimate(
        policy=name,
        decisions=n,
        ips=ips,
        ips_interval=(ips - Z_95 * ips_se, ips + Z_95 * ips_se),
        snips=snips,
        snips_interval=(snips - Z_95 * snips_se, snips + Z_95 * snips_se),
        effective_sample_size=total * total / squares if squares else 0.0,
        matched=sum(1 for w in weights if w > 0),
    )


def standard_policies(modifiers: Sequence[str]) -> dict[str, Callable[[], Policy]]:
    """The policies ``tower evaluate`` compares (fresh ones per evaluation): each fixed
    modifier, uniform, greedy by posterior mean."""
    ordered = sorted(modifiers)
    policies: dict[str, Callable[[], Policy]] = {
        f"fixed:{name}": (lambda name=name: FixedPolicy(name)) for name in ordered
    }
    policies["uniform"] = lambda: UniformPolicy(ordered)
    policies["greedy"] = lambda: GreedyPolicy(ordered)
    return policies


def evaluate_all(decisions: Sequence[LoggedDecision], policies: Mapping[str, Callable[[], Policy]]) -> list[Estimate]:
    return [evaluate(decisions, make(), name) for name, make in policies.items()]


def logged_mean(decisions: Iterable[LoggedDecision]) -> float:
    """The logging policy's own mean reward (what Thompson sampling actually scored)."""
    rewards = [d.reward for d in decisions]
    return sum(rewards) / len(rewards)
