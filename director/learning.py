"""Pattern confidence: a Beta posterior per (context, modifier), chosen by Thompson sampling.

A pattern's posterior counts evidence in micro-units (integers), so folding the same scores in
any order gives exactly the same table: a replay of ``quality.scored`` from offset 0 rebuilds it
bit for bit, whatever the interleaving of partitions. A score ``r`` in [0, 1] adds ``r`` to
alpha and ``1 - r`` to beta (the fractional Bernoulli update) and ``r**2`` to a sum of squares; the
prior is Beta(1, 1). Only a shot's first attempt is credited to its modifier
(:mod:`director.escalation` says why). Decisions read the table through :func:`beliefs`, which
adds borrowed priors and weighs each score by how precise the scores are (:func:`score_precision`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from director.context import PatternContext
from director.escalation import credited, is_final  # noqa: F401 - is_final: also imported from here
from events.models import FeedbackSubmitted, QualityScored

if TYPE_CHECKING:
    from foundation.settings import Settings

MICROS = 1_000_000
PRIOR_MICROS = MICROS
# Midpoint-rule points over the chosen arm's density (within 10 standard deviations of its
# mean): the logged probability is then within 0.1% of a 400,000-draw estimate (tested).
QUADRATURE_POINTS = 512


@dataclass(frozen=True)
class Posterior:
    """Beta(alpha, beta) over a modifier's success rate in one context."""

    alpha_micros: int = PRIOR_MICROS
    beta_micros: int = PRIOR_MICROS
    observations: int = 0
    square_micros: int = 0  # sum of weight * reward**2: the scores' spread (score_precision)

    @property
    def alpha(self) -> float:
        return self.alpha_micros / MICROS

    @property
    def beta(self) -> float:
        return self.beta_micros / MICROS

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def lower_bound(self) -> float:
        """:func:`lower_bound` of this posterior."""
        return lower_bound(self.alpha, self.beta)

    def updated(self, reward: float, weight: float = 1) -> Posterior:
        alpha, beta, square = increments(reward, weight)
        return Posterior(self.alpha_micros + alpha, self.beta_micros + beta, self.observations + 1,
                         self.square_micros + square)


# The one lower bound the table, the advice, the API and the panel report: one-sided 95%.
LOWER_BOUND_QUANTILE = 0.05


def lower_bound(alpha: float, beta: float) -> float:
    """The 95% lower bound of a success rate: the 5% quantile of its Beta(alpha, beta) posterior.

    Exact rather than a normal approximation, which goes below 0 (and had to be clipped) for the
    skewed posteriors of a context with few scores."""
    return float(special.betaincinv(alpha, beta, LOWER_BOUND_QUANTILE))


PatternKey = tuple[str, str]  # (context, modifier)
PatternTable = dict[PatternKey, Posterior]


def reward_micros(reward: float) -> int:
    if not math.isfinite(reward):
        raise ValueError(f"reward must be finite, got {reward!r}")
    return round(min(1.0, max(0.0, reward)) * MICROS)


def square_micros(reward_in_micros: int) -> int:
    """A reward's square in micro-units, as an integer (exact in any order, like the sums)."""
    return reward_in_micros * reward_in_micros // MICROS


def increments(reward: float, weight: float) -> tuple[int, int, int]:
    """What one piece of evidence adds to a pattern's alpha, beta and sum of squares, in micro-units.

    Each is rounded to an integer from the event alone, so the sums do not depend on the order
    they are added in (a replay rebuilds the table exactly) even for a fractional weight (scene
    feedback spread over its shots); a whole weight gives exactly ``weight * micro-units``. The
    learner's SQL (:mod:`store.projections`) adds these same integers."""
    r = reward_micros(reward)
    return round(weight * r), round(weight * (MICROS - r)), round(weight * square_micros(r))


# A human rating counts as this many automatic scores.
HUMAN_RATING_WEIGHT = 2
SOURCE_WEIGHTS = {"auto": 1, "human": HUMAN_RATING_WEIGHT, "external": 1}


@dataclass(frozen=True)
class Evidence:
    """What one event teaches: a reward in [0, 1] for (context, modifier), from a source.

    ``scene_shots`` is set for feedback on a whole scene, spread over that many accepted shots:
    one judgement, so its shots share the source's weight rather than each counting it in full."""

    context: str
    modifier: str
    reward: float
    source: str
    scene_shots: int | None = None

    @property
    def key(self) -> PatternKey:
        return self.context, self.modifier

    @property
    def weight(self) -> float:
        if self.scene_shots:
            return SOURCE_WEIGHTS[self.source] / self.scene_shots
        return SOURCE_WEIGHTS[self.source]


