"""Pattern confidence: a Beta posterior per (context, modifier), chosen by Thompson sampling.

A pattern's posterior counts evidence in micro-units (integers), so folding the same scores in
any order gives exactly the same table: a replay of ``quality.scored`` from offset 0 rebuilds it
bit for bit, whatever the interleaving of partitions. A score ``r`` in [0, 1] adds ``r`` to
alpha and ``1 - r`` to beta (the fractional Bernoulli update); the prior is Beta(1, 1).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from events.models import QualityScored, ShotPlanned

MICROS = 1_000_000
PRIOR_MICROS = MICROS
# Enough draws that the logged probability of the chosen arm is within about 1% of the truth.
PROBABILITY_DRAWS = 4096


@dataclass(frozen=True)
class Posterior:
    """Beta(alpha, beta) over a modifier's success rate in one context."""

    alpha_micros: int = PRIOR_MICROS
    beta_micros: int = PRIOR_MICROS
    observations: int = 0

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
        """A 95% one-sided lower bound (normal approximation of the Beta), clipped to [0, 1]."""
        a, b = self.alpha, self.beta
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        return max(0.0, min(1.0, self.mean - 1.645 * sd))

    def updated(self, reward: float) -> Posterior:
        r = reward_micros(reward)
        return Posterior(self.alpha_micros + r, self.beta_micros + (MICROS - r), self.observations + 1)


PatternKey = tuple[str, str]  # (context, modifier)
PatternTable = dict[PatternKey, Posterior]


def reward_micros(reward: float) -> int:
    if not math.isfinite(reward):
        raise ValueError(f"reward must be finite, got {reward!r}")
    return round(min(1.0, max(0.0, reward)) * MICROS)


def learns_from(event: QualityScored) -> bool:
    """Failed renders or scorings say nothing about the prompt pattern, so they are not folded."""
    return event.status == "ok"


def fold(table: PatternTable, event: QualityScored) -> PatternTable:
    """The learner as a pure function: the table after one ``quality.scored`` event."""
    if not learns_from(event):
        return table
    key = (event.prompt.context, event.prompt.modifier)
    updated = dict(table)
    updated[key] = table.get(key, Posterior()).updated(event.composite)
    return updated


def fold_all(events: Iterable[QualityScored], table: PatternTable | None = None) -> PatternTable:
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


def thompson_choice(
    posteriors: Mapping[str, Posterior], candidates: Sequence[str], seed: int
) -> Choice:
    """Draw once from each candidate's posterior and take the best; same seed, same choice.

    The logged probability is the chance that this candidate wins a draw, estimated with
    :data:`PROBABILITY_DRAWS` further draws from the same seeded generator.
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
    trials = rng.beta(alphas[:, None], betas[:, None], size=(len(ordered), PROBABILITY_DRAWS))
    probability = float(np.mean(np.argmax(trials, axis=0) == winner))
    return Choice(ordered[winner], probability, dict(zip(ordered, draw.round(6).tolist(), strict=True)))


def retry_of(event: QualityScored) -> ShotPlanned | None:
    """The next attempt at a shot that scored under its threshold, within its attempt budget."""
    if event.passed or event.attempt >= event.max_attempts:
        return None
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
    )


def is_final(event: QualityScored) -> bool:
    """Whether this attempt ends its shot (accepted, or the budget is spent)."""
    return event.passed or event.attempt >= event.max_attempts
