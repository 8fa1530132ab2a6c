"""Regression alerts: a workflow (render model) version scoring worse than the one before it.

When a new workflow version appears (a new ComfyUI template or model, a new procedural
renderer), its first attempts' scores are compared with the previous version's: a drop of at
least :data:`MIN_DROP` in the mean that a one-sided Welch test puts at p < :data:`MAX_P` is a
regression. It is checked when the new version has 10, 20, 40, 80 ... scores, so the cost stays
logarithmic in the log's length, and reported once per version.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MIN_SAMPLES = 10
MIN_DROP = 0.05
MAX_P = 0.01
# The previous version's most recent scores compared against (its settled level).
BASELINE_SAMPLES = 200


@dataclass(frozen=True)
class Regression:
    mean: float
    previous_mean: float
    samples: int
    previous_samples: int
    p_value: float

    @property
    def drop(self) -> float:
        return self.previous_mean - self.mean


def checkpoint(samples: int) -> bool:
    """Whether to test at this many scores of the new version: 10, 20, 40, 80, ..."""
    if samples < MIN_SAMPLES or samples % MIN_SAMPLES:
        return False
    ratio = samples // MIN_SAMPLES
    return ratio & (ratio - 1) == 0


def regression(current: Sequence[float], previous: Sequence[float]) -> Regression | None:
    """The regression of ``current`` against ``previous`` scores, or ``None`` if there is none
    (or too few scores to tell)."""
    if len(current) < MIN_SAMPLES or len(previous) < MIN_SAMPLES:
        return None
    mean, previous_mean = statistics.fmean(current), statistics.fmean(previous)
    spread = math.sqrt(statistics.variance(current) / len(current) + statistics.variance(previous) / len(previous))
    if spread == 0:
        p = 0.0 if mean < previous_mean else 1.0
    else:
        # One-sided Welch test with the normal approximation (10+ samples a side).
        p = 0.5 * math.erfc((previous_mean - mean) / spread / math.sqrt(2))
    found = Regression(mean, previous_mean, len(current), len(previous), p)
    return found if found.drop >= MIN_DROP and p < MAX_P else None