def rating_reward(rating: int) -> float:
    """A 1-5 rating on the reward scale: 1 -> 0.0, 3 -> 0.5, 5 -> 1.0."""
    return (rating - 1) / 4


def evidence_of(event: QualityScored | FeedbackSubmitted) -> Evidence | None:
    """The evidence an event carries; ``None`` for failed renders or scorings, which say nothing
    about the prompt pattern, and for retries (see :func:`director.escalation.credited`)."""
    if isinstance(event, FeedbackSubmitted):
        if event.source == "human":
            assert event.rating is not None  # the model requires it
            reward = rating_reward(event.rating)
        else:
            present = event.scores.present()
            reward = sum(present.values()) / len(present)
        return Evidence(event.context, event.modifier, reward, event.source, event.scene_shots)
    if event.status != "ok" or not credited(event):
        return None
    return Evidence(event.prompt.context, event.prompt.modifier, event.composite, "auto")


def fold(table: PatternTable, event: QualityScored | FeedbackSubmitted) -> PatternTable:
    """The learner as a pure function: the table after one ``quality.scored`` or
    ``feedback.submitted`` event."""
    evidence = evidence_of(event)
    if evidence is None:
        return table
    updated = dict(table)
    updated[evidence.key] = table.get(evidence.key, Posterior()).updated(evidence.reward, evidence.weight)
    return updated


def fold_all(events: Iterable[QualityScored | FeedbackSubmitted], table: PatternTable | None = None) -> PatternTable:
    result: PatternTable = dict(table or {})
    for event in events:
        result = fold(result, event)
    return result


@dataclass(frozen=True)
class Choice:
    modifier: str
    probability: float
    samples: Mapping[str, float]


def decision_seed(scene_id: str, shot_number: int, attempt: int, learner_version: str) -> int:
    digest = hashlib.sha256(f"{scene_id}/{shot_number}/{attempt}/{learner_version}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def win_probability(alphas: np.ndarray, betas: np.ndarray, arm: int) -> float:
    """P(a draw from Beta(alphas[arm], betas[arm]) is the largest of one draw from each arm).

    ``integral of f_arm(x) * prod_{j != arm} F_j(x) dx`` by the midpoint rule over the arm's own
    density (every parameter is at least 1, the prior, so the density is bounded): exact up to the
    quadrature, deterministic, and cheaper than estimating it by drawing.
    """
    a, b = float(alphas[arm]), float(betas[arm])
    total = a + b
    mean, sd = a / total, math.sqrt(a * b / (total * total * (total + 1)))
    low, high = max(0.0, mean - 10 * sd), min(1.0, mean + 10 * sd)
    step = (high - low) / QUADRATURE_POINTS
    x = low + (np.arange(QUADRATURE_POINTS) + 0.5) * step
    density = np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - special.betaln(a, b))
    others = np.arange(len(alphas)) != arm
    below = special.betainc(alphas[others][:, None], betas[others][:, None], x[None, :])
    return float(min(1.0, np.sum(density * np.prod(below, axis=0)) * step))


def thompson_choice(
    posteriors: Mapping[str, Posterior], candidates: Sequence[str], seed: int
) -> Choice:
    """Draw once from each candidate's posterior and take the best; same seed, same choice.

    The logged probability is the chance that this candidate wins a draw (:func:`win_probability`).
    """
    if not candidates:
        raise ValueError("no candidate modifiers to choose from")
    rng = np.random.default_rng(seed)
    ordered = sorted(candidates)
    params = [posteriors.get(name, Posterior()) for name in ordered]
    alphas = np.array([p.alpha for p in params])
    betas = np.array([p.beta for p in params])
    draw = rng.beta(alphas, betas)
    winner = int(np.argmax(draw))
    probability = win_probability(alphas, betas, winner)
    return Choice(ordered[winner], probability, dict(zip(ordered, draw.round(6).tolist(), strict=True)))


# Below this posterior probability of being the best modifier in its context, stop using it.
STOP_BELOW = 0.05


@dataclass(frozen=True)
class Recommendation:
    """Advice for one context: the modifier to use, with its lower bound, and the ones to drop.

    ``best`` is the modifier with the highest :func:`lower_bound` (a confident choice, not a lucky
    one); ``stop`` are those whose posterior probability of being best is under
    :data:`STOP_BELOW`. ``probability_best`` is :func:`win_probability`, so the same table
    always gives the same advice.
    """

    context: str
    best: str
    best_lower_bound: float
    probability_best: Mapping[str, float]
    stop: tuple[str, ...]


def recommend(context: str, posteriors: Mapping[str, Posterior], modifiers: Sequence[str]) -> Recommendation:
    ordered = sorted(set(modifiers) | set(posteriors))
    params = [posteriors.get(name, Posterior()) for name in ordered]
    alphas = np.array([p.alpha for p in params])
    betas = np.array([p.beta for p in params])
    probability = {name: round(win_probability(alphas, betas, i), 4) for i, name in enumerate(ordered)}
    best = max(ordered, key=lambda name: (posteriors.get(name, Posterior()).lower_bound, name))
    return Recommendation(
        context=context,
        best=best,
        best_lower_bound=round(posteriors.get(best, Posterior()).lower_bound, 4),
        probability_best=probability,
        stop=tuple(name for name in ordered if probability[name] < STOP_BELOW),
    )


# How many scores' worth of evidence a context borrows, at most, from related contexts: chosen by
# measurement (docs/ARCHITECTURE.md, "Borrowed priors").
BORROWED_STRENGTH = 2.0
# One score counts as at most this many Bernoulli trials (score_precision); 1: the plain update.
MAX_SCORE_PRECISION = 8.0
# Degrees of freedom of the scores' spread before it is trusted.
PRECISION_MIN_DOF = 5.0
CONTEXT_PARTS = ("camera_angle", "mood", "lighting", "workflow")


@dataclass(frozen=True)
class LearningParameters:
    """How decisions read the evidence (settings: ``TOWER_LEARNING_HALF_LIFE_DAYS``,
    ``TOWER_BORROWED_STRENGTH``, ``TOWER_MAX_SCORE_PRECISION``)."""

    half_life_s: float | None = None
    borrowed_strength: float = BORROWED_STRENGTH
    max_score_precision: float = MAX_SCORE_PRECISION


def learning_parameters(settings: Settings) -> LearningParameters:
    """The parameters the settings give (``TOWER_LEARNING_HALF_LIFE_DAYS``,
    ``TOWER_BORROWED_STRENGTH``, ``TOWER_MAX_SCORE_PRECISION``)."""
    days = settings.learning_half_life_days
    return LearningParameters(days * 86400 if days else None, settings.borrowed_strength, settings.max_score_precision)


def context_parts(context: str) -> dict[str, str]:
    """A context key's camera angle, mood, lighting and workflow by name (:class:`PatternContext`)."""
    return PatternContext.parse(context).as_dict()


def related(context: str, other: str) -> bool:
    """Whether ``other`` can lend ``context`` a prior: the same workflow (a render model's
    response is its own) and the same camera angle or the same mood."""
    if other == context:
        return False
    mine, theirs = context_parts(context), context_parts(other)
    return mine["workflow"] == theirs["workflow"] and (
        mine["camera_angle"] == theirs["camera_angle"] or mine["mood"] == theirs["mood"]
    )


@dataclass(frozen=True)
class Belief:
    """What a decision uses for one modifier: Beta(alpha, beta) in real numbers, with how much of
    it is the context's own evidence and how much was borrowed (both in scores, before
    ``precision``), and how many Bernoulli trials each score counted as."""

    alpha: float
    beta: float
    own: float  # the context's own (possibly discounted) evidence, in scores
    borrowed: float  # scores' worth borrowed from related contexts
    precision: float = 1.0
    remembered: float = 0.0  # scores' worth from the memory prior (the nearest remembered shots)

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    @property
    def lower_bound(self) -> float:
        """:func:`lower_bound` of this belief."""
        return lower_bound(self.alpha, self.beta)

    def posterior(self) -> Posterior:
        """As a :class:`Posterior` (micro-units), for sampling."""
        return Posterior(round(self.alpha * MICROS), round(self.beta * MICROS), round(self.own))


# Evidence as sums: (context, modifier) -> (reward sum, (1 - reward) sum, reward**2 sum), each
# observation weighted by its source weight and, when discounting, by its age.
EvidenceSums = Mapping[tuple[str, str], tuple[float, float, float]]


def score_precision(evidence: EvidenceSums, max_precision: float = MAX_SCORE_PRECISION) -> float:
    """How many Bernoulli trials one score is worth, judged by how much the scores spread.

    The fractional update counts a score as one coin flip, whose variance is up to 1/4. A
    composite score is a far steadier measurement (its standard deviation around its pattern's
    mean is about 0.09 on the bench's renderers), and the mean of n scores with variance s^2 is
    as certain as 1 / (4 s^2) times n flips. Counting each score as one flip explores long after
    the scores have settled which modifier is better (``make bench-learning`` measured it).
    The variance is pooled over every pattern of the evidence (within-pattern spread, so a
    modifier's effect is not mistaken for noise), trusted from :data:`PRECISION_MIN_DOF` degrees
    of freedom, and the result clipped to [1, ``max_precision``]: noisy scores never count for
    less than a flip, and a few identical ones never for certainty.
    """
    if max_precision <= 1:
        return 1.0
    spread = dof = 0.0
    for good, bad, square in evidence.values():
        n = good + bad
        if n > 1:
            spread += max(0.0, square - good * good / n)
            dof += n - 1
    if dof < PRECISION_MIN_DOF:
        return 1.0
    variance = spread / dof
    return max_precision if variance <= 0 else min(max_precision, max(1.0, 0.25 / variance))


def beliefs(
    context: str, evidence: EvidenceSums, modifiers: Sequence[str], learning: LearningParameters = LearningParameters(),
    memory: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Belief]:
    """Each modifier's belief in ``context``: a Beta(1, 1) prior moved towards what related
    contexts (:func:`related`) saw, worth at most ``learning.borrowed_strength`` scores, plus the
    context's own evidence, every score counted as :func:`score_precision` trials of the
    context's workflow. A new context thus starts from its neighbours' experience and its own
    evidence takes over after a few shots; with no related evidence and precision 1 this is the
    plain posterior. ``memory``: a memory prior (:func:`director.memory.memory_prior`), ``(good,
    bad)`` per modifier, added beside the borrowed prior.
    """
    workflow = context_parts(context)["workflow"]
    precision = score_precision(
        {key: sums for key, sums in evidence.items() if context_parts(key[0])["workflow"] == workflow},
        learning.max_score_precision,
    )
    result = {}
    for modifier in sorted(set(modifiers) | {m for c, m in evidence if c == context}):
        lent = [sums for (c, m), sums in evidence.items() if m == modifier and related(context, c)]
        good, bad = sum(s[0] for s in lent), sum(s[1] for s in lent)
        scale = min(1.0, learning.borrowed_strength / (good + bad)) if good + bad > 0 else 0.0
        own_good, own_bad, _ = evidence.get((context, modifier), (0.0, 0.0, 0.0))
        mem_good, mem_bad = (memory or {}).get(modifier, (0.0, 0.0))
        result[modifier] = Belief(
            alpha=1.0 + precision * (scale * good + mem_good + own_good),
            beta=1.0 + precision * (scale * bad + mem_bad + own_bad),
            own=own_good + own_bad,
            borrowed=scale * (good + bad),
            precision=precision,
            remembered=mem_good + mem_bad,
        )
    return result


def table_evidence(table: PatternTable) -> dict[PatternKey, tuple[float, float, float]]:
    """The exact pattern table as :data:`EvidenceSums`, what :func:`beliefs` reads."""
    return {
        key: ((p.alpha_micros - PRIOR_MICROS) / MICROS, (p.beta_micros - PRIOR_MICROS) / MICROS, p.square_micros / MICROS)
        for key, p in table.items()
    }


def decision_posteriors(
    table: PatternTable, context: str, modifiers: Sequence[str], learning: LearningParameters
) -> dict[str, Posterior]:
    """Each modifier's posterior in ``context`` as the refiner decides with it (borrowed priors
    and score precision over the exact table): what the advice ranks, so a table that shows
    these shows the numbers the advice quotes."""
    known = beliefs(context, table_evidence(table), modifiers, learning)
    return {name: belief.posterior() for name, belief in known.items()}


def advise(table: PatternTable, context: str, modifiers: Sequence[str], learning: LearningParameters) -> Recommendation:
    """:func:`recommend` on :func:`decision_posteriors`, so the advice and the decisions agree."""
    return recommend(context, decision_posteriors(table, context, modifiers, learning), modifiers)
